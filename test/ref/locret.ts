/**
 * Reference of Locret's chunked prefill with a bounded KV cache (the official `generate` of locret/inference):
 *
 *   prefix = prompt[0 : N − n_loc]; for each chunk [b, e) of B tokens of the prefix:
 *     run the chunk over (evicted cache ∪ itself, causal); append its K (pre-RoPE), V and retention scores;
 *     sc = scores; if the chunk is not the last one (b + B < N − n_loc) the newest n_s entries get +inf;
 *     per layer and KV head keep the top-min(b, len) entries of sc, in original order.
 *   then the last n_loc tokens are appended without eviction (their logits give the first token),
 *   then greedy decoding appends each token (no eviction).
 *
 * Top-b ties: the earlier (older) entry wins (torch.topk leaves ties unspecified; this is the fixed rule).
 * Scores are written once at insertion and never recomputed. Keys are stored before RoPE; RoPE is applied at
 * attention time from each slot's position:
 *   compact  – slot s has position s (its rank in the cache); a block appended at len takes len..len+T−1;
 *   original – every key keeps its prompt position; queries use theirs.
 * Longrope: every call's table is chosen from (largest query position + 1), as HF does per forward call.
 */
import type { ModelConfig } from '../../ir/config.js';
import { argmax, attendAtPositions, type PositionedKvHead } from './kernels.js';
import { embed, layerFinish, layerQkv, lmHead, type Weights } from './model.js';
import { retainingScores } from './retaining.js';

export type RefPolicy =
  | { kind: 'locret' }
  | { kind: 'full' }
  /** attention sinks (default 4) + the most recent entries */
  | { kind: 'streaming'; sinks?: number }
  | { kind: 'random'; seed: number };

export interface LocretOpts {
  budget: number;
  chunk: number;
  /** n_s: newest entries protected after every non-final chunk */
  stabilizer: number;
  /** n_loc: prompt tail appended without eviction (≥ 1) */
  nLoc: number;
  maxNew: number;
  positions?: 'compact' | 'original';
  policy?: RefPolicy;
  stopAtEos?: boolean;
  /** receives the logits of every row of the n_loc tail, (nLoc, vocab) */
  tailLogits?: (logits: Float32Array) => void;
  forceLong?: boolean;
}

/** Original prompt positions kept per [layer][kvHead], in slot order. */
export type KeptTrace = number[][][];

export interface LocretResult {
  tokens: number[];
  /** after each prefill chunk's eviction: the chunk end and what was kept */
  traces: { chunkEnd: number; kept: KeptTrace }[];
  /** the cache after the last decode step */
  final: KeptTrace;
}

/**
 * Indices of the entries to keep, ascending: the `budget` largest scores, where indices ≥ forcedFrom count as +inf
 * and NaN as −inf; ties go to the smaller index. Keeps everything when len ≤ budget.
 */
export function selectTopKeep(scores: ArrayLike<number>, len: number, budget: number, forcedFrom?: number): number[] {
  const idx = Array.from({ length: len }, (_, i) => i);
  if (len <= budget) return idx;
  const key = (i: number): number => {
    if (forcedFrom !== undefined && i >= forcedFrom) return Infinity;
    const s = scores[i];
    return Number.isNaN(s) ? -Infinity : s;
  };
  idx.sort((a, b) => {
    const ka = key(a), kb = key(b);
    return ka === kb ? a - b : kb > ka ? 1 : -1;
  });
  return idx.slice(0, Math.max(0, budget)).sort((a, b) => a - b);
}

/** mulberry32, for reproducible random-policy scores. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface HeadState { kPre: Float32Array; v: Float32Array; score: Float32Array; orig: Int32Array }

/** Per-layer, per-KV-head bounded cache with pre-RoPE keys. All heads of all layers share one length. */
export class RefEvictingCache {
  len = 0;
  readonly heads: HeadState[][];
  constructor(readonly cfg: ModelConfig, readonly capacity: number) {
    const D = cfg.headDim;
    this.heads = Array.from({ length: cfg.numLayers }, () =>
      Array.from({ length: cfg.numKvHeads }, () => ({
        kPre: new Float32Array(capacity * D), v: new Float32Array(capacity * D),
        score: new Float32Array(capacity), orig: new Int32Array(capacity),
      })),
    );
  }

  kept(): KeptTrace {
    return this.heads.map((hs) => hs.map((h) => Array.from(h.orig.subarray(0, this.len))));
  }

  /** Keep top-budget per layer/head (newest `protect` forced) and compact in original order. */
  evict(budget: number, protect: number): void {
    const D = this.cfg.headDim;
    let newLen = this.len;
    for (const hs of this.heads) {
      for (const h of hs) {
        const keep = selectTopKeep(h.score, this.len, budget, protect > 0 ? this.len - protect : undefined);
        keep.forEach((src, dst) => {
          h.kPre.copyWithin(dst * D, src * D, (src + 1) * D);
          h.v.copyWithin(dst * D, src * D, (src + 1) * D);
          h.score[dst] = h.score[src];
          h.orig[dst] = h.orig[src];
        });
        newLen = keep.length;
      }
    }
    this.len = newLen;
  }
}

/**
 * Run tokens `ids` (original positions `orig`) over the cache, appending them; returns the logits of the last token.
 * `scoreOf(l, qkv, T)` gives the (T, KV) retention scores to store.
 */
