/**
 * int8 KV cache: the row format, its WGSL pack/unpack helpers, and the kernel that quantizes f32 rows into it.
 *
 * A cached row is one token of one KV head (headDim values). It is stored as headDim int8 codes, four per u32 word,
 * followed by its f32 scale (symmetric: scale = max|x| / 127, code = round(x / scale) in [-127, 127]):
 *
 *   K[l], V[l]  (kv_heads, capacity, head_dim/4 + 1) u32
 *
 *   word:   0             1             ...   D/4-1               D/4
 *         [ c0 c1 c2 c3 | c4 c5 c6 c7 | ... | cD-4 .. cD-1      | scale (f32 bits) ]
 *           byte i of word j = code of dim 4j+i (two's complement, low byte first); x ≈ code · scale
 *
 * The scale sits inside its row so every writer and eviction's raw-word compaction move code and scale together
 * with no extra binding; the row costs D + 4 bytes against 2D for f16 (~half for D >= 64). A zero row has scale 0
 * and all codes 0.
 *
 * Writers: the unfused kv_store quantizes straight from the qkv rows (`kvQuantize` mode 'qkv'); the fused qkv_rope
 * kernel stores rows per element pair, so it cannot see a row's max: with an int8 cache it writes f32 rows to a
 * small staging cache of maxT slots and `kvQuantize` mode 'staged' quantizes them into the real cache.
 */
import { kernel, ro, rw, wgsl } from '../wgsl.js';
import type { Dispatch } from '../../runtime/gpu/runner.js';
import { grid } from './cache-store.js';

const WG = 64;

export function checkInt8HeadDim(headDim: number): void {
  if (headDim % 4 !== 0) throw new Error(`the int8 KV cache packs 4 values per 32-bit word: headDim must be a multiple of 4 (got ${headDim})`);
}

/**
 * WGSL: `unpack8(w)` (four codes of a word as f32, exact), `pack8(x, scale)` (four values to a word). Codes come
 * from arithmetic shifts of the signed word, so no packed-integer language extension is needed.
 */
export const int8Fns = `
fn unpack8(w: u32) -> vec4<f32> {
  let i = bitcast<i32>(w);
  return vec4<f32>(vec4<i32>(i << 24u, i << 16u, i << 8u, i) >> vec4<u32>(24u));
}
fn pack8(x: vec4<f32>, scale: f32) -> u32 {
  var c = vec4<f32>(0.0);
  if (scale > 0.0) { c = clamp(round(x / scale), vec4<f32>(-127.0), vec4<f32>(127.0)); }
  let u = bitcast<vec4<u32>>(vec4<i32>(c)) & vec4<u32>(255u);
  return u.x | (u.y << 8u) | (u.z << 16u) | (u.w << 24u);
}`;

export interface KvQuantOpts {
  readonly numHeads: number;
  readonly numKvHeads: number;
  readonly headDim: number;
  /**
   * 'qkv': source rows are qkv (T, (H+2KV)·D); Q heads are copied to q (T, H, D), K/V heads quantized.
   * 'staged': source rows are kSrc / vSrc (KV, stageCap, D) f32 written by qkv_rope at slots 0..T-1.
   */
  readonly mode: 'qkv' | 'staged';
}

export interface KvQuantBuffers {
  /** mode 'qkv': (T, (H+2KV)·D) f32 */
  readonly qkv?: GPUBuffer;
  /** mode 'qkv': (T, H, D) f32 */
  readonly q?: GPUBuffer;
  /** mode 'staged': (KV, stageCap, D) f32 keys before RoPE */
  readonly kSrc?: GPUBuffer;
  /** mode 'staged': (KV, stageCap, D) f32 values */
  readonly vSrc?: GPUBuffer;
  readonly kCache: GPUBuffer; // (KV, capacity, D/4 + 1) u32
  readonly vCache: GPUBuffer; // (KV, capacity, D/4 + 1) u32
  readonly kpos: GPUBuffer; // (KV, capacity) u32
}

/**
 * Quantizes a step's K/V rows into cache slots slot0 + t and records kpos[h, slot0 + t] = pos0 + t. Threads own
 * quads of a row; a row's max goes through workgroup memory (rows never straddle workgroups).
 */
