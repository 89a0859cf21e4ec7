/**
 * Rotates the cached keys a prefill chunk will see, once per layer, into an f16 buffer laid out like an f16 cache:
 *
 *   kRot: (KV, capacity, D) f16, read as D/4 vec2<u32> quads per slot; slots [0, kvEnd) written, the rest untouched
 *
 * Keys are cached before RoPE (their position can change at eviction), so an attention kernel rotates each key when
 * it loads it. The prefill attention kernels load every key once per block of queries (32 to 128 blocks per KV head
 * for a 1024-token chunk), and the rotation's position, rope-table and partner-quad loads made key staging the
 * slowest part of a tile; rotating once here (one read of K, one f16 write) lets them stage keys with plain loads
 * (the tensor-core kernel always; the f32 kernel over f16 / int8 caches).
 * Values are the cache's own rounding (f16 or int8 dequantized, then RoPE in f32, rounded to f16 once), exactly what
 * the staging fed the tensor cores before.
 */
import { kernel, ro, rw, wgsl } from '../wgsl.js';
import type { Dispatch } from '../../runtime/gpu/runner.js';
import { cacheQuadType, checkHeadDims, keyFns, type CacheDtype } from './attn-common.js';

export interface RotateKeysOpts {
  readonly cacheDtype: CacheDtype;
  readonly numKvHeads: number;
  readonly headDim: number;
  readonly rotaryDim: number;
}
export interface RotateKeysBuffers {
  readonly kCache: GPUBuffer; // (KV, capacity, D) keys before RoPE, cache dtype
  readonly kpos: GPUBuffer; // (KV, capacity) u32
  readonly rope: GPUBuffer; // (positions, rotaryDim/2) vec2<f32>(cos, sin)
  readonly kRot: GPUBuffer; // (KV, capacity, D) f16, see above
}

const WG = 256;
const MAX_X = 65535;

function rotateKernel(o: RotateKeysOpts) {
  const DQ = o.headDim / 4;
  return kernel({ op: 'rotate_keys', cache: o.cacheDtype, D: o.headDim }, () => ({
    bindings: [
      ro('kCache', cacheQuadType(o.cacheDtype)), // (KV, capacity, D) before RoPE
      ro('kpos', 'array<u32>'), // (KV, capacity)
      ro('rope', 'array<vec4<f32>>'), // (positions, rotaryDim/2) (cos, sin) pairs, two per vec4
      rw('kRot', 'array<vec2<u32>>'), // (KV, capacity, D) f16 quads, rotated
    ],
    params: [['kvEnd', 'u32'], ['capacity', 'u32'], ['rot', 'u32'], ['KV', 'u32']],
    workgroupSize: [WG, 1, 1],
    body: wgsl`
const DQ = ${DQ}u;
${keyFns(o.cacheDtype, false)}

@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let e = gid.x + gid.y * nwg.x * ${WG}u; // (g, s, j) flattened over KV × kvEnd × DQ
  if (e >= params.KV * params.kvEnd * DQ) { return; }
  let j = e % DQ;
  let s = (e / DQ) % params.kvEnd;
  let g = e / (DQ * params.kvEnd);
  let x = rotK(g, s, j);
  kRot[(g * params.capacity + s) * DQ + j] = vec2<u32>(pack2x16float(x.xy), pack2x16float(x.zw));
}`,
  }));
}

/** One dispatch rotating slots [0, kvEnd) of every KV head of one layer's keys into kRot. */
export function rotateKeys(o: RotateKeysOpts, d: { kvEnd: number; capacity: number }, b: RotateKeysBuffers): Dispatch {
  checkHeadDims(o.headDim, o.rotaryDim);
  if (d.kvEnd < 1 || d.kvEnd > d.capacity) throw new Error(`rotateKeys: kvEnd ${d.kvEnd} outside 1..capacity ${d.capacity}`);
  const need = o.numKvHeads * d.capacity * o.headDim * 2;
  if (b.kRot.size < need) throw new Error(`rotateKeys: kRot holds ${b.kRot.size} bytes, (KV, capacity, D) f16 needs ${need}`);
  const groups = Math.ceil((o.numKvHeads * d.kvEnd * (o.headDim / 4)) / WG);
  const x = Math.min(groups, MAX_X);
  return {
    kernel: rotateKernel(o),
    buffers: { kCache: b.kCache, kpos: b.kpos, rope: b.rope, kRot: b.kRot },
    params: { kvEnd: d.kvEnd, capacity: d.capacity, rot: o.rotaryDim, KV: o.numKvHeads },
    workgroups: [x, Math.ceil(groups / x)],
  };
}

/** Bytes of the rotated-keys buffer for a cache of `capacity` slots. */
export function rotatedKeysBytes(o: Pick<RotateKeysOpts, 'numKvHeads' | 'headDim'>, capacity: number): number {
  return o.numKvHeads * capacity * o.headDim * 2;
}

/**
 * The q and key/value bindings of a prefill attention kernel (attention.ts, attention-sgmat.ts) and the dispatches
 * that must run before it: with `kRot`, the rotation of the keys the chunk sees into it (rotated keys and values
 * bound); without, none (the cache, positions and rope table bound, keys rotated while loaded).
 */
export function attentionKeyInputs(
  o: RotateKeysOpts,
  d: { base: number; T: number; capacity: number },
  b: { q: GPUBuffer; kCache: GPUBuffer; vCache: GPUBuffer; kpos: GPUBuffer; rope: GPUBuffer; kRot?: GPUBuffer },
): { buffers: Record<string, GPUBuffer>; pre: Dispatch[] } {
  if (!b.kRot) return { buffers: { q: b.q, kCache: b.kCache, vCache: b.vCache, kpos: b.kpos, rope: b.rope }, pre: [] };
  return {
    buffers: { q: b.q, kRot: b.kRot, vCache: b.vCache },
    pre: [rotateKeys(o, { kvEnd: d.base + d.T, capacity: d.capacity }, { kCache: b.kCache, kpos: b.kpos, rope: b.rope, kRot: b.kRot })],
  };
}
