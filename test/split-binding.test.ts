/**
 * Weights over the storage-binding limit are split across buffers transparently: with the limit lowered to 1 MiB,
 * tiny-llama's 4096×384 embedding and lm_head (and in f32 its gate_up and down projections) load as several
 * parts, and every position's logits equal the unsplit run's; greedy_24 still matches the HF golden. tiny-qwen2
 * (tied embeddings: lm_head reads the embedding's parts) likewise. Weights that a kernel must read whole fail
 * with a message naming them.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { randomWeights } from '../runtime/bench.js';
import { Engine } from '../runtime/engine.js';
import { Session } from '../runtime/session.js';
import { weightParts } from '../runtime/weights.js';
import { expectClose } from './gpu-harness.js';
import { fixture, TINY_LLAMA } from './paths.js';

const MiB = 1 << 20;
const llamaGolden = JSON.parse(fs.readFileSync(path.join(TINY_LLAMA, 'golden.json'), 'utf8'));

async function allLogits(e: Engine, ids: readonly number[], o: { chunk?: number; unfused?: boolean } = {}): Promise<Float32Array> {
  const s = e.session({ policy: 'full', chunk: o.chunk ?? 512, allLogits: true, unfused: o.unfused, maxNew: 1 });
  const r = await s.prefill(ids, 0);
  s.release();
  return r.logits;
}

/** every weight buffer within the limit; returns the number of parts of each split weight */
function splitSummary(e: Engine): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [name, w] of e.weights) {
    for (const p of weightParts(w)) expect(e.runner.bufferBytes(p.buf), `${name} part at ${p.row0}`).toBeLessThanOrEqual(e.runner.gpu.maxBinding);
    if (w.parts) out[name] = w.parts.length;
  }
  return out;
}

for (const dtype of ['f32', 'f16'] as const) {
  describe(`tiny-llama ${dtype}, 1 MiB storage bindings`, () => {
    let whole: Engine;
    let split: Engine;
    beforeAll(async () => {
      whole = await Engine.load(TINY_LLAMA, { dtype });
      split = await Engine.load(TINY_LLAMA, { dtype, device: { maxBinding: MiB } });
    });

    it('splits the embedding, lm_head and (f32) the large MLP weights into parts within the limit', () => {
      const parts = splitSummary(split);
      expect(parts.embed).toBeGreaterThanOrEqual(dtype === 'f32' ? 6 : 3);
      expect(parts.lm_head).toBe(parts.embed);
      if (dtype === 'f32') expect(parts['L0.gate_up'], JSON.stringify(parts)).toBeGreaterThan(1);
      expect(splitSummary(whole)).toEqual({});
    });

    it('logits at every position equal the unsplit run', async () => {
      const want = await allLogits(whole, llamaGolden.input_ids);
      expectClose(await allLogits(split, llamaGolden.input_ids), want, 1e-5, 'split vs whole logits (fused)');
      if (dtype === 'f32') expectClose(await allLogits(split, llamaGolden.input_ids, { unfused: true }), want, 1e-4, 'split unfused vs whole fused');
    });

    it('greedy_24 equals the golden', async () => {
      const r = await split.generate({ inputIds: llamaGolden.input_ids, maxNewTokens: 24, policy: 'full', stopAtEos: false });
      expect(r.tokens).toEqual(llamaGolden.greedy_24);
    });
  });
}

describe('tiny-qwen2 (tied embeddings, q/k/v biases), 1 MiB storage bindings', () => {
  const dir = fixture('models', 'tiny-qwen2');
  const cases: { input_ids: number[]; greedy_16: number[] }[] = JSON.parse(fs.readFileSync(path.join(dir, 'golden.json'), 'utf8'));
  for (const dtype of ['f32', 'f16'] as const) {
    it(`${dtype}: logits equal the unsplit run; greedy_16 equals the golden`, async () => {
      const whole = await Engine.load(dir, { dtype });
      const split = await Engine.load(dir, { dtype, device: { maxBinding: MiB } });
      const parts = splitSummary(split);
      expect(parts.embed).toBeGreaterThan(1);
      expect(split.weights.has('lm_head')).toBe(false); // tied: the lm_head matmul runs over the embedding's parts
      for (const c of cases) {
        // 64-token steps keep the (rows, vocab) f32 logits within the 1 MiB limit too
        const want = await allLogits(whole, c.input_ids, { chunk: 64 });
        expectClose(await allLogits(split, c.input_ids, { chunk: 64 }), want, 1e-5, `${dtype} ${c.input_ids.length} tokens: split vs whole`);
      }
      if (dtype === 'f32') {
        const r = await split.generate({ inputIds: cases[0]!.input_ids, maxNewTokens: 16, policy: 'full', stopAtEos: false });
        expect(r.tokens).toEqual(cases[0]!.greedy_16);
      }
    });
  }
});

describe('limits', () => {
  let tiny: Engine;

  it('a weight a kernel reads whole (qkv_rope) fails naming the weight when split', async () => {
    tiny = await Engine.load(TINY_LLAMA, { dtype: 'f32', device: { maxBinding: 512 * 1024 } });
    expect(tiny.weights.get('L0.qkv')!.parts?.length).toBeGreaterThan(1);
    const s = tiny.session({ policy: 'full', chunk: 16, maxNew: 1 });
    await expect(s.prefill([1, 2, 3], 0)).rejects.toThrow(/qkv_rope reads weight L0\.qkv \[640,384\] in one binding, but it is split into \d+ parts/);
    s.release();
  });

  it('benchmark random weights split like uploaded ones and run', async () => {
    const r = tiny.runner;
    const w = randomWeights(r, tiny.config, true);
    const embed = w.get('embed')!;
    expect(embed.parts?.length).toBeGreaterThan(1);
    expect(embed.parts!.reduce((a, p) => a + p.rows, 0)).toBe(tiny.config.vocabSize);
    for (const x of w.values()) for (const p of weightParts(x)) expect(r.bufferBytes(p.buf)).toBeLessThanOrEqual(r.gpu.maxBinding);
    expect(w.get('L0.qkv')!.buf, 'f16 qkv (491 KiB) fits').toBeDefined();
    const s = new Session(r, tiny.config, w, { policy: 'full', budget: 64, chunk: 16, stabilizer: 0, positions: 'compact', maxNew: 1 });
    const out = await s.prefill([3, 4000, 5, 2047], 0);
    s.release();
    expect(out.logits.every(Number.isFinite)).toBe(true);
  });
});
