/**
 * The tensor-core prefill skeleton: the contract of `tiledSource` (mm-core.ts: the same CoreFamily plug-ins, the
 * same bindings, params and epilogue pairs), computed with Dawn's `chromium-experimental-subgroup-matrix` on
 * f16×f16→f32 16×16×16 fragments instead of f32 FMAs.
 *
 *   per workgroup: BM tokens × BN logical columns, SG = SGM × SGN subgroups of ≤ 32 lanes, each owning
 *   FM × FN result fragments (16×16 f32) per stream:
 *
 *            BN columns ─────────────▶
 *      BM   ┌─────────┬─────────┐        subgroup (sm, sn) owns tokens sm·FM·16 ..  and columns sn·FN·16 ..
 *    tokens │ sg 0    │ sg 1    │        K loop: 32-deep slabs staged in workgroup memory as f16
 *      │    ├─────────┼─────────┤          xs (BM, 32)  x · normW, token-major         → left operands
 *      ▼    │ sg 2    │ sg 3    │          ws (BN, 32)  weight rows (native f16)       → right operands (column-major)
 *           │   …     │   …     │        epilogue: one 16-token fragment row at a time is stored (f32) to `os`,
 *           └─────────┴─────────┘        then every thread runs the family's `epi` on pairs read from there
 *
 * Tokens ≥ T and columns ≥ NC are zero in staging (and never reach `epi`), so any T and N work; K must be a
 * multiple of 16 (a partial last slab is zero-padded to 32). The rmsnorm prologue accumulates Σx² in f32 from the
 * f32 x while staging it and scales by rinv in the epilogue, exactly like the tiled skeleton; x · normW is rounded
 * to f16 for the tensor cores (|x · normW| must stay below 65504).
 *
 * WGSL notes (Dawn's extension): `subgroup_matrix_left<T, K, M>` is M rows × K columns, `_right<T, N, K>` is
 * K rows × N columns, `_result<T, N, M>` is M rows × N columns; `subgroupMatrixLoad<Type>(&arr, offset, col_major,
 * stride)` counts offset and stride in elements of `arr` (whose element type must be the matrix's scalar type).
 * The calls take subgroup-uniform operands that Tint can only prove workgroup-uniform, hence the diagnostic off.
 * Vulkan wants fragment pointers and strides 16-byte aligned: every offset here is a multiple of 8 halves / 4 f32.
 */
import { ro, wgsl, type Binding, type KernelSource } from '../wgsl.js';
import type { Workgroups } from '../../runtime/gpu/runner.js';
import { builtins, f32Loader, MAX_WG_PER_DIM, type WeightDtype } from './mm-common.js';
import { coreParams, type CoreFamily, type CoreOpts } from './mm-core.js';

/** fragment edge: the f16×f16→f32 16×16×16 configuration */
const FR = 16;
/** K elements per staged slab (two fragment steps per barrier pair) */
const BK = 32;
/** staged row stride in halves: 32 + 8 padding = 80 bytes keeps rows 16-byte aligned and spreads them over banks */
const XS = BK + 8;
/** lanes per subgroup the layout assumes at most (NVIDIA 32; smaller subgroups leave the extra ones idle) */
export const SGMAT_MAX_SUBGROUP = 32;
/** workgroup memory every variant fits in (checked when generating) */
export const SGMAT_WG_BYTES = 32768;

export interface SgmatShape {
  /** tokens per workgroup */
  readonly BM: number;
  /** logical columns per workgroup */
  readonly BN: number;
  /** subgroups along tokens and along columns */
  readonly SGM: number;
  readonly SGN: number;
}

/** 8 subgroups of 32×64 (one stream) or 32×32 (swiglu: twice the accumulators and weight slabs). */
export function sgmatShape(streams: 1 | 2): SgmatShape {
  return streams === 2 ? { BM: 128, BN: 64, SGM: 4, SGN: 2 } : { BM: 128, BN: 128, SGM: 4, SGN: 2 };
}

