import { describe, expect, it } from 'vitest';
import { dequantize, quantize, quantizedBytes } from '../runtime/quant.js';
import { rng } from '../runtime/sampling.js';

describe('block quantization (CPU)', () => {
  for (const dtype of ['q8', 'q4'] as const) {
    it(`${dtype}: round trip within half a step per group (q4: one step, the clipped positive side), extremes exact, byte counts`, () => {
      const rows = 5;
      const K = 96;
      const rnd = rng(7);
      const w = new Float32Array(rows * K).map(() => rnd() * 2 - 1);
      w[3] = -2.5; // a negative extreme: q4 maps it to −8 exactly
      w[K + 40] = 3; // a positive extreme
      w.fill(0, 2 * K, 2 * K + 32); // an all-zero group
      const q = quantize(w, rows, K, dtype);
      const r = dequantize(q, rows, K, dtype);
      const levels = dtype === 'q8' ? 127 : 7;
      for (let g = 0; g < (rows * K) / 32; g++) {
        let m = 0;
        for (let i = 0; i < 32; i++) m = Math.max(m, Math.abs(w[g * 32 + i]!));
        for (let i = 0; i < 32; i++) {
          const e = g * 32 + i;
          expect(Math.abs(r[e]! - w[e]!), `element ${e}`).toBeLessThanOrEqual((m / levels) * (dtype === 'q8' ? 0.5 : 1) * 1.01 + 1e-7);
        }
      }
      expect(Math.abs(r[3]! + 2.5)).toBeLessThan(2.5e-3);
      expect(Math.abs(r[K + 40]! - 3)).toBeLessThan(3e-3);
      expect([...r.subarray(2 * K, 2 * K + 32)].every((v) => v === 0)).toBe(true);
      const b = quantizedBytes(dtype, rows, K);
      expect(q.quants.byteLength).toBe(b.quants);
      expect(Math.ceil(q.scales.byteLength / 4) * 4).toBe(b.scales);
    });
  }
  it('rejects a row length that is not a multiple of 32', () => {
    expect(() => quantize(new Float32Array(40), 1, 40, 'q8')).toThrow(/multiple of 32/);
  });
});
