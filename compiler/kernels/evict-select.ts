/**
 * Eviction, step 1 of 3 (see evict.ts): which entries survive, and where each one goes. One workgroup per KV head
 * of NT threads (256..1024); 17K scores per head are little work, what matters is keeping the chain of dependent
 * steps short, so every step is a parallel pass or a log-step scan and no thread walks more than len/NT slots.
 *
 *   scores (KV, capacity) ──4 × [histogram 256 bins ─ suffix scan ─ pick bin]──▶ thr, needEq   (radix select)
 *        │                                                                             │
 *        └──── thread t owns slots [t·seg, (t+1)·seg): count gt/eq ─ scan over threads ┴─ walk its slots
 *                                                                                          ▼
 *                              meta[h, s] = (destination slot or NONE, score, kpos, orig): the scalars of moved
 *                              entries ride in the scratch, so the scatter writes them without a gather
 *
 * Selection rule (same as the single-workgroup kernel, evict-single.ts): key = order-preserving u32 image of the
 * f32 score, +inf for forced slots (s >= forcedFrom). `thr` is the keep-th largest key and `needEq` how many
 * entries equal to it survive; an entry is kept iff key > thr, or key == thr and fewer than needEq equal keys
 * precede it (ties go to the earlier slot). A kept entry's destination is (# gt before it) + min(# eq before it,
 * needEq): its rank among the kept, i.e. kept entries keep their order and fill [0, keep).
 */
import { kernel, rw, wgsl } from '../wgsl.js';
import type { Dispatch } from '../../runtime/gpu/runner.js';

export const EVICT_NONE = 0xffffffff;

/** Order-preserving image of an f32's bits: larger float <=> larger u32 (+inf, -inf, -0 < +0 all ordered). */
export const ORDER_KEY = `
fn orderKey(u: u32) -> u32 { return select(u | 0x80000000u, ~u, (u & 0x80000000u) != 0u); }
`;

/** Workgroup storage of the radix select and of the scan over NT threads. */
export function selectWorkgroupVars(NT: number): string {
  return wgsl`
var<workgroup> hist: array<atomic<u32>, 256>;
var<workgroup> suf: array<u32, 256>; // suf[b] = entries in bins >= b
var<workgroup> selPrefix: u32;
var<workgroup> selRem: u32;
var<workgroup> cGt: array<u32, ${NT}>; // per-thread counts, then their inclusive scan
var<workgroup> cEq: array<u32, ${NT}>;
`;
}

/**
 * Radix select of the keep-th largest key, most significant byte first. `histFill` adds every candidate key k with
 * (k & hiMask) == prefix to hist[(k >> shift) & 255]. Needs `lid`, params keep / nb and constant NT; leaves
 * `prefix` (the key) and `rem` (how many entries equal to it survive).
 */
export function radixSelect(histFill: string): string {
  return wgsl`
  var prefix = 0u;
  var rem = params.keep; // rank still to find among entries matching prefix; stays >= 1
  for (var ps = 0u; ps < 4u; ps++) {
    let shift = 24u - 8u * ps;
    let hiMask = ~(0xffffffffu >> (8u * ps)); // bytes already fixed
    if (lid < 256u) { atomicStore(&hist[lid], 0u); }
    workgroupBarrier();
${histFill}
    workgroupBarrier();
    var c = 0u;
    if (lid < 256u) { c = atomicLoad(&hist[lid]); suf[lid] = c; }
    workgroupBarrier();
    for (var o = 1u; o < params.nb; o <<= 1u) {
      var add = 0u;
      if (lid + o < 256u) { add = suf[lid + o]; }
      workgroupBarrier();
      if (lid < 256u) { suf[lid] += add; }
      workgroupBarrier();
    }
    // the one bin whose range of ranks (above, above + c] holds rem
    if (lid < 256u) {
      let above = suf[lid] - c;
      if (above < rem && above + c >= rem) {
        selPrefix = prefix | (lid << shift);
        selRem = rem - above;
      }
    }
    workgroupBarrier();
    prefix = selPrefix;
    rem = selRem;
  }
`;
}

/**
 * Inclusive scan over the workgroup of two per-thread counts `a` and `b` (WGSL expressions): afterwards cGt[lid] and
 * cEq[lid] hold their sums over threads 0..=lid (params.nt = NT, see the kernel).
 */
export function scanThreads(a: string, b: string): string {
  return `
  cGt[lid] = ${a};
  cEq[lid] = ${b};
  workgroupBarrier();
  for (var o = 1u; o < params.nt; o <<= 1u) {
    var ag = 0u;
    var ae = 0u;
    if (lid >= o) { ag = cGt[lid - o]; ae = cEq[lid - o]; }
    workgroupBarrier();
    cGt[lid] += ag;
    cEq[lid] += ae;
    workgroupBarrier();
  }
`;
}

