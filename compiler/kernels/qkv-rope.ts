/**
 * Attention input in one kernel: rmsnorm(x) · Wqkvᵀ (+bias), then queries are rotated (RoPE at pos0 + t) into q,
 * keys (before RoPE: attention rotates them from `kpos`; rotated with `rotateKeys`, for decode once the cache holds
 * rotated keys) and values are written straight into the KV cache at slot slot0 + t, and kpos records each key's
 * position. Optionally the un-rotated concat(Q, K, V) row is also written
 * to `pre` for the retaining head.
 *
 * Rotary pairs (i, i + rotaryDim/2) of a head are made adjacent logical columns (2i, 2i+1) by `wrow`, so the
 * matmul skeleton's pair epilogue hands both elements of a pair to one thread; dims ≥ rotaryDim keep their order.
 */
import { kernel, ro, rw, wgsl } from '../wgsl.js';
import type { Dispatch } from '../../runtime/gpu/runner.js';
import { assertDims, isQuantized, needsF16, unitFor, type WeightDtype } from './mm-common.js';
import { fmaKernel } from './mm-tiled-wide.js';
import { GEMV_MAX_T, type CoreFamily, type CoreOpts } from './mm-core.js';
import { sgmatGrid, sgmatPick, sgmatSource, sgmatUsable, sgmatVariant } from './mm-sgmat.js';
import { gemvGrid, gemvKey, gemvShape, gemvSource, type GemvOpts } from './mm-gemv.js';

export interface QkvOpts {
  readonly wdtype: WeightDtype;
  readonly bias: boolean;
  readonly cacheDtype: 'f32' | 'f16';
  readonly numHeads: number;
  readonly numKvHeads: number;
  readonly headDim: number;
  readonly rotaryDim: number;
  /** also write concat(Q, K, V) before RoPE to `pre` */
  readonly writePre: boolean;
  /** write keys rotated like the queries (decode after the cache was rotated, see rotateCacheKeys) */
  readonly rotateKeys?: boolean;
  /** decode path: reduce with subgroup operations (needs the device's `subgroups`; the plan asks gemvSubgroups) */
  readonly subgroups?: boolean;
  /** decode path: q8 / q4 dot products on int8 (GpuContext.intDot) */
  readonly intDot?: boolean;
  /** prefill on tensor cores (mm-sgmat.ts) where the weight and shape allow; only for devices with GpuContext.tensorCores */
  readonly tensorCores?: boolean;
  /** the device's maxComputeWorkgroupStorageSize (see MatmulOpts) */
  readonly workgroupBytes?: number;
  /** x holds the rows already normalized, as f16 (rmsnorm `half`; the tensor-core path only): no normW, no prologue */
  readonly normedX?: boolean;
  /**
   * write `pre` as f16: for a retaining head whose fc1 runs on the tensor cores, which round x to f16 while staging
   * it anyway (the same numbers, half the bytes written and half of what fc1's column tiles read back)
   */
  readonly halfPre?: boolean;
}

export interface QkvDims {
  readonly T: number;
  readonly K: number;
  readonly eps: number;
  /** first cache slot written */
  readonly slot0: number;
  /** RoPE position of token 0 */
  readonly pos0: number;
  /** cache slots per KV head */
  readonly capacity: number;
}

export interface QkvBuffers {
  /** (T, K) f32 hidden state; with normedX (T, K) f16 normalized rows */
  readonly x: GPUBuffer;
  /** (K) f32 attention rmsnorm weight (unused with normedX) */
  readonly normW: GPUBuffer;
  /** ((H + 2KV)·D, K) rows: H query heads, KV key heads, KV value heads */
  readonly w: GPUBuffer;
  /** q8 / q4: ((H + 2KV)·D, K/32) f16 scales of w, bound as `w_s` */
  readonly wScales?: GPUBuffer;
  /** ((H + 2KV)·D) f32, when bias */
  readonly bias?: GPUBuffer;
  /** (positions, rotaryDim/2) vec2<f32>(cos, sin) */
  readonly rope: GPUBuffer;
  /** (T, H, D) f32 rotated queries */
  readonly q: GPUBuffer;
  /** (KV, capacity, D) cacheDtype, keys before RoPE */
  readonly kCache: GPUBuffer;
  /** (KV, capacity, D) cacheDtype */
  readonly vCache: GPUBuffer;
  /** (KV, capacity) u32 key positions */
  readonly kpos: GPUBuffer;
  /** (T, (H + 2KV)·D) f32 (f16 with halfPre), when writePre */
  readonly pre?: GPUBuffer;
}

