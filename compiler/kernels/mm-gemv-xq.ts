/**
 * x quantized once per decode matmul for the gemv's integer dot forms ('dot1' / 'dot2', mm-gemv-dot.ts). Without it
 * every workgroup of the gemv loads and quantizes the whole x row itself (and sums x² for its rmsnorm): with 4
 * columns per workgroup that is more instructions than its weight rows take, and x (f32, plus the norm weight) is
 * read from L2 about twice as often as q4 weights are read from memory. Here one small kernel does it once and the
 * gemv reads the codes: the same codes, scales and offsets it would have computed (dotQuantizeX), so each gemv's
 * result is that of the gemv quantizing x itself but for the rms, summed in another order.
 *
 *   x   (xRow0 + T, K) f32          rows xRow0.. are read; with norm, x · normW (the rmsnorm weight) is quantized
 *   xq  (T, K/E, W/4) vec4<u32>     a chunk of E elements as W = digits · E/4 words: the first digit's words packed
 *                                   as the row words pair them (dotPieces; q4: [even 0..7 | odd 0..7 | even 8..15
 *                                   | odd 8..15] per 16), then the second digit's (q8 'dot2')
 *   xs  (T, K/E + 1) vec2<u32>      per chunk (sx: f32 bits, so: i32 bits): scale and q4's −8·Σcodes (0 for q8);
 *                                   slot K/E of a row: (inverse rms of the row, 0) with norm, else (1.0, 0)
 *
 * Grid (ceil(K/E / WG), T): a workgroup quantizes WG chunks of one row, each thread loading its chunk once; with
 * norm each workgroup also sums x² over the rest of the row (a few KB, from L2; none where the row is one
 * workgroup's, as a hidden-size row is), so no second dispatch is needed for the rms. Forms whose chunk is not whole vec4s of
 * words (q8 'dot1' with 8-element chunks) keep quantizing x in the gemv.
 */
import { kernel, ro, rw, wgsl } from '../wgsl.js';
import type { Dispatch } from '../../runtime/gpu/runner.js';
import { dotQuantizeX } from './mm-gemv-dot.js';
import { gemvShape, type GemvShape } from './mm-gemv.js';
import { isIntDot } from './mm-gemv-chunks.js';
import type { WeightDtype } from './mm-common.js';
import { GEMV_MAX_T } from './mm-core.js';

const WG = 256;

export interface QuantizeXDims {
  readonly T: number;
  readonly K: number;
  readonly xRow0?: number;
  readonly eps?: number;
}

export interface XqBuffers {
  /** (T, K/E, W/4) vec4<u32> int8 codes */
  readonly xq: GPUBuffer;
  /** (T, K/E + 1) vec2<u32> (sx, so) per chunk, then (inverse rms, 0) */
  readonly xs: GPUBuffer;
}

/** The chunking of a quantized x: E elements in `digits` int8 digits, `vecs` vec4 words per chunk. */
export interface XqForm {
  readonly wdtype: 'q8' | 'q4';
  readonly E: number;
  readonly digits: 1 | 2;
  readonly vecs: number;
}

/** Fewest elements a chunk may have (sizes the scratch: q8 chunks of 8 elements). */
const MIN_E = 8;

/** Bytes of xq / xs for up to T rows of length K in any form (at most two bytes of codes per element). */
export function xqBytes(T: number, K: number): { xq: number; xs: number } {
  return { xq: T * Math.ceil(K / 16) * 32, xs: T * (Math.ceil(K / MIN_E) + 1) * 8 };
}

/** The form a gemv of this shape reads x in when given the scratch for it, or null (it quantizes x itself). */
export function xqForm(wdtype: WeightDtype, s: GemvShape, K: number): XqForm | null {
  if ((wdtype !== 'q4' && wdtype !== 'q8') || !isIntDot(s.dq) || K % s.E !== 0 || s.E < MIN_E) return null;
  const digits = s.dq === 'dot1' ? 1 : 2;
  const words = (digits * s.E) / 4;
  return words % 4 === 0 ? { wdtype, E: s.E, digits, vecs: words / 4 } : null;
}

/** Binds the quantized x in place of x (and normW) in a gemv's buffers. */
export function bindXq(buffers: Record<string, GPUBuffer>, b: XqBuffers): void {
  delete buffers.x;
  delete buffers.normW;
  buffers.xq = b.xq;
  buffers.xs = b.xs;
}

/**
 * The quantizer dispatch a decode matmul needs before its gemv(s), or null where the gemv reads x itself (no integer
 * dot form, T above the gemv's, no scratch given). `N`: the gemv's columns (its shape's dq and E do not depend on them).
 */
