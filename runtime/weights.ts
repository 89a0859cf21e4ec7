/**
 * Uploads a model's canonical tensors to the GPU in the kernels' storage formats: matrices as f32, native f16, f16
 * packed two per u32 (devices without `shader-f16`), or block-quantized q8 / q4 (mm-common.ts `WeightDtype`: quants
 * and f16 scales in two buffers); norms and biases always f32 (they are tiny and feed f32 math directly).
 *
 * q8 / q4 apply to the backbone matrices (embedding, qkv, o, gate_up, down, lm_head) whose row length is a multiple
 * of 32; every other matrix (retaining heads, odd row lengths) stays f16. Tensors a bundle stores quantized are
 * uploaded as stored, without re-quantizing, unless another format is asked for.
 *
 * A matrix larger than the device's storage-binding limit (`GpuContext.maxBinding`; Llama-3's 128256×4096
 * embedding is 1 GiB in f16, browsers often bind 128 MiB–1 GiB) is stored as several buffers of whole rows, each
 * within the limit; kernels that read weights run once per part (compiler/lower.ts). A quantized part has its own
 * quants and scales buffers, each starting at the part's first row (scales padded to whole words per part).
 */
import { isQuantized, QGROUP, type WeightDtype, type WeightPart } from '../compiler/kernels/mm-common.js';
import type { GpuRunner } from './gpu/runner.js';
import { f32ToF16 } from './io/dtype.js';
import type { ModelSource } from './model-source.js';
import { quantize, quantizedBytes, type QuantDtype, type Quantized } from './quant.js';
import { env } from './env.js';
import { foldRetainingHeads } from './fold-heads.js';

export type { WeightPart } from '../compiler/kernels/matmul.js';

interface WeightBase {
  readonly dtype: WeightDtype;
  readonly shape: readonly number[];
}
/** the whole tensor in one buffer */
export interface WholeWeight extends WeightBase {
  readonly buf: GPUBuffer;
  /** q8 / q4: the (rows, K/32) f16 scales */
  readonly scales?: GPUBuffer;
  readonly parts?: undefined;
}
/** a (rows, cols) matrix over the binding limit: parts of whole rows, in order, tiling rows 0..rows */
export interface SplitWeight extends WeightBase {
  readonly buf?: undefined;
  readonly parts: readonly WeightPart[];
}
export type GpuWeight = WholeWeight | SplitWeight;

/** Weight storage asked for; undefined = f16, except tensors a bundle already stores quantized (kept as stored). */
export type WeightFormat = 'f32' | 'f16' | 'q8' | 'q4';

/** The buffers of one row range: a quantized range has its scales too. */
export interface PartBuffers {
  readonly buf: GPUBuffer;
  readonly scales?: GPUBuffer;
}

/** Backbone matrices that q8 / q4 quantize (retaining heads, norms and biases never are). */
export function isQuantizable(name: string): boolean {
  return /^(embed|lm_head|L\d+\.(qkv|o|gate_up|down))$/.test(name);
}

/**
 * The block format a backbone matrix takes when `format` asks for q8 / q4 (undefined: not quantized). Under q4 the
 * output projection stays q8 (`lm_head`, or the embedding when the output ties to it): its errors land directly on
 * the logits, and it is one matrix (0.5 B/param more: ~0.26 GB for Llama-3.1-8B), as common q4 recipes do.
 */
export function quantDtypeFor(name: string, format: WeightFormat | undefined, names: readonly string[]): QuantDtype | undefined {
  if ((format !== 'q8' && format !== 'q4') || !isQuantizable(name)) return undefined;
  const output = name === 'lm_head' || (name === 'embed' && !names.includes('lm_head'));
  const kind = name.replace(/^L\d+\./, '');
  return format === 'q4' && (output || q4KeepsQ8().includes(kind)) ? 'q8' : format;
}

/** `LOCRET_Q4_KEEP_Q8=qkv,down`: more matrix kinds kept q8 under q4 (A/B accuracy runs). */
function q4KeepsQ8(): string[] {
  return (env('LOCRET_Q4_KEEP_Q8') ?? '').split(',').filter(Boolean);
}

/** A weight's parts: its own, or the whole buffer as one part. */
export function weightParts(w: GpuWeight): readonly WeightPart[] {
  return w.parts ?? [{ buf: w.buf, scales: w.scales, row0: 0, rows: w.shape[0] ?? 1 }];
}

/** Bytes a weight holds on the GPU (quantized: quants plus per-part word-padded scales). */
export function weightBytes(w: GpuWeight): number {
  const numel = w.shape.reduce((a, b) => a * b, 1);
  if (!isQuantized(w.dtype)) return numel * (w.dtype === 'f32' ? 4 : 2);
  const K = w.shape[1]!;
  return weightParts(w).reduce((a, p) => {
    const b = quantizedBytes(w.dtype as QuantDtype, p.rows, K);
    return a + b.quants + b.scales;
  }, 0);
}

