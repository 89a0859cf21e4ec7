/**
 * Eviction that fills holes instead of compacting (layout 'holes', compact positions only). Kept entries stay in
 * their slots, the survivors at slots >= keep (the chunk just added) move into the evicted slots below keep, and
 * every kept entry's position becomes its rank among the kept in original order. Original order then lives in the
 * positions, not in slot order: attention is order-free apart from the positions, and each new step still appends
 * its tokens in order at [len, len + T), which is all the causal rule looks at.
 *
 *   slot:    0 1 2 3 4 5 | 6 7 8        keep 6 of len 9
 *   kept:    ■ □ ■ ■ □ ■ | ■ □ ■
 *   holes:   1 4           fillers: 6 8     (each list in rank order)     slot 1 ← slot 6, slot 4 ← slot 8
 *
 * Two dispatches per layer:
 *   1. select (evictSelectHoles, one workgroup per KV head): slot by rank; each thread then holds a run of ranks
 *      (slot and key) in registers for a radix select of the keep-th key (evict-select.ts) and two walks in rank
 *      order: new ranks (ties go to the earlier rank, ranks >= forcedFrom count as +inf: the same rule and the
 *      same survivors as the ordered layout), then the lists of holes and fillers
 *   2. fill (evictFill, one thread per (K|V, head, filler, row vector)): filler i moves to hole i
 *
 * At most len - keep rows move per head (one chunk), each once and in place: fillers sit at or above keep, holes
 * below it, so no row is both read and written. Against the ordered layout's ~16K rows per head copied twice
 * through a scratch at the 8B shape, that is ~1K rows copied once, and no row scratch at all.
 *
 * Needs kpos[h, 0..len) to be a permutation of [0, len): true for compact positions (the kept entries' ranks, then
 * the new tokens' len, len + 1, ...). With anything else the result is wrong, but every access stays in bounds.
 *
 * Scratch: the meta buffer, (KV, 4, capacity) u32 viewed per head as four lists:
 *
 *   word  0 ............ cap | cap ...... 2cap | 2cap ....... 3cap | 3cap .............. 4cap
 *       [ new rank of filler i | slot by rank   | holes, rank order | fillers, rank order, NONE after the last ]
 */
import { kernel, ro, rw, wgsl } from '../wgsl.js';
import type { Dispatch } from '../../runtime/gpu/runner.js';
import { grid } from './cache-store.js';
import { EVICT_NONE, ORDER_KEY, radixSelect, scanThreads, selectWorkgroupVars } from './evict-select.js';
import { MOVE_WG, rowThreads, rowVector } from './evict-move.js';

const WG = MOVE_WG;

/** u32 words of meta scratch per KV head and slot. */
export const HOLES_META_WORDS = 4;

/** Ranks per selection thread, held in registers: enough for len, a multiple of 4 (fewer variants). */
export function holesRun(len: number, threads: number): number {
  return Math.max(4, Math.ceil(Math.ceil(len / threads) / 4) * 4);
}

