/**
 * Private helpers shared by the matmul-shaped kernel families: weight storage types and chunk loaders per weight
 * dtype, and workgroup-grid folding for the 65535-per-dimension limit.
 */
import { ro, wgsl, type Binding } from '../wgsl.js';
import type { Workgroups } from '../../runtime/gpu/runner.js';

/**
 * f16 = native `array<f16>` (needs shader-f16); f16p = the same bytes read as u32 words with `unpack2x16float`.
 * q8 / q4 = block-quantized, groups of 32 consecutive elements along a row (K % 32 == 0), one f16 scale each,
 * symmetric (no zero point); value = q · scale. Quants and scales are separate buffers of the same part:
 *
 *   q8  quants  (rows, K/4)  u32   4 int8 per word, element 4j+b in byte b (little-endian), two's complement
 *   q4  quants  (rows, K/8)  u32   8 nibbles per word, element 8j+b in bits 4b..4b+3, value nibble − 8
 *   both scales (rows, K/32) f16   packed two per u32 word (group 2j low half), read with unpack2x16float
 *
 * so one 16-byte load holds 16 (q8) or 32 (q4, a whole group) elements (the decode gemv loads q4 8 bytes at a time).
 */
export type WeightDtype = 'f32' | 'f16' | 'f16p' | 'q8' | 'q4';

/** Quantization group size along K for q8 / q4. */
export const QGROUP = 32;

export function isQuantized(d: WeightDtype): d is 'q8' | 'q4' {
  return d === 'q8' || d === 'q4';
}

/**
 * One buffer of a weight stored as several (each within the storage-binding limit): rows [row0, row0 + rows) of
 * the (rows, cols) matrix, contiguous and starting at byte 0 of `buf`. An unsplit weight is one part.
 */
export interface WeightPart {
  /** the elements (q8 / q4: the quants) */
  readonly buf: GPUBuffer;
  /** q8 / q4: (rows, K/32) f16 scales of the same rows */
  readonly scales?: GPUBuffer;
  readonly row0: number;
  readonly rows: number;
}

/** Elements per load: 4 when every row starts on a 4-element boundary (vectorized), else 1. */
export type Unit = 1 | 4;

export const MAX_WG_PER_DIM = 65535;

export function unitFor(K: number): Unit {
  return K % 4 === 0 ? 4 : 1;
}

/** WGSL type of one chunk of `U` values once loaded (always f32 arithmetic). */
export function vt(U: Unit): string {
  return U === 4 ? 'vec4<f32>' : 'f32';
}

/** WGSL dot product of two chunks. */
export function vdot(U: Unit, a: string, b: string): string {
  return U === 4 ? `dot(${a}, ${b})` : `(${a} * ${b})`;
}

export function needsF16(d: WeightDtype): boolean {
  return d === 'f16';
}

/**
 * The read-only binding(s) of weight `name` plus `fn ${name}_ld(i: u32) -> vt(U)`, which returns chunk `i` of the
 * flat weight array (elements i*U .. i*U+U-1) dequantized to f32. q8 / q4 add a second binding `${name}_s` for the
 * scales. Chunk indices stay below 2^32 for any tensor that fits a binding; the quantized loaders derive word and
 * group indices from the chunk index directly, so element indices (up to 8 per byte of a binding) never overflow.
 */
export function weightLoader(name: string, dtype: WeightDtype, U: Unit, shape: string): { bindings: Binding[]; fn: string } {
  const T = vt(U);
  const doc = `// ${name}: ${shape}, ${dtype}`;
  switch (dtype) {
    case 'f32':
      return {
        bindings: [ro(name, U === 4 ? 'array<vec4<f32>>' : 'array<f32>')],
        fn: wgsl`${doc}\nfn ${name}_ld(i: u32) -> ${T} { return ${name}[i]; }`,
      };
    case 'f16':
      return {
        bindings: [ro(name, U === 4 ? 'array<vec4<f16>>' : 'array<f16>')],
        fn: wgsl`${doc}\nfn ${name}_ld(i: u32) -> ${T} { return ${T}(${name}[i]); }`,
      };
    case 'f16p':
      // two halves per little-endian u32 word: element 2j is the low half of word j
      return U === 4
        ? {
            bindings: [ro(name, 'array<vec2<u32>>')],
            fn: wgsl`${doc}\nfn ${name}_ld(i: u32) -> vec4<f32> {
  let p = ${name}[i];
  return vec4<f32>(unpack2x16float(p.x), unpack2x16float(p.y));
}`,
          }
        : {
            bindings: [ro(name, 'array<u32>')],
            fn: wgsl`${doc}\nfn ${name}_ld(i: u32) -> f32 { return unpack2x16float(${name}[i >> 1u])[i & 1u]; }`,
          };
    case 'q8':
    case 'q4':
      return quantLoader(name, dtype, U, doc);
  }
}

/**
 * q8 / q4 chunk loader (layout at `WeightDtype`). Chunks never straddle a group (32 % U == 0), so one scale serves
 * the whole chunk: group = i·U/32, read from the packed f16 pair of scale word group/2.
 */
