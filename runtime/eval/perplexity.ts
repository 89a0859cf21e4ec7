/**
 * `locret perplexity`: how well a model predicts a text, and how far another storage of it (q4, q8, an int8 cache)
 * or an evicted cache moves its predictions: the KL divergence from a reference model's next-token distributions,
 * position by position, as llama.cpp's `perplexity --kl-divergence` reports it.
 *
 * The text is tokenized once and cut into consecutive windows; each window starts with the tokens the tokenizer
 * puts before any text (BOS for Llama) and is prefilled from an empty cache. Its last `scored` tokens are the step
 * appended without eviction (the generation-time question), whose every row's logits are read back; the tokens
 * before them are cached as generation would: in chunks, evicted to the budget by the session's policy.
 *
 *   window:  [ BOS | context: chunks, evicted by the policy ...... | scored tail: one step, every row read ]
 *
 * By default the whole window is the scored tail (one full-cache step): the model's own predictions, for comparing
 * storage formats. A shorter tail over a long window measures what eviction costs the tail's predictions. Row j
 * of the tail predicts the token after it; rows before the prefix's last predict no text, and the window's last
 * row predicts beyond it. A reference (`against`) always keeps its full cache, same windows and tail. Log-
 * probabilities are taken in f64 on the host from the f32 logits.
 */
import type { Engine } from '../engine.js';
import type { CacheOptions } from '../session.js';
import type { CacheDtype } from '../../compiler/kernels/attn-common.js';
import { progress } from '../progress.js';
import { argmaxOf } from '../sampling.js';

/** how a window's context is cached before its scored tail (the engine's session defaults otherwise) */
export type WindowCache = Partial<Pick<CacheOptions, 'policy' | 'budget' | 'chunk' | 'stabilizer' | 'positions' | 'ropeLong'>>;

export interface PerplexityOptions {
  readonly cache?: WindowCache;
  /** tokens at the end of each window that are scored (default: the whole window) */
  readonly scored?: number;
  readonly kvDtype?: CacheDtype;
  /** the reference's cache storage (default: as the reference's weights pick) */
  readonly againstKvDtype?: CacheDtype;
  readonly quiet?: boolean;
}

export interface AgainstResult {
  readonly nll: number;
  readonly perplexity: number;
  /** mean over predictions of KL(reference ‖ model), nats */
  readonly kl_mean: number;
  readonly kl_p99: number;
  readonly kl_max: number;
  /** share of predictions whose most likely token is the reference's */
  readonly top1_agreement: number;
}

export interface PerplexityResult {
  readonly windows: number;
  readonly tokens_per_window: number;
  /** the tail of each window whose predictions are scored */
  readonly scored_per_window: number;
  readonly predictions: number;
  /** mean negative log-likelihood of the text's tokens, nats */
  readonly nll: number;
  readonly perplexity: number;
  readonly against?: AgainstResult;
}

/** What the windows are cut from: a tokenizer's encoding of text, with or without its special tokens. */
export type Encode = (text: string, addSpecialTokens: boolean) => number[];

export interface TextWindows {
  /** tokens the tokenizer puts before any text, at the start of every window */
  readonly prefix: number;
  /** (windows, tokens) token ids */
  readonly windows: readonly (readonly number[])[];
}

/**
 * Up to `count` windows of `tokens` tokens: the prefix the tokenizer adds to any text, then the next stretch of the
 * documents' tokens (documents joined by a blank line), consecutive and non-overlapping.
 */
export function textWindows(docs: readonly string[], encode: Encode, tokens: number, count: number): TextWindows {
  const prefix = encode('', true);
  const body = tokens - prefix.length;
  if (body < 1) throw new Error(`a window of ${tokens} tokens leaves no text after the tokenizer's ${prefix.length}-token prefix`);
  const need = body * count;
  const stream: number[] = [];
  for (const d of docs) {
    if (stream.length >= need) break;
    for (const id of encode(`${d.trimEnd()}\n\n`, false)) stream.push(id);
  }
  const n = Math.min(count, Math.floor(stream.length / body));
  if (n === 0) throw new Error(`the text holds ${stream.length} tokens: too few for one window of ${tokens}`);
  return { prefix: prefix.length, windows: Array.from({ length: n }, (_, w) => [...prefix, ...stream.slice(w * body, (w + 1) * body)]) };
}

