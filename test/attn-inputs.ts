/**
 * Random inputs for the prefill attention kernels' tests (attention.ts, attention-sgmat.ts): q, a cache of
 * `base + T + 7` slots whose slots ≥ base+T hold NaN (so a read past the visible range would poison the output),
 * arbitrary unsorted positions (as after eviction with original positions) and their rope table.
 */
import { ropeTable } from '../runtime/rope.js';
import { rand, weightsFor } from './gpu-harness.js';
import type { RefAttnShape } from './ref/gpu-attention.js';

export interface AttnCase {
  H: number;
  KV: number;
  D: number;
  rot: number;
  T: number;
  base: number;
  dtype: 'f32' | 'f16';
  splits?: number;
}

export const POSITIONS = 400;

export function attnInputs(c: AttnCase, seed: number) {
  const capacity = c.base + c.T + 7;
  const sh: RefAttnShape = { H: c.H, KV: c.KV, D: c.D, rotaryDim: c.rot, T: c.T, base: c.base, capacity, scale: 1 / Math.sqrt(c.D) };
  const q = rand(c.T * c.H * c.D, seed, 2);
  const k = rand(c.KV * capacity * c.D, seed + 1, 2);
  const v = rand(c.KV * capacity * c.D, seed + 2);
  for (let g = 0; g < c.KV; g++) {
    for (let s = c.base + c.T; s < capacity; s++) {
      k.fill(NaN, (g * capacity + s) * c.D, (g * capacity + s + 1) * c.D);
      v.fill(NaN, (g * capacity + s) * c.D, (g * capacity + s + 1) * c.D);
    }
  }
  const kpos = Uint32Array.from(rand(c.KV * capacity, seed + 3), (x) => Math.floor(((x + 1) / 2) * (POSITIONS - 1)));
  const rope = ropeTable({ kind: 'default', theta: 10000, rotaryDim: c.rot }, POSITIONS);
  const kw = weightsFor(c.dtype, k);
  const vw = weightsFor(c.dtype, v);
  return { sh, capacity, q, k: kw, v: vw, kpos, rope };
}