export function runBlock(
  cfg: ModelConfig, w: Weights, cache: RefEvictingCache, ids: readonly number[], orig: readonly number[],
  mode: 'compact' | 'original', scoreOf: (l: number, qkv: Float32Array, T: number) => Float32Array, forceLong = false,
  allRows = false,
): Float32Array {
  const { numLayers: L, numHeads: H, numKvHeads: KV, headDim: D } = cfg;
  const T = ids.length, len = cache.len;
  if (len + T > cache.capacity) throw new Error(`cache capacity ${cache.capacity} exceeded (${len} + ${T})`);
  const qPos = mode === 'compact' ? ids.map((_, t) => len + t) : orig.slice();
  const ropeOpts = { seqLen: Math.max(...qPos) + 1, forceLong };
  const slotPos = Array.from({ length: len + T }, (_, s) => s);
  const x = embed(cfg, w, ids);
  for (let l = 0; l < L; l++) {
    const { q, k, v, qkv } = layerQkv(cfg, w, l, x, T);
    const sc = scoreOf(l, qkv, T);
    const heads: PositionedKvHead[] = [];
    for (let g = 0; g < KV; g++) {
      const h = cache.heads[l][g];
      for (let t = 0; t < T; t++) {
        h.kPre.set(k.subarray((t * KV + g) * D, (t * KV + g + 1) * D), (len + t) * D);
        h.v.set(v.subarray((t * KV + g) * D, (t * KV + g + 1) * D), (len + t) * D);
        h.score[len + t] = sc[t * KV + g];
        h.orig[len + t] = orig[t];
      }
      heads.push({ kPre: h.kPre, v: h.v, len: len + T, pos: mode === 'compact' ? slotPos : h.orig });
    }
    const attn = attendAtPositions(q, qPos, H, D, cfg.rope, heads, (t) => len + t + 1, undefined, ropeOpts);
    layerFinish(cfg, w, l, x, attn, T);
  }
  cache.len = len + T;
  return lmHead(cfg, w, x, T, allRows ? ids.map((_, t) => t) : [T - 1]);
}

/** Retention scores of a policy, as a scoreOf callback for runBlock. */
export function policyScorer(
  cfg: ModelConfig, w: Weights, policy: RefPolicy, origOf: () => readonly number[],
): (l: number, qkv: Float32Array, T: number) => Float32Array {
  const KV = cfg.numKvHeads;
  const rnd = policy.kind === 'random' ? seededRandom(policy.seed) : null;
  return (l, qkv, T) => {
    const out = new Float32Array(T * KV);
    if (policy.kind === 'locret') return retainingScores(cfg, w, l, qkv, T);
    const orig = origOf();
    for (let t = 0; t < T; t++) {
      for (let g = 0; g < KV; g++) {
        if (policy.kind === 'streaming') out[t * KV + g] = orig[t] < (policy.sinks ?? 4) ? Infinity : orig[t];
        else if (rnd) out[t * KV + g] = rnd();
        else out[t * KV + g] = 0;
      }
    }
    return out;
  };
}

/** Locret chunked prefill + greedy decoding over a bounded cache (see the file header). */
export function locretGenerate(cfg: ModelConfig, w: Weights, ids: readonly number[], opts: LocretOpts): LocretResult {
  const N = ids.length, nLoc = opts.nLoc, B = opts.chunk;
  const policy = opts.policy ?? { kind: 'locret' };
  const mode = opts.positions ?? 'compact';
  if (nLoc < 1 || nLoc >= N) throw new Error(`nLoc ${nLoc} must be in [1, ${N})`);
  const full = policy.kind === 'full';
  const budget = full ? Infinity : opts.budget;
  const capacity = (full ? N : Math.min(N, opts.budget + B) + nLoc) + opts.maxNew;
  const cache = new RefEvictingCache(cfg, capacity);
  let curOrig: readonly number[] = [];
  const scorer = policyScorer(cfg, w, policy, () => curOrig);
  const block = (tok: readonly number[], orig: number[], allRows = false): Float32Array => {
    curOrig = orig;
    return runBlock(cfg, w, cache, tok, orig, mode, scorer, opts.forceLong ?? false, allRows);
  };
  const traces: LocretResult['traces'] = [];
  const prefix = N - nLoc;
  for (let b = 0; b < prefix; b += B) {
    const e = Math.min(b + B, prefix);
    block(ids.slice(b, e), range(b, e));
    if (!full) {
      const last = !(b + B < prefix);
      cache.evict(budget, last ? 0 : opts.stabilizer);
    }
    traces.push({ chunkEnd: e, kept: cache.kept() });
  }
  const V = cfg.vocabSize;
  const tail = block(ids.slice(prefix), range(prefix, N), opts.tailLogits !== undefined);
  opts.tailLogits?.(tail);
  let logits = tail.subarray(tail.length - V);
  const tokens: number[] = [];
  for (let i = 0; i < opts.maxNew; i++) {
    const next = argmax(logits, 0, V);
    if (opts.stopAtEos && cfg.eosTokenIds.includes(next)) break;
    tokens.push(next);
    if (i + 1 < opts.maxNew) logits = block([next], [N + i]);
  }
  return { tokens, traces, final: cache.kept() };
}

function range(a: number, b: number): number[] {
  return Array.from({ length: b - a }, (_, i) => a + i);
}
