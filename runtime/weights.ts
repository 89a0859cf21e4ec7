/**
 * Uploads a model's canonical tensors to the GPU in the kernels' storage formats: matrices as f32, native f16, or
 * f16 packed two per u32 (devices without `shader-f16`); norms and biases always f32 (they are tiny and feed f32
 * math directly).
 *
 * A matrix larger than the device's storage-binding limit (`GpuContext.maxBinding`; Llama-3's 128256×4096
 * embedding is 1 GiB in f16, browsers often bind 128 MiB–1 GiB) is stored as several buffers of whole rows, each
 * within the limit; kernels that read weights run once per part (compiler/lower.ts).
 */
import type { WeightDtype, WeightPart } from '../compiler/kernels/matmul.js';
import type { GpuRunner } from './gpu/runner.js';
import { f32ToF16 } from './io/dtype.js';
import type { ModelSource } from './model-source.js';

export type { WeightPart } from '../compiler/kernels/matmul.js';

interface WeightBase {
  readonly dtype: WeightDtype;
  readonly shape: readonly number[];
}
/** the whole tensor in one buffer */
export interface WholeWeight extends WeightBase {
  readonly buf: GPUBuffer;
  readonly parts?: undefined;
}
/** a (rows, cols) matrix over the binding limit: parts of whole rows, in order, tiling rows 0..rows */
export interface SplitWeight extends WeightBase {
  readonly buf?: undefined;
  readonly parts: readonly WeightPart[];
}
export type GpuWeight = WholeWeight | SplitWeight;

export type WeightFormat = 'f32' | 'f16';

/** A weight's parts: its own, or the whole buffer as one part. */
export function weightParts(w: GpuWeight): readonly WeightPart[] {
  return w.parts ?? [{ buf: w.buf, row0: 0, rows: w.shape[0] ?? 1 }];
}

/**
 * Row ranges of a (rows, rowBytes-per-row) matrix so each range's bytes fit `maxBinding`: one range when it fits,
 * else the fewest balanced ranges, rounded to 64 rows (one matmul tile) where that still fits. Ranges start at
 * byte 0 of their own buffer, so no binding-offset alignment (256 bytes) applies; sizes stay within the limit
 * after the runner rounds buffers up to 16 bytes.
 */
export function splitRows(name: string, rows: number, rowBytes: number, maxBinding: number): { row0: number; rows: number }[] {
  const limit = Math.floor(maxBinding / 16) * 16;
  if (rows * rowBytes <= limit) return [{ row0: 0, rows }];
  const maxRows = Math.floor(limit / rowBytes);
  if (maxRows < 1) throw new Error(`tensor ${name}: one row is ${rowBytes} bytes, over the storage-binding limit of ${maxBinding} bytes`);
  const k = Math.ceil(rows / maxRows);
  let per = Math.ceil(rows / k);
  if (Math.ceil(per / 64) * 64 <= maxRows) per = Math.ceil(per / 64) * 64;
  const out: { row0: number; rows: number }[] = [];
  for (let r = 0; r < rows; r += per) out.push({ row0: r, rows: Math.min(per, rows - r) });
  return out;
}

/** A GpuWeight from one buffer per row range (`make` creates the buffer of a range). */
export function partsWeight(
  name: string,
  dtype: WeightDtype,
  shape: readonly number[],
  elemBytes: number,
  maxBinding: number,
  make: (row0: number, rows: number, label: string) => GPUBuffer,
): GpuWeight {
  const bytes = shape.reduce((a, b) => a * b, 1) * elemBytes;
  if (shape.length !== 2) {
    if (bytes > Math.floor(maxBinding / 16) * 16) throw new Error(`tensor ${name} [${shape}]: ${bytes} bytes, over the storage-binding limit of ${maxBinding} bytes, and only matrices are split`);
    return { buf: make(0, 1, name), dtype, shape }; // a vector (or scalar) is one row
  }
  const ranges = splitRows(name, shape[0]!, shape[1]! * elemBytes, maxBinding);
  if (ranges.length === 1) return { buf: make(0, shape[0]!, name), dtype, shape };
  const parts = ranges.map((p) => ({ ...p, buf: make(p.row0, p.rows, `${name}[${p.row0}:${p.row0 + p.rows}]`) }));
  return { parts, dtype, shape };
}

export function uploadWeights(
  runner: GpuRunner,
  src: ModelSource,
  format: WeightFormat,
  onProgress?: (done: number, total: number, name: string) => void,
): Map<string, GpuWeight> {
  const out = new Map<string, GpuWeight>();
  const half: WeightDtype = runner.gpu.f16 ? 'f16' : 'f16p';
  const max = runner.gpu.maxBinding;
  const names = [...src.tensors.keys()];
  names.forEach((name, i) => {
    const t = src.tensors.get(name)!;
    const matrix = t.shape.length === 2;
    const numel = t.shape.reduce((a, b) => a * b, 1);
    const cols = matrix ? t.shape[1]! : numel;
    if (matrix && format === 'f16') {
      if (cols % 2) throw new Error(`tensor ${name} [${t.shape}]: f16 storage needs an even row length`);
      const bits = t.f16 ? t.f16() : f32ToF16(t.f32());
      out.set(name, partsWeight(name, half, t.shape, 2, max, (r0, n, label) => runner.upload(bits.subarray(r0 * cols, (r0 + n) * cols), label)));
    } else {
      const data = t.f32();
      if (data.length !== numel) throw new Error(`tensor ${name}: ${data.length} values for shape [${t.shape}]`);
      out.set(name, partsWeight(name, 'f32', t.shape, 4, max, (r0, n, label) => runner.upload(data.subarray(r0 * cols, (r0 + n) * cols), label)));
    }
    onProgress?.(i + 1, names.length, name);
  });
  return out;
}
