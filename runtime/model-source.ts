/**
 * A model as the runtime sees it, whatever it was loaded from: a Hugging Face directory (converted on the fly) or a
 * compiled locret bundle (weights already in their storage dtype). Retaining heads may come from the bundle or from
 * a separate `--heads` file (safetensors or an official torch `.bin`).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { ModelConfig } from '../ir/config.js';
import { openBundle, splitQuantized } from './io/bundle.js';
import { f16ToF32 } from './io/dtype.js';
import { readModelConfig } from './io/hf-config.js';
import { openCheckpoint } from './io/safetensors.js';
import { TextTokenizer } from './io/tokenizer.js';
import type { QuantDtype, Quantized } from './quant.js';
import { canonicalWeights, loadRetainingHeads } from './io/weight-map.js';

export interface SourceTensor {
  readonly shape: readonly number[];
  /** f32 values */
  f32(): Float32Array;
  /** f16 bit patterns, when stored that way (bundles): uploaded without a round trip through f32 */
  f16?(): Uint16Array;
  /** a (rows, K) matrix a bundle stores block-quantized: uploaded as stored (f32() dequantizes) */
  readonly quantized?: { readonly dtype: QuantDtype; read(): Quantized };
}

export interface ModelSource {
  readonly path: string;
  readonly kind: 'hf' | 'bundle';
  readonly config: ModelConfig;
  readonly tensors: ReadonlyMap<string, SourceTensor>;
  readonly hasHeads: boolean;
  readonly tokenizer: TextTokenizer | null;
}

export function isBundle(dir: string): boolean {
  return fs.existsSync(path.join(dir, 'bundle.json'));
}

export function openModel(dir: string, opts: { heads?: string; verify?: boolean } = {}): ModelSource {
  if (!fs.existsSync(dir)) throw new Error(`${dir}: no such model directory or bundle`);
  const tensors = new Map<string, SourceTensor>();
  let config: ModelConfig;
  let tokenizerDir: string | null;
  if (isBundle(dir)) {
    const b = openBundle(dir, { verify: opts.verify ?? true });
    config = b.config;
    tokenizerDir = b.tokenizerDir;
    for (const name of b.store.names()) {
      const info = b.store.info(name);
      const q = info.dtype === 'q8' || info.dtype === 'q4' ? info.dtype : null;
      tensors.set(name, {
        shape: info.shape,
        f32: () => b.store.readF32(name),
        f16: info.dtype === 'f16' ? () => { const r = b.store.readRaw(name); return new Uint16Array(r.buffer, r.byteOffset, r.byteLength / 2); } : undefined,
        quantized: q ? { dtype: q, read: () => splitQuantized(name, b.store.readRaw(name), q, info.shape) } : undefined,
      });
    }
  } else {
    config = readModelConfig(dir);
    tokenizerDir = fs.existsSync(path.join(dir, 'tokenizer.json')) ? dir : null;
    for (const [name, t] of canonicalWeights(config, openCheckpoint(dir))) tensors.set(name, { shape: t.shape, f32: () => t.load() });
  }
  if (opts.heads) for (const [name, t] of loadRetainingHeads(opts.heads, config)) tensors.set(name, { shape: t.shape, f32: () => t.load() });
  const hasHeads = tensors.has('L0.fc1');
  const tokenizer = tokenizerDir ? TextTokenizer.fromDir(tokenizerDir) : null;
  return { path: dir, kind: isBundle(dir) ? 'bundle' : 'hf', config, tensors, hasHeads, tokenizer };
}

export { f16ToF32 };
