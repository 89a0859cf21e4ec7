/**
 * The sampler (runtime/sampling.ts, which sorts only the tokens its walks reach) against the plain form that sorts
 * the whole vocabulary (test/ref/sampling.ts): the same token for the same seeded draws, over vocabularies from 1
 * to Llama-3's 128,256, temperatures, top-k and top-p, ties, −∞ logits, peaked and flat distributions.
 */
import { describe, expect, it } from 'vitest';
import { exp2Neg, rng, sample, type SamplingOptions } from '../runtime/sampling.js';
import { sampleRef } from './ref/sampling.js';
import { logitsOf, SAMPLING_CASES } from './sampling-cases.js';

const OPTIONS = SAMPLING_CASES;

function expectSameDraws(x: Float32Array, o: SamplingOptions, draws: number, seed: number, what: string): void {
  const a = rng(seed);
  const b = rng(seed);
  const got = Array.from({ length: draws }, () => sample(x, o, a));
  const want = Array.from({ length: draws }, () => sampleRef(x, o, b));
  expect(got, `${what} ${JSON.stringify(o)}`).toEqual(want);
}

describe('sampling', () => {
  for (const kind of ['gauss', 'ties', 'masked', 'peaked', 'flat'])
    it(`${kind} logits: the same tokens as the full sort, every option set, V from 1 to 4099`, () => {
      for (const V of [1, 2, 7, 300, 4099])
        OPTIONS.forEach((o, i) => expectSameDraws(logitsOf(kind, V, 100 * V + i), o, 25, 7 * V + i, `${kind} V=${V}`));
    });

  it("Llama-3's vocabulary (128,256): the same tokens", () => {
    for (const kind of ['gauss', 'ties', 'peaked'])
      for (const o of [OPTIONS[0]!, OPTIONS[1]!, OPTIONS[3]!]) expectSameDraws(logitsOf(kind, 128256, 5), o, 4, 11, kind);
  }, 120_000);

  it('draws spread over the kept tokens only, in proportion to their probability', () => {
    const x = Float32Array.from([2, 1, 0, -1, -30]);
    const o = { temperature: 1, topK: 3 };
    const r = rng(3);
    const counts = [0, 0, 0, 0, 0];
    for (let i = 0; i < 20000; i++) counts[sample(x, o, r)]!++;
    const p = [Math.exp(2), Math.exp(1), 1].map((e, _, a) => e / (a[0]! + a[1]! + a[2]!));
    counts.slice(0, 3).forEach((c, i) => expect(Math.abs(c / 20000 - p[i]!)).toBeLessThan(0.015));
    expect(counts[3]! + counts[4]!).toBe(0);
  });

  it('the weights (2^-y from a table and a short series) stay within 1e-15 of Math.exp, 0 past the doubles', () => {
    const r = rng(12);
    let worst = 0;
    for (let i = 0; i < 200000; i++) {
      const y = i < 1000 ? i / 7 : r() * (i % 2 ? 1 : 1000);
      const want = Math.pow(2, -y);
      worst = Math.max(worst, Math.abs(exp2Neg(y) - want) / want);
    }
    expect(worst).toBeLessThan(1e-15);
    expect([exp2Neg(0), exp2Neg(1), exp2Neg(1100), exp2Neg(5000), exp2Neg(Infinity)]).toEqual([1, 0.5, 0, 0, 0]);
    expect(exp2Neg(NaN)).toBeNaN();
  });

  it('temperature 0 is the argmax, whatever else is set', () => {
    const x = logitsOf('gauss', 1000, 9);
    let best = 0;
    for (let i = 1; i < x.length; i++) if (x[i]! > x[best]!) best = i;
    expect(sample(x, { temperature: 0, topK: 5, topP: 0.5 }, rng(1))).toBe(best);
  });
});
