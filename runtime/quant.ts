/**
 * Block quantization of weight matrices (q8 / q4, groups of 32 along a row, one f16 scale per group, symmetric),
 * the CPU side of the formats documented at `WeightDtype` (compiler/kernels/mm-common.ts):
 *
 *   row r, group g = elements [32g, 32g + 32) of the row          (K % 32 == 0)
 *   q8  q = round(v / s) ∈ [−127, 127],  s = max|v| / 127          quants (rows, K/4) u32
 *   q4  q = round(v / s) ∈ [−8, 7],      s searched (below)                quants (rows, K/8) u32
 *   scales (rows, K/32) f16, two per u32 word
 *
 * q4 has only 16 levels, so its scale is searched rather than taken from the extreme: starting from the element of
 * largest magnitude m mapped to the level −8 (s = −m/8, negative when m > 0: the asymmetric side then serves the
 * sign of m) or to ±7, candidate assignments q = round(v / s') for s' around those are fitted by least squares
 * (s = Σ v·q / Σ q², the best scale for those levels) and the one of least squared error is kept (as llama.cpp's
 * make_qx_quants does). Every scale is rounded to f16 first and the quants computed against the rounded scale,
 * so dequantize(quantize(w)) is exactly what the kernels see.
 */
import { f16BitsToNumber, numberToF16Bits } from './io/dtype.js';

export type QuantDtype = 'q8' | 'q4';
export const QGROUP = 32;

export interface Quantized {
  /** (rows, K/4) for q8, (rows, K/8) for q4 */
  readonly quants: Uint32Array;
  /** (rows, K/32) f16 bits; an odd count is padded to whole u32 words by the uploader */
  readonly scales: Uint16Array;
}

/** Bytes of a quantized (rows, K) matrix: quants and scales (each rounded to 4 bytes). */
export function quantizedBytes(dtype: QuantDtype, rows: number, K: number): { quants: number; scales: number } {
  const groups = (rows * K) / QGROUP;
  return { quants: (rows * K) / (dtype === 'q8' ? 1 : 2), scales: Math.ceil(groups / 2) * 4 };
}

export function checkQuantShape(name: string, rows: number, K: number): void {
  if (!Number.isInteger(rows) || rows < 1 || !Number.isInteger(K) || K < 1 || K % QGROUP !== 0)
    throw new Error(`tensor ${name} [${rows}, ${K}]: block quantization needs a row length that is a multiple of ${QGROUP}`);
}

/** Quantizes a row-major (rows, K) matrix. */
export function quantize(w: Float32Array, rows: number, K: number, dtype: QuantDtype): Quantized {
  checkQuantShape('quantize', rows, K);
  if (w.length !== rows * K) throw new Error(`quantize: ${w.length} values for [${rows}, ${K}]`);
  const per = dtype === 'q8' ? 4 : 8; // elements per u32 word
  const bits = dtype === 'q8' ? 8 : 4;
  const quants = new Uint32Array((rows * K) / per);
  const scales = new Uint16Array((rows * K) / QGROUP);
  for (let g = 0; g < scales.length; g++) {
    const at = g * QGROUP;
    const x = w.subarray(at, at + QGROUP);
    const sBits = dtype === 'q8' ? q8Scale(x) : q4Scale(x);
    scales[g] = sBits;
    const s = f16BitsToNumber(sBits);
    const inv = s !== 0 ? 1 / s : 0;
    const lo = dtype === 'q8' ? -127 : -8;
    const hi = dtype === 'q8' ? 127 : 7;
    for (let i = 0; i < QGROUP; i++) {
      const q = Math.min(hi, Math.max(lo, Math.round(x[i]! * inv)));
      const e = at + i;
      const field = dtype === 'q8' ? q & 0xff : q + 8; // q8: two's complement byte; q4: offset nibble
      quants[(e / per) | 0] = (quants[(e / per) | 0]! | (field << (bits * (e % per)))) >>> 0;
    }
  }
  return { quants, scales };
}

/** q8: max|v| / 127, as f16 bits. */
function q8Scale(x: Float32Array): number {
  let m = 0;
  for (let i = 0; i < x.length; i++) m = Math.max(m, Math.abs(x[i]!));
  return numberToF16Bits(m / 127);
}

/** Candidate inverse scales for q4, as multiples of 1/m (m the signed extreme): m on −8 and a little inside. */
const Q4_CANDIDATES = [-8, -8.5, -9, 7];

/**
 * q4: the f16 scale of least squared error among least-squares fits (see the file comment). The error of a fit is
 * Σx² − 2sΣxq + s²Σq² for its own levels q; re-rounding to the nearest level at the chosen scale can only lower it.
 */
function q4Scale(x: Float32Array): number {
  let m = 0;
  for (let i = 0; i < x.length; i++) if (Math.abs(x[i]!) > Math.abs(m)) m = x[i]!;
  if (m === 0) return 0;
  let best = 0;
  let bestErr = Infinity;
  for (const c of Q4_CANDIDATES) {
    const inv = c / m;
    let xq = 0;
    let qq = 0;
    for (let i = 0; i < x.length; i++) {
      const q = Math.min(7, Math.max(-8, Math.round(x[i]! * inv)));
      xq += x[i]! * q;
      qq += q * q;
    }
    if (qq === 0) continue;
    const bits = numberToF16Bits(xq / qq);
    const s = f16BitsToNumber(bits);
    const err = -2 * s * xq + s * s * qq; // + Σx², the same for every candidate
    if (err < bestErr) {
      bestErr = err;
      best = bits;
    }
  }
  return best;
}

/** The f32 values the kernels compute with for a quantized matrix. */
export function dequantize(q: Quantized, rows: number, K: number, dtype: QuantDtype): Float32Array {
  const per = dtype === 'q8' ? 4 : 8;
  const bits = dtype === 'q8' ? 8 : 4;
  const out = new Float32Array(rows * K);
  for (let e = 0; e < out.length; e++) {
    const field = (q.quants[(e / per) | 0]! >>> (bits * (e % per))) & ((1 << bits) - 1);
    const v = dtype === 'q8' ? (field << 24) >> 24 : field - 8;
    out[e] = v * f16BitsToNumber(q.scales[(e / QGROUP) | 0]!);
  }
  return out;
}
