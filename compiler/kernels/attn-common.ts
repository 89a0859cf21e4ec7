/**
 * Shared pieces of the attention-family kernels (attention, H2O/SnapKV statistics): the KV-cache binding types and
 * the WGSL that reads one 4-dim quad of a cached key and rotates it with RoPE from the slot's stored position.
 *
 * Keys are cached BEFORE RoPE, so a key's rotation depends on `kpos[head, slot]`, which eviction may rewrite
 * (compact positions); rotating on load keeps the cache position-agnostic. Loads are vec4 quads: the f32 cache is
 * `array<vec4<f32>>`, the f16 cache is read as `array<vec2<u32>>` (four halves) and widened with `unpack2x16float`,
 * so the kernels need no `shader-f16` and work on every device. The int8 cache (kv-int8.ts) is read as `array<u32>`:
 * one word per quad, dequantized with the row's scale (the word after the row's codes) before RoPE, so attention
 * sees exactly code · scale. Quads need headDim % 4 == 0, and a rotated quad must pair with a whole quad half a
 * rotary span away, so rotaryDim % 8 == 0 (true for every supported family).
 */
import { ro, rw, type Binding, type Param } from '../wgsl.js';
import type { AttentionDims, AttentionOpts } from './attention.js';
import { int8Fns } from './kv-int8.js';

export type CacheDtype = 'f32' | 'f16' | 'int8';
export const CACHE_DTYPES: readonly CacheDtype[] = ['f32', 'f16', 'int8'];

/** 32-bit words of one cached row (one token, one KV head): f32 D, f16 D/2, int8 D/4 codes + 1 scale. */
export function cacheRowWords(dtype: CacheDtype, headDim: number): number {
  return dtype === 'f32' ? headDim : dtype === 'f16' ? headDim / 2 : headDim / 4 + 1;
}

/** Masked logit sentinel: finite so `exp(NEG - m)` is exactly 0 and `max` needs no special case. */
export const NEG = '-3.0e38';

export function checkHeadDims(headDim: number, rotaryDim: number): void {
  if (headDim % 4 !== 0) throw new Error(`attention kernels need headDim % 4 == 0 (got ${headDim})`);
  if (rotaryDim % 8 !== 0 || rotaryDim > headDim || rotaryDim <= 0) {
    throw new Error(`attention kernels need 0 < rotaryDim <= headDim and rotaryDim % 8 == 0 (got ${rotaryDim})`);
  }
}

/** WGSL element type of a cache binding viewed as quads. */
export function cacheQuadType(dtype: CacheDtype): string {
  return dtype === 'f32' ? 'array<vec4<f32>>' : dtype === 'f16' ? 'array<vec2<u32>>' : 'array<u32>';
}

/** Read-only bindings of the key side: kCache, kpos, rope (plus vCache when `withV`). */
export function keyBindings(dtype: CacheDtype, withV: boolean): Binding[] {
  return [
    ro('kCache', cacheQuadType(dtype)), // (KV, capacity, D) as D/4 quads per slot (int8: D/4 + 1 u32); keys before RoPE
    ...(withV ? [ro('vCache', cacheQuadType(dtype))] : []), // (KV, capacity, D) as D/4 quads per slot (int8: D/4 + 1 u32)
    ro('kpos', 'array<u32>'), // (KV, capacity) RoPE position of each slot
    ro('rope', 'array<vec4<f32>>'), // (positions, rotaryDim/2) (cos, sin) pairs, two pairs per vec4
  ];
}

/**
 * Bindings of an attention kernel: rotated q, the key/value side (the cache, or `rotatedKeys`: keys rotated beforehand
 * and the value cache), then either the split-keys scratch or the outputs.
 * `elem` is how the f32 buffers are viewed: quads (vec4) or scalars.
 *
 *   scratch: [splits][T·H][D] unnormalized outputs, then [splits][T·H] (max, sum, 0, 0)
 */
export function attentionBindings(dtype: CacheDtype, split: boolean, withLse: boolean, elem: 'vec4<f32>' | 'f32' = 'vec4<f32>', rotatedKeys = false): Binding[] {
  return [
    ro('q', 'array<vec4<f32>>'), // (T, H, D) as quads, rotated
    ...(rotatedKeys
      ? [ro('kRot', 'array<vec2<u32>>'), ro('vCache', cacheQuadType(dtype))] // (KV, capacity, D) f16 rotated keys (rotate-keys.ts); values
      : keyBindings(dtype, true)),
    ...(split
      ? [rw('scratch', `array<${elem}>`)] // see above
      : [rw('out', `array<${elem}>`), ...(withLse ? [rw('lse', 'array<f32>')] : [])]), // (T, H*D); (T, H)
  ];
}

/** Uniforms of the key-splitting attention kernels (decode v1 / v2, tensor-core prefill; attention.ts adds `tpr`). */
export const SPLIT_ATTENTION_PARAMS: readonly Param[] = [
  ['T', 'u32'], ['base', 'u32'], ['capacity', 'u32'], ['rot', 'u32'], ['splitKeys', 'u32'], ['splits', 'u32'], ['scale', 'f32'],
];