export function quantizeXFor(
  o: { readonly wdtype: WeightDtype; readonly intDot?: boolean; readonly norm: boolean; readonly streams: number },
  d: QuantizeXDims & { readonly N: number },
  b: { readonly x: GPUBuffer; readonly normW?: GPUBuffer; readonly xq?: XqBuffers },
): Dispatch | null {
  if (!b.xq || d.T > GEMV_MAX_T) return null;
  const f = xqForm(o.wdtype, gemvShape(o.wdtype, d.T, o.streams, d.K, d.N, o.intDot), d.K);
  return f ? quantizeX(f, o.norm, d, { x: b.x, normW: b.normW, ...b.xq }) : null;
}

export function quantizeX(f: XqForm, norm: boolean, d: QuantizeXDims, b: XqBuffers & { readonly x: GPUBuffer; readonly normW?: GPUBuffer }): Dispatch {
  if (d.K % f.E !== 0) throw new Error(`quantize_x: K=${d.K} is not a multiple of ${f.E}`);
  if (norm && !b.normW) throw new Error('quantize_x: norm needs normW');
  const need = xqBytes(d.T, d.K);
  if (b.xq.size < need.xq || b.xs.size < need.xs) throw new Error(`quantize_x: T=${d.T} K=${d.K} needs ${need.xq} + ${need.xs} bytes of xq / xs`);
  const spec = kernel({ op: 'quantize_x', norm, wg: WG, w: f.wdtype, e: f.E, d: f.digits }, () => source(f, norm));
  const buffers: Record<string, GPUBuffer> = { x: b.x, xq: b.xq, xs: b.xs };
  if (norm) buffers.normW = b.normW!;
  const KC = d.K / f.E;
  return { kernel: spec, buffers, params: { K: d.K, xRow0: d.xRow0 ?? 0, eps: d.eps ?? 1e-6 }, workgroups: [Math.ceil(KC / WG), d.T, 1] };
}

function source(f: XqForm, norm: boolean) {
  const XV = f.E / 4;
  const xs = Array.from({ length: XV }, (_, j) => `x0_${j}`);
  const words = [...Array.from({ length: XV }, (_, i) => `qx0_${i}`), ...(f.digits === 2 ? Array.from({ length: XV }, (_, i) => `ql0_${i}`) : [])];
  return {
    bindings: [
      ro('x', 'array<vec4<f32>>'), // (xRow0 + T, K) f32
      ...(norm ? [ro('normW', 'array<vec4<f32>>')] : []), // (K) f32
      rw('xq', 'array<vec4<u32>>'), // (T, K/E, W/4) packed int8 codes
      rw('xs', 'array<vec2<u32>>'), // (T, K/E + 1) (sx, so), then (inverse rms, 0)
    ],
    params: [['K', 'u32'], ['xRow0', 'u32'], ['eps', 'f32']] as const,
    workgroupSize: [WG, 1, 1] as [number, number, number],
    enables: [],
    body: wgsl`
const WG = ${WG}u;
${norm && `var<workgroup> red: array<f32, ${WG}>;`}

@compute @workgroup_size(${WG})
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>) {
  let t = wg.y;
  let KC = params.K / ${f.E}u;
  let xb = (params.xRow0 + t) * (params.K / 4u);
  let k = wg.x * WG + lid;
  let kc = min(k, KC - 1u); // threads past the row load its last chunk and write nothing
${xs.map((_, j) => `  let xr${j} = x[xb + kc * ${XV}u + ${j}u];`)}
  ${norm ? `// Σx² over the whole row: this thread's chunk (already loaded), then the chunks of the row's other workgroups
  var ss = select(0.0, ${xs.map((_, j) => `dot(xr${j}, xr${j})`).join(' + ')}, k < KC);
  for (var c = lid; c < KC; c += WG) {
    if (c / WG == wg.x) { continue; }
    for (var j = 0u; j < ${XV}u; j++) { let v = x[xb + c * ${XV}u + j]; ss += dot(v, v); }
  }
  red[lid] = ss;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (lid < s) { red[lid] += red[lid + s]; }
    workgroupBarrier();
  }
  let rs = inverseSqrt(red[0] / f32(params.K) + params.eps);` : 'let rs = 1.0;'}
  if (k == 0u) { xs[t * (KC + 1u) + KC] = vec2<u32>(bitcast<u32>(rs), 0u); }
  if (k >= KC) { return; }
${xs.map((x, j) => `  let ${x} = xr${j}${norm ? ` * normW[k * ${XV}u + ${j}u]` : ''};`)}
${dotQuantizeX(f.wdtype, 0, xs, f.digits).map((l) => `  ${l}`)}
${Array.from({ length: f.vecs }, (_, v) => `  xq[(t * KC + k) * ${f.vecs}u + ${v}u] = vec4<u32>(${words.slice(4 * v, 4 * v + 4).join(', ')});`)}
  xs[t * (KC + 1u) + k] = vec2<u32>(bitcast<u32>(sx0), ${f.wdtype === 'q4' ? 'bitcast<u32>(so0)' : '0u'});
}`,
  };
}
