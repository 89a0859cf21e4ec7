/**
 * Queued greedy decoding (each step's argmax fed to the next on the GPU, one readback at the end) gives exactly
 * the tokens of one-at-a-time decoding, including under eviction and across runs of different lengths.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { Engine } from '../runtime/engine.js';
import { fixture, TINY_LLAMA } from './paths.js';

const golden = JSON.parse(fs.readFileSync(path.join(TINY_LLAMA, 'golden.json'), 'utf8'));

describe('queued greedy decode', () => {
  let e: Engine;
  beforeAll(async () => {
    e = await Engine.load(TINY_LLAMA, { dtype: 'f16', heads: fixture('models/tiny-llama/retaining_heads.safetensors') });
  });

  it('equals step-by-step greedy decoding under locret eviction (runs of 1, 4 and 7)', async () => {
    const ids = [...golden.input_ids, ...golden.input_ids, ...golden.input_ids];
    const opts = { policy: 'locret' as const, budget: 48, chunk: 32, stabilizer: 8, maxNew: 16 };
    const a = e.session(opts);
    const pa = await a.prefill(ids, 0);
    let tok = pa.logits.indexOf(Math.max(...pa.logits));
    const want: number[] = [];
    for (let i = 0; i < 12; i++) want.push((tok = await a.decodeGreedy(tok)));
    a.release();
    const b = e.session(opts);
    const pb = await b.prefill(ids, 0);
    const first = pb.logits.indexOf(Math.max(...pb.logits));
    const got = [...(await b.decodeGreedyRun(first, 1))];
    got.push(...(await b.decodeGreedyRun(got[got.length - 1]!, 4)));
    got.push(...(await b.decodeGreedyRun(got[got.length - 1]!, 7)));
    expect(b.evictedTokens).toBeGreaterThan(0);
    b.release();
    expect(got).toEqual(want);
  });

  it('rejects a run length that is not a positive integer', async () => {
    const s = e.session({ policy: 'full', maxNew: 4 });
    await s.prefill(golden.input_ids.slice(0, 8), 0);
    await expect(s.decodeGreedyRun(1, 0)).rejects.toThrow(/positive integer/);
    s.release();
  });
});