/** Their values for one call with the plan's key split. */
export function splitAttentionParams(o: AttentionOpts, d: AttentionDims, p: { splitKeys: number; splits: number }): Record<string, number> {
  return { T: d.T, base: d.base, capacity: d.capacity, rot: o.rotaryDim, splitKeys: p.splitKeys, splits: p.splits, scale: d.scale };
}

/** WGSL `reduce(lid, v, isMax)`: a workgroup-wide max or sum over WC threads through `red` (array<f32, WC>). */
export function workgroupReduce(WC: number): string {
  return `fn reduce(lid: u32, v: f32, isMax: bool) -> f32 {
  red[lid] = v;
  workgroupBarrier();
  for (var w = ${WC / 2}u; w > 0u; w >>= 1u) {
    if (lid < w) { red[lid] = select(red[lid] + red[lid + w], max(red[lid], red[lid + w]), isMax); }
    workgroupBarrier();
  }
  let r = red[0];
  workgroupBarrier();
  return r;
}`;
}

/** WGSL: the four halves of an f16 cache quad read as vec2<u32> (`w`), widened to vec4<f32>. */
const widenF16Quad = (w: string) => `vec4<f32>(unpack2x16float(${w}.x), unpack2x16float(${w}.y))`;

/** WGSL statements returning quad j of slot s, KV head g, of a cache binding `buf` as vec4<f32>. */
function quadRead(dtype: CacheDtype, buf: string): string {
  return dtype === 'f32'
    ? `return ${buf}[(g * params.capacity + s) * DQ + j];`
    : dtype === 'f16'
      ? `let w = ${buf}[(g * params.capacity + s) * DQ + j];\n  return ${widenF16Quad('w')};`
      : `let at = (g * params.capacity + s) * (DQ + 1u);\n  return unpack8(${buf}[at + j]) * bitcast<f32>(${buf}[at + DQ]);`;
}

/**
 * Readers for kernels whose keys were rotated beforehand (rotate-keys.ts): `krq(g, s, j)`, quad j of slot s from the
 * f16 `kRot` buffer, and `vq(g, s, j)` from the value cache.
 */
export function rotatedKeyFns(dtype: CacheDtype): string {
  return `${dtype === 'int8' ? int8Fns : ''}
fn krq(g: u32, s: u32, j: u32) -> vec4<f32> {
  ${quadRead('f16', 'kRot')}
}
fn vq(g: u32, s: u32, j: u32) -> vec4<f32> {
  ${quadRead(dtype, 'vCache')}
}`;
}

/**
 * WGSL helpers `kq(g, s, j)` / `vq(g, s, j)` (raw quad j of slot s, KV head g) and `rotK(g, s, j)` (rotated key
 * quad). Expects a constant DQ (= D/4) and `params.capacity`, `params.rot` (rotary dims) fields. The rotary span is a
 * run-time parameter: it costs one uniform compare per quad and halves the variants to compile.
 */
export function keyFns(dtype: CacheDtype, withV: boolean): string {
  const read = (buf: string) => quadRead(dtype, buf);
  return `${dtype === 'int8' ? int8Fns : ''}
fn kq(g: u32, s: u32, j: u32) -> vec4<f32> {
  ${read('kCache')}
}
${withV ? `fn vq(g: u32, s: u32, j: u32) -> vec4<f32> {\n  ${read('vCache')}\n}` : ''}
// HF rotate_half: dim i < rot/2 pairs with i + rot/2 (x*cos - y*sin); dim i in [rot/2, rot) with i - rot/2
// (x*cos + y*sin); dims >= rot pass through. Quads never straddle these boundaries since rot % 8 == 0.
fn rotK(g: u32, s: u32, j: u32) -> vec4<f32> {
  let x = kq(g, s, j);
  if (j >= params.rot / 4u) { return x; }
  let hq = params.rot / 8u;
  let lo = j < hq;
  let i0 = select(j - hq, j, lo) * 4u;
  let r = (kpos[g * params.capacity + s] * (params.rot / 2u) + i0) / 2u;
  let a = rope[r];
  let b = rope[r + 1u];
  let c = vec4<f32>(a.x, a.z, b.x, b.z);
  let sn = vec4<f32>(a.y, a.w, b.y, b.w);
  if (lo) { return x * c - kq(g, s, j + hq) * sn; }
  return x * c + kq(g, s, j - hq) * sn;
}`;
}

/**
 * Branch-free pieces of rotK for tile loaders that issue every load of a tile before using any (a chain of
 * kpos → rope → rotate per quad, one quad after another, leaves the tile load latency-bound): `partnerQ(j)` is the
 * quad that j rotates with (j itself when not rotated), `ropeAt(p, j)` the rope vec4 index of quad j at position p,
 * `rotate(x, y, a, b, j)` the rotated quad from the raw quad x, its partner y and the two rope vec4s.
 */
