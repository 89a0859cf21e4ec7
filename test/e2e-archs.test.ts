/**
 * Phi-3 (fused qkv/gate_up, longrope crossing its original context) and Qwen2 (q/k/v biases, tied embeddings,
 * fp16 sharded checkpoint, transformers-5 config) against Hugging Face goldens on the f32 path: argmax at every
 * position, logits_last within relative L2 1e-3, greedy_16 equal. Both fixtures have no tokenizer: token ids in.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { Engine } from '../runtime/engine.js';
import { argmaxOf } from '../runtime/sampling.js';
import { relL2 } from './gpu-harness.js';
import { fixture } from './paths.js';

interface Case {
  input_ids: number[];
  argmax: number[];
  logits_last: number[];
  logsumexp: number[];
  greedy_16: number[];
}


for (const name of ['tiny-phi3', 'tiny-qwen2']) {
  describe(`${name} vs HF transformers (f32)`, () => {
    const dir = fixture('models', name);
    const cases: Case[] = JSON.parse(fs.readFileSync(path.join(dir, 'golden.json'), 'utf8'));
    let engine: Engine;
    it('loads', async () => {
      engine = await Engine.load(dir, { dtype: 'f32' });
      expect(engine.model.tokenizer).toBeNull();
    });
    for (const c of cases) {
      it(`${c.input_ids.length} tokens: argmax everywhere, logits_last, logsumexp`, async () => {
        const V = engine.config.vocabSize;
        // chunked like any prompt (512), so the longrope choice must hold across chunks
        const s = engine.session({ policy: 'full', chunk: 512, allLogits: true, maxNew: 1 });
        const T = c.input_ids.length;
        const r = await s.prefill(c.input_ids, 0);
        s.release();
        // allLogits returns the rows of the last step: compare those positions, and the last one's logits
        const rows = r.logits.length / V;
        const am = Array.from({ length: rows }, (_, t) => argmaxOf(r.logits, t * V, V));
        expect(am).toEqual(c.argmax.slice(T - rows));
        const err = relL2(r.logits.subarray((rows - 1) * V), c.logits_last);
        expect(err, `logits_last rel L2 ${err}`).toBeLessThan(1e-3);
        for (let t = 0; t < rows; t++) {
          const row = r.logits.subarray(t * V, (t + 1) * V);
          const m = Math.max(...row);
          const lse = m + Math.log(row.reduce((a, x) => a + Math.exp(x - m), 0));
          expect(Math.abs(lse - c.logsumexp[T - rows + t]!)).toBeLessThan(1e-3 * Math.max(1, Math.abs(c.logsumexp[T - rows + t]!)));
        }
      });
      it(`${c.input_ids.length} tokens: every position's argmax in one step`, async () => {
        const V = engine.config.vocabSize;
        const s = engine.session({ policy: 'full', chunk: 1024, allLogits: true, maxNew: 1 });
        const r = await s.prefill(c.input_ids, 0);
        s.release();
        expect(Array.from({ length: c.input_ids.length }, (_, t) => argmaxOf(r.logits, t * V, V))).toEqual(c.argmax);
      });
      it(`${c.input_ids.length} tokens: greedy_16`, async () => {
        const r = await engine.generate({ inputIds: c.input_ids, maxNewTokens: 16, policy: 'full', stopAtEos: false });
        expect(r.tokens).toEqual(c.greedy_16);
      });
    }
  });
}