function quantLoader(name: string, dtype: 'q8' | 'q4', U: Unit, doc: string): { bindings: Binding[]; fn: string } {
  const s = `${name}_s`;
  const bindings = [
    ro(name, 'array<u32>'), // quants: 4 int8 (q8) or 8 nibbles (q4) per word
    ro(s, 'array<u32>'), // scales: two f16 per word, group 2j in the low half
  ];
  const groupShift = Math.log2(QGROUP / U); // chunks per group is a power of two
  const scale = wgsl`let g = i >> ${groupShift}u;
  let sc = unpack2x16float(${s}[g >> 1u])[g & 1u];`;
  let body: string;
  if (dtype === 'q8') {
    body = U === 4
      // one word = the chunk; arithmetic right shift of each byte moved to the top sign-extends it
      ? wgsl`let p = ${name}[i];
  let q = bitcast<vec4<i32>>(vec4<u32>(p) << vec4<u32>(24u, 16u, 8u, 0u)) >> vec4<u32>(24u);
  return vec4<f32>(q) * sc;`
      : wgsl`let p = ${name}[i >> 2u];
  let q = bitcast<i32>(p << (24u - 8u * (i & 3u))) >> 24u;
  return f32(q) * sc;`;
  } else {
    body = U === 4
      // a chunk is one half of a word (4 nibbles): the low half for even chunks
      ? wgsl`let p = ${name}[i >> 1u] >> (16u * (i & 1u));
  let q = (vec4<u32>(p) >> vec4<u32>(0u, 4u, 8u, 12u)) & vec4<u32>(15u);
  return (vec4<f32>(q) - 8.0) * sc;`
      : wgsl`let q = (${name}[i >> 3u] >> (4u * (i & 7u))) & 15u;
  return (f32(q) - 8.0) * sc;`;
  }
  return { bindings, fn: wgsl`${doc} (scales in ${s})\nfn ${name}_ld(i: u32) -> ${vt(U)} {\n  ${scale}\n  ${body}\n}` };
}

/**
 * `fn ${name}_ldh(i: u32) -> vec4<f16>`: chunk i (U = 4) of the q8 / q4 weight `name` dequantized straight to f16,
 * for kernels that enable f16 (the tensor-core staging). Same bindings as `weightLoader`'s. The quants become f16
 * without int → float conversions: ORed into the mantissa of 0x6400 (1024.0, mantissa unit 1) a byte or nibble b
 * IS the f16 1024 + b, two per word, and the offset comes off exactly (q8: the XOR 0x80 makes two's complement q the
 * unsigned q + 128, so 1152; q4: 1024 + 8). The product with the f16 scale is rounded once, like the f32 loader's
 * product rounded to f16 (a product of an integer ≤ 128 and an f16 is exact in f32): the staged values are the same.
 */
export function quantHalfLoader(name: string, dtype: 'q8' | 'q4'): string {
  const groupShift = Math.log2(QGROUP / 4);
  const pairs =
    dtype === 'q8'
      ? // one word = 4 int8: bytes 0,2 and 1,3
        `let p = ${name}[i];
  let lo = bitcast<vec2<f16>>((p & 0x00FF00FFu) ^ 0x64806480u) - vec2<f16>(1152.0);
  let hi = bitcast<vec2<f16>>(((p >> 8u) & 0x00FF00FFu) ^ 0x64806480u) - vec2<f16>(1152.0);`
      : // half a word = 4 nibbles n0..n3 (the low half for even chunks): n0,n1 and n2,n3
        `let p = (${name}[i >> 1u] >> (16u * (i & 1u))) & 0xFFFFu;
  let ab = bitcast<vec2<f16>>(((p | (p << 12u)) & 0x000F000Fu) | 0x64006400u) - vec2<f16>(1032.0);
  let cd = bitcast<vec2<f16>>((((p >> 8u) | (p << 4u)) & 0x000F000Fu) | 0x64006400u) - vec2<f16>(1032.0);`;
  const ret = dtype === 'q8' ? 'vec4<f16>(lo.x, hi.x, lo.y, hi.y)' : 'vec4<f16>(ab, cd)';
  return `fn ${name}_ldh(i: u32) -> vec4<f16> {
  let g = i >> ${groupShift}u;
  let sc = bitcast<vec2<f16>>(${name}_s[g >> 1u])[g & 1u];
  ${pairs}
  return ${ret} * sc;
}`;
}

/** An f32 activation binding read in chunks of U: `fn ${name}_ld(i: u32) -> vt(U)`. */
export function f32Loader(name: string, U: Unit, shape: string): { binding: Binding; fn: string } {
  return {
    binding: ro(name, U === 4 ? 'array<vec4<f32>>' : 'array<f32>'),
    fn: `// ${name}: ${shape}, f32\nfn ${name}_ld(i: u32) -> ${vt(U)} { return ${name}[i]; }`,
  };
}

/**
 * An f16 activation binding read as vec4<f16> (K % 4 == 0). Only the tensor-core skeleton reads f16 x, straight
 * into its f16 slabs, so there is no widening `_ld` function (the FMA skeletons refuse halfX).
 */
export function halfLoader(name: string, shape: string): { binding: Binding; fn: string } {
  return { binding: ro(name, 'array<vec4<f16>>'), fn: `// ${name}: ${shape}, f16, staged as it is` };
}

/**
 * `n` workgroups laid out as (x, y) with x ≤ 65535; kernels recover the linear id with `linearWg` and must return
 * early (uniformly) when it is ≥ n.
 */
export function foldGrid(n: number): Workgroups {
  if (n <= MAX_WG_PER_DIM) return [Math.max(1, n), 1];
  const y = Math.ceil(n / MAX_WG_PER_DIM);
  if (y > MAX_WG_PER_DIM) throw new Error(`too many workgroups: ${n}`);
  return [Math.ceil(n / y), y];
}

/** WGSL expression of the linear workgroup id for a `foldGrid` launch (needs `wid` and `nwg` builtins). */
export const linearWg = '(wid.x + wid.y * nwg.x)';

/** Entry-point builtins used by every kernel here. */
export const builtins =
  '@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>';

export function assertDims(what: string, dims: Record<string, number>): void {
  for (const [k, v] of Object.entries(dims)) {
    if (!Number.isInteger(v) || v < 0) throw new Error(`${what}: ${k} must be a non-negative integer, got ${v}`);
  }
}
