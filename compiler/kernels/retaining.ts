/**
 * Locret retaining head, second half: scores[h, slot0 + t] = Σ_j fc2[h, j] · hid[t, j] for the step's T tokens and
 * KV heads, where hid = silu(pre · fc1ᵀ) was written by the main matmul with its 'silu' epilogue (lower.ts emits
 * the pair). The big fc1 product thus runs on the tiled (or tensor-core) matmul with a full grid of workgroups;
 * what is left here is T × KV dot products of length `hidden` (1024): tiny, but it has to be parallel over tokens.
 *
 * One workgroup of 64 threads per token: each thread reads a strided quarter-row of hid (coalesced vec4 loads)
 * and keeps KV partial dots in registers, then one tree reduction in workgroup memory per head. fc2 (KV × 1024)
 * is read by every workgroup and stays in cache.
 */
import { kernel, rw, wgsl } from '../wgsl.js';
import type { Dispatch } from '../../runtime/gpu/runner.js';
import { assertDims, builtins, f32Loader, foldGrid, linearWg, needsF16, weightLoader, type WeightDtype } from './mm-common.js';

export interface RetainingScoreDims {
  readonly T: number;
  readonly KV: number;
  /** hidden units of the head (1024); a multiple of 4 */
  readonly hidden: number;
  readonly slot0: number;
  readonly capacity: number;
}

export interface RetainingScoreBuffers {
  /** (≥ T, hidden) f32 silu(pre · fc1ᵀ) */
  readonly hid: GPUBuffer;
  /** (KV, hidden) in wdtype */
  readonly fc2: GPUBuffer;
  /** (KV, capacity) f32, writes [h, slot0 + t] */
  readonly scores: GPUBuffer;
}

const WG = 64;

export function retainingScores(o: { wdtype: WeightDtype }, d: RetainingScoreDims, b: RetainingScoreBuffers): Dispatch {
  const { T, KV, hidden, slot0, capacity } = d;
  assertDims('retainingScores', { T, KV, hidden, slot0, capacity });
  if (T === 0 || KV === 0 || hidden === 0) throw new Error('retainingScores: empty shape');
  if (hidden % 4 !== 0) throw new Error(`retainingScores: hidden ${hidden} must be a multiple of 4`);
  // (KV, WG) f32 partials must fit the 16 KiB of workgroup memory WebGPU guarantees
  if (KV * WG * 4 > 16384) throw new Error(`retainingScores: ${KV} KV heads exceed the ${16384 / (WG * 4)} this kernel reduces at once`);
  if (slot0 + T > capacity) throw new Error(`retainingScores: slots ${slot0}..${slot0 + T} exceed capacity ${capacity}`);
  const spec = kernel({ op: 'retaining_scores', wdtype: o.wdtype, kv: KV, hid: hidden }, () => {
    const hid = f32Loader('hid', 4, '(T, hidden) silu(pre · fc1ᵀ)');
    const fc2 = weightLoader('fc2', o.wdtype, 4, '(KV, hidden)');
    return {
      bindings: [
        hid.binding,
        ...fc2.bindings, // never quantized: runtime/weights.ts keeps retaining heads f16 / f32
        rw('scores', 'array<f32>'), // (KV, capacity) retention scores
      ],
      params: [['T', 'u32'], ['slot0', 'u32'], ['cap', 'u32']],
      workgroupSize: [WG, 1, 1],
      enables: needsF16(o.wdtype) ? ['f16'] : [],
      body: wgsl`${hid.fn}
${fc2.fn}
const WG = ${WG}u;
const KV = ${KV}u;
const HU = ${hidden / 4}u; // vec4 chunks per row
var<workgroup> red: array<f32, ${KV * WG}>; // (KV, WG) partial dots

@compute @workgroup_size(${WG})
fn main(${builtins}) {
  let t = ${linearWg};
  if (t >= params.T) { return; } // uniform: the whole workgroup is one token
  var acc = array<f32, ${KV}>(); // explicit zero: some drivers skip zeroing uninitialized vars
  for (var i = lid; i < HU; i += WG) {
    let hv = hid_ld(t * HU + i);
    for (var h = 0u; h < KV; h++) { acc[h] += dot(hv, fc2_ld(h * HU + i)); }
  }
  for (var h = 0u; h < KV; h++) { red[h * WG + lid] = acc[h]; }
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (lid < s) {
      for (var h = 0u; h < KV; h++) { red[h * WG + lid] += red[h * WG + lid + s]; }
    }
    workgroupBarrier();
  }
  for (var h = lid; h < KV; h += WG) { scores[h * params.cap + params.slot0 + t] = red[h * WG]; }
}`,
    };
  });
  return { kernel: spec, buffers: { ...b }, params: { T, slot0, cap: capacity }, workgroups: foldGrid(T) };
}
