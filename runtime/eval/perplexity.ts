/**
 * `locret perplexity`: how well a model predicts a text, and how far another storage of it (q4, q8, an int8 cache)
 * moves its predictions: the KL divergence from a reference model's next-token distributions, position by
 * position, as llama.cpp's `perplexity --kl-divergence` reports it.
 *
 * The text is tokenized once and cut into consecutive windows; each window starts with the tokens the tokenizer
 * puts before any text (BOS for Llama) and is run as one full-cache prefill step that returns every row's logits,
 * so every window is scored from an empty cache and a window's first text token is predicted from BOS alone.
 * Row t predicts token t + 1: a window of T tokens with a prefix of P gives T − max(P, 1) predictions. Log-probabilities
 * are taken in f64 on the host from the f32 logits.
 */
import type { Engine } from '../engine.js';
import type { CacheDtype } from '../../compiler/kernels/attn-common.js';
import { progress } from '../progress.js';

export interface PerplexityOptions {
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

/** Every row's logits of `ids` run as one full-cache step: (ids.length, vocab) f32. */
async function windowLogits(engine: Engine, ids: readonly number[], kvDtype?: CacheDtype): Promise<Float32Array> {
  const s = engine.session({ policy: 'full', budget: ids.length, chunk: ids.length, allLogits: true, maxNew: 1, kvDtype });
  try {
    return (await s.prefill(ids, 0)).logits;
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

function argmax(a: Float64Array): number {
  let best = 0;
  for (let i = 1; i < a.length; i++) if (a[i]! > a[best]!) best = i;
  return best;
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
  const bar = o.quiet ? null : progress({ total: windows.length, label: 'perplexity', unit: 'window' });
  const lp = new Float64Array(V);
  const lq = new Float64Array(V);
  const kls: number[] = [];
  let nll = 0;
  let refNll = 0;
  let agree = 0;
  let predictions = 0;
  for (const ids of windows) {
    const logits = await windowLogits(engine, ids, o.kvDtype);
    const ref = against ? await windowLogits(against, ids, o.againstKvDtype) : null;
    // row t predicts token t + 1: the rows from the prefix's last on predict the text
    for (let t = Math.max(0, prefix - 1); t < ids.length - 1; t++) {
      logSoftmax(logits, t, V, lq);
      nll -= lq[ids[t + 1]!]!;
      if (ref) {
        logSoftmax(ref, t, V, lp);
        refNll -= lp[ids[t + 1]!]!;
        let kl = 0;
        for (let i = 0; i < V; i++) if (lp[i]! > -Infinity) kl += Math.exp(lp[i]!) * (lp[i]! - lq[i]!);
        kls.push(Math.max(0, kl));
        if (argmax(lp) === argmax(lq)) agree++;
      }
      predictions++;
    }
    bar?.tick(1, `ppl ${Math.exp(nll / predictions).toFixed(3)}${kls.length ? `  KL ${(kls.reduce((a, b) => a + b, 0) / kls.length).toFixed(4)}` : ''}`);
  }
  bar?.done();
  const result: PerplexityResult = {
    windows: windows.length,
    tokens_per_window: windows[0]!.length,
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
      kl_mean: kls.reduce((a, b) => a + b, 0) / kls.length,
      kl_p99: sorted[Math.min(sorted.length - 1, Math.floor(0.99 * sorted.length))]!,
      kl_max: sorted[sorted.length - 1]!,
      top1_agreement: agree / predictions,
    },
  };
}
