/**
 * The two matmul skeletons every projection kernel is built from; families plug in a column → weight-row map and
 * an epilogue. Both compute, per token t and logical output column c,
 *
 *   v[0](t, c) = Σ_k f(x)[t, k] · w[wrow(c), k]
 *   v[1](t, c) = Σ_k f(x)[t, k] · wu[urow(c), k]      (stream 1: the "up" half of swiglu, its own binding)
 *
 * where f(x) is x, or with `norm` x · normW · rinv[t]. The norm is fused by folding normW into the dot product and
 * accumulating Σx² in the same pass over x, then scaling by rinv = inverseSqrt(mean(x²) + eps) at the end: no
 * extra read of x and no separate rms pass.
 *
 * The up stream has its own binding so a weight split across buffers (runtime/weights.ts) can feed gate and up
 * rows from different parts; unsplit, `wu` is the same buffer as `w`. Bias of stream s for column c is
 * bias[brow(c, s)] (default: s·NC + wrow(c)).
 *
 * Epilogues see output pairs: `epi(t, c, v: vec2<f32>[, u: vec2<f32>])` with c even and v = (v(c), v(c+1)) already
 * scaled and biased (v.y is meaningless when c + 1 ≥ NC). Pairs let the qkv family rotate (i, i + rot/2) in one
 * thread by interleaving the pair into adjacent logical columns through `wrow`.
 *
 *   gemv  (T ≤ 8, decode): one workgroup per R logical columns; threads stride over K with vectorized weight
 *         loads (adjacent threads read adjacent chunks of a row: coalesced), two-level reduction in workgroup memory.
 *   tiled (prefill): 64×64 output tile per workgroup, 32-deep K slabs staged in workgroup memory, each of the 256
 *         threads accumulates a 4×4 register block from vec4 reads of both slabs.
 */
import { ro, wgsl, type Binding, type KernelSource, type Param } from '../wgsl.js';
import type { Workgroups } from '../../runtime/gpu/runner.js';
import { builtins, f32Loader, foldGrid, linearWg, vdot, vt, weightLoader, type Unit, type WeightDtype } from './mm-common.js';

export interface CoreOpts {
  readonly wdtype: WeightDtype;
  /** elements per load along K (4 when K % 4 == 0) */
  readonly U: Unit;
  readonly norm: boolean;
  readonly bias: boolean;
  /** 2: a second weight stream read through binding `wu` at rows urow(c) (swiglu's up projection) */
  readonly streams: 1 | 2;
}

export interface CoreFamily {
  /** bindings after the core's x, w, normW?, bias? */
  readonly bindings: readonly Binding[];
  /** params after the core's T, NC, K, xRow0, eps */
  readonly params: readonly Param[];
  /**
   * WGSL defining `fn wrow(c: u32) -> u32`, `fn epi(...)`, with 2 streams `fn urow(c: u32) -> u32`, optionally
   * `fn brow(c: u32, s: u32) -> u32` (then set `brow`), plus anything they need
   */
  readonly helpers: string;
  /** helpers define `brow` (bias index of column c, stream s) instead of the default s·NC + wrow(c) */
  readonly brow?: boolean;
  readonly enables: readonly string[];
  /** shape comment of the weight binding */
  readonly wShape: string;
}

/** T tokens, NC logical output columns (per stream), K reduction length. */
export const coreParams: readonly Param[] = [
  ['T', 'u32'],
  ['NC', 'u32'],
  ['K', 'u32'],
  ['xRow0', 'u32'],
  ['eps', 'f32'],
];

export const GEMV_MAX_T = 8;

function coreBindings(o: CoreOpts, f: CoreFamily): { bindings: Binding[]; fns: string } {
  const x = f32Loader('x', o.U, '(xRow0 + T, K) activations; rows xRow0.. are read');
  const w = weightLoader('w', o.wdtype, o.U, f.wShape);
  const bindings: Binding[] = [x.binding, w.binding];
  const fns = [x.fn, w.fn];
  if (o.streams === 2) {
    const wu = weightLoader('wu', o.wdtype, o.U, 'up rows (may be the same buffer as w)');
    bindings.push(wu.binding);
    fns.push(wu.fn);
  }
  if (o.norm) {
    const n = f32Loader('normW', o.U, '(K) rmsnorm weight');
    bindings.push(n.binding);
    fns.push(n.fn);
  }
  if (o.bias) {
    bindings.push(ro('bias', 'array<f32>')); // f32, indexed by brow
    if (!f.brow) fns.push('fn brow(c: u32, s: u32) -> u32 { return s * params.NC + wrow(c); }');
    fns.push(`fn bias2(c: u32, s: u32) -> vec2<f32> {
  let c1 = min(c + 1u, params.NC - 1u);
  return vec2<f32>(bias[brow(c, s)], select(0.0, bias[brow(c1, s)], c + 1u < params.NC));
}`);
  }
  return { bindings: [...bindings, ...f.bindings], fns: fns.join('\n') };
}

