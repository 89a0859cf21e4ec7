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
import { checkInt8HeadDim, int8Fns } from './kv-int8.js';

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

/** WGSL opening `main`: thread e owns item (g, s, i) of KV × kvEnd × n, flattened; threads past the end return. */
const flatItem = (n: string, i: string) => `let e = gid.x + gid.y * nwg.x * ${WG}u; // (g, s, ${i}) flattened over KV × kvEnd × ${n}
  if (e >= params.KV * params.kvEnd * ${n}) { return; }
  let ${i} = e % ${n};
  let s = (e / ${n}) % params.kvEnd;
  let g = e / (${n} * params.kvEnd);`;

/** One thread per item, WG per workgroup, the workgroups folded into 2D under the per-dimension limit. */
function flatGrid(items: number): [number, number] {
  const groups = Math.ceil(items / WG);
  const x = Math.min(groups, MAX_X);
  return [x, Math.ceil(groups / x)];
}

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
  ${flatItem('DQ', 'j')}
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
  return {
    kernel: rotateKernel(o),
    buffers: { kCache: b.kCache, kpos: b.kpos, rope: b.rope, kRot: b.kRot },
    params: { kvEnd: d.kvEnd, capacity: d.capacity, rot: o.rotaryDim, KV: o.numKvHeads },
    workgroups: flatGrid(o.numKvHeads * d.kvEnd * (o.headDim / 4)),
  };
}

/**
 * Rotates slots [0, kvEnd) of one layer's key cache IN PLACE, each key by RoPE at its position: once a prompt is
 * in, decode only appends, positions stop moving and the cache can hold rotated keys, so decode attention reads keys
 * with plain loads (no position, rope-table or partner-quad loads per key: 1.74 → 1.30 ms per 8B step at 16K slots
 * on an H200). f32 / f16: a thread owns one frequency quad pair (f, f + rot/8) of one key, so it reads and writes
 * only its own words. int8 rows are quantized again (rotateInt8Rows).
 */
export function rotateCacheKeys(o: RotateKeysOpts, d: { kvEnd: number; capacity: number }, b: { kCache: GPUBuffer; kpos: GPUBuffer; rope: GPUBuffer }): Dispatch {
  checkHeadDims(o.headDim, o.rotaryDim);
  if (d.kvEnd < 1 || d.kvEnd > d.capacity) throw new Error(`rotateCacheKeys: kvEnd ${d.kvEnd} outside 1..capacity ${d.capacity}`);
  if (o.cacheDtype === 'int8') return rotateInt8Rows(o, d, b);
  const HQ = o.rotaryDim / 8;
  const k = kernel({ op: 'rotate_cache_keys', cache: o.cacheDtype, D: o.headDim, rot: o.rotaryDim }, () => ({
    bindings: [
      rw('kCache', cacheQuadType(o.cacheDtype)), // (KV, capacity, D): before RoPE in, rotated out
      ro('kpos', 'array<u32>'), // (KV, capacity)
      ro('rope', 'array<vec4<f32>>'), // (positions, rotaryDim/2) (cos, sin) pairs, two per vec4
    ],
    params: [['kvEnd', 'u32'], ['capacity', 'u32'], ['KV', 'u32']],
    workgroupSize: [WG, 1, 1],
    body: wgsl`
const DQ = ${o.headDim / 4}u;
const HQ = ${HQ}u; // frequency quads: quad f pairs with quad f + HQ

fn ld(i: u32) -> vec4<f32> {
  ${o.cacheDtype === 'f16' ? 'return vec4<f32>(unpack2x16float(kCache[i].x), unpack2x16float(kCache[i].y));' : 'return kCache[i];'}
}
fn st(i: u32, x: vec4<f32>) {
  ${o.cacheDtype === 'f16' ? 'kCache[i] = vec2<u32>(pack2x16float(x.xy), pack2x16float(x.zw));' : 'kCache[i] = x;'}
}

@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  ${flatItem('HQ', 'f')}
  let row = (g * params.capacity + s) * DQ;
  let r = (kpos[g * params.capacity + s] * HQ * 4u + f * 4u) / 2u; // rope vec4 of dims 4f .. 4f+3
  let a = rope[r];
  let b = rope[r + 1u];
  let c = vec4<f32>(a.x, a.z, b.x, b.z);
  let sn = vec4<f32>(a.y, a.w, b.y, b.w);
  let x = ld(row + f);
  let y = ld(row + f + HQ);
  st(row + f, x * c - y * sn); // HF rotate_half, low half
  st(row + f + HQ, y * c + x * sn);
}`,
  }));
  return { kernel: k, buffers: b, params: { kvEnd: d.kvEnd, capacity: d.capacity, KV: o.numKvHeads }, workgroups: flatGrid(o.numKvHeads * d.kvEnd * HQ) };
}

