/**
 * The first eviction kernel, kept as the reference the parallel one (evict.ts) is benchmarked and checked against
 * (bench/evict-check.ts): one dispatch per layer, one workgroup per KV head, in place, no scratch. Same result as
 * evict(); slow on a large GPU because only KV workgroups run and the compaction walks the cache block by block.
 *
 * Per KV head:
 *  1. Selection without sorting: a 4-pass radix select (8 bits per pass, workgroup histogram) on the
 *     order-preserving u32 image of the f32 score finds the keep-th largest key `thr` and how many entries equal to
 *     it survive (`needEq`). Forced entries (slot >= forcedFrom, the stabilizer) use the key of +inf. An entry is
 *     kept iff key > thr, or key == thr and it is among the first needEq such entries in slot order; so ties go to
 *     the earlier slot and the result is deterministic.
 *  2. Compaction in blocks of W slots, in slot order: a workgroup scan gives each kept entry its destination; every
 *     moved word is read into registers, then a storage barrier, then written. Destinations never exceed sources and
 *     later blocks' sources lie beyond this block, so the in-place move is safe.
 */
import { kernel, rw, wgsl } from '../wgsl.js';
import type { EvictBuffers, EvictDims, EvictOpts } from './evict.js';
import type { Dispatch } from '../../runtime/gpu/runner.js';
import { cacheRowWords, type CacheDtype } from './attn-common.js';
import { checkInt8HeadDim } from './kv-int8.js';

const W = 128; // threads per workgroup = slots per compaction block

