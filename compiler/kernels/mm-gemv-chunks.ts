/**
 * How the decode gemv (mm-gemv.ts) reads one chunk of a weight row per dtype: the binding type, the load, and the
 * split of the loaded chunk into f32 pieces that line up with pieces of the x chunk, so the chunk's partial dot
 * is Σ_p dot(xPiece_p, wPiece_p) (+ offset). Formats are defined at `WeightDtype` (mm-common.ts).
 *
 *   dtype  E   load (16 bytes unless E = 1)       pieces
 *   f32    4   vec4<f32>                          the vec4
 *   f16*   8   vec4<u32> = 8 halves               2 × vec4 via unpack2x16float (no shader-f16 needed)
 *   q8    16   vec4<u32> = 16 int8                4 × vec4 (one per word)
 *   q4    16   vec2<u32> = half a group           4 × vec4 (nibbles 0–3 / 4–7 of a word, or see 'half')
 *   f32/f16* with K % 4 / K % 8 ≠ 0: E = 1, one scalar per load
 *   q8 may also take chunks of 2 words (8-byte loads, E 8), q4 of 4 (a whole group, E 32): LOCRET_GEMV=qw=…
 *
 * Quantized integers become floats without int → float conversions, in one of two forms (`QuantConvert`, picked
 * per matmul kind by mm-gemv.ts `quantConvert`, each the faster one there):
 *
 *   'float'  an integer ORed into the mantissa of the f32 2^23 (mantissa unit 1) IS the f32 2^23 + b; subtracting
 *            2^23 + offset gives the weight exactly, elements in their own order (integer ops and one subtraction
 *            per element)
 *              q4 ((w >> 4s) & 15) | 0x4B000000    − 8388616  → n_s − 8
 *              q8 ((w >> 8s) & 0xFF) ^ 0x4B000080  − 8388736  → q_s (the XOR flips the byte's sign bit: q + 128)
 *   'half'   a byte or nibble ORed into the mantissa of the f16 0x6400 (1024.0, mantissa unit 1) IS the f16
 *            1024 + b, two per word, widened to f32 by unpack2x16float:
 *              q4 (w >> 4s) & 0x000F000F | 0x64006400  → f16 pair (1024 + n_s, 1024 + n_{s+4}),  weight = n − 8
 *              q8 (w >> 8s) & 0x00FF00FF ^ 0x64806480  → f16 pair (1152 + q_s, 1152 + q_{s+2}), weight = q
 *            the pieces pair elements (0,4,1,5 / 2,6,3,7 for q4; 0,2,1,3 for q8: x swizzled to match), the dot is
 *            taken on these values and the constant comes off once per chunk (−1032·Σx, −1152·Σx) in f32 (the
 *            extra rounding is ~1e-5 of the dot): the faster form for the two-stream kind (gate_up)
 *   'int'    the first form: unpack4xI8 / unpack4xU8 then vec4<f32> of the integers (LOCRET_GEMV=dq=int)
 *   'dot1'   no floats at all: x quantized to one ('dot1') or two ('dot2') int8 digits per chunk, integer dot products
 *   'dot2'   (mm-gemv-dot.ts); the pieces are u32 words of quants, taken by the gemv's own integer body
 */
import { QGROUP, type WeightDtype } from './mm-common.js';
import { dotPieces } from './mm-gemv-dot.js';

/** How q8 / q4 integers become f32 in the decode gemv (see above); the kernel key carries it. */
export type QuantConvert = 'half' | 'float' | 'int' | 'dot1' | 'dot2';
/** the integer dot-product forms (mm-gemv-dot.ts) */
export const isIntDot = (c: QuantConvert): c is 'dot1' | 'dot2' => c === 'dot1' || c === 'dot2';

