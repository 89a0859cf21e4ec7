/**
 * Private helpers shared by the matmul-shaped kernel families: weight storage types and chunk loaders per weight
 * dtype, and workgroup-grid folding for the 65535-per-dimension limit.
 */
import { ro, wgsl, type Binding } from '../wgsl.js';
import type { Workgroups } from '../../runtime/gpu/runner.js';

/** f16 = native `array<f16>` (needs shader-f16); f16p = the same bytes read as u32 words with `unpack2x16float`. */
export type WeightDtype = 'f32' | 'f16' | 'f16p';

/**
 * One buffer of a weight stored as several (each within the storage-binding limit): rows [row0, row0 + rows) of
 * the (rows, cols) matrix, contiguous and starting at byte 0 of `buf`. An unsplit weight is one part.
 */
export interface WeightPart {
  readonly buf: GPUBuffer;
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
 * A read-only weight binding `name` plus `fn ${name}_ld(i: u32) -> vt(U)`, which returns chunk `i` of the flat
 * weight array (elements i*U .. i*U+U-1) as f32. Chunk indices stay below 2^32 for any tensor that fits a binding.
 */
export function weightLoader(name: string, dtype: WeightDtype, U: Unit, shape: string): { binding: Binding; fn: string } {
  const T = vt(U);
  const doc = `// ${name}: ${shape}, ${dtype}`;
  switch (dtype) {
    case 'f32':
      return {
        binding: ro(name, U === 4 ? 'array<vec4<f32>>' : 'array<f32>'),
        fn: wgsl`${doc}\nfn ${name}_ld(i: u32) -> ${T} { return ${name}[i]; }`,
      };
    case 'f16':
      return {
        binding: ro(name, U === 4 ? 'array<vec4<f16>>' : 'array<f16>'),
        fn: wgsl`${doc}\nfn ${name}_ld(i: u32) -> ${T} { return ${T}(${name}[i]); }`,
      };
    case 'f16p':
      // two halves per little-endian u32 word: element 2j is the low half of word j
      return U === 4
        ? {
            binding: ro(name, 'array<vec2<u32>>'),
            fn: wgsl`${doc}\nfn ${name}_ld(i: u32) -> vec4<f32> {
  let p = ${name}[i];
  return vec4<f32>(unpack2x16float(p.x), unpack2x16float(p.y));
}`,
          }
        : {
            binding: ro(name, 'array<u32>'),
            fn: wgsl`${doc}\nfn ${name}_ld(i: u32) -> f32 { return unpack2x16float(${name}[i >> 1u])[i & 1u]; }`,
          };
  }
}

/** An f32 activation binding read in chunks of U: `fn ${name}_ld(i: u32) -> vt(U)`. */
export function f32Loader(name: string, U: Unit, shape: string): { binding: Binding; fn: string } {
  return {
    binding: ro(name, U === 4 ? 'array<vec4<f32>>' : 'array<f32>'),
    fn: `// ${name}: ${shape}, f32\nfn ${name}_ld(i: u32) -> ${vt(U)} { return ${name}[i]; }`,
  };
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