export const ropeParts = `
fn partnerQ(j: u32) -> u32 {
  let hq = params.rot / 8u;
  return select(select(j - hq, j + hq, j < hq), j, j >= params.rot / 4u);
}
fn ropeAt(p: u32, j: u32) -> u32 {
  let hq = params.rot / 8u;
  let i0 = select(select(j - hq, j, j < hq), 0u, j >= params.rot / 4u) * 4u;
  return (p * (params.rot / 2u) + i0) / 2u;
}
fn rotate(x: vec4<f32>, y: vec4<f32>, a: vec4<f32>, b: vec4<f32>, j: u32) -> vec4<f32> {
  let c = vec4<f32>(a.x, a.z, b.x, b.z);
  let sn = vec4<f32>(a.y, a.w, b.y, b.w);
  let r = select(x * c + y * sn, x * c - y * sn, j < params.rot / 8u);
  return select(r, x, j >= params.rot / 4u);
}`;

// The FMA attention kernels (attention.ts, attention-shuffle.ts): 64 threads and 8-key tiles (~11 KB of workgroup
// memory at D=128): measured on H200/Dawn-Vulkan, the smaller footprint (more resident workgroups per SM) beat
// 128 threads / 16 keys by 2-3x for both decode and prefill
export const FMA_THREADS = 64;
export const FMA_TILE_KEYS = 8;

/**
 * The K/V tile in workgroup memory and its load (every global load issued before any is used): `decls` declares the
 * key functions and kT / vT, `load` fills them with the BK slots from kb (clamped into [kb, k1): no branch; the
 * padding keys past k1 are never read back), keys rotated on load or read from kRot (`rk`). Needs lid, g, kb, k1.
 */
export function tileLoad(o: AttentionOpts, rk: boolean, BK = FMA_TILE_KEYS): { decls: string; load: string; prefetch: TilePrefetch | undefined } {
  const DQ = o.headDim / 4;
  const ls = Array.from({ length: Math.ceil((BK * DQ) / FMA_THREADS) }, (_, i) => i); // tile quads each thread loads
  const full = (BK * DQ) % FMA_THREADS === 0;
  const decls = `${rk ? rotatedKeyFns(o.cacheDtype) : `${keyFns(o.cacheDtype, true)}
${ropeParts}`}

var<workgroup> kT: array<vec4<f32>, ${BK * DQ}>; // (BK, D) rotated keys of the tile
var<workgroup> vT: array<vec4<f32>, ${BK * DQ}>; // (BK, D) values of the tile`;
  const load = `${ls.map((i) => `    let e${i} = lid + ${i * FMA_THREADS}u;
    let j${i} = e${i} % ${DQ}u;
    let s${i} = min(kb + e${i} / ${DQ}u, k1 - 1u);
${rk ? `    let kr${i} = krq(g, s${i}, j${i});` : `    let p${i} = kpos[g * params.capacity + s${i}];
    let x${i} = kq(g, s${i}, j${i});
    let y${i} = kq(g, s${i}, partnerQ(j${i}));`}
    let v${i} = vq(g, s${i}, j${i});`).join('\n')}
${ls.map((i) => `${rk ? '' : `    let r${i} = ropeAt(p${i}, j${i});
    let kr${i} = rotate(x${i}, y${i}, rope[r${i}], rope[r${i} + 1u], j${i});
`}    ${full ? '' : `if (e${i} < ${BK * DQ}u) `}{ kT[e${i}] = kr${i}; vT[e${i}] = v${i}; }`).join('\n')}`;
  return { decls, load, prefetch: rk && o.cacheDtype === 'f16' ? tilePrefetch(o, ls, full, BK) : undefined };
}

/**
 * The rotated-key tile load over an f16 cache split in two, for a loop that loads the next tile while the current one
 * is used: `fetch(kb)` issues the tile's global loads into registers (the raw f16 quads as vec2<u32>), `stage` widens
 * them into kT / vT after the loop's second barrier; `vars` declares the registers. (Keys are rotated into kRot only
 * for f16 and int8 caches without tensor cores; int8 values, a code word and a scale, keep the one-step load.)
 */
function tilePrefetch(o: AttentionOpts, ls: readonly number[], full: boolean, BK: number): TilePrefetch {
  const DQ = o.headDim / 4;
  const vars = ls.map((i) => `  var pk${i}: vec2<u32>; // raw quads of the next tile in flight
  var pv${i}: vec2<u32>;`).join('\n');
  const fetch = (kb: string) => ls.map((i) => `    {
      let e = lid + ${i * FMA_THREADS}u;
      let at = (g * params.capacity + min(${kb} + e / ${DQ}u, k1 - 1u)) * ${DQ}u + e % ${DQ}u;
      pk${i} = kRot[at];
      pv${i} = vCache[at];
    }`).join('\n');
  const stage = ls.map((i) => `    { let e = lid + ${i * FMA_THREADS}u; ${full ? '' : `if (e < ${BK * DQ}u) `}{ kT[e] = ${widenF16Quad(`pk${i}`)}; vT[e] = ${widenF16Quad(`pv${i}`)}; } }`).join('\n');
  return { vars, fetch, stage };
}

export interface TilePrefetch {
  readonly vars: string;
  readonly fetch: (kb: string) => string;
  readonly stage: string;
}
