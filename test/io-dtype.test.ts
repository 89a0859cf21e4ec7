import { describe, expect, it } from 'vitest';
import {
  bf16ToF32, f16BitsToNumber, f16ToF32, f32BitsToF16Bits, f32ToBf16, f32ToF16, numberToF16Bits, rawToF32,
} from '../runtime/io/dtype.js';
import { f16BitsToF32 as refF16 } from './ref/f16.js';


describe('dtype', () => {
  it('f16 → f32 is exact for all 65536 patterns', () => {
    const all = new Uint16Array(65536).map((_, i) => i);
    const f = f16ToF32(all);
    for (let h = 0; h < 65536; h++) {
      const r = refF16(h);
      if (Number.isNaN(r)) expect(Number.isNaN(f[h])).toBe(true);
      else expect(Object.is(f[h], r)).toBe(true);
    }
  });

  it('f32 → f16 → f32 round-trips every f16 value (incl. subnormals, ±0, ±inf)', () => {
    const all = new Uint16Array(65536).map((_, i) => i);
    const back = f32ToF16(f16ToF32(all));
    for (let h = 0; h < 65536; h++) {
      if ((h & 0x7c00) === 0x7c00 && h & 0x3ff) expect((back[h] & 0x7c00) === 0x7c00 && (back[h] & 0x3ff) !== 0).toBe(true);
      else expect(back[h]).toBe(h);
    }
  });

  it('f32 → f16 rounds to nearest even, overflows to inf, underflows to 0', () => {
    expect(numberToF16Bits(1 + 2 ** -11)).toBe(0x3c00); // tie → even (down)
    expect(numberToF16Bits(1 + 3 * 2 ** -11)).toBe(0x3c02); // tie → even (up)
    expect(numberToF16Bits(1 + 2 ** -11 + 2 ** -20)).toBe(0x3c01); // above tie
    expect(numberToF16Bits(65504)).toBe(0x7bff);
    expect(numberToF16Bits(65520)).toBe(0x7c00); // rounds past max → inf
    expect(numberToF16Bits(-1e9)).toBe(0xfc00);
    expect(numberToF16Bits(2 ** -25)).toBe(0); // tie between 0 and min subnormal → 0 (even)
    expect(numberToF16Bits(2 ** -25 * 1.5)).toBe(1);
    expect(numberToF16Bits(3 * 2 ** -25)).toBe(2); // tie → even
    expect(numberToF16Bits(-0)).toBe(0x8000);
    expect(numberToF16Bits(2 ** -14 - 2 ** -26)).toBe(0x0400); // rounds up into the smallest normal
    expect(Number.isNaN(f16BitsToNumber(numberToF16Bits(NaN)))).toBe(true);
    // random values against an exhaustive nearest search
    const vals = new Float32Array(2000).map(() => (Math.random() - 0.5) * 2 ** (Math.random() * 40 - 26));
    for (const v of vals) {
      const h = numberToF16Bits(v);
      const err = Math.abs(f16BitsToNumber(h) - v);
      for (const n of [h - 1, h + 1]) if ((n & 0x7c00) !== 0x7c00) expect(err).toBeLessThanOrEqual(Math.abs(f16BitsToNumber(n) - v));
    }
  });

  it('bf16 ↔ f32', () => {
    const f = bf16ToF32(new Uint16Array([0x3f80, 0xc000, 0x7f80, 0xff80, 0x0001, 0x8000, 0x7fc1]));
    expect([...f.slice(0, 4)]).toEqual([1, -2, Infinity, -Infinity]);
    expect(f[4]).toBe(2 ** -133);
    expect(Object.is(f[5], -0)).toBe(true);
    expect(Number.isNaN(f[6])).toBe(true);
    const b = f32ToBf16(new Float32Array([1, 1 + 2 ** -8, 1 + 3 * 2 ** -8, NaN, 3.4e38, -0]));
    expect([...b]).toEqual([0x3f80, 0x3f80, 0x3f82, b[3], 0x7f80, 0x8000]);
    expect(b[3] & 0x7f80).toBe(0x7f80);
    expect(b[3] & 0x7f).not.toBe(0);
  });

  it('rawToF32 handles unaligned slices', () => {
    const bytes = new Uint8Array(9);
    new DataView(bytes.buffer).setUint16(1, 0x3c00, true);
    new DataView(bytes.buffer).setUint16(3, 0xc000, true);
    expect([...rawToF32(bytes.subarray(1, 5), 'f16')]).toEqual([1, -2]);
    expect([...rawToF32(bytes.subarray(1, 5), 'bf16')]).toEqual([2 ** -7, -2]);
    expect(f32BitsToF16Bits(0x3f800000)).toBe(0x3c00);
    expect(() => rawToF32(bytes.subarray(0, 3), 'f16')).toThrow(/whole number/);
  });
});