function family(o: QkvOpts): CoreFamily {
  const H = o.numHeads;
  const KV = o.numKvHeads;
  const D = o.headDim;
  const ct = o.cacheDtype === 'f16' ? 'f16' : 'f32';
  const bindings = [
    ro('rope', 'array<vec2<f32>>'), // (positions, rotaryDim/2) (cos, sin)
    rw('q', 'array<f32>'), // (T, H, D) rotated queries
    rw('kCache', `array<${ct}>`), // (KV, capacity, D) keys before RoPE
    rw('vCache', `array<${ct}>`), // (KV, capacity, D) values
    rw('kpos', 'array<u32>'), // (KV, capacity) key positions
  ];
  const pt = o.halfPre ? 'f16' : 'f32';
  if (o.writePre) bindings.push(rw('pre', `array<${pt}>`)); // (T, (H + 2KV)·D) concat(Q, K, V) before RoPE
  const helpers = wgsl`
const H = ${H}u;
const KV = ${KV}u;
const D = ${D}u;
const ROT = ${o.rotaryDim}u;
const HALF = ${o.rotaryDim / 2}u;

// logical column → weight row: inside a head's rotary dims, columns (2i, 2i+1) are rows (i, i + HALF)
fn wrow(c: u32) -> u32 {
  let l = c % D;
  if (l >= ROT) { return c; }
  return c - l + (l >> 1u) + (l & 1u) * HALF;
}

// the pair (dim d0, its partner) at position pos, HF rotate_half: (x1, x2) → (x1·cos − x2·sin, x2·cos + x1·sin);
// dims ≥ ROT pass through
fn ropePair(pos: u32, d0: u32, v: vec2<f32>) -> vec2<f32> {
  if (d0 >= ROT) { return v; }
  let cs = rope[pos * HALF + d0];
  return vec2<f32>(v.x * cs.x - v.y * cs.y, v.y * cs.x + v.x * cs.y);
}

fn epi(t: u32, c: u32, v: vec2<f32>) {
  let pos = params.pos0 + t;
  let slot = params.slot0 + t;
  let r0 = wrow(c);
  let r1 = wrow(c + 1u); // same head: D is even and c is even
  let head = r0 / D;
  let d0 = r0 % D;
  let d1 = r1 % D;
  ${o.writePre && `pre[t * params.NC + r0] = ${pt}(v.x);\n  pre[t * params.NC + r1] = ${pt}(v.y);`}
  if (head < H) {
    let o = (t * H + head) * D;
    let r = ropePair(pos, d0, v);
    q[o + d0] = r.x;
    q[o + d1] = r.y;
  } else if (head < H + KV) {
    let kh = head - H;
    let o = (kh * params.cap + slot) * D;
    let k = ${o.rotateKeys ? 'ropePair(pos, d0, v)' : 'v'};
    kCache[o + d0] = ${ct}(k.x);
    kCache[o + d1] = ${ct}(k.y);
    if (d0 == 0u) { kpos[kh * params.cap + slot] = pos; }
  } else {
    let o = ((head - H - KV) * params.cap + slot) * D;
    vCache[o + d0] = ${ct}(v.x);
    vCache[o + d1] = ${ct}(v.y);
  }
}`;
  return {
    bindings,
    params: [
      ['slot0', 'u32'],
      ['pos0', 'u32'],
      ['cap', 'u32'],
    ],
    helpers,
    enables: needsF16(o.wdtype) || o.cacheDtype === 'f16' || o.halfPre ? ['f16'] : [],
    wShape: '((H + 2KV)·D, K): Q heads, K heads, V heads',
  };
}