export interface ChunkLayout {
  /** elements per chunk */
  readonly E: number;
  /** WGSL type of the weight binding */
  readonly wType: string;
  /** WGSL expression: chunk `i` of the flat weight array `name` */
  load(name: string, i: string): string;
  /** WGSL expressions of the loaded chunk `w` as f32 pieces (vec4, or one f32 when E = 1) */
  decode(w: string): string[];
  /** WGSL expressions of the x pieces matching `decode`, from the chunk's x values (vec4s, or one f32) in order */
  xPieces(xs: readonly string[]): string[];
  /** WGSL expression added to each chunk's partial dot (before the scale), if any */
  xOffset?(xs: readonly string[]): string;
}

/**
 * Elements per 16-byte load for a row length K (one element where rows are not 16-byte aligned); gemvShape may
 * take narrower quantized chunks.
 */
export function chunkElems(wdtype: WeightDtype, K: number): number {
  switch (wdtype) {
    case 'f32':
      return K % 4 === 0 ? 4 : 1;
    case 'f16':
    case 'f16p':
      return K % 8 === 0 ? 8 : 1;
    case 'q8':
    case 'q4':
      if (K % QGROUP !== 0) throw new Error(`gemv: ${wdtype} weights need K % ${QGROUP} == 0, got K=${K}`);
      return wdtype === 'q8' ? 16 : 32;
  }
}

const comps = ['x', 'y', 'z', 'w'] as const;
const h2 = (w: string, a: string, b: string) => `vec4<f32>(unpack2x16float(${w}.${a}), unpack2x16float(${w}.${b}))`;

/** f16 pair `bits` (a u32 expression) widened to vec2<f32> */
const pair = (bits: string) => `unpack2x16float(${bits})`;

export function chunkLayout(wdtype: WeightDtype, E: number, convert: QuantConvert = 'half'): ChunkLayout {
  const ident = (xs: readonly string[]) => [...xs];
  switch (wdtype) {
    case 'f32':
      return {
        E,
        wType: E === 4 ? 'array<vec4<f32>>' : 'array<f32>',
        load: (n, i) => `${n}[${i}]`,
        decode: (w) => [w],
        xPieces: ident,
      };
    case 'f16':
    case 'f16p':
      return E === 8
        ? {
            E,
            wType: 'array<vec4<u32>>',
            load: (n, i) => `${n}[${i}]`,
            decode: (w) => [h2(w, 'x', 'y'), h2(w, 'z', 'w')],
            xPieces: ident,
          }
        : {
            // element i is half i & 1 of word i >> 1 (little-endian)
            E: 1,
            wType: 'array<u32>',
            load: (n, i) => `unpack2x16float(${n}[(${i}) >> 1u])[(${i}) & 1u]`,
            decode: (w) => [w],
            xPieces: ident,
          };
    case 'q8':
    case 'q4':
      return quantChunk(wdtype, E, convert);
  }
}

/**
 * q8 / q4 chunks of 2 or 4 words (an 8- or 16-byte load: q8 8 or 16 elements, q4 16 or 32), pieces as in the table
 * at the top, per word j of the chunk.
 */
