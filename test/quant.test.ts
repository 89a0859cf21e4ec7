import { describe, expect, it } from 'vitest';
import { dequantize, quantize, quantizedBytes } from '../runtime/quant.js';
import { rng } from '../runtime/sampling.js';
import { f16BitsToNumber, numberToF16Bits } from '../runtime/io/dtype.js';
import { quantDtypeFor } from '../runtime/weights.js';
import { withEnv } from './with-env.js';

describe('block quantization (CPU)', () => {
  for (const dtype of ['q8'] as const) {
    it(`${dtype}: round trip within half a step per group, extremes exact, byte counts`, () => {
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
  it('q4: per group no worse than the extreme on a level, ~10% lower error on normal data, zero groups exact, byte counts', () => {
    const rows = 400;
    const K = 64;
    const rnd = rng(11);
    const w = new Float32Array(rows * K).map(() => Math.sqrt(-2 * Math.log(rnd() + 1e-12)) * Math.cos(2 * Math.PI * rnd()));
    w.fill(0, 2 * K, 2 * K + 32); // an all-zero group
    w[5 * K + 3] = 40; // an outlier: the group's other values sit near zero
    const q = quantize(w, rows, K, 'q4');
    const r = dequantize(q, rows, K, 'q4');
    let err = 0;
    let plainErr = 0;
    for (let g = 0; g < (rows * K) / 32; g++) {
      const x = w.subarray(g * 32, g * 32 + 32);
      let m = 0;
      for (const v of x) if (Math.abs(v) > Math.abs(m)) m = v;
      // the plain rule: the extreme on −8 (negative) or 7 (positive), f16 scale
      const s = f16BitsToNumber(numberToF16Bits(m < 0 ? -m / 8 : m / 7));
      let e = 0;
      let pe = 0;
      for (let i = 0; i < 32; i++) {
        e += (r[g * 32 + i]! - x[i]!) ** 2;
        pe += (s === 0 ? x[i]! : Math.min(7, Math.max(-8, Math.round(x[i]! / s))) * s - x[i]!) ** 2;
      }
      expect(e, `group ${g}`).toBeLessThanOrEqual(pe * (1 + 1e-6) + 1e-12);
      err += e;
      plainErr += pe;
    }
    expect(Math.sqrt(err / plainErr)).toBeLessThan(0.95);
    expect([...r.subarray(2 * K, 2 * K + 32)].every((v) => v === 0)).toBe(true);
    expect(Math.abs(r[5 * K + 3]! - 40)).toBeLessThan(40 / 8 / 2 + 0.05); // an outlier stays within half a step
    const b = quantizedBytes('q4', rows, K);
    expect(q.quants.byteLength).toBe(b.quants);
    expect(Math.ceil(q.scales.byteLength / 4) * 4).toBe(b.scales);
  });

  it('rejects a row length that is not a multiple of 32', () => {
    expect(() => quantize(new Float32Array(40), 1, 40, 'q8')).toThrow(/multiple of 32/);
  });
  it('which matrices q8 / q4 quantize, and to what: q4 keeps the output projection q8 (LOCRET_Q4_KEEP_Q8 adds kinds)', () => {
    const names = ['embed', 'lm_head', 'L0.qkv', 'L0.o', 'L0.gate_up', 'L0.down', 'L0.fc1'];
    const of = (format: 'q8' | 'q4' | 'f16', tied = false) =>
      names.map((n) => quantDtypeFor(n, format, tied ? names.filter((x) => x !== 'lm_head') : names));
    expect(of('q8')).toEqual(['q8', 'q8', 'q8', 'q8', 'q8', 'q8', undefined]);
    expect(of('q4')).toEqual(['q4', 'q8', 'q4', 'q4', 'q4', 'q4', undefined]);
    expect(of('q4', true)[0], 'a tied embedding is the output projection').toBe('q8');
    expect(of('f16')).toEqual(names.map(() => undefined));
    withEnv({ LOCRET_Q4_KEEP_Q8: 'qkv,down' }, () => {
      expect(of('q4')).toEqual(['q4', 'q8', 'q8', 'q4', 'q4', 'q8', undefined]);
      expect(of('q8')[2]).toBe('q8');
    });
  });
});
