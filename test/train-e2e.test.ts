/**
 * Retaining-head training end to end on tiny-llama: 20 steps on synthetic retrieval samples (≤ MAX_TOKENS tokens)
 * lower the loss (mean of the last 3 steps against the first 3); the written heads load through Engine.load({ heads }) and drive a locret
 * generation; a checkpoint round-trips.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Engine } from '../runtime/engine.js';
import { readCorpus } from '../runtime/eval/corpus.js';
import { loadRetainingHeads } from '../runtime/io/weight-map.js';
import { loadCheckpoint, saveCheckpoint } from '../runtime/train/checkpoint.js';
import { syntheticData, type TrainData } from '../runtime/train/data.js';
import { writeHeads } from '../runtime/train/heads.js';
import { lrAt } from '../runtime/train/schedule.js';
import { HeadTrainer, type StepResult } from '../runtime/train/trainer.js';
import { fixture, TINY_LLAMA } from './paths.js';

const STEPS = 20;
// 512-token samples cost ~10-15 s a step on the CPU driver (forward ~2/3 of it), over the suite's time budget:
// samples of up to 512 tokens (LOCRET_TRAIN_E2E_TOKENS overrides)
const MAX_TOKENS = Number(process.env.LOCRET_TRAIN_E2E_TOKENS ?? 512);

describe('train-heads on tiny-llama', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'locret-train-'));
  const out = path.join(dir, 'heads.safetensors');
  let engine: Engine;
  let data: TrainData;
  let trainer: HeadTrainer;
  const losses: StepResult[] = [];

  beforeAll(async () => {
    engine = await Engine.load(TINY_LLAMA);
    const corpus = readCorpus(fixture('data/corpus.jsonl.xz'));
    data = syntheticData(corpus, { maxTokens: MAX_TOKENS, seed: 7, tokenizer: engine.model.tokenizer!, bos: engine.config.bosTokenId });
  });
  afterAll(() => {
    trainer?.release();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('samples fit the token limit and end with the answer', () => {
    for (let i = 0; i < 3; i++) {
      const s = data.sample(i);
      expect(s.ids.length).toBeLessThanOrEqual(MAX_TOKENS);
      expect(s.ids.length - s.promptLen).toBeGreaterThan(0);
      expect(s.ids[0]).toBe(engine.config.bosTokenId);
    }
    expect(data.sample(1).ids).toEqual(data.sample(1).ids); // deterministic
  });

  it(`${STEPS} steps lower the loss`, async () => {
    engine.runner.resetPeak();
    trainer = new HeadTrainer(engine.runner, engine.config, engine.weights, { steps: STEPS, lr: 2e-3, maxTokens: MAX_TOKENS, seed: 3 });
    const t0 = performance.now();
    for (let i = 0; i < STEPS; i++) losses.push(await trainer.train(data.sample(i)));
    const secs = (performance.now() - t0) / 1000;
    const tokens = losses.reduce((a, r) => a + r.tokens, 0);
    console.log(`train: ${STEPS} steps, ${tokens} tokens in ${secs.toFixed(1)} s (${(tokens / secs).toFixed(0)} tok/s), peak ${engine.runner.peakBytes} B`);
    console.log(`losses ${losses.map((r) => r.loss.toFixed(3)).join(' ')}`);
    console.log(`top10% overlap ${losses.map((r) => r.overlap.toFixed(2)).join(' ')}`);
    for (const r of losses) expect(Number.isFinite(r.loss)).toBe(true);
    expect(losses[0]!.lr).toBe(0); // the official schedule starts from lr 0
    expect(losses[STEPS - 1]!.lr).toBeCloseTo(lrAt(STEPS - 1, STEPS, 2e-3), 12);
    const mean = (rs: StepResult[]) => rs.reduce((a, r) => a + r.loss, 0) / rs.length;
    // steps see different samples, so single losses are noisy; the ends of the run are far apart
    expect(mean(losses.slice(-3))).toBeLessThan(0.75 * mean(losses.slice(0, 3)));
  });

  it('writes heads that load and drive a locret generation', async () => {
    const t = await trainer.heads.download();
    writeHeads(out, trainer.headDims, t, 'bf16');
    const m = loadRetainingHeads(out, engine.config);
    expect(m.get('L0.fc1')!.shape).toEqual([1024, 640]);
    expect(m.get('L7.fc2')!.shape).toEqual([2, 1024]);
    const e2 = await Engine.load(TINY_LLAMA, { heads: out });
    const longest = Array.from({ length: STEPS }, (_, i) => data.sample(i)).sort((a, b) => b.promptLen - a.promptLen)[0]!;
    const ids = longest.ids.slice(0, longest.promptLen);
    const r = await e2.generate({ inputIds: ids, policy: 'locret', budget: 48, chunk: 48, local: 8, maxNewTokens: 4 });
    expect(r.tokens.length).toBeGreaterThan(0);
    expect(r.evicted_tokens).toBeGreaterThan(0);
  });

  it('checkpoints round-trip heads, moments and step', async () => {
    const file = path.join(dir, 'heads.ckpt');
    const t = await trainer.heads.download();
    saveCheckpoint(file, trainer.headDims, t, trainer.checkpointMeta('synthetic:test'));
    const c = loadCheckpoint(file, trainer.headDims);
    expect(c.meta.step).toBe(STEPS);
    expect(c.meta.steps).toBe(STEPS);
    expect(c.tensors.v1[3]).toEqual(t.v1[3]);
    expect(c.tensors.fc2[7]).toEqual(t.fc2[7]);
    expect(() => loadCheckpoint(file, { ...trainer.headDims, KV: 4 })).toThrow(/kv 2/);
  });
});