/** No dispatch when keep >= len: nothing is evicted and every entry already sits at its slot. */
export function evictSingle(o: EvictOpts, d: EvictDims, b: Omit<EvictBuffers, 'scratch'>): Dispatch[] {
  if (d.keep >= d.len) return [];
  if (o.cacheDtype === 'int8') checkInt8HeadDim(o.headDim);
  const rowWords = cacheRowWords(o.cacheDtype, o.headDim);
  if (!Number.isInteger(rowWords)) throw new Error(`evict: an f16 row of ${o.headDim} halves is not whole 32-bit words`);
  const vw = rowWords % 4 === 0 ? 4 : rowWords % 2 === 0 ? 2 : 1;
  const vt = vw === 1 ? 'u32' : `vec${vw}<u32>`;
  const RV = rowWords / vw; // vectors per row
  const CV = Math.min(RV, 8); // row vectors each block moves per pass: bounds the registers held across the barrier
  const withOrig = b.orig !== undefined;
  const k = kernel({ op: 'evict_single', rowWords, compact: o.compact, orig: withOrig }, () => ({
    bindings: [
      rw('kCache', `array<${vt}>`), // (KV, capacity, rowWords) raw words
      rw('vCache', `array<${vt}>`), // (KV, capacity, rowWords) raw words
      rw('scores', 'array<u32>'), // (KV, capacity) f32 bits (moved bit-exactly)
      rw('kpos', 'array<u32>'), // (KV, capacity)
      ...(withOrig ? [rw('orig', 'array<u32>')] : []), // (KV, capacity)
    ],
    // rv, blk: run-time copies of RV and W as bounds of the loops that contain barriers; with constant bounds CPU Vulkan
    // compilers unroll them and every copy of a barrier becomes a suspend point (tens of seconds of shader compile)
    params: [['len', 'u32'], ['keep', 'u32'], ['forcedFrom', 'u32'], ['capacity', 'u32'], ['rv', 'u32'], ['blk', 'u32']],
    workgroupSize: [W, 1, 1],
    body: wgsl`
const W = ${W}u;
const RV = ${RV}u;
const CV = ${CV}u;

var<workgroup> hist: array<atomic<u32>, 256>;
var<workgroup> selPrefix: u32;
var<workgroup> selRem: u32;
var<workgroup> sc: array<u32, W>; // block scan: kept-by-score count (low 16 bits) | ties count (high 16 bits)
var<workgroup> srcOf: array<u32, W>; // source slot of the block's j-th kept entry

// order-preserving image of an f32: larger float <=> larger u32 (+inf, -inf, -0 < +0 all ordered)
fn keyOf(base: u32, s: u32) -> u32 {
  if (s >= params.forcedFrom) { return 0xff800000u; } // +inf
  let u = scores[base + s];
  return select(u | 0x80000000u, ~u, (u & 0x80000000u) != 0u);
}

fn moveRows(isV: bool, base: u32, off: u32, kept: u32, lid: u32) {
  for (var c0 = 0u; c0 < params.rv; c0 += CV) {
    var buf: array<${vt}, CV>;
    for (var i = 0u; i < CV; i++) {
      let e = lid + W * i;
      let j = e / CV;
      let col = c0 + e % CV;
      if (j < kept && col < RV && srcOf[j] != off + j) {
        let at = (base + srcOf[j]) * RV + col;
        if (isV) { buf[i] = vCache[at]; } else { buf[i] = kCache[at]; }
      }
    }
    storageBarrier();
    for (var i = 0u; i < CV; i++) {
      let e = lid + W * i;
      let j = e / CV;
      let col = c0 + e % CV;
      if (j < kept && col < RV && srcOf[j] != off + j) {
        let at = (base + off + j) * RV + col;
        if (isV) { vCache[at] = buf[i]; } else { kCache[at] = buf[i]; }
      }
    }
    storageBarrier();
  }
}

@compute @workgroup_size(${W})
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>) {
  let base = wg.x * params.capacity;
  // 1. radix select of the keep-th largest key, most significant byte first
  var prefix = 0u;
  var rem = params.keep; // rank still to find among entries matching prefix
  for (var ps = 0u; ps < 4u; ps++) {
    let shift = 24u - 8u * ps;
    let hiMask = ~(0xffffffffu >> (8u * ps)); // bytes already fixed
    atomicStore(&hist[lid], 0u);
    atomicStore(&hist[lid + W], 0u);
    workgroupBarrier();
    for (var s = lid; s < params.len; s += W) {
      let k = keyOf(base, s);
      if ((k & hiMask) == prefix) { atomicAdd(&hist[(k >> shift) & 255u], 1u); }
    }
    workgroupBarrier();
    if (lid == 0u) {
      var cum = 0u;
      var bin = 255u;
      // the bins of this prefix hold >= rem entries, so the walk stops at or before bin 0
      for (var bi = 255i; bi >= 0i; bi--) {
        bin = u32(bi);
        let c = atomicLoad(&hist[bin]);
        if (cum + c >= rem) { break; }
        cum += c;
      }
      selPrefix = prefix | (bin << shift);
      selRem = rem - cum;
    }
    workgroupBarrier();
    prefix = selPrefix;
    rem = selRem;
  }
  let thr = prefix;
  let needEq = rem;

  // 2. in-order compaction, block by block
  var off = 0u; // entries kept so far = destination of the block's first kept entry
  var eqSeen = 0u; // ties (key == thr) seen in earlier blocks
  for (var b0 = 0u; b0 < params.len; b0 += W) {
    let s = b0 + lid;
    var k = 0u;
    if (s < params.len) { k = keyOf(base, s); }
    let gt = s < params.len && k > thr;
    let eq = s < params.len && k == thr;
    let v = select(0u, 1u, gt) | (select(0u, 1u, eq) << 16u);
    workgroupBarrier(); // previous block's readers of sc / srcOf are done
    sc[lid] = v;
    workgroupBarrier();
    for (var o = 1u; o < params.blk; o <<= 1u) {
      var add = 0u;
      if (lid >= o) { add = sc[lid - o]; }
      workgroupBarrier();
      sc[lid] += add;
      workgroupBarrier();
    }
    let ex = sc[lid] - v;
    let tot = sc[W - 1u];
    let eqBefore = eqSeen + (ex >> 16u);
    // ties survive while their rank among all ties is < needEq
    let keepMe = gt || (eq && eqBefore < needEq);
    let j = (ex & 0xffffu) + min(eqBefore, needEq) - min(eqSeen, needEq);
    let kept = (tot & 0xffffu) + min(eqSeen + (tot >> 16u), needEq) - min(eqSeen, needEq);
    var sv = 0u;
    var pv = 0u;
    var ov = 0u;
    if (keepMe) {
      srcOf[j] = s;
      sv = scores[base + s];
      pv = kpos[base + s];
      ${withOrig ? 'ov = orig[base + s];' : ''}
    }
    storageBarrier();
    workgroupBarrier();
    if (keepMe) {
      scores[base + off + j] = sv;
      kpos[base + off + j] = ${o.compact ? 'off + j' : 'pv'};
      ${withOrig ? 'orig[base + off + j] = ov;' : ''}
    }
    moveRows(false, base, off, kept, lid);
    moveRows(true, base, off, kept, lid);
    off += kept;
    eqSeen += tot >> 16u;
  }
}`,
  }));
  return [
    {
      kernel: k,
      buffers: { kCache: b.kCache, vCache: b.vCache, scores: b.scores, kpos: b.kpos, ...(withOrig ? { orig: b.orig! } : {}) },
      params: { len: d.len, keep: d.keep, forcedFrom: d.forcedFrom, capacity: d.capacity, rv: RV, blk: W },
      workgroups: [d.KV],
    },
  ];
}
