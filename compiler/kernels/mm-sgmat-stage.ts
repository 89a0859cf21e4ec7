/**
 * The K-slab staging of the tensor-core skeleton (mm-sgmat.ts), generated unrolled so every per-thread value is a
 * named register (no dynamically indexed private arrays, which drivers may place in local memory):
 *
 *   fetch   global → registers: A_PER vec4<f32> of x (vec4<f16> where x is stored as f16), B_PER vec4<f16> of
 *           weight rows per stream, masked to zero
 *           past T, NC and K; q8 / q4 weights are dequantized on the way (`w_ld`, 4 elements and their group's
 *           scale per load), so the registers, the slabs and the products are the same for every weight dtype
 *   stage   registers → workgroup memory as f16 (x · normW; Σx² of the f32 x accumulated on the way)
 *
 * Two x layouts (the variant's `lean`):
 *   spread  load u = lid + i·WG covers row u / UPR, vec4 u % UPR: one warp load reads 4 whole 128-byte rows, but
 *           a thread meets A_PER rows, so the norm keeps A_PER Σx² partials and the weight-row indices are kept
 *           in registers too
 *   lean    thread lid owns row lid / TPR (TPR = WG / BM threads per row), vec4s lid % TPR + TPR·i: one Σx²
 *           register, and weight-row indices are recomputed per slab (a few integer ops) instead of held
 * With `prefetch` the next slab's fetch is issued before the current slab's products, so its global latency
 * hides behind the tensor-core work (registers hold one slab in flight).
 */
import { wgsl } from '../wgsl.js';

export interface StageShape {
  readonly BM: number;
  readonly BN: number;
  readonly WG: number;
  /** vec4 loads per staged row (BK / 4) */
  readonly UPR: number;
  /** staged row stride in halves */
  readonly XS: number;
  readonly streams: 1 | 2;
  readonly norm: boolean;
  readonly lean: boolean;
  /** weights read through the dequantizing loaders `w_ld` / `wu_ld` (q8 / q4) instead of as native vec4<f16> */
  readonly quant: boolean;
  /** x stored as f16: fetched as vec4<f16> and staged as it is (no norm prologue) */
  readonly halfX: boolean;
}

const R = (n: number) => Array.from({ length: n }, (_, i) => i);