/** The logits of every row of the window's scored tail. */
async function tailLogits(engine: Engine, ids: readonly number[], tail: number, cache: WindowCache, kvDtype?: CacheDtype): Promise<Float32Array> {
  const s = engine.session({ ...cache, allLogits: true, maxNew: 1, kvDtype });
  try {
    return (await s.prefill(ids, tail)).logits; // (tail, vocab) f32
  } finally {
    s.release();
  }
}

/** log-softmax of row r of (rows, V) logits, in f64 */
function logSoftmax(logits: Float32Array, r: number, V: number, out: Float64Array): Float64Array {
  const o = r * V;
  let m = -Infinity;
  for (let i = 0; i < V; i++) m = Math.max(m, logits[o + i]!);
  let s = 0;
  for (let i = 0; i < V; i++) s += Math.exp(logits[o + i]! - m);
  const lse = m + Math.log(s);
  for (let i = 0; i < V; i++) out[i] = logits[o + i]! - lse;
  return out;
}

/**
 * Scores `engine` on the windows; with `against`, also the reference model on the same windows and the KL
 * divergence of the engine's predictions from the reference's. Both must share the vocabulary.
 */
export async function runPerplexity(engine: Engine, text: TextWindows, o: PerplexityOptions, against?: Engine): Promise<PerplexityResult> {
  const V = engine.config.vocabSize;
  if (against && against.config.vocabSize !== V)
    throw new Error(`the reference model's vocabulary (${against.config.vocabSize}) differs from the model's (${V}): KL needs the same tokens`);
  const { windows, prefix } = text;
  if (windows.length === 0) throw new Error('no windows to score');
  const T = windows[0]!.length;
  const tail = o.scored ?? T;
  if (!Number.isInteger(tail) || tail < 2 || tail > T) throw new Error(`scored tail of ${tail} tokens: must be 2 to the window's ${T}`);
  const cache = o.cache ?? {};
  // the reference keeps every entry; the same chunks so its tail step sees the same cache length
  const full: WindowCache = { policy: 'full', chunk: cache.chunk, positions: cache.positions, ropeLong: cache.ropeLong };
  const bar = o.quiet ? null : progress({ total: windows.length, label: 'perplexity', unit: 'window' });
  const lp = new Float64Array(V); // (vocab) the reference's log-probabilities of one row
  const lq = new Float64Array(V); // (vocab) the model's
  const kls: number[] = [];
  let klSum = 0;
  let nll = 0;
  let refNll = 0;
  let agree = 0;
  let predictions = 0;
  for (const ids of windows) {
    const logits = await tailLogits(engine, ids, tail, cache, o.kvDtype);
    const ref = against ? await tailLogits(against, ids, tail, full, o.againstKvDtype) : null;
    // tail row j is window position T − tail + j and predicts the token after it
    for (let j = Math.max(0, prefix - 1 - (T - tail)); j < tail - 1; j++) {
      const next = ids[T - tail + j + 1]!;
      logSoftmax(logits, j, V, lq);
      nll -= lq[next]!;
      if (ref) {
        logSoftmax(ref, j, V, lp);
        refNll -= lp[next]!;
        let kl = 0;
        for (let i = 0; i < V; i++) if (lp[i]! > -Infinity) kl += Math.exp(lp[i]!) * (lp[i]! - lq[i]!);
        kl = Math.max(0, kl); // rounding can take a near-zero sum below 0
        kls.push(kl);
        klSum += kl;
        // log-softmax only shifts a row: the top token is the logits' own
        if (argmaxOf(ref, j * V, V) === argmaxOf(logits, j * V, V)) agree++;
      }
      predictions++;
    }
    bar?.tick(1, `ppl ${Math.exp(nll / predictions).toFixed(3)}${kls.length ? `  KL ${(klSum / kls.length).toFixed(4)}` : ''}`);
  }
  bar?.done();
  const result: PerplexityResult = {
    windows: windows.length,
    tokens_per_window: T,
    scored_per_window: tail,
    predictions,
    nll: nll / predictions,
    perplexity: Math.exp(nll / predictions),
  };
  if (!against) return result;
  const sorted = [...kls].sort((a, b) => a - b);
  return {
    ...result,
    against: {
      nll: refNll / predictions,
      perplexity: Math.exp(refNll / predictions),
      kl_mean: klSum / kls.length,
      kl_p99: sorted[Math.min(sorted.length - 1, Math.floor(0.99 * sorted.length))]!,
      kl_max: sorted[sorted.length - 1]!,
      top1_agreement: agree / predictions,
    },
  };
}
