/**
 * The decode gemv's integer form for q8 / q4 weights (`QuantConvert` 'dot1' / 'dot2', mm-gemv.ts): each thread
 * quantizes its x chunk to int8 once (one scale per chunk and token, shared by every row the thread reads) and takes
 * the chunk's dot products on the raw quants with dot4I8Packed (4 multiply-adds per instruction where the device has
 * integer dot products; the WGSL builtin is polyfilled elsewhere), as llama.cpp's q8_1 activations do:
 *
 *   x chunk (E floats)  →  amax, qx = round(x · 127 / amax) ∈ [−127, 127] packed 4 per u32, sx = amax / 127
 *                          (and a second digit, see dotQuantizeX)
 *   q8 row word j (bytes = elements 4j..4j+3, two's complement)   Σ = Σ_j dot4I8Packed(w_j, qx_j)
 *   q4 row word j (nibble i = element 8j+i, n − 8)                Σ = Σ_j dot4I8Packed(w_j & 0x0F0F0F0F, qx_even_j)
 *                                                                      + dot4I8Packed((w_j >> 4) & 0x0F0F0F0F, qx_odd_j)
 *                                                                      − 8 · Σqx
 *   partial dot += s_row · sx · f32(Σ)          (one digit: |Σ| ≤ 32 · 127 · 15, exact in f32)
 *
 * The integer goes into the low mantissa bits of the f32 magic 1.5 · 2^23: round(x · inv) + 12582912 is exact, and
 * its low byte is the two's complement int8 (no float → int conversion). One digit ('dot1', for q4) rounds x to half a step
 * (amax / 254): on tiny-llama that moves q8's decode logits by rel L2 0.012, as much as q8's weights do, so q8 takes
 * a second digit ('dot2'), which makes x ~16-bit.
 */
import type { GemvOpts } from './mm-gemv.js';

const NIBBLES = '0x0F0F0F0Fu';
const ONES = '0x01010101u';
/** 1.5 · 2^23: adding it rounds |v| < 2^22 to an integer held in the low mantissa bits */
const MAGIC = '12582912.0';

/** u32 pieces of a loaded row chunk `w` (vec2 / vec4 of u32 words), in the order of dotQuantizeX's packed words */
export function dotPieces(wdtype: GemvOpts['wdtype'], words: number, w: string): string[] {
  const cs = ['x', 'y', 'z', 'w'].slice(0, words);
  if (wdtype === 'q8') return cs.map((c) => `${w}.${c}`);
  return cs.flatMap((c) => [`(${w}.${c} & ${NIBBLES})`, `((${w}.${c} >> 4u) & ${NIBBLES})`]);
}

/**
 * Lines quantizing token t's x chunk (`xs`: vec4 expressions, E/4 of them) into packed words qx{t}_i matching
 * dotPieces, with its scale sx{t} and, for q4, the offset term so{t}. With two digits (q8's form) each value is
 * q + l/254 steps, the second digit l = round((v − q) · 254) the rounding error of the first in 1/254 steps, in
 * words ql{t}_i: x keeps ~16 bits (error ≤ amax/64516) for twice the dot products, and the sum per row is taken
 * as Σq·254 + Σl in one i32 (|·| < 2^31 for q8 at E = 32; its f32 conversion rounds once, relative 6e-8).
 */
export function dotQuantizeX(wdtype: GemvOpts['wdtype'], t: number, xs: readonly string[], digits: 1 | 2): string[] {
  const lines: string[] = [];
  let m = xs.map((x) => `abs(${x})`);
  while (m.length > 1) m = Array.from({ length: Math.ceil(m.length / 2) }, (_, i) => (m[2 * i + 1] ? `max(${m[2 * i]}, ${m[2 * i + 1]})` : m[2 * i]!));
  lines.push(`let am${t} = ${m[0]};`);
  lines.push(`let amx${t} = max(max(am${t}.x, am${t}.y), max(am${t}.z, am${t}.w));`);
  lines.push(`let inv${t} = select(0.0, 127.0 / amx${t}, amx${t} > 0.0);`);
  lines.push(`let sx${t} = amx${t} * ${digits === 2 ? 1 / (127 * 254) : 1 / 127};`);
  xs.forEach((x, j) => {
    // round() first (half to even, as the magic sum would): the sum is then exact, and the second digit is taken
    // against the same integer (a compiler may fold (v + M) − M back to v, but not round(v))
    lines.push(`let v${t}_${j} = ${x} * inv${t};`);
    lines.push(`let r${t}_${j} = round(v${t}_${j});`);
    lines.push(`let qi${t}_${j} = bitcast<vec4<i32>>(r${t}_${j} + vec4<f32>(${MAGIC}));`);
    if (digits === 2) lines.push(`let li${t}_${j} = bitcast<vec4<i32>>((v${t}_${j} - r${t}_${j}) * 254.0 + vec4<f32>(${MAGIC}));`);
  });
  const packWords = (p: string, name: string): string[] => {
    const packed: string[] = [];
    if (wdtype === 'q8') xs.forEach((_, j) => packed.push(`pack4xI8(${p}${t}_${j})`));
    else
      for (let j = 0; j < xs.length; j += 2) {
        const [a, b] = [`${p}${t}_${j}`, `${p}${t}_${j + 1}`];
        packed.push(`pack4xI8(vec4<i32>(${a}.x, ${a}.z, ${b}.x, ${b}.z))`, `pack4xI8(vec4<i32>(${a}.y, ${a}.w, ${b}.y, ${b}.w))`);
      }
    packed.forEach((e, i) => lines.push(`let ${name}${t}_${i} = ${e};`));
    return packed.map((_, i) => `${name}${t}_${i}`);
  };
  const hi = packWords('qi', 'qx');
  const lo = digits === 2 ? packWords('li', 'ql') : [];
  if (wdtype === 'q4') {
    const sum = (ws: string[]) => ws.map((w) => `dot4I8Packed(${w}, ${ONES})`).join(' + ');
    lines.push(`let so${t} = -8 * (${digits === 2 ? `(${sum(hi)}) * 254 + ${sum(lo)}` : sum(hi)});`);
  }
  return lines;
}

/**
 * The increment of a partial dot: row pieces d{st}_{r}_i against token t's packed x, scaled by s{st}_{r} · sx{t}.
 * `pieces`: E/4 for both dtypes (a q8 word holds 4 elements; a q4 word 8, split in two pieces), i.e. the x vec4s.
 */
export function dotAccumulate(wdtype: GemvOpts['wdtype'], pieces: number, st: number, r: number, t: number, digits: 1 | 2): string {
  const dots = (x: string) => Array.from({ length: pieces }, (_, i) => `dot4I8Packed(d${st}_${r}_${i}, ${x}${t}_${i})`).join(' + ');
  const terms = [digits === 2 ? `(${dots('qx')}) * 254 + ${dots('ql')}` : dots('qx')];
  if (wdtype === 'q4') terms.push(`so${t}`);
  return `s${st}_${r} * (sx${t} * f32(${terms.join(' + ')}))`;
}