/** keep >= 1 and keep < len (otherwise nothing is evicted or nothing survives: the caller dispatches nothing). */
export function evictSelectHoles(
  o: { threads: number },
  d: { KV: number; len: number; keep: number; forcedFrom: number; capacity: number },
  b: { scores: GPUBuffer; kpos: GPUBuffer; meta: GPUBuffer },
): Dispatch {
  const NT = o.threads;
  if (![256, 512, 1024].includes(NT)) throw new Error(`evictSelectHoles: threads must be 256, 512 or 1024, got ${NT}`);
  const SEG = holesRun(d.len, NT);
  const k = kernel({ op: 'evict_select_holes', threads: NT, run: SEG }, () => ({
    bindings: [
      ro('scores', 'array<u32>'), // (KV, capacity) f32 bits
      rw('kpos', 'array<u32>'), // (KV, capacity) ranks; kept entries below keep get their new rank here
      rw('lists', 'array<u32>'), // (KV, 4, capacity) scratch: filler ranks, slot by rank, holes, fillers
    ],
    // nt, nb: run-time copies of NT and 256 as loop bounds around barriers (see evict-select.ts)
    params: [['len', 'u32'], ['keep', 'u32'], ['forcedFrom', 'u32'], ['capacity', 'u32'], ['nt', 'u32'], ['nb', 'u32']],
    workgroupSize: [NT, 1, 1],
    body: wgsl`
const NT = ${NT}u;
const SEG = ${SEG}u; // ranks per thread, in registers (NT · SEG >= len)
const NONE = ${EVICT_NONE}u;

${selectWorkgroupVars(NT)}
${ORDER_KEY}

@compute @workgroup_size(${NT})
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>) {
  let cap = params.capacity;
  let base = wg.x * cap;
  let m = wg.x * ${HOLES_META_WORDS}u * cap; // this head's lists
  let len = params.len;
  let keep = params.keep;
  // 0. slot of each rank
  for (var s = lid; s < len; s += NT) {
    let p = kpos[base + s];
    if (p < len) { lists[m + cap + p] = s; }
  }
  storageBarrier();

  // 1. this thread's run of ranks [a0, a0 + n): slot and key of each, read once (ranks >= forcedFrom are +inf)
  let a0 = min(lid * SEG, len);
  let n = min(a0 + SEG, len) - a0;
  var slots: array<u32, SEG>;
  var keys: array<u32, SEG>;
  for (var i = 0u; i < SEG; i++) {
    if (i < n) {
      let s = min(lists[m + cap + a0 + i], len - 1u);
      slots[i] = s;
      keys[i] = select(orderKey(scores[base + s]), 0xff800000u, a0 + i >= params.forcedFrom);
    }
  }

  // 2. the keep-th largest key
${radixSelect(`
    for (var i = 0u; i < SEG; i++) {
      let k = keys[i];
      if (i < n && (k & hiMask) == prefix) { atomicAdd(&hist[(k >> shift) & 255u], 1u); }
    }`)}  let thr = prefix;
  let needEq = rem;

  // 3. survivors and new ranks: counts of the run, a scan over threads, then a walk in rank order (ties go to the
  // earlier rank); kept entries below keep take their rank now, and the run's holes and fillers are counted
  var gt = 0u;
  var eq = 0u;
  for (var i = 0u; i < SEG; i++) {
    if (i < n) {
      gt += select(0u, 1u, keys[i] > thr);
      eq += select(0u, 1u, keys[i] == thr);
    }
  }
${scanThreads('gt', 'eq')}
  let gt0 = cGt[lid] - gt;
  let eq0 = cEq[lid] - eq;
  var gtB = gt0;
  var eqB = eq0;
  var nh = 0u;
  var nf = 0u;
  for (var i = 0u; i < SEG; i++) {
    if (i < n) {
      let k = keys[i];
      let s = slots[i];
      let kept = k > thr || (k == thr && eqB < needEq);
      if (kept && s < keep) { kpos[base + s] = gtB + min(eqB, needEq); }
      gtB += select(0u, 1u, k > thr);
      eqB += select(0u, 1u, k == thr);
      nh += select(0u, 1u, !kept && s < keep);
      nf += select(0u, 1u, kept && s >= keep);
    }
  }

  // 4. holes (evicted slots below keep) and fillers (kept slots from keep on) listed in rank order, each filler
  // with its new rank: filler i will move to hole i
${scanThreads('nh', 'nf')}
  var hi = cGt[lid] - nh;
  var fi = cEq[lid] - nf;
  gtB = gt0;
  eqB = eq0;
  for (var i = 0u; i < SEG; i++) {
    if (i < n) {
      let k = keys[i];
      let s = slots[i];
      let kept = k > thr || (k == thr && eqB < needEq);
      if (!kept && s < keep) { lists[m + 2u * cap + hi] = s; hi++; }
      if (kept && s >= keep) { lists[m + 3u * cap + fi] = s; lists[m + fi] = gtB + min(eqB, needEq); fi++; }
      gtB += select(0u, 1u, k > thr);
      eqB += select(0u, 1u, k == thr);
    }
  }
  // the fill grid covers len - keep fillers per head: mark where this head's list ends
  for (var i = cEq[NT - 1u] + lid; i < len - keep; i += NT) { lists[m + 3u * cap + i] = NONE; }
}`,
  }));
  return {
    kernel: k,
    buffers: { scores: b.scores, kpos: b.kpos, lists: b.meta },
    params: { len: d.len, keep: d.keep, forcedFrom: d.forcedFrom, capacity: d.capacity, nt: NT, nb: 256 },
    workgroups: [d.KV],
  };
}

/** Filler i → hole i for every head: K and V rows as raw words, score, new rank, and orig when given. */
export function evictFill(
  o: { rowWords: number },
  d: { KV: number; len: number; keep: number; capacity: number },
  b: { kCache: GPUBuffer; vCache: GPUBuffer; scores: GPUBuffer; kpos: GPUBuffer; orig?: GPUBuffer; meta: GPUBuffer },
): Dispatch {
  const { vt, RV } = rowVector(o.rowWords);
  const withOrig = b.orig !== undefined;
  const k = kernel({ op: 'evict_fill', rowWords: o.rowWords, orig: withOrig }, () => ({
    bindings: [
      rw('kCache', `array<${vt}>`), // (KV, capacity, RV) raw row words
      rw('vCache', `array<${vt}>`), // (KV, capacity, RV)
      rw('scores', 'array<u32>'), // (KV, capacity) f32 bits (moved bit-exactly)
      rw('kpos', 'array<u32>'), // (KV, capacity)
      ...(withOrig ? [rw('orig', 'array<u32>')] : []), // (KV, capacity)
      ro('lists', 'array<u32>'), // (KV, 4, capacity) from evictSelectHoles
    ],
    params: [['n', 'u32'], ['keep', 'u32'], ['capacity', 'u32'], ['KV', 'u32']],
    workgroupSize: [WG, 1, 1],
    body: wgsl`
const RV = ${RV}u;
const NONE = ${EVICT_NONE}u;

@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
${rowThreads('params.n', 'i')}
  let cap = params.capacity;
  let m = h * ${HOLES_META_WORDS}u * cap;
  let src = lists[m + 3u * cap + i];
  if (src == NONE) { return; }
  let dst = lists[m + 2u * cap + i];
  // a hole lies below keep and a filler at or above it; anything else is a malformed cache: skip, stay in bounds
  if (dst >= params.keep || src < params.keep || src >= cap) { return; }
  let srcRow = h * cap + src;
  let dstRow = h * cap + dst;
  if (isV) { vCache[dstRow * RV + col] = vCache[srcRow * RV + col]; } else { kCache[dstRow * RV + col] = kCache[srcRow * RV + col]; }
  if (!isV && col == 0u) {
    scores[dstRow] = scores[srcRow];
    kpos[dstRow] = lists[m + i];
    ${withOrig ? 'orig[dstRow] = orig[srcRow];' : ''}
  }
}`,
  }));
  const buffers: Record<string, GPUBuffer> = { kCache: b.kCache, vCache: b.vCache, scores: b.scores, kpos: b.kpos, lists: b.meta };
  if (withOrig) buffers.orig = b.orig!;
  const n = d.len - d.keep;
  return { kernel: k, buffers, params: { n, keep: d.keep, capacity: d.capacity, KV: d.KV }, workgroups: grid(Math.ceil((2 * d.KV * n * RV) / WG)) };
}
