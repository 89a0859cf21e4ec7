/**
 * The GPU sampler (compiler/kernels/sample.ts) against its plain form (test/ref/sample-gpu.ts): the same token for
 * the same uniform draw wherever the draw is clear of the f32 rounding (margin ≥ 1e-4 of the kept weight), over
 * vocabularies from 1 to Llama-3's 128,256, temperatures, top-k and top-p, ties, −∞ and NaN logits, peaked and flat
 * rows, a row offset; the degenerate rows fall back to the first maximum.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { sampleToken, type SampleOpts } from '../compiler/kernels/sample.js';
import type { GpuRunner } from '../runtime/gpu/runner.js';
import { rng, validateSampling } from '../runtime/sampling.js';
import { gpuRunner } from './gpu-harness.js';
import { sampleGpuRef } from './ref/sample-gpu.js';

/** Logits of a few shapes: Gaussian, rounded (many ties), with −∞ entries, with NaN entries, one dominant token, flat. */
function logitsOf(kind: string, V: number, seed: number): Float32Array {
  const r = rng(seed);
  const gauss = () => Math.sqrt(-2 * Math.log(1 - r())) * Math.cos(2 * Math.PI * r());
  const x = Float32Array.from({ length: V }, () => 3 * gauss());
  if (kind === 'ties') for (let i = 0; i < V; i++) x[i] = Math.round(x[i]!);
  if (kind === 'masked') for (let i = 0; i < V; i += 3) x[i] = -Infinity;
  if (kind === 'nan') for (let i = 1; i < V; i += 5) x[i] = NaN;
  if (kind === 'peaked') x[Math.floor(r() * V)] = 40;
  if (kind === 'flat') x.fill(0.25);
  return x;
}

const OPTIONS: readonly SampleOpts[] = [
  { temperature: 1 },
  { temperature: 0.6, topP: 0.9 },
  { temperature: 0.3, topK: 5 },
  { temperature: 2.5, topK: 50, topP: 0.95 },
  { temperature: 1, topK: 1 },
  { temperature: 0.8, topP: 0.1 },
  { temperature: 1.3, topP: 1, topK: 100000 },
  { temperature: 0.7, topK: 40, topP: 0.5 },
];

