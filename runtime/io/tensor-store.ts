/** Storage dtypes locret reads from checkpoints. */
export type StoredDtype = 'f32' | 'f16' | 'bf16';

export interface TensorInfo {
  readonly name: string;
  /** q8 / q4: block-quantized (only in locret bundles; runtime/quant.ts) */
  readonly dtype: StoredDtype | 'q8' | 'q4';
  readonly shape: readonly number[];
  /** file the bytes live in (for error messages) */
  readonly file: string;
}

/**
 * Random access to a checkpoint's tensors by name. Implementations: safetensors (single file or sharded),
 * torch `.bin` state dicts, locret bundles. Reads are lazy so an 8B checkpoint never sits whole in memory.
 * Every error names the file and the tensor.
 */
export interface TensorStore {
  /** what was opened (file, shard index or bundle directory), for error messages */
  readonly source?: string;
  names(): readonly string[];
  has(name: string): boolean;
  info(name: string): TensorInfo;
  /** raw little-endian bytes as stored */
  readRaw(name: string): Uint8Array;
  /** values widened to f32 (bf16/f16 converted exactly) */
  readF32(name: string): Float32Array;
}