/**
 * Whether the tensor-core skeleton can run this matmul: prefill-sized T (decode, T ≤ 8, stays on the gemv path),
 * native f16 weights, K a multiple of the fragment depth. The device must also have it (GpuContext.tensorCores).
 */
export function sgmatUsable(wdtype: WeightDtype, T: number, K: number): boolean {
  return wdtype === 'f16' && T > 8 && K % FR === 0;
}

export function sgmatGrid(NC: number, T: number, streams: 1 | 2): Workgroups {
  const { BM, BN } = sgmatShape(streams);
  const x = Math.ceil(NC / BN);
  const y = Math.ceil(T / BM);
  if (x > MAX_WG_PER_DIM || y > MAX_WG_PER_DIM) throw new Error(`sgmat matmul grid too large: ${x}×${y}`);
  return [x, y];
}

/** The core's bindings for native f16 weights (the only dtype this skeleton reads), in coreBindings' order. */
function bindingsOf(o: CoreOpts, f: CoreFamily): { bindings: Binding[]; fns: string } {
  const bindings: Binding[] = [
    ro('x', 'array<vec4<f32>>'), // (xRow0 + T, K) f32 activations; rows xRow0.. are read
    ro('w', 'array<vec4<f16>>'), // weight rows, f16: see wShape below
  ];
  const fns = [`// w: ${f.wShape}, f16`];
  if (o.streams === 2) bindings.push(ro('wu', 'array<vec4<f16>>')); // up rows (may be the same buffer as w)
  if (o.norm) {
    const n = f32Loader('normW', 4, '(K) rmsnorm weight');
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

export function sgmatSource(o: CoreOpts, f: CoreFamily): KernelSource {
  if (o.wdtype !== 'f16' || o.U !== 4) throw new Error(`sgmat matmul reads native f16 weights with K % 16 == 0 (got ${o.wdtype}, U=${o.U})`);
  const { bindings, fns } = bindingsOf(o, f);
  const S = o.streams;
  const { BM, BN, SGM, SGN } = sgmatShape(S);
  const SG = SGM * SGN;
  const WG = SG * SGMAT_MAX_SUBGROUP;
  const FM = BM / SGM / FR;
  const FN = BN / SGN / FR;
  const UPR = BK / 4; // vec4 loads per staged row
  const A_PER = (BM * UPR) / WG;
  const B_PER = (BN * UPR) / WG;
  const OS = S * FR * BN; // f32 result staging: one fragment row of the tile per stream
  if (!Number.isInteger(FM) || !Number.isInteger(FN) || !Number.isInteger(A_PER) || !Number.isInteger(B_PER) || FM < 1 || FN < 1)
    throw new Error(`sgmat shape ${BM}×${BN} does not split over ${SGM}×${SGN} subgroups / ${WG} threads`);
  if (o.norm && A_PER * WG > OS) throw new Error('sgmat: Σx² partials do not fit the result staging');
  const bytes = 2 * BM * XS + 2 * S * BN * XS + 4 * OS + (o.norm ? 4 * BM : 0);
  if (bytes > SGMAT_WG_BYTES) throw new Error(`sgmat: ${bytes} bytes of workgroup memory exceed ${SGMAT_WG_BYTES}`);
  const R = (n: number) => Array.from({ length: n }, (_, i) => i);
  const acc = (s: number, i: number, j: number) => `${s === 0 ? 'c' : 'u'}${i}_${j}`;
  const accs = R(S).flatMap((s) => R(FM).flatMap((i) => R(FN).map((j) => acc(s, i, j))));
  // one 16-deep step of the K slab (its own block: each step declares a0.., b00..): FM left fragments shared by
  // FN right fragments per stream
  const step = (kk: number) => [
    '      {',
    ...R(FM).map((i) => `      let a${i} = subgroupMatrixLoad<LeftM>(&xs, (sm * ${FM * FR}u + ${i * FR}u) * XS + ${kk * FR}u, false, XS);`),
    ...R(S).flatMap((s) =>
      R(FN).flatMap((j) => [
        `      let b${s}${j} = subgroupMatrixLoad<RightM>(&ws, ${s * BN * XS}u + (sn * ${FN * FR}u + ${j * FR}u) * XS + ${kk * FR}u, true, XS);`,
        ...R(FM).map((i) => `      ${acc(s, i, j)} = subgroupMatrixMultiplyAccumulate(a${i}, b${s}${j}, ${acc(s, i, j)});`),
      ]),
    ),
    '      }',
  ];
  // fragment row i of this subgroup's block → os (row-major, stride BN), one branch per i: accumulators are
  // named variables, never indexed dynamically
  const storeRow = (i: number) =>
    R(S).flatMap((s) => R(FN).map((j) => `subgroupMatrixStore(&os, ${s * FR * BN}u + sn * ${FN * FR}u + ${j * FR}u, ${acc(s, i, j)}, false, BN);`)).join('\n        ');
  const stores = R(FM).map((i) => `${i ? ' else ' : ''}if (fi == ${i}u) {\n        ${storeRow(i)}\n      }`).join('');
  const biasS = (s: number) => (o.bias ? ` + bias2(c, ${s}u)` : '');
  const body = wgsl`
${fns}
${f.helpers}

alias LeftM = subgroup_matrix_left<f16, ${FR}, ${FR}>;    // 16 tokens × 16 k
alias RightM = subgroup_matrix_right<f16, ${FR}, ${FR}>;  // 16 k × 16 columns
alias AccM = subgroup_matrix_result<f32, ${FR}, ${FR}>;   // 16 tokens × 16 columns

const WG = ${WG}u;
const SG = ${SG}u;   // subgroups that compute (${SGM} along tokens × ${SGN} along columns)
const BM = ${BM}u;  // tokens per tile
const BN = ${BN}u;  // logical columns per tile
const BK = ${BK}u;   // K elements per slab
const XS = ${XS}u;   // staged row stride (halves)
const UPR = ${UPR}u;  // vec4 loads per staged row
var<workgroup> xs: array<f16, ${BM * XS}>;     // (BM, XS) x · normW slab, token-major
var<workgroup> ws: array<f16, ${S * BN * XS}>;     // (streams, BN, XS) weight slabs, one row per column
var<workgroup> os: array<f32, ${OS}>;     // (streams, 16, BN) one fragment row of results; first the Σx² partials
${o.norm && `var<workgroup> rs: array<f32, ${BM}>;      // (BM) rms scale per token`}

@compute @workgroup_size(${WG})
fn main(${builtins}, @builtin(subgroup_id) sg: u32) {
  let n0 = wid.x * BN;
  let m0 = wid.y * BM;
  let KU = params.K / 4u;
  let sm = sg / ${SGN}u; // this subgroup's tokens: sm·${FM * FR} ..
  let sn = sg % ${SGN}u; // its columns: sn·${FN * FR} ..
${accs.map((a) => `  var ${a} = AccM();`)}
  ${o.norm && `var ssq = array<f32, ${A_PER}>(); // Σx² of the x loads this thread makes (same rows every slab)`}
  // first vec4 of the weight rows this thread stages (fixed over K; tail columns clamp and are zeroed below)
  var wr: array<u32, ${B_PER}>;
  ${S === 2 && `var ur: array<u32, ${B_PER}>;`}
  for (var i = 0u; i < ${B_PER}u; i++) {
    let c = min(n0 + (lid + i * WG) / UPR, params.NC - 1u);
    wr[i] = wrow(c) * KU;
    ${S === 2 && 'ur[i] = urow(c) * KU;'}
  }
  for (var k0 = 0u; k0 < KU; k0 += UPR) {
    for (var i = 0u; i < ${A_PER}u; i++) {
      let u = lid + i * WG;
      let m = u / UPR;
      let kc = u % UPR;
      let k = k0 + kc;
      var xv = vec4<f32>(0.0);
      if (m0 + m < params.T && k < KU) {
        xv = x[(params.xRow0 + m0 + m) * KU + k];
        ${o.norm && 'ssq[i] += dot(xv, xv);\n        xv = xv * normW_ld(k);'}
      }
      let h = vec4<f16>(xv);
      let e = m * XS + kc * 4u;
      xs[e] = h.x; xs[e + 1u] = h.y; xs[e + 2u] = h.z; xs[e + 3u] = h.w;
    }
    for (var i = 0u; i < ${B_PER}u; i++) {
      let u = lid + i * WG;
      let n = u / UPR;
      let kc = u % UPR;
      let k = k0 + kc;
      var wv = vec4<f16>();
      ${S === 2 && 'var uv = vec4<f16>();'}
      if (n0 + n < params.NC && k < KU) {
        wv = w[wr[i] + k];
        ${S === 2 && 'uv = wu[ur[i] + k];'}
      }
      let e = n * XS + kc * 4u;
      ws[e] = wv.x; ws[e + 1u] = wv.y; ws[e + 2u] = wv.z; ws[e + 3u] = wv.w;
      ${S === 2 && `ws[${BN * XS}u + e] = uv.x; ws[${BN * XS}u + e + 1u] = uv.y; ws[${BN * XS}u + e + 2u] = uv.z; ws[${BN * XS}u + e + 3u] = uv.w;`}
    }
    workgroupBarrier();
    if (sg < SG) { // subgroups narrower than ${SGMAT_MAX_SUBGROUP} lanes: the first SG cover the tile, the rest idle
${R(BK / FR).map((kk) => step(kk).join('\n'))}
    }
    workgroupBarrier();
  }
  ${o.norm && wgsl`// per-token Σx²: partials of load slot u sit at scratch index u = m * UPR + kc
  for (var i = 0u; i < ${A_PER}u; i++) { os[lid + i * WG] = ssq[i]; }
  workgroupBarrier();
  if (lid < BM) {
    var s = 0.0;
    for (var kc = 0u; kc < UPR; kc++) { s += os[lid * UPR + kc]; }
    rs[lid] = inverseSqrt(s / f32(params.K) + params.eps);
  }`}
  // epilogue, one 16-token fragment row of the tile at a time (bounded workgroup memory)
  for (var r = 0u; r < BM / ${FR}u; r++) {
    workgroupBarrier(); // the previous round (or the rms pass) is done with os
    let fi = r % ${FM}u;
    if (sg < SG && sm == r / ${FM}u) {
      ${stores}
    }
    workgroupBarrier();
    for (var p = lid; p < ${FR}u * (BN / 2u); p += WG) {
      let rr = p / (BN / 2u);
      let cc = (p % (BN / 2u)) * 2u;
      let t = m0 + r * ${FR}u + rr;
      let c = n0 + cc;
      if (t < params.T && c < params.NC) {
        ${o.norm ? `let sc = rs[r * ${FR}u + rr];` : 'let sc = 1.0;'}
        let a = vec2<f32>(os[rr * BN + cc], os[rr * BN + cc + 1u]) * sc${biasS(0)};
        ${S === 2 && `let u = vec2<f32>(os[${FR * BN}u + rr * BN + cc], os[${FR * BN}u + rr * BN + cc + 1u]) * sc${biasS(1)};`}
        epi(t, c, a${S === 2 ? ', u' : ''});
      }
    }
  }
}`;
  const enables = [...new Set([...f.enables, 'f16', 'subgroups', 'chromium_experimental_subgroup_matrix'])];
  return {
    bindings,
    params: [...coreParams, ...f.params],
    workgroupSize: [WG, 1, 1],
    enables,
    directives: ['diagnostic(off, chromium.subgroup_matrix_uniformity)'],
    body,
  };
}
