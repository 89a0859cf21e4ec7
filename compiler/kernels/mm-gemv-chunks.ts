/**
 * How the decode gemv (mm-gemv.ts) reads one chunk of a weight row per dtype: the binding type, the load, and the
 * split of the loaded chunk into f32 pieces that line up with pieces of the x chunk, so the chunk's partial dot
 * is Σ_p dot(xPiece_p, wPiece_p) (+ offset). Formats are defined at `WeightDtype` (mm-common.ts).
 *
 *   dtype  E   load (16 bytes unless E = 1)       pieces
 *   f32    4   vec4<f32>                          the vec4
 *   f16*   8   vec4<u32> = 8 halves               2 × vec4 via unpack2x16float (no shader-f16 needed)
 *   q8    16   vec4<u32> = 16 int8                4 × vec4 via unpack4xI8 (x pieces: the 4 vec4 of x)
 *   q4    32   vec4<u32> = one whole group        8 × vec4 via unpack4xU8 of the low / high nibbles of each
 *                                                 word (elements 0,2,4,6 / 1,3,5,7: x swizzled to match);
 *                                                 the nibble offset 8 becomes −8·Σx once per chunk
 *   f32/f16* with K % 4 / K % 8 ≠ 0: E = 1, one scalar per load
 */
import { QGROUP, type WeightDtype } from './mm-common.js';

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

/** Elements per chunk for a row length K: a 16-byte load where rows stay 16-byte aligned, else one element. */
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

export function chunkLayout(wdtype: WeightDtype, E: number): ChunkLayout {
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
      return {
        E: 16,
        wType: 'array<vec4<u32>>',
        load: (n, i) => `${n}[${i}]`,
        // word j holds elements 4j..4j+3, byte b = element 4j+b, two's complement
        decode: (w) => comps.map((c) => `vec4<f32>(unpack4xI8(${w}.${c}))`),
        xPieces: ident,
      };
    case 'q4':
      return {
        E: 32,
        wType: 'array<vec4<u32>>',
        load: (n, i) => `${n}[${i}]`,
        // word j holds elements 8j..8j+7 as nibbles 0..7; the low nibble of each byte is an even element
        decode: (w) =>
          comps.flatMap((c) => [
            `vec4<f32>(unpack4xU8(${w}.${c} & 0x0F0F0F0Fu))`,
            `vec4<f32>(unpack4xU8((${w}.${c} >> 4u) & 0x0F0F0F0Fu))`,
          ]),
        xPieces: (xs) =>
          [0, 1, 2, 3].flatMap((j) => {
            const a = xs[2 * j]!;
            const b = xs[2 * j + 1]!;
            return [`vec4<f32>(${a}.x, ${a}.z, ${b}.x, ${b}.z)`, `vec4<f32>(${a}.y, ${a}.w, ${b}.y, ${b}.w)`];
          }),
        xOffset: (xs) => `-8.0 * dot(${xs.join(' + ')}, vec4<f32>(1.0))`,
      };
  }
}
