/**
 * Uploads a model's canonical tensors to the GPU in the kernels' storage formats: matrices as f32, native f16, or
 * f16 packed two per u32 (devices without `shader-f16`); norms and biases always f32 (they are tiny and feed f32
 * math directly).
 */
import type { WeightDtype } from '../compiler/kernels/matmul.js';
import type { GpuRunner } from './gpu/runner.js';
import { f32ToF16 } from './io/dtype.js';
import type { ModelSource } from './model-source.js';

export interface GpuWeight {
  readonly buf: GPUBuffer;
  readonly dtype: WeightDtype;
  readonly shape: readonly number[];
}

export type WeightFormat = 'f32' | 'f16';

export function uploadWeights(
  runner: GpuRunner,
  src: ModelSource,
  format: WeightFormat,
  onProgress?: (done: number, total: number, name: string) => void,
): Map<string, GpuWeight> {
  const out = new Map<string, GpuWeight>();
  const half: WeightDtype = runner.gpu.f16 ? 'f16' : 'f16p';
  const names = [...src.tensors.keys()];
  names.forEach((name, i) => {
    const t = src.tensors.get(name)!;
    const matrix = t.shape.length === 2;
    const numel = t.shape.reduce((a, b) => a * b, 1);
    if (matrix && format === 'f16') {
      if (t.shape[1]! % 2) throw new Error(`tensor ${name} [${t.shape}]: f16 storage needs an even row length`);
      const bits = t.f16 ? t.f16() : f32ToF16(t.f32());
      out.set(name, { buf: runner.upload(bits, name), dtype: half, shape: t.shape });
    } else {
      const data = t.f32();
      if (data.length !== numel) throw new Error(`tensor ${name}: ${data.length} values for shape [${t.shape}]`);
      out.set(name, { buf: runner.upload(data, name), dtype: 'f32', shape: t.shape });
    }
    onProgress?.(i + 1, names.length, name);
  });
  return out;
}
