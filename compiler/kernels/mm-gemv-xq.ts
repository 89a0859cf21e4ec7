/**
 * x quantized once per decode matmul for the q4 gemv's integer dot form ('dot1', mm-gemv-dot.ts). Without it every
 * workgroup of the gemv loads and quantizes the whole x row itself (and sums x² for its rmsnorm): with 4 columns per
 * workgroup that is more instructions than its weight rows take, and x (f32, plus the norm weight) is read from L2
 * about twice as often as the q4 weights are read from memory. Here one small kernel does it once and the gemv
 * reads 20 bytes per chunk of 16 elements: the same codes, scales and offsets it would have computed, so the
 * results are bit for bit those of the gemv quantizing x itself.
 *
 *   x   (xRow0 + T, K) f32           rows xRow0.. are read; with norm, x · normW (the rmsnorm weight) is quantized
 *   xq  (T, K/16) vec4<u32>           a chunk's 16 int8 codes, packed as q4 row words pair them (dotPieces):
 *                                     [even elements 0..7 | odd 0..7 | even 8..15 | odd 8..15]
 *   xs  (T, K/16 + 1) vec2<u32>       per chunk (sx: f32 bits, so: i32 bits): scale amax/127 and −8·Σcodes;
 *                                     slot K/16 of a row: (inverse rms of the row, 0) with norm, else (1.0, 0)
 *
 * Grid (ceil(K/16 / WG), T): a workgroup quantizes WG chunks of one row; with norm each first sums x² over the
 * whole row (a few KB, from L2), so no second dispatch is needed for the rms.
 */
import { kernel, ro, rw, wgsl } from '../wgsl.js';
import type { Dispatch } from '../../runtime/gpu/runner.js';
import { dotQuantizeX } from './mm-gemv-dot.js';
import { gemvShape, XQ_CHUNK, type GemvShape } from './mm-gemv.js';
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
  /** (T, K/16) vec4<u32> int8 codes */
  readonly xq: GPUBuffer;
  /** (T, K/16 + 1) vec2<u32> (sx, so) per chunk, then (inverse rms, 0) */
  readonly xs: GPUBuffer;
}

/** Bytes of the xq / xs buffers for up to T rows of length K. */
export function xqBytes(T: number, K: number): { xq: number; xs: number } {
  const KC = Math.ceil(K / XQ_CHUNK);
  return { xq: T * KC * 16, xs: T * (KC + 1) * 8 };
}

/** Whether a gemv of this shape reads x quantized beforehand when given the scratch for it. */
export const takesXq = (wdtype: WeightDtype, s: GemvShape, K: number) => wdtype === 'q4' && s.dq === 'dot1' && s.E === XQ_CHUNK && K % XQ_CHUNK === 0;

/** Binds the quantized x in place of x (and normW) in a gemv's buffers. */
export function bindXq(buffers: Record<string, GPUBuffer>, b: XqBuffers): void {
  delete buffers.x;
  delete buffers.normW;
  buffers.xq = b.xq;
  buffers.xs = b.xs;
}

/**
 * The quantizer dispatch a decode matmul needs before its gemv(s), or null where the gemv reads x itself (not q4
 * 'dot1', T above the gemv's, no scratch given). `N`: the gemv's columns (its shape's dq and E do not depend on them).
 */
export function quantizeXFor(
  o: { readonly wdtype: WeightDtype; readonly intDot?: boolean; readonly norm: boolean; readonly streams: number },
  d: QuantizeXDims & { readonly N: number },
  b: { readonly x: GPUBuffer; readonly normW?: GPUBuffer; readonly xq?: XqBuffers },
): Dispatch | null {
  if (!b.xq || d.T > GEMV_MAX_T || !takesXq(o.wdtype, gemvShape(o.wdtype, d.T, o.streams, d.K, d.N, o.intDot), d.K)) return null;
  return quantizeX({ norm: o.norm }, d, { x: b.x, normW: b.normW, ...b.xq });
}

export function quantizeX(o: { readonly norm: boolean }, d: QuantizeXDims, b: XqBuffers & { readonly x: GPUBuffer; readonly normW?: GPUBuffer }): Dispatch {
  if (d.K % XQ_CHUNK !== 0) throw new Error(`quantize_x: K=${d.K} is not a multiple of ${XQ_CHUNK}`);
  if (o.norm && !b.normW) throw new Error('quantize_x: norm needs normW');
  const need = xqBytes(d.T, d.K);
  if (b.xq.size < need.xq || b.xs.size < need.xs) throw new Error(`quantize_x: T=${d.T} K=${d.K} needs ${need.xq} + ${need.xs} bytes of xq / xs`);
  const spec = kernel({ op: 'quantize_x', norm: o.norm, wg: WG }, () => source(o.norm));
  const buffers: Record<string, GPUBuffer> = { x: b.x, xq: b.xq, xs: b.xs };
  if (o.norm) buffers.normW = b.normW!;
  const KC = d.K / XQ_CHUNK;
  return { kernel: spec, buffers, params: { K: d.K, xRow0: d.xRow0 ?? 0, eps: d.eps ?? 1e-6 }, workgroups: [Math.ceil(KC / WG), d.T, 1] };
}

function source(norm: boolean) {
  const XV = XQ_CHUNK / 4; // 4: the packing below is written for 16-element chunks
  const xs = Array.from({ length: XV }, (_, j) => `x0_${j}`);
  return {
    bindings: [
      ro('x', 'array<vec4<f32>>'), // (xRow0 + T, K) f32
      ...(norm ? [ro('normW', 'array<vec4<f32>>')] : []), // (K) f32
      rw('xq', 'array<vec4<u32>>'), // (T, K/16) packed int8 codes
      rw('xs', 'array<vec2<u32>>'), // (T, K/16 + 1) (sx, so), then (inverse rms, 0)
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
  let KC = params.K / ${XQ_CHUNK}u;
  let xb = (params.xRow0 + t) * (params.K / 4u);
  ${norm ? `// Σx² over the whole row, the same in every workgroup of the row
  var ss = 0.0;
  for (var i = lid; i < params.K / 4u; i += WG) { let v = x[xb + i]; ss += dot(v, v); }
  red[lid] = ss;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (lid < s) { red[lid] += red[lid + s]; }
    workgroupBarrier();
  }
  let rs = inverseSqrt(red[0] / f32(params.K) + params.eps);` : 'let rs = 1.0;'}
  let k = wg.x * WG + lid;
  if (k == 0u) { xs[t * (KC + 1u) + KC] = vec2<u32>(bitcast<u32>(rs), 0u); }
  if (k >= KC) { return; }
${xs.map((x, j) => `  let ${x} = x[xb + k * ${XV}u + ${j}u]${norm ? ` * normW[k * ${XV}u + ${j}u]` : ''};`)}
${dotQuantizeX('q4', 0, xs, 1).map((l) => `  ${l}`)}
  xq[t * KC + k] = vec4<u32>(qx0_0, qx0_1, qx0_2, qx0_3);
  xs[t * (KC + 1u) + k] = vec2<u32>(bitcast<u32>(sx0), bitcast<u32>(so0));
}`,
  };
}
