import type { WeightDtype } from '../compiler/kernels/mm-common.js';
/** Shared helpers for GPU kernel tests: one runner per test file, uploads, readbacks, and tolerance checks. */
import { expect } from 'vitest';
import { createGpuContext, type DeviceOptions } from '../runtime/gpu/device.js';
import { GpuRunner } from '../runtime/gpu/runner.js';
import { f16BitsToF32, f32ToF16Bits } from './ref/f16.js';
import { rng } from '../runtime/sampling.js';

let runner: Promise<GpuRunner> | null = null;

export function gpuRunner(opts?: DeviceOptions): Promise<GpuRunner> {
  if (opts) return createGpuContext(opts).then((g) => new GpuRunner(g));
  runner ??= createGpuContext().then((g) => new GpuRunner(g));
  return runner;
}

/** Deterministic pseudo-random numbers (the runtime's seeded generator), uniform in [-scale, scale). */
export function rand(n: number, seed: number, scale = 1): Float32Array {
  const next = rng(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = (next() * 2 - 1) * scale;
  return out;
}

/** Relative L2 error ‖a − b‖ / ‖b‖ (the goldens' logits criterion). */
export function relL2(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < b.length; i++) {
    num += (a[i]! - b[i]!) ** 2;
    den += b[i]! ** 2;
  }
  return Math.sqrt(num / den);
}

/** Weights as the GPU stores them for a dtype, plus the f32 values the reference must use (f16-rounded). */
export function weightsFor(dtype: WeightDtype, w: Float32Array): { gpu: ArrayBufferView; ref: Float32Array } {
  if (dtype === 'f32') return { gpu: w, ref: w };
  if (dtype === 'q8' || dtype === 'q4') throw new Error(`weightsFor: ${dtype} weights need their scales buffer too`);
  const bits = f32ToF16Bits(w);
  const ref = new Float32Array(w.length);
  for (let i = 0; i < w.length; i++) ref[i] = f16BitsToF32(bits[i]!);
  // f16 and f16p share the byte layout: little-endian halves, two per u32 word
  return { gpu: bits, ref };
}

export { f16BitsToF32 };

/** max |a-b| / max(|b|, floor) over all elements; fails with the worst index and values printed. */
export function expectClose(got: ArrayLike<number>, want: ArrayLike<number>, rtol: number, what: string, floor = 1): void {
  expect(got.length, `${what}: length`).toBe(want.length);
  let worst = 0;
  let at = -1;
  let scale = floor;
  for (let i = 0; i < want.length; i++) scale = Math.max(scale, Math.abs(want[i]!));
  for (let i = 0; i < want.length; i++) {
    const g = got[i]!;
    const err = Number.isNaN(g) ? Infinity : Math.abs(g - want[i]!) / scale;
    if (err > worst) {
      worst = err;
      at = i;
    }
  }
  const msg = `${what}: max rel err ${worst.toExponential(3)} at ${at} (got ${got[at]}, want ${want[at]}), tol ${rtol}`;
  expect(worst <= rtol, msg).toBe(true);
}
