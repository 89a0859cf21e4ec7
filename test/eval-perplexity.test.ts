/**
 * `locret perplexity`: windows cut from a text, and the scores of tiny-llama on them against the CPU reference
 * forward: the f32 model's perplexity, and q4 weights' KL divergence from the f32 model, where the reference runs
 * on the dequantized q4 values (what the kernels compute with), so both sides differ only in accumulation order.
 *
 * Tolerances: f32 logits match the reference to ~1e-5 relative (the goldens' own precision), so the mean NLL
 * agrees to 1e-4 nats; KL values are differences of log-probabilities, ~0.4 nats per token for q4 on this model,
 * checked to 1% of their size; the top-token agreement may differ by a near-tie (2 predictions).
 */
import { describe, expect, it } from 'vitest';
import { Engine } from '../runtime/engine.js';
import { readCorpus } from '../runtime/eval/corpus.js';
import { runPerplexity, textWindows, type Encode } from '../runtime/eval/perplexity.js';
import { dequantize, quantize } from '../runtime/quant.js';
import { quantDtypeFor } from '../runtime/weights.js';
import { refConfig, refWeights } from './ref/load-for-ref.js';
import { refForward } from './ref/model.js';
import { locretGenerate } from './ref/locret.js';
import { fixture, TINY_LLAMA } from './paths.js';

// a tokenizer stand-in: one token per character, a two-token prefix
const chars: Encode = (t, special) => [...(special ? [1, 2] : []), ...[...t].map((c) => c.charCodeAt(0))];