/** Columns per workgroup and threads per workgroup for the gemv path. */
export function gemvShape(T: number, streams: number, K: number, U: Unit): { R: number; WG: number } {
  // at most ~16 accumulators per thread so they stay in registers; R even so pairs never straddle workgroups
  let R = Math.floor(16 / (T * streams));
  R = Math.max(2, Math.min(8, R - (R % 2)));
  const KU = K / U;
  const WG = KU >= 1024 ? 256 : KU >= 256 ? 128 : 64;
  return { R, WG };
}

export function gemvGrid(NC: number, R: number): Workgroups {
  return foldGrid(Math.ceil(NC / R));
}

export function gemvSource(o: CoreOpts, T: number, R: number, WG: number, f: CoreFamily): KernelSource {
  const { bindings, fns } = coreBindings(o, f);
  const S = o.streams;
  const NACC = R * T * S;
  const NV = NACC + (o.norm ? T : 0);
  const G = Math.min(NV, Math.floor(4096 / WG)); // values reduced per round: ≤ 16 KiB of workgroup memory
  const d = (a: string, b: string) => vdot(o.U, a, b);
  // Two-level reduction (per value: SEG partial sums of WG/SEG, then one sum of SEG) rather than a log-step tree:
  // two barriers per round instead of log2(WG), which also keeps shader compilation cheap on CPU drivers.
  const SEG = WG / 16;
  const rounds: string[] = [];
  for (let g0 = 0; g0 < NV; g0 += G) {
    const n = Math.min(G, NV - g0);
    rounds.push(wgsl`
  for (var j = 0u; j < ${n}u; j++) { red[j * WG + lid] = v[${g0}u + j]; }
  workgroupBarrier();
  for (var i = lid; i < ${n * SEG}u; i += WG) {
    let b = (i / SEG) * WG + (i % SEG) * (WG / SEG);
    var s = 0.0;
    for (var e = 0u; e < WG / SEG; e++) { s += red[b + e]; }
    part[i] = s;
  }
  workgroupBarrier();
  if (lid < ${n}u) {
    var s = 0.0;
    for (var e = 0u; e < SEG; e++) { s += part[lid * SEG + e]; }
    res[${g0}u + lid] = s;
  }`);
  }
  rounds.push('  workgroupBarrier();');
  const body = wgsl`
${fns}
${f.helpers}

const WG = ${WG}u;
const U = ${o.U}u;
const R = ${R}u;      // logical columns per workgroup (even)
const TT = ${T}u;     // tokens (compile-time: T ≤ ${GEMV_MAX_T})
const NACC = ${NACC}u; // per-thread partial dots: [stream][column][token]
const NV = ${NV}u;    // NACC + (norm ? per-token Σx² : 0)
const SEG = ${SEG}u;
var<workgroup> red: array<f32, ${G * WG}>;   // reduction scratch: ${G} values × WG threads
var<workgroup> part: array<f32, ${G * SEG}>; // ${G} values × SEG partial sums
var<workgroup> res: array<f32, ${NV}>;      // reduced values

@compute @workgroup_size(${WG})
fn main(${builtins}) {
  let c0 = ${linearWg} * R;
  if (c0 >= params.NC) { return; }
  let KU = params.K / U;
  var v = array<f32, ${NV}>(); // explicit zero: some drivers skip zeroing uninitialized vars
  var rows: array<u32, ${R}>; // first chunk of each column's weight row (clamped: tail columns are discarded)
  for (var r = 0u; r < R; r++) { rows[r] = wrow(min(c0 + r, params.NC - 1u)) * KU; }
  ${S === 2 && wgsl`var urows: array<u32, ${R}>; // same for the up stream
  for (var r = 0u; r < R; r++) { urows[r] = urow(min(c0 + r, params.NC - 1u)) * KU; }`}
  for (var k = lid; k < KU; k += WG) {
    ${o.norm && 'let nw = normW_ld(k);'}
    var xs: array<${vt(o.U)}, ${T}>;
    for (var t = 0u; t < TT; t++) {
      let xv = x_ld((params.xRow0 + t) * KU + k);
      ${o.norm ? `v[NACC + t] += ${d('xv', 'xv')};\n      xs[t] = xv * nw;` : 'xs[t] = xv;'}
    }
    for (var r = 0u; r < R; r++) {
      let wv = w_ld(rows[r] + k);
      ${S === 2 && 'let uv = wu_ld(urows[r] + k);'}
      for (var t = 0u; t < TT; t++) {
        v[r * TT + t] += ${d('xs[t]', 'wv')};
        ${S === 2 && `v[R * TT + r * TT + t] += ${d('xs[t]', 'uv')};`}
      }
    }
  }
${rounds}
  for (var p = lid; p < TT * (R / 2u); p += WG) {
    let t = p / (R / 2u);
    let r = (p % (R / 2u)) * 2u;
    let c = c0 + r;
    if (c < params.NC) {
      ${o.norm ? 'let sc = inverseSqrt(res[NACC + t] / f32(params.K) + params.eps);' : 'let sc = 1.0;'}
      let a = vec2<f32>(res[r * TT + t], res[(r + 1u) * TT + t]) * sc${o.bias ? ' + bias2(c, 0u)' : ''};
      ${S === 2 && `let u = vec2<f32>(res[R * TT + r * TT + t], res[R * TT + (r + 1u) * TT + t]) * sc${o.bias ? ' + bias2(c, 1u)' : ''};`}
      epi(t, c, a${S === 2 ? ', u' : ''});
    }
  }
}`;
  return { bindings, params: [...coreParams, ...f.params], workgroupSize: [WG, 1, 1], enables: f.enables, body };
}

