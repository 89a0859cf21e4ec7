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
 *   gemv  (T ≤ GEMV_MAX_T, decode): its own file, mm-gemv.ts (16-byte weight loads, one reduction per workgroup).
 *   tiled (prefill): 64×64 output tile per workgroup, 32-deep K slabs staged in workgroup memory, each of the 256
 *         threads accumulates a 4×4 register block from vec4 reads of both slabs.
 */
import { ro, wgsl, type Binding, type KernelSource, type Param } from '../wgsl.js';
import type { Workgroups } from '../../runtime/gpu/runner.js';
import { builtins, f32Loader, halfLoader, vdot, vt, weightLoader, type Unit, type WeightDtype } from './mm-common.js';

export interface CoreOpts {
  readonly wdtype: WeightDtype;
  /** elements per load along K (4 when K % 4 == 0) */
  readonly U: Unit;
  readonly norm: boolean;
  readonly bias: boolean;
  /** 2: a second weight stream read through binding `wu` at rows urow(c) (swiglu's up projection) */
  readonly streams: 1 | 2;
  /** x is stored as f16 (vec4<f16>): the tensor-core skeleton only, without the norm prologue (see matmul.ts) */
  readonly halfX?: boolean;
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

/** The f32 bias binding (indexed by brow) and `bias2(c, s)`, the biases of columns c, c + 1 of stream s; shared by every skeleton. */
export function biasParts(f: CoreFamily): { binding: Binding; fns: string[] } {
  return {
    binding: ro('bias', 'array<f32>'),
    fns: [
      ...(f.brow ? [] : ['fn brow(c: u32, s: u32) -> u32 { return s * params.NC + wrow(c); }']),
      `fn bias2(c: u32, s: u32) -> vec2<f32> {
  let c1 = min(c + 1u, params.NC - 1u);
  return vec2<f32>(bias[brow(c, s)], select(0.0, bias[brow(c1, s)], c + 1u < params.NC));
}`,
    ],
  };
}

/** Bindings and loader functions of every prefill skeleton: x, w (+ w_s), wu (+ wu_s), normW, bias, then the family's. */
export function coreBindings(o: CoreOpts, f: CoreFamily): { bindings: Binding[]; fns: string } {
  const x = o.halfX ? halfLoader('x', '(xRow0 + T, K) activations; rows xRow0.. are read') : f32Loader('x', o.U, '(xRow0 + T, K) activations; rows xRow0.. are read');
  const w = weightLoader('w', o.wdtype, o.U, f.wShape);
  const bindings: Binding[] = [x.binding, ...w.bindings]; // q8 / q4: w, then its scales w_s
  const fns = [x.fn, w.fn];
  if (o.streams === 2) {
    const wu = weightLoader('wu', o.wdtype, o.U, 'up rows (may be the same buffer as w)');
    bindings.push(...wu.bindings);
    fns.push(wu.fn);
  }
  if (o.norm) {
    const n = f32Loader('normW', o.U, '(K) rmsnorm weight');
    bindings.push(n.binding);
    fns.push(n.fn);
  }
  if (o.bias) {
    const b = biasParts(f);
    bindings.push(b.binding);
    fns.push(...b.fns);
  }
  return { bindings: [...bindings, ...f.bindings], fns: fns.join('\n') };
}

/**
 * The rms pass of the FMA skeletons after their K loop: the Σx² partials of x load slot u (row u / UPR) wait in As,
 * one thread per token row adds its UPR partials, and the row scales land in Bs (vec4 q holds rows 4q .. 4q+3).
 */
export const rmsScales = `  workgroupBarrier();
  if (lid < BM) {
    var s = 0.0;
    for (var kc = 0u; kc < UPR; kc++) { let u = lid * UPR + kc; s += As[u / 4u][u % 4u]; }
    Bs[lid / 4u][lid % 4u] = inverseSqrt(s / f32(params.K) + params.eps);
  }
  workgroupBarrier();`;

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
  if (o.halfX) throw new Error('tiled matmul: f16 x is read by the tensor-core skeleton only');
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
${rmsScales}
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