export function kvQuantize(
  o: KvQuantOpts,
  d: { T: number; slot0: number; pos0: number; capacity: number; stageCap?: number },
  b: KvQuantBuffers,
): Dispatch {
  const { numHeads: H, numKvHeads: KV, headDim: D } = o;
  checkInt8HeadDim(D);
  if (d.slot0 + d.T > d.capacity) throw new Error(`kvQuantize: slots ${d.slot0}..${d.slot0 + d.T} exceed capacity ${d.capacity}`);
  const staged = o.mode === 'staged';
  if (staged ? !b.kSrc || !b.vSrc || d.stageCap === undefined || d.T > d.stageCap : !b.qkv || !b.q) {
    throw new Error(`kvQuantize: mode '${o.mode}' is missing its source buffers or stage size`);
  }
  const DQ = D / 4;
  const TPR = Math.min(DQ, WG); // threads per row
  const RPW = Math.floor(WG / TPR); // rows per workgroup
  const NH = staged ? 2 * KV : H + 2 * KV; // source rows per token
  const rows = d.T * NH;
  const k = kernel({ op: 'kv_quantize', cache: 'int8', mode: o.mode, H, KV, D }, () => ({
    bindings: staged
      ? [
          ro('kSrc', 'array<vec4<f32>>'), // (KV, stageCap, D) as quads
          ro('vSrc', 'array<vec4<f32>>'), // (KV, stageCap, D) as quads
          rw('kc', 'array<u32>'), // (KV, capacity, D/4 + 1)
          rw('vc', 'array<u32>'), // (KV, capacity, D/4 + 1)
          rw('kpos', 'array<u32>'), // (KV, capacity)
        ]
      : [
          ro('qkv', 'array<vec4<f32>>'), // (T, (H+2KV)·D) as quads
          rw('q', 'array<vec4<f32>>'), // (T, H, D) as quads
          rw('kc', 'array<u32>'), // (KV, capacity, D/4 + 1)
          rw('vc', 'array<u32>'), // (KV, capacity, D/4 + 1)
          rw('kpos', 'array<u32>'), // (KV, capacity)
        ],
    params: [['rows', 'u32'], ['slot0', 'u32'], ['pos0', 'u32'], ['cap', 'u32'], ['stageCap', 'u32']],
    workgroupSize: [WG, 1, 1],
    body: wgsl`
const H = ${H}u; const KV = ${KV}u; const DQ = ${DQ}u; const NH = ${NH}u;
const TPR = ${TPR}u; const RPW = ${RPW}u;
${int8Fns}
var<workgroup> mx: array<f32, ${WG}>;

// source quad j of row (t, hh): hh counts heads in the source's order
fn src(t: u32, hh: u32, j: u32) -> vec4<f32> {
${
  staged
    ? `  if (hh < KV) { return kSrc[(hh * params.stageCap + t) * DQ + j]; }
  return vSrc[((hh - KV) * params.stageCap + t) * DQ + j];`
    : '  return qkv[(t * NH + hh) * DQ + j];'
}
}

@compute @workgroup_size(${WG}) fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nw: vec3u) {
  let r = (wg.x + wg.y * nw.x) * RPW + lid / TPR;
  let lane = lid % TPR;
  let ok = r < params.rows && lid < RPW * TPR;
  var t = 0u;
  var hh = 0u;
  if (ok) { t = r / NH; hh = r % NH; }
  // K/V head index in the source order: 0..KV-1 keys, KV..2KV-1 values
  let kvh = select(hh, hh - H, ${staged ? 'false' : 'true'});
  let isRow = ok && ${staged ? 'true' : 'hh >= H'};
  var m = 0.0;
  if (isRow) {
    for (var j = lane; j < DQ; j += TPR) { let a = abs(src(t, hh, j)); m = max(m, max(max(a.x, a.y), max(a.z, a.w))); }
  }
  mx[lid] = m;
  workgroupBarrier();
  if (!ok) { return; }
${
  staged
    ? ''
    : `  if (hh < H) {
    for (var j = lane; j < DQ; j += TPR) { q[(t * H + hh) * DQ + j] = src(t, hh, j); }
    return;
  }`
}
  let r0 = lid - lane;
  var rm = 0.0;
  for (var i = 0u; i < TPR; i++) { rm = max(rm, mx[r0 + i]); }
  let scale = rm / 127.0;
  let isV = kvh >= KV;
  let h = select(kvh, kvh - KV, isV);
  let slot = h * params.cap + params.slot0 + t;
  let at = slot * (DQ + 1u);
  for (var j = lane; j < DQ; j += TPR) {
    let w = pack8(src(t, hh, j), scale);
    if (isV) { vc[at + j] = w; } else { kc[at + j] = w; }
  }
  if (lane == 0u) {
    if (isV) { vc[at + DQ] = bitcast<u32>(scale); } else {
      kc[at + DQ] = bitcast<u32>(scale);
      kpos[slot] = params.pos0 + t;
    }
  }
}`,
  }));
  const buffers: Record<string, GPUBuffer> = staged
    ? { kSrc: b.kSrc!, vSrc: b.vSrc!, kc: b.kCache, vc: b.vCache, kpos: b.kpos }
    : { qkv: b.qkv!, q: b.q!, kc: b.kCache, vc: b.vCache, kpos: b.kpos };
  return {
    kernel: k,
    buffers,
    params: { rows, slot0: d.slot0, pos0: d.pos0, cap: d.capacity, stageCap: d.stageCap ?? 0 },
    workgroups: grid(Math.ceil(rows / RPW)),
  };
}
