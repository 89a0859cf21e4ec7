/**
 * Folded retaining heads on the other architectures: Qwen2 (q/k/v biases, so the folded head has a bias fc1 · b)
 * and Phi-3 (fused qkv, no GQA: the fold shrinks fc1's rows from 3·hidden to hidden). Random heads in the official
 * checkpoint names are written to a file and loaded like any `--heads`; the folded graph must score every prompt
 * token like the heads over the pre-RoPE rows (f32 weights: up to f32 rounding). Loaded by default, the heads keep
 * only the folded fc1, and the memory plan counts what is resident.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Engine } from '../runtime/engine.js';
import { readModelConfig } from '../runtime/io/hf-config.js';
import { writeSafetensors } from '../runtime/io/safetensors.js';
import { qkvWidth, RETAINING_HIDDEN } from '../ir/config.js';
import { foldRetainingHeads } from '../runtime/fold-heads.js';
import { planMemory } from '../runtime/plan-memory.js';
import { weightBytes, type WholeWeight } from '../runtime/weights.js';
import { expectClose, rand } from './gpu-harness.js';
import { fixture } from './paths.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'locret-fold-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function randomHeads(dir: string, file: string): void {
  const c = readModelConfig(dir);
  const W = qkvWidth(c);
  const bytes = (a: Float32Array) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  writeSafetensors(file, Array.from({ length: c.numLayers }, (_, l) => [
    { name: `model.layers.${l}.self_attn.fc1.weight`, dtype: 'f32' as const, shape: [RETAINING_HIDDEN, W], data: bytes(rand(RETAINING_HIDDEN * W, 10 + l, 1 / Math.sqrt(W))) },
    { name: `model.layers.${l}.self_attn.fc2.weight`, dtype: 'f32' as const, shape: [c.numKvHeads, RETAINING_HIDDEN], data: bytes(rand(c.numKvHeads * RETAINING_HIDDEN, 50 + l, 1 / 32)) },
  ]).flat());
}

for (const name of ['tiny-qwen2', 'tiny-phi3']) {
  describe(`${name}: folded retaining heads`, () => {
    it('score every token like the heads over the pre-RoPE rows', async () => {
      const dir = fixture('models', name);
      const heads = path.join(tmp, `${name}-heads.safetensors`);
      randomHeads(dir, heads);
      const e = await Engine.load(dir, { dtype: 'f32', heads, keepUnfoldedHeads: true });
      expect(e.weights.has('L0.fc1_folded')).toBe(true);
      expect(e.weights.has('L0.fc1_folded_bias')).toBe(e.config.qkvBias);
      if (e.config.qkvBias) {
        // the fixture's q/k/v biases are all zero (a fresh init): give them values, then fold again
        const W = qkvWidth(e.config);
        for (let l = 0; l < e.config.numLayers; l++) {
          for (const n of [`L${l}.qkv_bias`, `L${l}.fc1_folded`, `L${l}.fc1_folded_bias`]) {
            e.runner.destroy((e.weights.get(n) as WholeWeight).buf);
            e.weights.delete(n);
          }
          e.weights.set(`L${l}.qkv_bias`, { buf: e.runner.upload(rand(W, 90 + l, 0.5), 'qkv_bias'), dtype: 'f32', shape: [W] });
        }
        expect(foldRetainingHeads(e.runner, e.config, e.weights, { keepLoaded: true })).toBe(true);
      }
      const ids = Array.from({ length: 40 }, (_, i) => (i * 37 + 11) % e.config.vocabSize);
      const scores = async (unfoldedHeads: boolean) => {
        const s = e.session({ policy: 'locret', budget: 64, chunk: 16, stabilizer: 4, maxNew: 1, unfoldedHeads });
        await s.prefill(ids, 0);
        expect(s.stepOps).toContain(unfoldedHeads ? 'retaining_head' : 'norm_retaining_head');
        const got = await s.cachedScores();
        s.release();
        return got;
      };
      const folded = await scores(false), plain = await scores(true);
      folded.forEach((layer, l) => layer.forEach((row, h) => {
        expect(row.length).toBe(ids.length);
        expectClose(row, plain[l]![h]!, 1e-5, `${name} layer ${l} head ${h}: folded vs loaded heads`, 1e-3);
      }));
    });
  });
}

describe('tiny-llama loaded with its heads', () => {
  it('frees the loaded fc1 after folding, and the memory plan counts the bytes left resident', async () => {
    const e = await Engine.load(fixture('models', 'tiny-llama'), { dtype: 'f16', heads: fixture('models/tiny-llama/retaining_heads.safetensors') });
    const L = e.config.numLayers;
    for (let l = 0; l < L; l++) {
      expect(e.weights.has(`L${l}.fc1`), `layer ${l}: fc1 freed`).toBe(false);
      expect(e.weights.has(`L${l}.fc1_folded`)).toBe(true);
      expect(e.weights.has(`L${l}.fc2`)).toBe(true);
    }
    const uploaded = [...e.weights.values()].reduce((a, w) => a + weightBytes(w), 0);
    expect(uploaded).toBe(planMemory(e.config, { context: 1024, dtype: 'f16' }).weights_bytes);
    expect(e.runner.liveBytes).toBe(uploaded);
    // the folded heads score; unfolded ones would need the freed fc1
    const s = e.session({ policy: 'locret', budget: 64, chunk: 16, stabilizer: 4, maxNew: 1 });
    await s.prefill(Array.from({ length: 40 }, (_, i) => (i * 37 + 11) % e.config.vocabSize), 0);
    expect(s.stepOps).toContain('norm_retaining_head');
    s.release();
    expect(() => e.session({ policy: 'locret', unfoldedHeads: true })).toThrow(/keepUnfoldedHeads/);
  });
});