describe('perplexity windows', () => {
  it('are the prefix then consecutive stretches of the documents joined by blank lines', () => {
    const w = textWindows(['abc', 'defg  '], chars, 5, 10);
    // stream: "abc\n\ndefg\n\n" = 11 tokens, 3 per window after the prefix: 3 windows
    expect(w.prefix).toBe(2);
    expect(w.windows).toEqual([[1, 2, ...'abc'].map(code), [1, 2, ...'\n\nd'].map(code), [1, 2, ...'efg'].map(code)]);
    expect(textWindows(['abcdefgh'], chars, 4, 2).windows).toHaveLength(2);
  });
  it('refuse a text too short for one window, and a window with no room after the prefix', () => {
    expect(() => textWindows(['ab'], chars, 8, 1)).toThrow(/holds 4 tokens: too few for one window of 8/);
    expect(() => textWindows(['abc'], chars, 2, 1)).toThrow(/no text after the tokenizer's 2-token prefix/);
  });
});

function code(c: string | number): number {
  return typeof c === 'number' ? c : c.charCodeAt(0);
}

/**
 * Mean NLL, and with a reference mean KL(ref ‖ model) and top-1 agreement, over rows ≥ first of each window's
 * logits, which cover its last `rows` tokens (the whole window by default).
 */
function scores(ids: readonly number[][], model: Float32Array[], ref: Float32Array[] | null, V: number, first: number, rows?: number) {
  let nll = 0, kl = 0, klMax = 0, agree = 0, n = 0;
  const ls = (l: Float32Array, r: number) => {
    const row = Array.from(l.subarray(r * V, (r + 1) * V), Number);
    const m = Math.max(...row);
    const lse = m + Math.log(row.reduce((s, x) => s + Math.exp(x - m), 0));
    return row.map((x) => x - lse);
  };
  const top = (a: number[]) => a.indexOf(Math.max(...a));
  ids.forEach((w, i) => {
    const at = w.length - (rows ?? w.length); // window position of logits row 0
    for (let t = first; t < w.length - 1 - at; t++) {
      const q = ls(model[i]!, t);
      nll -= q[w[at + t + 1]!]!;
      if (ref) {
        const p = ls(ref[i]!, t);
        const k = p.reduce((s, lp, j) => s + Math.exp(lp) * (lp - q[j]!), 0);
        kl += k;
        klMax = Math.max(klMax, k);
        agree += top(p) === top(q) ? 1 : 0;
      }
      n++;
    }
  });
  return { nll: nll / n, kl: kl / n, klMax, agree: agree / n, n };
}

describe('tiny-llama perplexity against the CPU reference', () => {
  const cfg = refConfig(TINY_LLAMA);
  const V = cfg.vocabSize;
  const f32 = refWeights(TINY_LLAMA, cfg);
  // the q4 upload's storage per matrix (embedding q4, lm_head q8: see quantDtypeFor), dequantized
  const width: Record<string, number> = { embed: cfg.hiddenSize, lm_head: cfg.hiddenSize, qkv: cfg.hiddenSize, gate_up: cfg.hiddenSize, o: cfg.numHeads * cfg.headDim, down: cfg.intermediateSize };
  const q4cache = new Map<string, Float32Array>();
  const q4 = (name: string): Float32Array => {
    const kind = name.replace(/^L\d+\./, '');
    const dt = quantDtypeFor(name, 'q4', ['embed', 'lm_head']);
    if (!dt) return f32(name);
    let w = q4cache.get(name);
    if (!w) {
      const f = f32(name), K = width[kind]!;
      w = dequantize(quantize(f, f.length / K, K, dt), f.length / K, K, dt);
      q4cache.set(name, w);
    }
    return w;
  };

  it('f32: the mean NLL of the reference; q4 against f32: the reference KL and top-token agreement', async () => {
    const e32 = await Engine.load(TINY_LLAMA, { dtype: 'f32' });
    const eq4 = await Engine.load(TINY_LLAMA, { dtype: 'q4', onNote: () => {} });
    const tok = e32.model.tokenizer!;
    const text = textWindows(readCorpus(fixture('data/corpus.jsonl.xz')).slice(0, 20), (t, s) => tok.encode(t, { addSpecialTokens: s }), 40, 2);
    expect(text.windows).toHaveLength(2);
    expect(text.prefix).toBe(1); // BOS
    const ids = text.windows.map((w) => [...w]);
    const refF32 = ids.map((w) => refForward(cfg, f32, w));
    const refQ4 = ids.map((w) => refForward(cfg, q4, w));

    const alone = await runPerplexity(e32, text, { quiet: true });
    const want = scores(ids, refF32, null, V, 0);
    expect(alone.predictions).toBe(2 * 39);
    expect(alone.nll).toBeCloseTo(want.nll, 4);
    expect(alone.perplexity).toBeCloseTo(Math.exp(want.nll), 3);
    expect(alone.against).toBeUndefined();

    const vs = await runPerplexity(eq4, text, { quiet: true }, e32);
    const wantQ = scores(ids, refQ4, refF32, V, 0);
    expect(vs.nll).toBeCloseTo(wantQ.nll, 3);
    expect(vs.against!.nll).toBeCloseTo(want.nll, 4);
    expect(wantQ.kl).toBeGreaterThan(0.05); // q4 moves this model's predictions: the check below is not of zeros
    expect(Math.abs(vs.against!.kl_mean - wantQ.kl)).toBeLessThan(0.01 * wantQ.kl);
    expect(Math.abs(vs.against!.kl_max - wantQ.klMax)).toBeLessThan(0.01 * wantQ.klMax);
    expect(vs.against!.kl_p99).toBeLessThanOrEqual(vs.against!.kl_max);
    expect(vs.against!.kl_p99).toBeGreaterThan(vs.against!.kl_mean);
    expect(Math.abs(vs.against!.top1_agreement - wantQ.agree) * wantQ.n).toBeLessThanOrEqual(2);
  });

  it('a scored tail after an evicted context: the reference Locret prefill, and its KL from the full cache', async () => {
    const headsFile = fixture('models/tiny-llama/retaining_heads.safetensors');
    const e = await Engine.load(TINY_LLAMA, { dtype: 'f32', heads: headsFile });
    const tok = e.model.tokenizer!;
    const text = textWindows(readCorpus(fixture('data/corpus.jsonl.xz')).slice(30, 60), (t, s) => tok.encode(t, { addSpecialTokens: s }), 150, 1);
    const ids = text.windows.map((w) => [...w]);
    const wh = refWeights(TINY_LLAMA, cfg, headsFile);
    const opts = { budget: 40, chunk: 32, stabilizer: 10, nLoc: 20, maxNew: 0 };
    const tail = (policy: 'locret' | 'full') => {
      let out: Float32Array | null = null;
      locretGenerate(cfg, wh, ids[0]!, { ...opts, policy: { kind: policy }, tailLogits: (l) => { out = l; } });
      return out! as Float32Array;
    };
    const evicted = tail('locret'), full = tail('full');

    const r = await runPerplexity(e, text, { quiet: true, cache: { policy: 'locret', budget: 40, chunk: 32, stabilizer: 10 }, scored: 20 }, e);
    const want = scores(ids, [evicted], [full], V, 0, 20);
    expect(r.scored_per_window).toBe(20);
    expect(r.predictions).toBe(19);
    expect(r.nll).toBeCloseTo(want.nll, 4);
    expect(r.against!.nll).toBeCloseTo(scores(ids, [full], null, V, 0, 20).nll, 4);
    // the same positions with the whole window in one full-cache step: the full reference's chunks change nothing
    expect(r.against!.nll).toBeCloseTo(scores(ids, [refForward(cfg, wh, ids[0]!).subarray((150 - 20) * V)], null, V, 0, 20).nll, 4);
    expect(want.kl).toBeGreaterThan(1e-3); // eviction of 110 context tokens to 40 moves the tail's predictions
    expect(Math.abs(r.against!.kl_mean - want.kl)).toBeLessThan(0.01 * want.kl);
    await expect(runPerplexity(e, text, { quiet: true, scored: 151 })).rejects.toThrow(/scored tail of 151 tokens: must be 2 to the window's 150/);
  });
});