export function stagePlan(s: StageShape) {
  const A_PER = (s.BM * s.UPR) / s.WG;
  const B_PER = (s.BN * s.UPR) / s.WG;
  const TPR = s.WG / s.BM;
  if (!Number.isInteger(A_PER) || !Number.isInteger(B_PER) || A_PER < 1 || B_PER < 1)
    throw new Error(`sgmat staging: ${s.BM}×${s.BN} slabs do not split over ${s.WG} threads`);
  if (s.halfX && s.norm) throw new Error('sgmat staging: the norm prologue reads f32 x');
  const XT = s.halfX ? 'vec4<f16>' : 'vec4<f32>';
  if (s.lean && (!Number.isInteger(TPR) || s.UPR % TPR !== 0)) throw new Error(`sgmat staging: lean needs WG / BM (${s.WG}/${s.BM}) to divide ${s.UPR}`);
  // x load i of this thread: row m, vec4 kc of the slab
  const xAt = (i: number) =>
    s.lean ? { m: `(lid / ${TPR}u)`, kc: `(lid % ${TPR}u + ${TPR * i}u)` } : { m: `((lid + ${i * s.WG}u) / UPR)`, kc: `((lid + ${i * s.WG}u) % UPR)` };
  const wAt = (i: number) => ({ n: `((lid + ${i * s.WG}u) / UPR)`, kc: `((lid + ${i * s.WG}u) % UPR)` });
  const S = s.streams;
  // vec4 `i` of a weight binding as f16 (q8 / q4 through mm-common.ts `quantHalfLoader`): a dequantized value is at
  // most its group's largest |weight| (an f16 scale times the quant that maps to it, runtime/quant.ts), so f16 holds it
  const wv = (name: 'w' | 'wu', i: string) => (s.quant ? `${name}_ldh(${i})` : `${name}[${i}]`);

  /** declarations before the K loop: fetch registers, Σx² partials, (spread) weight-row starts */
  const decls = wgsl`${R(A_PER).map((i) => `  var xr${i} = ${XT}(); // x load ${i} of the slab in flight`)}
${R(B_PER).map((i) => `  var wq${i} = vec4<f16>();${S === 2 ? ` var uq${i} = vec4<f16>();` : ''}`)}
${s.norm && (s.lean ? '  var ssq = 0.0; // Σx² of this thread\'s token row (its share of the vec4s)' : R(A_PER).map((i) => `  var ssq${i} = 0.0; // Σx² of x load slot ${i} (same row every slab)`))}
${!s.lean && R(B_PER).map((i) => {
    const c = `min(n0 + ${wAt(i).n}, params.NC - 1u)`;
    return `  let wr${i} = wrow(${c}) * KU;${S === 2 ? ` let ur${i} = urow(${c}) * KU;` : ''} // first vec4 of the staged weight rows (tail columns clamp)`;
  })}`;

  /** global → registers for the slab starting at vec4 `k0` (an expression) */
  const fetch = (k0: string) => wgsl`${R(A_PER).map((i) => {
    const { m, kc } = xAt(i);
    return `  { let m = ${m}; let k = ${k0} + ${kc};
    xr${i} = select(${XT}(), x[(params.xRow0 + min(m0 + m, params.T - 1u)) * KU + min(k, KU - 1u)], m0 + m < params.T && k < KU); }`;
  })}
${R(B_PER).map((i) => {
    const { n, kc } = wAt(i);
    const c = `min(n0 + n, params.NC - 1u)`;
    const rowW = s.lean ? `wrow(${c}) * KU` : `wr${i}`;
    const rowU = s.lean ? `urow(${c}) * KU` : `ur${i}`;
    return `  { let n = ${n}; let k = ${k0} + ${kc}; let ok = n0 + n < params.NC && k < KU; let kk = min(k, KU - 1u);
    wq${i} = select(vec4<f16>(), ${wv('w', `${rowW} + kk`)}, ok);${S === 2 ? `\n    uq${i} = select(vec4<f16>(), ${wv('wu', `${rowU} + kk`)}, ok);` : ''} }`;
  })}`;

  /** registers → xs / ws for the slab starting at vec4 `k0`, into slab set `set` (an expression; '' when single) */
  const stage = (k0: string, set: string) => {
    const xo = set ? ` + ${set} * ${s.BM * s.XS}u` : '';
    const wo = set ? ` + ${set} * ${S * s.BN * s.XS}u` : '';
    return wgsl`${R(A_PER).map((i) => {
    const { m, kc } = xAt(i);
    const norm = s.norm ? `\n    ${s.lean ? 'ssq' : `ssq${i}`} += dot(xv, xv);\n    xv = xv * normW_ld(min(${k0} + kc, KU - 1u)); // zero past K anyway` : '';
    return `  { let m = ${m}; let kc = ${kc}; var xv = xr${i};${norm}
    let h = ${s.halfX ? 'xv' : 'vec4<f16>(xv)'};
    let e = m * XS + kc * 4u${xo};
    xs[e] = h.x; xs[e + 1u] = h.y; xs[e + 2u] = h.z; xs[e + 3u] = h.w; }`;
  })}
${R(B_PER).map((i) => {
    const { n, kc } = wAt(i);
    return `  { let e = ${n} * XS + ${kc} * 4u${wo};
    ws[e] = wq${i}.x; ws[e + 1u] = wq${i}.y; ws[e + 2u] = wq${i}.z; ws[e + 3u] = wq${i}.w;${S === 2 ? `
    ws[${s.BN * s.XS}u + e] = uq${i}.x; ws[${s.BN * s.XS}u + e + 1u] = uq${i}.y; ws[${s.BN * s.XS}u + e + 2u] = uq${i}.z; ws[${s.BN * s.XS}u + e + 3u] = uq${i}.w;` : ''} }`;
  })}`;
  };

  /** after the K loop: per-token rinv into rs (uses os as scratch; needs OS ≥ BM·UPR spread, ≥ WG lean) */
  const rms = wgsl`  // per-token Σx²: partials to os, then one thread per token sums its row's
${s.lean ? '  os[lid] = ssq; // row lid / TPR, part lid % TPR' : R(A_PER).map((i) => `  os[lid + ${i * s.WG}u] = ssq${i}; // slot u = m · UPR + kc`)}
  workgroupBarrier();
  for (var m = lid; m < BM; m += WG) {
    var q = 0.0;
    for (var j = 0u; j < ${s.lean ? TPR : s.UPR}u; j++) { q += os[m * ${s.lean ? TPR : s.UPR}u + j]; }
    rs[m] = inverseSqrt(q / f32(params.K) + params.eps);
  }`;
  const scratchNeeded = s.lean ? s.WG : s.BM * s.UPR;
  return { A_PER, B_PER, decls, fetch, stage, rms, scratchNeeded };
}