/** Bytes per element of a row in storage `dtype` (q8 / q4: the quants; their scales are a 16th or 8th of that). */
export function elemBytes(dtype: WeightDtype): number {
  return dtype === 'f32' ? 4 : dtype === 'q8' ? 1 : dtype === 'q4' ? 0.5 : 2;
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
  make: (row0: number, rows: number, label: string) => PartBuffers,
): GpuWeight {
  const bytes = shape.reduce((a, b) => a * b, 1) * elemBytes;
  if (shape.length !== 2) {
    if (bytes > Math.floor(maxBinding / 16) * 16) throw new Error(`tensor ${name} [${shape}]: ${bytes} bytes, over the storage-binding limit of ${maxBinding} bytes, and only matrices are split`);
    return { ...make(0, 1, name), dtype, shape }; // a vector (or scalar) is one row
  }
  const ranges = splitRows(name, shape[0]!, shape[1]! * elemBytes, maxBinding);
  if (ranges.length === 1) return { ...make(0, shape[0]!, name), dtype, shape };
  const parts = ranges.map((p) => ({ ...p, ...make(p.row0, p.rows, `${name}[${p.row0}:${p.row0 + p.rows}]`) }));
  return { parts, dtype, shape };
}

/**
 * Uploads a quantized (rows, K) matrix, split like any other weight; each part's scales are copied out of the
 * whole array (a part may start at an odd group, i.e. mid-word) and padded to whole words on their own.
 */
export function uploadQuantized(runner: GpuRunner, name: string, dtype: QuantDtype, shape: readonly number[], q: Quantized): GpuWeight {
  const [rows, K] = shape as [number, number];
  const per = dtype === 'q8' ? 4 : 8; // elements per quants word
  if (q.quants.length !== (rows * K) / per || q.scales.length !== (rows * K) / QGROUP)
    throw new Error(`tensor ${name} [${shape}]: ${q.quants.length} quant words and ${q.scales.length} scales do not match ${dtype}`);
  return partsWeight(name, dtype, shape, elemBytes(dtype), runner.gpu.maxBinding, (r0, n, label) => ({
    buf: runner.upload(q.quants.subarray((r0 * K) / per, ((r0 + n) * K) / per), label),
    scales: runner.upload(q.scales.slice((r0 * K) / QGROUP, ((r0 + n) * K) / QGROUP), `${label}.scales`),
  }));
}

export function uploadWeights(
  runner: GpuRunner,
  src: ModelSource,
  format: WeightFormat | undefined,
  onProgress?: (done: number, total: number, name: string) => void,
  onNote: (note: string) => void = (n) => console.warn(`locret: ${n}`),
  o: { keepUnfoldedHeads?: boolean } = {},
): Map<string, GpuWeight> {
  const out = new Map<string, GpuWeight>();
  const half: WeightDtype = runner.gpu.f16 ? 'f16' : 'f16p';
  const max = runner.gpu.maxBinding;
  const names = [...src.tensors.keys()];
  const halfOnly: string[] = [];
  names.forEach((name, i) => {
    const t = src.tensors.get(name)!;
    const matrix = t.shape.length === 2;
    const numel = t.shape.reduce((a, b) => a * b, 1);
    const cols = matrix ? t.shape[1]! : numel;
    const stored = t.quantized;
    const quant = format === 'q8' || format === 'q4';
    const want = quantDtypeFor(name, format, names);
    if (matrix && stored && (format === undefined || want === stored.dtype)) {
      out.set(name, uploadQuantized(runner, name, stored.dtype, t.shape, stored.read()));
    } else if (matrix && want && cols % QGROUP === 0) {
      out.set(name, uploadQuantized(runner, name, want, t.shape, quantize(t.f32(), t.shape[0]!, cols, want)));
    } else if (matrix && format !== 'f32') {
      if (quant && isQuantizable(name)) halfOnly.push(`${name} [${t.shape}]`);
      if (cols % 2) throw new Error(`tensor ${name} [${t.shape}]: f16 storage needs an even row length`);
      const bits = t.f16 ? t.f16() : f32ToF16(t.f32());
      out.set(name, partsWeight(name, half, t.shape, 2, max, (r0, n, label) => ({ buf: runner.upload(bits.subarray(r0 * cols, (r0 + n) * cols), label) })));
    } else {
      const data = t.f32();
      if (data.length !== numel) throw new Error(`tensor ${name}: ${data.length} values for shape [${t.shape}]`);
      out.set(name, partsWeight(name, 'f32', t.shape, 4, max, (r0, n, label) => ({ buf: runner.upload(data.subarray(r0 * cols, (r0 + n) * cols), label) })));
    }
    onProgress?.(i + 1, names.length, name);
  });
  if (halfOnly.length) onNote(`${format} needs a row length that is a multiple of ${QGROUP}; kept f16: ${halfOnly.join(', ')}`);
  foldRetainingHeads(runner, src.config, out, { keepLoaded: o.keepUnfoldedHeads });
  return out;
}