/** keep >= 1 (keep 0 evicts everything and moves nothing: the caller dispatches nothing). */
export function evictSelect(
  o: { threads: number; compact: boolean },
  d: { KV: number; len: number; keep: number; forcedFrom: number; capacity: number },
  b: { scores: GPUBuffer; kpos: GPUBuffer; orig?: GPUBuffer; meta: GPUBuffer },
): Dispatch {
  const NT = o.threads;
  if (![256, 512, 1024].includes(NT)) throw new Error(`evictSelect: threads must be 256, 512 or 1024, got ${NT}`);
  const withOrig = b.orig !== undefined;
  const k = kernel({ op: 'evict_select', threads: NT, compact: o.compact, orig: withOrig }, () => ({
    bindings: [
      rw('scores', 'array<u32>'), // (KV, capacity) f32 bits
      rw('kpos', 'array<u32>'), // (KV, capacity); written only when compact (kept entries that stay put get their rank)
      ...(withOrig ? [rw('orig', 'array<u32>')] : []), // (KV, capacity)
      rw('slotMeta', 'array<vec4<u32>>'), // (KV, capacity) scratch: (destination slot or NONE, score, kpos, orig)
    ],
    // nt, nb: run-time copies of NT and 256 as bounds of the scan loops, which contain barriers; with constant
    // bounds CPU Vulkan compilers unroll them and every copy of a barrier becomes a suspend point (slow compiles)
    params: [['len', 'u32'], ['keep', 'u32'], ['forcedFrom', 'u32'], ['capacity', 'u32'], ['nt', 'u32'], ['nb', 'u32']],
    workgroupSize: [NT, 1, 1],
    body: wgsl`
const NT = ${NT}u;
const NONE = 0xffffffffu;

${selectWorkgroupVars(NT)}
${ORDER_KEY}
fn keyOf(base: u32, s: u32) -> u32 {
  if (s >= params.forcedFrom) { return 0xff800000u; } // +inf
  return orderKey(scores[base + s]);
}

@compute @workgroup_size(${NT})
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>) {
  let base = wg.x * params.capacity;
  // 1. radix select of the keep-th largest key
${radixSelect(`
    for (var s = lid; s < params.len; s += NT) {
      let k = keyOf(base, s);
      if ((k & hiMask) == prefix) { atomicAdd(&hist[(k >> shift) & 255u], 1u); }
    }`)}  let thr = prefix;
  let needEq = rem;

  // 2. destinations: each thread counts its contiguous run of slots, a scan over threads gives the counts before
  // it, then it walks its run again in slot order
  let seg = (params.len + NT - 1u) / NT;
  let s0 = min(lid * seg, params.len);
  let s1 = min(s0 + seg, params.len);
  var gt = 0u;
  var eq = 0u;
  for (var s = s0; s < s1; s++) {
    let k = keyOf(base, s);
    gt += select(0u, 1u, k > thr);
    eq += select(0u, 1u, k == thr);
  }
${scanThreads('gt', 'eq')}
  var gtBefore = cGt[lid] - gt;
  var eqBefore = cEq[lid] - eq;
  for (var s = s0; s < s1; s++) {
    let k = keyOf(base, s);
    var dst = NONE;
    if (k > thr || (k == thr && eqBefore < needEq)) { dst = gtBefore + min(eqBefore, needEq); }
    gtBefore += select(0u, 1u, k > thr);
    eqBefore += select(0u, 1u, k == thr);
    // the scalars only matter for entries that move (dst < s); the others are never read back
    var m = vec4<u32>(dst, 0u, 0u, 0u);
    if (dst != NONE && dst != s) { m = vec4<u32>(dst, scores[base + s], kpos[base + s], ${withOrig ? 'orig[base + s]' : '0u'}); }
    slotMeta[base + s] = m;
    ${o.compact ? '// kept entries that stay put are not moved, but their position becomes their rank all the same\n    if (dst == s) { kpos[base + s] = s; }' : ''}
  }
}`,
  }));
  return {
    kernel: k,
    buffers: { scores: b.scores, kpos: b.kpos, ...(withOrig ? { orig: b.orig! } : {}), slotMeta: b.meta },
    params: { len: d.len, keep: d.keep, forcedFrom: d.forcedFrom, capacity: d.capacity, nt: NT, nb: 256 },
    workgroups: [d.KV],
  };
}
