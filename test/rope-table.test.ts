/** The runtime's rope tables (uploaded to the GPU) equal the HF-matching CPU reference bit for bit. */
import { describe, expect, it } from 'vitest';
import type { RopeConfig } from '../ir/config.js';
import { ropeTable } from '../runtime/rope.js';
import { ropeCosSin } from './ref/kernels.js';

const cases: [string, RopeConfig, number][] = [
  ['default', { kind: 'default', theta: 10000, rotaryDim: 64 }, 700],
  ['llama3', { kind: 'llama3', theta: 500000, rotaryDim: 128, factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositions: 8192 }, 20000],
  ['llama3 tiny', { kind: 'llama3', theta: 500000, rotaryDim: 64, factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositions: 2048 }, 9000],
  ['partial', { kind: 'default', theta: 10000, rotaryDim: 32 }, 300],
];

describe('rope tables', () => {
  for (const [name, rope, P] of cases) {
    it(`${name}: equal to the reference at ${P} positions`, () => {
      const got = ropeTable(rope, P);
      const want = ropeCosSin(rope, Array.from({ length: P }, (_, i) => i));
      const half = rope.rotaryDim / 2;
      let bad = 0;
      for (let p = 0; p < P; p++)
        for (let i = 0; i < half; i++) {
          if (got[(p * half + i) * 2] !== want.cos[p * half + i] || got[(p * half + i) * 2 + 1] !== want.sin[p * half + i]) bad++;
        }
      expect(bad).toBe(0);
    });
  }
  it('longrope: short and long factors and the attention factor', () => {
    const rope: RopeConfig = {
      kind: 'longrope', theta: 10000, rotaryDim: 8, shortFactor: [1, 1.1, 1.2, 1.3], longFactor: [2, 3, 4, 5],
      originalMaxPositions: 512, maxPositions: 4096, attentionFactor: Math.sqrt(1 + Math.log(8) / Math.log(512)),
    };
    for (const long of [false, true]) {
      const got = ropeTable(rope, 700, long);
      const want = ropeCosSin(rope, Array.from({ length: 700 }, (_, i) => i), { forceLong: long, seqLen: long ? 700 : 100 });
      for (let k = 0; k < 700 * 4; k++) {
        expect(got[2 * k]).toBe(want.cos[k]);
        expect(got[2 * k + 1]).toBe(want.sin[k]);
      }
    }
  });
});
