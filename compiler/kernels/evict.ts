/**
 * Eviction after a prefill chunk, one layer: per KV head keep the `keep` best-scored entries among slots [0, len)
 * in [0, keep), moving K, V, score and position (and orig) together. Two layouts:
 *
 * - 'holes' (evict-holes.ts; compact positions): kept entries stay put and the chunk's survivors fill the evicted
 *   slots; order lives in the positions. Two dispatches, at most one chunk of rows moved per head.
 * - 'ordered' (below): kept entries compacted in original slot order. Needed when something reads slot
 *   neighbours as time neighbours (SnapKV's pooling) or positions are not ranks ('original').
 *
 * Ordered: three dispatches per layer, two of them spread over the whole GPU:
 *
 *   scores ─▶ 1. select  (evict-select.ts)  KV workgroups of 256..1024 threads
 *                          radix select of the keep-th key + scan of kept flags
 *                          ─▶ meta[h, s] = (dst | NONE, score, kpos, orig)
 *   cache  ─▶ 2. gather  (evict-move.ts)    one thread per (K|V, h, s, 16 bytes): moved rows ─▶ scratch rows[s]
 *   scratch ─▶ 3. scatter (evict-move.ts)   same grid: rows[s] ─▶ cache[dst]; scalars from meta ─▶ [dst]
 *
 *   slot:   0 1 2 3 4 5 6 7 8 ...            kept: ■ ■ ■ □ ■ □ ■ ■ ...  (□ evicted)
 *   dst:    0 1 2 - 3 - 4 5                  rows before the first evicted slot have dst == s: never touched
 *
 * Why a scratch: moving in place with independent workgroups is unsafe (a destination row may be another
 * workgroup's unread source), and ordering the moves would serialize them again. The scratch is one layer's worth
 * (both caches' rows + a 16-byte meta word per slot), reused by every layer: for Llama-3.1-8B (8 KV heads, f16,
 * head_dim 128, capacity 17,764) that is 72.8 MB + 2.3 MB, next to 18.6 GB of cache. Each moved row is copied
 * twice (cache → scratch → cache): with ~16K of 17.4K rows moving per head (scores spread evictions over the
 * whole cache) that is 4 × 67 MB per layer, ~8.6 GB per chunk, ~2.3 ms at the H200's ~3.8 TB/s copy rate.
 *
 * K/V move as raw 32-bit words (the dtype only sets the row width; an int8 row carries its scale as its last word,
 * so codes and scale move together). The result equals evict-single.ts's (and test/ref's refEvict) word for word:
 * slots >= keep keep their old contents.
 */
import type { Dispatch } from '../../runtime/gpu/runner.js';
import { cacheRowWords, type CacheDtype } from './attn-common.js';
import { evictFill, evictSelectHoles } from './evict-holes.js';
import { evictMove } from './evict-move.js';
import { evictSelect } from './evict-select.js';
import { checkInt8HeadDim } from './kv-int8.js';
import { env } from '../../runtime/env.js';

export type EvictLayout = 'ordered' | 'holes';

export interface EvictOpts {
  cacheDtype: CacheDtype;
  /** 'holes' needs compact positions */
  layout: EvictLayout;
  headDim: number;
  /** rewrite positions to ranks (kpos[h, i] = i) */
  compact: boolean;
  /** threads of the selection workgroup: 256 (default, any device), 512 or 1024 (see evictThreads) */
  threads?: number;
}
export interface EvictDims {
  KV: number;
  /** occupied slots per head */
  len: number;
  /** entries to keep per head */
  keep: number;
  /** slots >= forcedFrom are always kept (score treated as +inf) */
  forcedFrom: number;
  capacity: number;
}
/** Scratch shared by every layer's eviction (sized by evictScratchBytes for the largest KV × capacity). */
export interface EvictScratch {
  rows: GPUBuffer | null; // (2: K, V, KV, capacity, rowWords) u32; layout 'ordered' only
  meta: GPUBuffer; // (KV, capacity) vec4<u32> ('ordered'), (KV, 4, capacity) u32 ('holes')
}
export interface EvictBuffers {
  kCache: GPUBuffer; // (KV, capacity, headDim) f32|f16, or (KV, capacity, headDim/4 + 1) u32 int8 rows
  vCache: GPUBuffer; // (KV, capacity, headDim) f32|f16, or (KV, capacity, headDim/4 + 1) u32 int8 rows
  scores: GPUBuffer; // (KV, capacity) f32
  kpos: GPUBuffer; // (KV, capacity) u32
  /** optional (KV, capacity) u32 per-entry payload moved like kpos but never rewritten (original prompt positions) */
  orig?: GPUBuffer;
  scratch: EvictScratch;
}