/**
 * The int8 form of rotateCacheKeys: a thread owns a whole row (one key of one KV head), since the rotated row needs
 * its own scale. Pass 1 finds max |rotated value| over the row, pass 2 rewrites every code with the new scale
 * (max / 127) and then the scale word: the key is rounded to int8 twice (at insertion, and here), which stays well
 * inside what one rounding of the values costs attention (test/kernels-attn-decode.test.ts bounds both). It runs
 * once per prompt, so one row per thread (strided words, each read twice) is not worth a cooperative layout.
 */
function rotateInt8Rows(o: RotateKeysOpts, d: { kvEnd: number; capacity: number }, b: { kCache: GPUBuffer; kpos: GPUBuffer; rope: GPUBuffer }): Dispatch {
  checkInt8HeadDim(o.headDim);
  const DQ = o.headDim / 4;
  const HQ = o.rotaryDim / 8;
  const k = kernel({ op: 'rotate_cache_keys', cache: 'int8', D: o.headDim, rot: o.rotaryDim }, () => ({
    bindings: [
      rw('kCache', 'array<u32>'), // (KV, capacity, D/4 + 1) int8 rows (kv-int8.ts): before RoPE in, rotated out
      ro('kpos', 'array<u32>'), // (KV, capacity)
      ro('rope', 'array<vec4<f32>>'), // (positions, rotaryDim/2) (cos, sin) pairs, two per vec4
    ],
    params: [['kvEnd', 'u32'], ['capacity', 'u32'], ['KV', 'u32']],
    workgroupSize: [WG, 1, 1],
    body: wgsl`
const DQ = ${DQ}u;
const HQ = ${HQ}u; // frequency quads: quad f pairs with quad f + HQ; quads from 2·HQ on pass through
${int8Fns}

// rotated quads f (low half) and f + HQ (high half) of the row starting at word at, with the rope row of position p
fn rotPair(at: u32, p: u32, f: u32, sc: f32) -> array<vec4<f32>, 2> {
  let r = p * HQ * 2u + f * 2u; // rope vec4s of dims 4f .. 4f+3
  let a = rope[r];
  let b = rope[r + 1u];
  let c = vec4<f32>(a.x, a.z, b.x, b.z);
  let sn = vec4<f32>(a.y, a.w, b.y, b.w);
  let x = unpack8(kCache[at + f]) * sc;
  let y = unpack8(kCache[at + f + HQ]) * sc;
  return array<vec4<f32>, 2>(x * c - y * sn, y * c + x * sn); // HF rotate_half
}
fn amax(v: vec4<f32>) -> f32 { let a = abs(v); return max(max(a.x, a.y), max(a.z, a.w)); }

@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let e = gid.x + gid.y * nwg.x * ${WG}u; // (g, s) flattened over KV × kvEnd
  if (e >= params.KV * params.kvEnd) { return; }
  let slot = (e / params.kvEnd) * params.capacity + e % params.kvEnd;
  let at = slot * (DQ + 1u);
  let p = kpos[slot];
  let sc = bitcast<f32>(kCache[at + DQ]);
  var m = 0.0;
  for (var f = 0u; f < HQ; f++) {
    let r = rotPair(at, p, f, sc);
    m = max(m, max(amax(r[0]), amax(r[1])));
  }
  for (var j = 2u * HQ; j < DQ; j++) { m = max(m, amax(unpack8(kCache[at + j]) * sc)); }
  let ns = m / 127.0;
  for (var f = 0u; f < HQ; f++) {
    let r = rotPair(at, p, f, sc); // reads only words f and f + HQ, written just below
    kCache[at + f] = pack8(r[0], ns);
    kCache[at + f + HQ] = pack8(r[1], ns);
  }
  for (var j = 2u * HQ; j < DQ; j++) { kCache[at + j] = pack8(unpack8(kCache[at + j]) * sc, ns); }
  kCache[at + DQ] = bitcast<u32>(ns);
}`,
  }));
  return { kernel: k, buffers: b, params: { kvEnd: d.kvEnd, capacity: d.capacity, KV: o.numKvHeads }, workgroups: flatGrid(o.numKvHeads * d.kvEnd) };
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