/** The step's T slots from slot0 fit the cache (also checked when a decode step reuses a qkv_rope dispatch). */
export function checkQkvSlots(slot0: number, T: number, capacity: number): void {
  if (slot0 + T > capacity) throw new Error(`qkvRope: slots ${slot0}..${slot0 + T} exceed capacity ${capacity}`);
}

export function qkvRope(o: QkvOpts, d: QkvDims, b: QkvBuffers): Dispatch {
  const { T, K, slot0, pos0, capacity } = d;
  const { numHeads: H, numKvHeads: KV, headDim: D, rotaryDim: ROT } = o;
  assertDims('qkvRope', { T, K, slot0, pos0, capacity, H, KV, D, ROT });
  if (T === 0 || K === 0 || H === 0 || KV === 0) throw new Error('qkvRope: empty shape');
  if (D % 2 !== 0 || ROT % 2 !== 0 || ROT > D) throw new Error(`qkvRope: headDim ${D} and rotaryDim ${ROT} must be even, rotaryDim ≤ headDim`);
  checkQkvSlots(slot0, T, capacity);
  if (o.bias && !b.bias) throw new Error('qkvRope: bias needs a bias buffer');
  if (o.writePre && !b.pre) throw new Error('qkvRope: writePre needs a pre buffer');
  if (o.halfPre && !o.writePre) throw new Error('qkvRope: halfPre without writePre');
  const NC = (H + 2 * KV) * D;
  const U = unitFor(K);
  const normed = o.normedX === true;
  const core: CoreOpts = { wdtype: o.wdtype, U, norm: !normed, bias: o.bias, streams: 1, halfX: normed };
  const base = {
    op: 'qkv_rope',
    wdtype: o.wdtype,
    bias: o.bias,
    cache: o.cacheDtype,
    h: H,
    kv: KV,
    d: D,
    rot: ROT,
    pre: o.writePre,
    ...(o.halfPre ? { hp: 1 } : {}),
    ...(o.rotateKeys ? { rk: true } : {}),
    u: U,
    ...(normed ? { hx: 1 } : {}),
  };
  const buffers: Record<string, GPUBuffer> = {
    x: b.x,
    w: b.w,
    ...(normed ? {} : { normW: b.normW }),
    rope: b.rope,
    q: b.q,
    kCache: b.kCache,
    vCache: b.vCache,
    kpos: b.kpos,
  };
  if (o.bias) buffers.bias = b.bias!;
  if (o.writePre) buffers.pre = b.pre!;
  if (isQuantized(o.wdtype)) {
    if (!b.wScales) throw new Error(`qkvRope: ${o.wdtype} weights need their scales buffer`);
    buffers.w_s = b.wScales;
  }
  const params = { T, NC, K, xRow0: 0, eps: d.eps, slot0, pos0, cap: capacity };
  const sgmat = o.tensorCores === true && sgmatUsable(o.wdtype, T, K);
  if (normed && !sgmat) throw new Error(`qkvRope: normalized f16 rows are for the tensor-core path (T=${T}, K=${K}, ${o.wdtype} weights)`);
  if (T <= GEMV_MAX_T) {
    const g: GemvOpts = { wdtype: o.wdtype, norm: true, bias: o.bias, streams: 1, subgroups: o.subgroups ?? false };
    const shape = gemvShape(o.wdtype, T, 1, K, NC, o.intDot);
    const spec = kernel({ ...base, ...gemvKey(g, T, shape) }, () => gemvSource(g, T, shape, family(o)));
    return { kernel: spec, buffers, params, workgroups: gemvGrid(NC, shape.R) };
  }
  if (sgmat) {
    const sgv = sgmatPick(1, true, NC, T, o.workgroupBytes); // the tile of a norm matmul either way
    const spec = kernel({ ...base, path: 'sgmat', sgv }, () => sgmatSource(core, family(o), sgv));
    return { kernel: spec, buffers, params, workgroups: sgmatGrid(NC, T, sgmatVariant(sgv, 1)) };
  }
  return { ...fmaKernel(base, core, () => family(o), NC, T), buffers, params };
}