function rowWordsOf(cacheDtype: CacheDtype, headDim: number): number {
  if (cacheDtype === 'int8') checkInt8HeadDim(headDim);
  const rw = cacheRowWords(cacheDtype, headDim);
  if (!Number.isInteger(rw)) throw new Error(`evict: an f16 row of ${headDim} halves is not whole 32-bit words`);
  return rw;
}

/** Bytes of the two scratch buffers for caches of (KV, capacity) rows (no row scratch for 'holes'). */
export function evictScratchBytes(layout: EvictLayout, cacheDtype: CacheDtype, headDim: number, KV: number, capacity: number): { rows: number; meta: number } {
  return { rows: layout === 'ordered' ? 2 * KV * capacity * rowWordsOf(cacheDtype, headDim) * 4 : 0, meta: KV * capacity * 16 };
}

/**
 * The layout an evicting session uses: 'holes' when positions are ranks and no score reads slot neighbours as time
 * neighbours, 'ordered' otherwise. LOCRET_EVICT_LAYOUT=ordered forces compaction (an A/B switch).
 */
export function evictLayoutFor(compact: boolean, slotOrder: boolean): EvictLayout {
  const v = env('LOCRET_EVICT_LAYOUT');
  if (v !== undefined && v !== '' && v !== 'ordered' && v !== 'holes') throw new Error(`LOCRET_EVICT_LAYOUT must be ordered or holes, got '${v}'`);
  return compact && !slotOrder && v !== 'ordered' ? 'holes' : 'ordered';
}

/** Largest selection workgroup a device allows, up to 1024 (fewer, longer-running threads when it allows less). */
export function evictThreads(maxInvocationsPerWorkgroup: number): number {
  return maxInvocationsPerWorkgroup >= 1024 ? 1024 : maxInvocationsPerWorkgroup >= 512 ? 512 : 256;
}

/**
 * No dispatch when keep >= len (nothing is evicted, every entry already sits at its slot) or keep == 0 (nothing
 * survives, so nothing is written: slots keep their old contents as with any evicted entry).
 */
export function evict(o: EvictOpts, d: EvictDims, b: EvictBuffers): Dispatch[] {
  const rowWords = rowWordsOf(o.cacheDtype, o.headDim);
  if (o.layout === 'holes' && !o.compact) throw new Error("evict: layout 'holes' needs compact positions (ranks)");
  if (d.keep >= d.len || d.keep === 0) return [];
  const need = evictScratchBytes(o.layout, o.cacheDtype, o.headDim, d.KV, d.capacity);
  const rows = b.scratch.rows?.size ?? 0;
  if (rows < need.rows || b.scratch.meta.size < need.meta)
    throw new Error(`evict: scratch of ${rows} + ${b.scratch.meta.size} bytes, need ${need.rows} + ${need.meta}`);
  const threads = o.threads ?? 256;
  if (o.layout === 'holes') {
    return [
      evictSelectHoles({ threads }, d, { scores: b.scores, kpos: b.kpos, meta: b.scratch.meta }),
      evictFill({ rowWords }, d, { kCache: b.kCache, vCache: b.vCache, scores: b.scores, kpos: b.kpos, orig: b.orig, meta: b.scratch.meta }),
    ];
  }
  const move = { kCache: b.kCache, vCache: b.vCache, scores: b.scores, kpos: b.kpos, orig: b.orig, rows: b.scratch.rows!, meta: b.scratch.meta };
  const md = { KV: d.KV, len: d.len, capacity: d.capacity };
  return [
    evictSelect({ threads, compact: o.compact }, d, { scores: b.scores, kpos: b.kpos, orig: b.orig, meta: b.scratch.meta }),
    evictMove('gather', { rowWords, compact: o.compact }, md, move),
    evictMove('scatter', { rowWords, compact: o.compact }, md, move),
  ];
}