export const TILE = { BM: 64, BN: 64, WG: 256 } as const;
/** K slab depth: swiglu stages two weight slabs, so it takes half the depth to stay within 16 KiB */
const slabDepth = (streams: number) => (streams === 2 ? 16 : 32);

export function tiledGrid(NC: number, T: number): Workgroups {
  const x = Math.ceil(NC / TILE.BN);
  const y = Math.ceil(T / TILE.BM);
  if (x > 65535 || y > 65535) throw new Error(`tiled matmul grid too large: ${x}×${y}`);
  return [x, y];
}

export function tiledSource(o: CoreOpts, f: CoreFamily): KernelSource {
  const { bindings, fns } = coreBindings(o, f);
  const { BM, BN, WG } = TILE;
  const S = o.streams;
  const BK = slabDepth(S);
  const UPR = BK / o.U;
  const A_PER = (BM * UPR) / WG;
  const B_PER = (BN * UPR) / WG;
  const VT = vt(o.U);
  const d = (a: string, b: string) => vdot(o.U, a, b);
  // slabs are stored k-major so the inner loop reads one vec4 of 4 rows (A) and one of 4 columns (B) per k
  const storeA = o.U === 4
    ? 'for (var j = 0u; j < 4u; j++) { As[(kc * 4u + j) * (BM / 4u) + m / 4u][m % 4u] = xv[j]; }'
    : 'As[kc * (BM / 4u) + m / 4u][m % 4u] = xv;';
  const storeB = (s: number, val: string) =>
    o.U === 4
      ? `for (var j = 0u; j < 4u; j++) { Bs[${s * (BK * BN) / 4}u + (kc * 4u + j) * (BN / 4u) + n / 4u][n % 4u] = ${val}[j]; }`
      : `Bs[${s * (BK * BN) / 4}u + kc * (BN / 4u) + n / 4u][n % 4u] = ${val};`;
  const fma = (acc: string, b: string) => ['x', 'y', 'z', 'w'].map((q, i) => `${acc}[${i}] += a.${q} * ${b};`).join(' ');
  const body = wgsl`
${fns}
${f.helpers}

const WG = ${WG}u;
const U = ${o.U}u;
const BM = ${BM}u; // tokens per tile
const BN = ${BN}u; // logical columns per tile
const BK = ${BK}u; // K elements per slab
const UPR = ${UPR}u; // loads per slab row
var<workgroup> As: array<vec4<f32>, ${(BK * BM) / 4}>;     // (BK, BM) x slab, k-major; rms scratch at the end
var<workgroup> Bs: array<vec4<f32>, ${(S * BK * BN) / 4}>; // (streams, BK, BN) weight slabs, k-major

@compute @workgroup_size(${WG})
fn main(${builtins}) {
  let tx = lid % 16u; // columns tx*4 .. tx*4+3
  let ty = lid / 16u; // tokens ty*4 .. ty*4+3
  let n0 = wid.x * BN;
  let m0 = wid.y * BM;
  let KU = params.K / U;
  var acc = array<vec4<f32>, 4>();
  ${S === 2 && 'var acc2 = array<vec4<f32>, 4>();'}
  ${o.norm && `var ssq = array<f32, ${A_PER}>(); // Σx² of the x loads this thread makes (same rows every slab)`}
  for (var k0 = 0u; k0 < KU; k0 += UPR) {
    for (var i = 0u; i < ${A_PER}u; i++) {
      let u = lid + i * WG;
      let m = u / UPR;
      let kc = u % UPR;
      let k = k0 + kc;
      var xv = ${VT}(0.0);
      if (m0 + m < params.T && k < KU) {
        xv = x_ld((params.xRow0 + m0 + m) * KU + k);
        ${o.norm && `ssq[i] += ${d('xv', 'xv')};\n        xv = xv * normW_ld(k);`}
      }
      ${storeA}
    }
    for (var i = 0u; i < ${B_PER}u; i++) {
      let u = lid + i * WG;
      let n = u / UPR;
      let kc = u % UPR;
      let k = k0 + kc;
      var wv = ${VT}(0.0);
      ${S === 2 && `var uv = ${VT}(0.0);`}
      if (n0 + n < params.NC && k < KU) {
        wv = w_ld(wrow(n0 + n) * KU + k);
        ${S === 2 && 'uv = wu_ld(urow(n0 + n) * KU + k);'}
      }
      ${storeB(0, 'wv')}
      ${S === 2 && storeB(1, 'uv')}
    }
    workgroupBarrier();
    for (var kk = 0u; kk < BK; kk++) {
      let a = As[kk * (BM / 4u) + ty];
      let b = Bs[kk * (BN / 4u) + tx];
      ${fma('acc', 'b')}
      ${S === 2 && `let b2 = Bs[${(BK * BN) / 4}u + kk * (BN / 4u) + tx];\n      ${fma('acc2', 'b2')}`}
    }
    workgroupBarrier();
  }
  ${o.norm ? wgsl`// per-row Σx²: partials of load slot u sit at scratch index u = m * UPR + kc
  for (var i = 0u; i < ${A_PER}u; i++) { let u = lid + i * WG; As[u / 4u][u % 4u] = ssq[i]; }
  workgroupBarrier();
  if (lid < BM) {
    var s = 0.0;
    for (var kc = 0u; kc < UPR; kc++) { let u = lid * UPR + kc; s += As[u / 4u][u % 4u]; }
    Bs[lid / 4u][lid % 4u] = inverseSqrt(s / f32(params.K) + params.eps);
  }
  workgroupBarrier();
  let rin = Bs[ty];` : 'let rin = vec4<f32>(1.0);'}
  for (var i = 0u; i < 4u; i++) {
    let t = m0 + ty * 4u + i;
    if (t < params.T) {
      for (var p = 0u; p < 2u; p++) {
        let c = n0 + tx * 4u + 2u * p;
        if (c < params.NC) {
          let a = vec2<f32>(acc[i][2u * p], acc[i][2u * p + 1u]) * rin[i]${o.bias ? ' + bias2(c, 0u)' : ''};
          ${S === 2 && `let u = vec2<f32>(acc2[i][2u * p], acc2[i][2u * p + 1u]) * rin[i]${o.bias ? ' + bias2(c, 1u)' : ''};`}
          epi(t, c, a${S === 2 ? ', u' : ''});
        }
      }
    }
  }
}`;
  return { bindings, params: [...coreParams, ...f.params], workgroupSize: [WG, 1, 1], enables: f.enables, body };
}
