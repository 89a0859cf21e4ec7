/**
 * Queued greedy decoding (each step's argmax fed to the next on the GPU, one readback at the end) gives exactly
 * the tokens of one-at-a-time decoding, including under eviction and across runs of different lengths; sampled
 * generation (drawn on the GPU, queued the same way) draws what the plain form of the GPU sampler draws from the same
 * logits and seed.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { Engine } from '../runtime/engine.js';
import type { Dispatch } from '../runtime/gpu/runner.js';
import { fixture, TINY_LLAMA } from './paths.js';
import { rng } from '../runtime/sampling.js';
import { sampleGpuRef } from './ref/sample-gpu.js';
import { withEnv } from './with-env.js';

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

  it('sampled generation (temperature, top-k, top-p, seed) draws on the GPU the tokens of the plain sampler on the same logits, under eviction', async () => {
    const ids = [...golden.input_ids, ...golden.input_ids];
    const cache = { policy: 'locret' as const, budget: 48, chunk: 32, stabilizer: 8 };
    const o = { temperature: 1.3, topK: 200, topP: 0.95, seed: 7 };
    const n = 10;
    const got = await e.generate({ ...cache, ...o, inputIds: ids, maxNewTokens: n, local: 0, stopAtEos: false });
    expect(got.evicted_tokens).toBeGreaterThan(0);
    // the same steps by hand: prefill, then each token checked against the plain form of the GPU sampler on the
    // logits it follows, with the seeded generator's draws in order (one per token); the steps are fed the tokens
    // generate() drew, so a draw too close to a boundary for f32 (either neighbour accepted) does not derail the rest
    const s = e.session({ ...cache, maxNew: n });
    const rand = rng(o.seed);
    let logits = (await s.prefill(ids, 0)).logits;
    let clear = 0;
    for (let i = 0; i < n; i++) {
      const want = sampleGpuRef(logits, o, rand());
      if (want.cutMargin >= 1e-4) {
        if (want.walkMargin >= 1e-4) {
          clear++;
          expect(got.tokens[i], `token ${i}`).toBe(want.token);
        } else expect([want.token, ...want.neighbors], `token ${i}`).toContain(got.tokens[i]);
      }
      if (i < n - 1) logits = await s.decode(got.tokens[i]!);
    }
    s.release();
    expect(clear).toBeGreaterThan(n / 2);
    const again = await e.generate({ ...cache, ...o, inputIds: ids, maxNewTokens: n, local: 0, stopAtEos: false });
    expect(again.tokens, 'the same seed draws the same tokens').toEqual(got.tokens);
    const greedy = await e.generate({ ...cache, inputIds: ids, maxNewTokens: n, local: 0, stopAtEos: false });
    expect(greedy.tokens, 'a temperature of 1.3 over 10 tokens strays from the argmax').not.toEqual(got.tokens);
  });

  it.each(['f16', 'int8'] as const)('decode steps reuse their dispatches with the slot patched in (%s cache): kernels, parameters, grids and logits as when built afresh', async (kvDtype) => {
    const ids = [...golden.input_ids, ...golden.input_ids];
    const opts = { policy: 'locret' as const, budget: 48, chunk: 32, stabilizer: 8, maxNew: 16, kvDtype };
    const a = e.session(opts);
    await a.prefill(ids, 0);
    const b = e.session(opts);
    await withEnv({ LOCRET_NO_STEP_MEMO: '1' }, () => b.prefill(ids, 0)); // read when the session lowers its plan, at prefill
    const label = (r: GPUBuffer | GPUBufferBinding) => ('buffer' in r ? `${r.buffer.label}@${r.offset ?? 0}` : r.label);
    const shape = (ds: Dispatch[]) => ds.map((d) => ({ kernel: d.kernel.name, params: d.params, workgroups: d.workgroups, buffers: Object.values(d.buffers).map(label) }));
    let tok = golden.input_ids[3];
    for (let i = 0; i < 6; i++) {
      expect(shape(a.stepProbe(1, true)), `step ${i}`).toEqual(shape(b.stepProbe(1, true)));
      const [la, lb] = [await a.decode(tok), await b.decode(tok)];
      expect(Array.from(la), `step ${i} logits`).toEqual(Array.from(lb));
      tok = la.indexOf(Math.max(...la));
    }
    expect(a.decodeOnRotatedKeys).toBe(true); // both key forms were stepped through
    a.release();
    b.release();
  });

  it('rejects a run length that is not a positive integer', async () => {
    const s = e.session({ policy: 'full', maxNew: 4 });
    await s.prefill(golden.input_ids.slice(0, 8), 0);
    await expect(s.decodeGreedyRun(1, 0)).rejects.toThrow(/positive integer/);
    s.release();
  });
});
