/**
 * Reference for the decode gemv's int8 dot form (compiler/kernels/mm-gemv-dot.ts): x (times the rmsnorm weight when
 * normed) quantized per chunk of E elements the way the kernel does it, in f32, so a matmul reference fed the
 * dequantized result differs from the kernel only in accumulation order:
 *
 *   xs = fround(x · n),  amax over the chunk,  inv = fround(127 / amax),  q = round-half-even(xs · inv),
 *   one digit:  x̂ = q · fround(amax · fround(1/127))
 *   two digits: l = round-half-even(fround(xs · inv − q) · 254),  x̂ = (254 q + l) · fround(amax · fround(1/32258))
 *   (· the token's rmsnorm factor 1/√(mean x² + eps))
 *
 * The kernel's 127 / amax may differ from the correctly rounded one by a few ulps, which moves xs · inv by < 1e-4:
 * with one digit, a value within that of a rounding tie can land on the other level (`offTies` moves such inputs
 * away); with two, the second digit takes up the difference (254 q + l is the same on either side of the tie) and
 * what remains is at most one step of the second digit.
 */
const fr = Math.fround;
const INV127 = fr(1 / 127);
const INV32258 = fr(1 / (127 * 254));
/** |xs · inv − (k + ½)| below this counts as a tie */
const TIE = 1e-3;

interface Chunking {
  T: number;
  K: number;
  /** chunk length (elements per thread load: 8, 16 or 32) */
  E: number;
  /** first x row used */
  xRow0: number;
  normW?: Float32Array;
}

/** Per chunk: the scaled values xs · inv, and amax. */
function chunkScales(x: Float32Array, c: Chunking, t: number, k0: number): { v: number[]; amax: number } {
  const xs = Array.from({ length: c.E }, (_, i) => fr(x[(c.xRow0 + t) * c.K + k0 + i]! * (c.normW ? c.normW[k0 + i]! : 1)));
  const amax = xs.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
  const inv = amax > 0 ? fr(127 / amax) : 0;
  return { v: xs.map((s) => fr(s * inv)), amax };
}

const roundHalfEven = (v: number) => {
  const f = Math.floor(v);
  const d = v - f;
  return d > 0.5 || (d === 0.5 && f % 2 !== 0) ? f + 1 : f;
};

/** Nudges (in place) every x element whose scaled value sits within TIE of a rounding tie by 0.02 of a level. */
export function offTies(x: Float32Array, c: Chunking): number {
  let moved = 0;
  for (let t = 0; t < c.T; t++)
    for (let k0 = 0; k0 < c.K; k0 += c.E) {
      const { v } = chunkScales(x, c, t, k0);
      v.forEach((s, i) => {
        if (Math.abs(Math.abs(s - Math.floor(s)) - 0.5) >= TIE) return;
        const at = (c.xRow0 + t) * c.K + k0 + i;
        x[at] = fr(x[at]! * (1 + 0.02 / Math.abs(s))); // |s| < 127: never becomes the chunk's amax
        moved++;
      });
    }
  return moved;
}

/** (T, K) x̂ as the kernel multiplies it: quantized, dequantized and, with `eps` (norm), times the rmsnorm factor. */
export function dotFormX(x: Float32Array, c: Chunking, digits: 1 | 2, eps?: number): Float32Array {
  const out = new Float32Array(c.T * c.K);
  for (let t = 0; t < c.T; t++) {
    let ss = 0;
    for (let k = 0; k < c.K; k++) ss += x[(c.xRow0 + t) * c.K + k]! ** 2;
    const rs = eps === undefined ? 1 : 1 / Math.sqrt(ss / c.K + eps);
    for (let k0 = 0; k0 < c.K; k0 += c.E) {
      const { v, amax } = chunkScales(x, c, t, k0);
      v.forEach((s, i) => {
        const q = roundHalfEven(s);
        const steps = digits === 1 ? q : 254 * q + roundHalfEven(fr(fr(s - q) * 254));
        out[t * c.K + k0 + i] = steps * fr(amax * (digits === 1 ? INV127 : INV32258)) * rs;
      });
    }
  }
  return out;
}