describe('GPU sampler', () => {
  let r: GpuRunner;
  beforeAll(async () => {
    r = await gpuRunner();
  });

  /** the kernel's tokens for `draws` uniforms on row `row` of `rows` (the other rows hold junk) */
  async function gpuDraws(x: Float32Array, o: SampleOpts, us: Float32Array, row = 0, rows = 1): Promise<number[]> {
    const V = x.length;
    const all = new Float32Array(rows * V).fill(1e30);
    all.set(x, row * V);
    const b = { x: r.upload(all, 'logits'), uniforms: r.upload(us, 'uniforms'), out: r.createBuffer(4 * us.length, 'tokens') };
    try {
      r.run(Array.from(us, (_, i) => sampleToken(o, { n: V, row, draw: i, slot: i }, b)));
      return Array.from(await r.readU32(b.out, us.length));
    } finally {
      for (const buf of Object.values(b)) r.destroy(buf);
    }
  }

  /**
   * The reference's token for every draw clear of rounding; where the draw lies within 1e-4 of the kept weight of a
   * walk boundary, the token on either side of it. Returns how many draws were clear of the top-p cut by `cutTol`
   * (compared).
   */
  async function expectRef(x: Float32Array, o: SampleOpts, draws: number, seed: number, what: string, row = 0, rows = 1, cutTol = 1e-4): Promise<number> {
    const rand = rng(seed);
    const us = Float32Array.from({ length: draws }, () => rand());
    const got = await gpuDraws(x, o, us, row, rows);
    let compared = 0;
    us.forEach((u, i) => {
      const want = sampleGpuRef(x, o, u);
      if (want.cutMargin < cutTol) return;
      compared++;
      const label = `${what} ${JSON.stringify(o)} draw ${i} (u ${u})`;
      if (want.walkMargin >= 1e-4) expect(got[i], label).toBe(want.token);
      else expect([want.token, ...want.neighbors], label).toContain(got[i]);
    });
    return compared;
  }

  for (const kind of ['gauss', 'ties', 'masked', 'nan', 'peaked', 'flat'])
    it(`${kind} logits: the reference's tokens, every option set, V from 1 to 4099`, async () => {
      let compared = 0;
      let total = 0;
      for (const V of [1, 2, 7, 300, 4099])
        for (const [i, o] of OPTIONS.entries()) {
          compared += await expectRef(logitsOf(kind, V, 100 * V + i), o, 12, 7 * V + i, `${kind} V=${V}`);
          total += 12;
        }
      expect(compared / total, 'draws clear of the top-p cut').toBeGreaterThan(0.9);
    }, 120_000);

  // each of 128K tokens weighs ~1e-5 of the total here, so the cut is held to 2e-6 (the f32 sums' rounding) and
  // most draws fall near a walk boundary (then either neighbour is accepted)
  it("Llama-3's vocabulary (128,256), on row 1 of 2", async () => {
    for (const kind of ['gauss', 'ties', 'peaked'])
      for (const o of [OPTIONS[1]!, OPTIONS[3]!]) expect(await expectRef(logitsOf(kind, 128256, 5), o, 4, 11, kind, 1, 2, 2e-6)).toBeGreaterThan(0);
  }, 120_000);

  it('draws spread over the kept tokens in proportion to their probability (top-k keeps ties)', async () => {
    const x = Float32Array.from([2, 1, 0, 0, -1, -30]);
    const us = Float32Array.from({ length: 400 }, (_, i) => (i + 0.5) / 400); // an even grid: frequencies = probabilities
    const got = await gpuDraws(x, { temperature: 1, topK: 3 }, us);
    const w = [Math.exp(2), Math.exp(1), 1, 1];
    const z = w.reduce((a, b) => a + b, 0);
    const counts = [0, 0, 0, 0, 0, 0];
    for (const t of got) counts[t]!++;
    w.forEach((wi, i) => expect(Math.abs(counts[i]! / 400 - wi / z)).toBeLessThan(0.01));
    expect(counts[4]! + counts[5]!).toBe(0);
  });

  it('rows without weight fall back to the first maximum; a +∞ logit is taken', async () => {
    const o = { temperature: 0.7, topP: 0.9 };
    const us = Float32Array.from([0.1, 0.9]);
    expect(await gpuDraws(new Float32Array(9).fill(NaN), o, us)).toEqual([0, 0]);
    expect(await gpuDraws(new Float32Array(9).fill(-Infinity), o, us)).toEqual([0, 0]);
    const inf = Float32Array.from([1, 2, Infinity, 3, Infinity]);
    expect(await gpuDraws(inf, o, us)).toEqual([2, 2]);
    const oneLeft = Float32Array.from([NaN, -Infinity, -5, NaN]);
    expect(await gpuDraws(oneLeft, { temperature: 1 }, us)).toEqual([2, 2]);
  });

  it('refuses bad options', () => {
    const b = {} as never;
    expect(() => sampleToken({ temperature: 0 }, { n: 4 }, b)).toThrow(/temperature/);
    expect(() => sampleToken({ temperature: 1, topK: 0 }, { n: 4 }, b)).toThrow(/top-k/);
    expect(() => sampleToken({ temperature: 1, topP: 1.5 }, { n: 4 }, b)).toThrow(/top-p/);
    expect(() => sampleToken({ temperature: 1 }, { n: 4, slot: -1 }, b)).toThrow(/slot/);
    // generate()'s checks before anything runs (temperature 0 is greedy there)
    expect(() => validateSampling({ temperature: 0, topK: 5 })).not.toThrow();
    for (const o of [{ temperature: -1 }, { temperature: Infinity }, { temperature: NaN }, { topK: 2.5 }, { topK: 0 }, { topP: 0 }, { topP: 1.01 }])
      expect(() => validateSampling(o), JSON.stringify(o)).toThrow();
  });
});
