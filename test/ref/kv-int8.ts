/**
 * CPU reference of the int8 KV-cache row format (compiler/kernels/kv-int8.ts): per row of D values, D int8 codes
 * packed four per u32 (byte i of word j = dim 4j+i), then the f32 scale max|x| / 127 as the row's last word;
 * code = round-half-even(x / scale) clamped to ±127 (WGSL `round`), all f32 arithmetic as on the GPU.
 */

export const rowWords = (D: number): number => D / 4 + 1;

function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x - Math.trunc(x)) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** x (rows, D) f32 → (rows, D/4 + 1) u32 words. */
export function quantizeRows(x: Float32Array, rows: number, D: number): Uint32Array {
  const W = rowWords(D);
  const out = new Uint32Array(rows * W);
  const f = new Float32Array(1);
  for (let r = 0; r < rows; r++) {
    let m = 0;
    for (let i = 0; i < D; i++) m = Math.max(m, Math.abs(x[r * D + i]!));
    const scale = Math.fround(m / 127);
    for (let j = 0; j < D / 4; j++) {
      let w = 0;
      for (let b = 0; b < 4; b++) {
        const c = scale > 0 ? Math.max(-127, Math.min(127, roundHalfEven(Math.fround(x[r * D + 4 * j + b]! / scale)))) : 0;
        w |= (c & 255) << (8 * b);
      }
      out[r * W + j] = w >>> 0;
    }
    f[0] = scale;
    out[r * W + D / 4] = new Uint32Array(f.buffer)[0]!;
  }
  return out;
}

/** Code of dim i of row r (signed). */
export function codeAt(words: Uint32Array, D: number, r: number, i: number): number {
  const w = words[r * rowWords(D) + (i >> 2)]!;
  return ((w << (24 - 8 * (i & 3))) | 0) >> 24;
}

export function scaleAt(words: Uint32Array, D: number, r: number): number {
  return new Float32Array(Uint32Array.of(words[r * rowWords(D) + D / 4]!).buffer)[0]!;
}

/** (rows, D/4 + 1) u32 → (rows, D) f32 values code · scale (what the attention kernels compute on load). */
export function dequantizeRows(words: Uint32Array, rows: number, D: number): Float32Array {
  const out = new Float32Array(rows * D);
  for (let r = 0; r < rows; r++) {
    const s = scaleAt(words, D, r);
    for (let i = 0; i < D; i++) out[r * D + i] = Math.fround(codeAt(words, D, r, i) * s);
  }
  return out;
}
