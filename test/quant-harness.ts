/** Test helpers for q8 / q4 weights: quantized data plus the exact f32 values the kernels compute with, and uploads. */
import type { WeightPart } from '../compiler/kernels/mm-common.js';
import type { GpuRunner } from '../runtime/gpu/runner.js';
import { dequantize, QGROUP, quantize, type QuantDtype, type Quantized } from '../runtime/quant.js';
import { withEnv } from './with-env.js';

export interface QuantWeights {
  readonly q: Quantized;
  /** dequantize(q): what the kernels see, so a reference fed these differs only in accumulation order */
  readonly ref: Float32Array;
}

export function quantWeights(dtype: QuantDtype, w: Float32Array, rows: number, K: number): QuantWeights {
  const q = quantize(w, rows, K, dtype);
  return { q, ref: dequantize(q, rows, K, dtype) };
}

/**
 * Uploads rows [cuts[i], cuts[i+1]) of a quantized (rows, K) matrix as separate parts, each with its own quants and
 * scales buffers (scales copied out, so a part may start mid-word of the whole scales array). No cuts: one part.
 */
export function uploadQuantParts(r: GpuRunner, dtype: QuantDtype, q: Quantized, rows: number, K: number, cuts: readonly number[] = []): WeightPart[] {
  const per = dtype === 'q8' ? 4 : 8;
  const edges = [0, ...[...new Set(cuts)].filter((c) => c > 0 && c < rows).sort((a, b) => a - b), rows];
  return edges.slice(0, -1).map((row0, i) => {
    const end = edges[i + 1]!;
    return {
      row0,
      rows: end - row0,
      buf: r.upload(q.quants.subarray((row0 * K) / per, (end * K) / per), `q[${row0}]`),
      scales: r.upload(q.scales.slice((row0 * K) / QGROUP, (end * K) / QGROUP), `s[${row0}]`),
    };
  });
}

export function destroyParts(r: GpuRunner, parts: readonly WeightPart[]): void {
  for (const p of parts) {
    r.destroy(p.buf);
    if (p.scales) r.destroy(p.scales);
  }
}

/** A matmul test's GPU inputs and output: x, the norm weight and bias when used, y (residual epilogues start from yIn). */
export function matmulBuffers(
  r: GpuRunner,
  o: { readonly norm: boolean; readonly bias: boolean; readonly epilogue: string },
  T: number,
  N: number,
  host: { readonly x: Float32Array; readonly normW: Float32Array; readonly bias: Float32Array; readonly yIn: Float32Array },
): { x: GPUBuffer; normW?: GPUBuffer; bias?: GPUBuffer; y: GPUBuffer } {
  return {
    x: r.upload(host.x, 'x'),
    normW: o.norm ? r.upload(host.normW, 'normW') : undefined,
    bias: o.bias ? r.upload(host.bias, 'bias') : undefined,
    y: r.upload(o.epilogue === 'residual' ? host.yIn : new Float32Array(T * N).fill(NaN), 'y'),
  };
}

/** Runs `body` with LOCRET_GEMV (the gemv tuning knobs) set to `spec`, restoring it after. */
export function withGemv(spec: string | undefined, body: () => Promise<void>): Promise<void> {
  return withEnv({ LOCRET_GEMV: spec }, body);
}
