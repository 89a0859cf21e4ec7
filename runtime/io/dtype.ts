/**
 * Conversions between the storage dtypes (bf16, f16) and f32. All work on raw bit patterns in typed arrays:
 * Node 20 has no Float16Array, and going through bits keeps NaN payloads, signed zeros and subnormals exact.
 */
import type { StoredDtype } from './tensor-store.js';

export const DTYPE_BYTES: Record<StoredDtype, number> = { f32: 4, f16: 2, bf16: 2 };

// Every reader reinterprets file bytes as little-endian typed arrays; a big-endian host would silently garble them.
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
if (!LITTLE_ENDIAN) throw new Error('locret requires a little-endian host');

/** bf16 is the top half of an f32: a shift is exact for every value, NaN and inf included. */
export function bf16ToF32(src: Uint16Array, dst = new Float32Array(src.length)): Float32Array {
  const out = new Uint32Array(dst.buffer, dst.byteOffset, dst.length);
  for (let i = 0; i < src.length; i++) out[i] = src[i] << 16;
  return dst;
}

let f16Table: Float32Array | null = null;

/** Exact value of one f16 bit pattern as f32 bits (every f16, subnormals included, is representable in f32). */
function f16BitsToF32Bits(h: number): number {
  const sign = (h & 0x8000) << 16;
  const exp = (h >> 10) & 0x1f;
  let mant = h & 0x3ff;
  if (exp === 0x1f) return (sign | 0x7f800000 | (mant << 13)) >>> 0; // inf / NaN (payload kept)
  if (exp !== 0) return (sign | ((exp + 112) << 23) | (mant << 13)) >>> 0;
  if (mant === 0) return sign >>> 0; // ±0
  // subnormal: normalize the mantissa; value = mant * 2^-24
  let e = 113;
  while ((mant & 0x400) === 0) {
    mant <<= 1;
    e--;
  }
  return (sign | (e << 23) | ((mant & 0x3ff) << 13)) >>> 0;
}

/** A 65536-entry table (256 KiB, built once) makes f16 → f32 a single load per element. */
function table(): Float32Array {
  if (f16Table) return f16Table;
  const t = new Float32Array(65536);
  const bits = new Uint32Array(t.buffer);
  for (let h = 0; h < 65536; h++) bits[h] = f16BitsToF32Bits(h);
  return (f16Table = t);
}

export function f16ToF32(src: Uint16Array, dst = new Float32Array(src.length)): Float32Array {
  const t = table();
  const tb = new Uint32Array(t.buffer);
  const out = new Uint32Array(dst.buffer, dst.byteOffset, dst.length);
  for (let i = 0; i < src.length; i++) out[i] = tb[src[i]];
  return dst;
}

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

/** One f32 bit pattern → f16 bits, round to nearest, ties to even; overflow → inf; NaN stays (quiet) NaN. */
export function f32BitsToF16Bits(x: number): number {
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  const mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 | (mant >>> 13) : 0);
  const e = exp - 112; // rebias 127 → 15
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    // f16 subnormal (or underflow to zero): shift the full 24-bit significand into place with RNE
    if (e < -10) return sign;
    const m = mant | 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    const rest = m & ((1 << shift) - 1);
    let r = m >>> shift;
    if (rest > half || (rest === half && (r & 1) === 1)) r++;
    return sign | r; // a carry into bit 10 correctly yields the smallest normal
  }
  let r = (e << 10) | (mant >>> 13);
  const rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && (r & 1) === 1)) r++; // carry may round up to inf: still correct
  return sign | r;
}

export function f32ToF16(src: Float32Array, dst = new Uint16Array(src.length)): Uint16Array {
  const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  for (let i = 0; i < src.length; i++) dst[i] = f32BitsToF16Bits(bits[i]);
  return dst;
}

/** f32 → bf16, round to nearest even; NaN is kept NaN (the rounding add could otherwise turn it into inf). */
export function f32ToBf16(src: Float32Array, dst = new Uint16Array(src.length)): Uint16Array {
  const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  for (let i = 0; i < src.length; i++) {
    const x = bits[i];
    if ((x & 0x7fffffff) > 0x7f800000) dst[i] = (x >>> 16) | 0x40;
    else dst[i] = (x + 0x7fff + ((x >>> 16) & 1)) >>> 16;
  }
  return dst;
}

/** Scalar helpers for tests and one-off values. */
export function f16BitsToNumber(h: number): number {
  u32Scratch[0] = f16BitsToF32Bits(h & 0xffff);
  return f32Scratch[0];
}
export function numberToF16Bits(v: number): number {
  f32Scratch[0] = v;
  return f32BitsToF16Bits(u32Scratch[0]);
}

/**
 * Typed views need aligned offsets; file reads land in fresh buffers (aligned), but slices of a larger read may
 * not be, so copy only when needed.
 */
function aligned(bytes: Uint8Array, align: number): Uint8Array {
  return bytes.byteOffset % align === 0 ? bytes : bytes.slice();
}

/** Raw little-endian bytes of a stored tensor → f32 values. */
export function rawToF32(bytes: Uint8Array, dtype: StoredDtype): Float32Array {
  const size = DTYPE_BYTES[dtype];
  if (bytes.byteLength % size !== 0) throw new Error(`${bytes.byteLength} bytes is not a whole number of ${dtype}`);
  const b = aligned(bytes, size);
  const n = b.byteLength / size;
  if (dtype === 'f32') return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
  const u16 = new Uint16Array(b.buffer, b.byteOffset, n);
  return dtype === 'bf16' ? bf16ToF32(u16) : f16ToF32(u16);
}