function quantChunk(wdtype: 'q8' | 'q4', E: number, convert: QuantConvert): ChunkLayout {
  const perWord = wdtype === 'q8' ? 4 : 8;
  const words = E / perWord;
  if (words !== 2 && words !== 4) throw new Error(`gemv: ${wdtype} chunks are 2 or 4 words, not ${E} elements`);
  const cs = comps.slice(0, words);
  const base = { E, wType: `array<vec${words}<u32>>`, load: (n: string, i: string) => `${n}[${i}]` };
  if (isIntDot(convert)) return { ...base, decode: (w) => dotPieces(wdtype, words, w), xPieces: (xs) => [...xs] };
  const sumX = (xs: readonly string[]) => `dot(${xs.join(' + ')}, vec4<f32>(1.0))`;
  // 'float': each integer ORed into the mantissa of the f32 2^23 (mantissa unit 1), minus 2^23 + offset: exact,
  // natural element order, no offset term
  const f32Bits = (w: string, shifts: readonly number[], mask: string, op: string, bias: number) =>
    `(bitcast<vec4<f32>>(((vec4<u32>(${w}) >> vec4<u32>(${shifts.map((v) => `${v}u`).join(', ')})) & vec4<u32>(${mask})) ${op} vec4<u32>(${op === '^' ? '0x4B000080u' : '0x4B000000u'})) - vec4<f32>(${bias}.0))`;
  if (wdtype === 'q8') {
    switch (convert) {
      case 'half':
        return {
          ...base,
          // word j holds elements 4j..4j+3 (byte b = element 4j+b): pieces (4j, 4j+2, 4j+1, 4j+3) + 1152
          decode: (w) => cs.map((c) => `vec4<f32>(${pair(`(${w}.${c} & 0x00FF00FFu) ^ 0x64806480u`)}, ${pair(`((${w}.${c} >> 8u) & 0x00FF00FFu) ^ 0x64806480u`)})`),
          xPieces: (xs) => xs.map((a) => `${a}.xzyw`),
          xOffset: (xs) => `-1152.0 * ${sumX(xs)}`,
        };
      case 'float':
        // byte ^ 0x80 = two's complement q + 128, so 2^23 + q + 128 comes off as 8388736
        return { ...base, decode: (w) => cs.map((c) => f32Bits(`${w}.${c}`, [0, 8, 16, 24], '0xFFu', '^', 8388736)), xPieces: (xs) => [...xs] };
      case 'int':
        return {
          ...base,
          // word j holds elements 4j..4j+3, byte b = element 4j+b, two's complement
          decode: (w) => cs.map((c) => `vec4<f32>(unpack4xI8(${w}.${c}))`),
          xPieces: (xs) => [...xs],
        };
    }
  }
  // word j holds elements 8j..8j+7 as nibbles 0..7, x vec4s a = 8j..8j+3 and b = 8j+4..8j+7
  const xByWord = (xs: readonly string[], order: (a: string, b: string) => string[]) =>
    cs.flatMap((_, j) => order(xs[2 * j]!, xs[2 * j + 1]!));
  switch (convert) {
    case 'half':
      return {
        ...base,
        // pieces (8j, 8j+4, 8j+1, 8j+5), (8j+2, 8j+6, 8j+3, 8j+7) + 1024
        decode: (w) =>
          cs.flatMap((c) => {
            const p = (s: number) => pair(`(${s ? `(${w}.${c} >> ${4 * s}u)` : `${w}.${c}`} & 0x000F000Fu) | 0x64006400u`);
            return [`vec4<f32>(${p(0)}, ${p(1)})`, `vec4<f32>(${p(2)}, ${p(3)})`];
          }),
        xPieces: (xs) => xByWord(xs, (a, b) => [`vec4<f32>(${a}.x, ${b}.x, ${a}.y, ${b}.y)`, `vec4<f32>(${a}.z, ${b}.z, ${a}.w, ${b}.w)`]),
        xOffset: (xs) => `-1032.0 * ${sumX(xs)}`,
      };
    case 'float':
      // nibble n: 2^23 + n, weight n − 8, so 8388616 comes off
      return {
        ...base,
        decode: (w) => cs.flatMap((c) => [f32Bits(`${w}.${c}`, [0, 4, 8, 12], '15u', '|', 8388616), f32Bits(`${w}.${c}`, [16, 20, 24, 28], '15u', '|', 8388616)]),
        xPieces: (xs) => [...xs],
      };
    case 'int':
      return {
        ...base,
        // the low nibble of each byte is an even element
        decode: (w) => cs.flatMap((c) => [`vec4<f32>(unpack4xU8(${w}.${c} & 0x0F0F0F0Fu))`, `vec4<f32>(unpack4xU8((${w}.${c} >> 4u) & 0x0F0F0F0Fu))`]),
        xPieces: (xs) => xByWord(xs, (a, b) => [`vec4<f32>(${a}.x, ${a}.z, ${b}.x, ${b}.z)`, `vec4<f32>(${a}.y, ${a}.w, ${b}.y, ${b}.w)`]),
        xOffset: (xs) => `-8.0 * ${sumX(xs)}`,
      };
  }
}
