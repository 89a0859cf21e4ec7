/**
 * locret bundle: a directory with `bundle.json` (manifest), copied tokenizer files and weights in
 * `weights-NNN.bin` blobs. Tensors are 256-byte aligned (GPU uploads and typed views want aligned offsets) and
 * blobs stay ≤ 1 GiB (browser fetch/ArrayBuffer limits) unless a single tensor is larger, in which case it gets a
 * blob of its own. Each tensor carries a sha256 so corruption is caught per tensor, by name.
 *
 * A q8 / q4 tensor (a (rows, K) matrix quantized by runtime/quant.ts, so loading never re-quantizes) is one entry
 * of dtype 'q8' / 'q4' with its logical shape; its bytes are the quants then the scales, unpadded:
 *
 *   quants  (rows, K/4) u32 for q8, (rows, K/8) u32 for q4      rows·K or rows·K/2 bytes
 *   scales  (rows, K/32) f16                                   rows·K/16 bytes
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { ModelConfig } from '../../ir/config.js';
import { DTYPE_BYTES, f32ToF16 } from './dtype.js';
import { BundleError } from './errors.js';
import { dequantize, QGROUP, type QuantDtype, type Quantized } from '../quant.js';
import { BaseStore, readAt } from './store-base.js';
import type { TensorInfo, TensorStore } from './tensor-store.js';

export { BundleError } from './errors.js';

export const BUNDLE_FORMAT = 'locret-bundle';
export const BUNDLE_VERSION = 1;
const ALIGN = 256;
const MAX_BLOB = 1024 ** 3;
/** files copied from the HF directory when `tokenizerDir` is given */
const TOKENIZER_FILES = ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'chat_template.jinja'];

export type BundleDtype = 'f32' | 'f16' | QuantDtype;

export interface BundleTensor {
  readonly name: string;
  readonly shape: readonly number[];
  readonly dtype: BundleDtype;
  readonly file: string;
  readonly offset: number;
  readonly byteLength: number;
  readonly sha256: string;
}

export interface BundleManifest {
  readonly format: typeof BUNDLE_FORMAT;
  readonly version: number;
  readonly config: ModelConfig;
  /** the dtype when all tensors share it, else 'mixed' (a q8 / q4 bundle keeps norms f32 and retaining heads f16) */
  readonly weightDtype: BundleDtype | 'mixed';
  readonly tensors: readonly BundleTensor[];
  readonly tokenizer: boolean;
  readonly tokenizerFiles: readonly string[];
  readonly heads: boolean;
  readonly generation: Record<string, unknown> | null;
}

export type TensorInput =
  | {
      readonly name: string;
      readonly shape: readonly number[];
      readonly dtype: 'f32' | 'f16';
      /** f32 values (converted to f16 when dtype is 'f16'), or f16 bit patterns already rounded */
      readonly data: Float32Array | Uint16Array;
    }
  | {
      readonly name: string;
      /** (rows, K), K a multiple of 32 */
      readonly shape: readonly number[];
      readonly dtype: QuantDtype;
      readonly data: Quantized;
    };

/** Stored bytes of a tensor of `dtype` and `shape` (q8 / q4: quants then scales, see the header). */
export function bundleTensorBytes(dtype: BundleDtype, shape: readonly number[]): number {
  const numel = shape.reduce((a, b) => a * b, 1);
  if (dtype === 'q8' || dtype === 'q4') return numel / (dtype === 'q8' ? 1 : 2) + (numel / QGROUP) * 2;
  return numel * DTYPE_BYTES[dtype];
}

/** The quants and scales of a q8 / q4 entry's bytes (fresh, 4-byte aligned, as readRaw returns them). */
export function splitQuantized(name: string, bytes: Uint8Array, dtype: QuantDtype, shape: readonly number[]): Quantized {
  const numel = shape.reduce((a, b) => a * b, 1);
  if (shape.length !== 2 || shape[1]! % QGROUP !== 0 || bytes.byteLength !== bundleTensorBytes(dtype, shape))
    throw new BundleError(`tensor "${name}": ${bytes.byteLength} bytes is not a ${dtype} matrix of shape [${shape}]`, undefined, name);
  const b = bytes.byteOffset % 4 === 0 ? bytes : bytes.slice();
  const qBytes = numel / (dtype === 'q8' ? 1 : 2);
  return {
    quants: new Uint32Array(b.buffer, b.byteOffset, qBytes / 4),
    scales: new Uint16Array(b.buffer, b.byteOffset + qBytes, numel / QGROUP),
  };
}

export interface WriteBundleOptions {
  readonly config: ModelConfig;
  readonly tensors: Iterable<TensorInput>;
  /** HF directory to copy tokenizer files (and generation_config.json) from */
  readonly tokenizerDir?: string;
  readonly generation?: Record<string, unknown>;
  readonly onProgress?: (p: { name: string; index: number; bytes: number }) => void;
  /** blob size cap (default and maximum 1 GiB; smaller for tests) */
  readonly maxBlobBytes?: number;
}

function tensorBytes(t: TensorInput): Uint8Array {
  const numel = t.shape.reduce((a, b) => a * b, 1);
  if (t.dtype === 'q8' || t.dtype === 'q4') {
    const { quants, scales } = t.data;
    const out = new Uint8Array(bundleTensorBytes(t.dtype, t.shape));
    if (t.shape.length !== 2 || t.shape[1]! % QGROUP !== 0 || quants.byteLength + scales.byteLength !== out.byteLength)
      throw new BundleError(`tensor "${t.name}": ${quants.length} quant words and ${scales.length} scales do not make a ${t.dtype} matrix of shape [${t.shape}]`, undefined, t.name);
    out.set(new Uint8Array(quants.buffer, quants.byteOffset, quants.byteLength));
    out.set(new Uint8Array(scales.buffer, scales.byteOffset, scales.byteLength), quants.byteLength);
    return out;
  }
  let d = t.data;
  if (!(d instanceof Float32Array || d instanceof Uint16Array))
    throw new BundleError(`tensor "${t.name}": ${t.dtype} data must be a Float32Array or f16 bits`, undefined, t.name);
  if (d.length !== numel) throw new BundleError(`tensor "${t.name}": ${d.length} values for shape [${t.shape}] (${numel})`, undefined, t.name);
  if (t.dtype === 'f16' && d instanceof Float32Array) d = f32ToF16(d);
  if ((t.dtype === 'f16') !== d instanceof Uint16Array)
    throw new BundleError(`tensor "${t.name}": ${d.constructor.name} data cannot be stored as ${t.dtype}`, undefined, t.name);
  return new Uint8Array(d.buffer, d.byteOffset, d.byteLength);
}

export function writeBundle(outDir: string, opts: WriteBundleOptions): BundleManifest {
  fs.mkdirSync(outDir, { recursive: true });
  // a stale manifest must not describe half-rewritten blobs; it is written last
  fs.rmSync(path.join(outDir, 'bundle.json'), { force: true });
  const entries: BundleTensor[] = [];
  const seen = new Set<string>();
  let blob = -1;
  let fd = -1;
  let pos = 0;
  const maxBlob = Math.min(opts.maxBlobBytes ?? MAX_BLOB, MAX_BLOB);
  const blobName = (i: number) => `weights-${String(i).padStart(3, '0')}.bin`;
  const nextBlob = () => {
    if (fd >= 0) fs.closeSync(fd);
    fd = fs.openSync(path.join(outDir, blobName(++blob)), 'w');
    pos = 0;
  };
  try {
    let index = 0;
    for (const t of opts.tensors) {
      if (seen.has(t.name)) throw new BundleError(`duplicate tensor "${t.name}"`, undefined, t.name);
      seen.add(t.name);
      const bytes = tensorBytes(t);
      let start = Math.ceil(pos / ALIGN) * ALIGN;
      if (fd < 0 || (start + bytes.byteLength > maxBlob && pos > 0)) {
        nextBlob();
        start = 0;
      }
      if (start > pos) fs.writeSync(fd, new Uint8Array(start - pos), 0, start - pos, pos);
      fs.writeSync(fd, bytes, 0, bytes.byteLength, start);
      pos = start + bytes.byteLength;
      const sha256 = crypto.createHash('sha256').update(bytes).digest('hex');
      entries.push({ name: t.name, shape: [...t.shape], dtype: t.dtype, file: blobName(blob), offset: start, byteLength: bytes.byteLength, sha256 });
      opts.onProgress?.({ name: t.name, index: index++, bytes: bytes.byteLength });
    }
  } finally {
    if (fd >= 0) fs.closeSync(fd);
  }

  const tokenizerFiles: string[] = [];
  let generation = opts.generation ?? null;
  if (opts.tokenizerDir) {
    for (const f of TOKENIZER_FILES) {
      const src = path.join(opts.tokenizerDir, f);
      if (fs.existsSync(src)) {
        fs.copyFileSync(src, path.join(outDir, f));
        tokenizerFiles.push(f);
      }
    }
    const gen = path.join(opts.tokenizerDir, 'generation_config.json');
    if (!generation && fs.existsSync(gen)) generation = JSON.parse(fs.readFileSync(gen, 'utf8'));
  }
  const dtypes = new Set(entries.map((e) => e.dtype));
  const manifest: BundleManifest = {
    format: BUNDLE_FORMAT,
    version: BUNDLE_VERSION,
    config: opts.config,
    weightDtype: dtypes.size === 1 ? [...dtypes][0] : dtypes.size === 0 ? 'f32' : 'mixed',
    tensors: entries,
    tokenizer: tokenizerFiles.includes('tokenizer.json'),
    tokenizerFiles,
    heads: entries.some((e) => /^L\d+\.fc1$/.test(e.name)),
    generation,
  };
  const tmp = path.join(outDir, 'bundle.json.tmp');
  fs.writeFileSync(tmp, JSON.stringify(manifest, null, 1));
  fs.renameSync(tmp, path.join(outDir, 'bundle.json'));
  return manifest;
}

class BundleStore extends BaseStore {
  private readonly byName: Map<string, BundleTensor>;
  get source(): string {
    return this.dir;
  }
  constructor(
    private readonly dir: string,
    manifest: BundleManifest,
    private readonly verify: boolean,
  ) {
    super();
    this.byName = new Map(manifest.tensors.map((t) => [t.name, t]));
  }
  private entry(name: string): BundleTensor {
    const t = this.byName.get(name);
    if (!t) throw new BundleError(`${this.dir}: bundle has no tensor "${name}"`, path.join(this.dir, 'bundle.json'), name);
    return t;
  }
  names(): readonly string[] {
    return [...this.byName.keys()];
  }
  has(name: string): boolean {
    return this.byName.has(name);
  }
  info(name: string): TensorInfo {
    const t = this.entry(name);
    return { name, dtype: t.dtype, shape: t.shape, file: path.join(this.dir, t.file) };
  }
  override readF32(name: string): Float32Array {
    const t = this.entry(name);
    if (t.dtype !== 'q8' && t.dtype !== 'q4') return super.readF32(name);
    return dequantize(splitQuantized(name, this.readRaw(name), t.dtype, t.shape), t.shape[0]!, t.shape[1]!, t.dtype);
  }
  readRaw(name: string): Uint8Array {
    const t = this.entry(name);
    const file = path.join(this.dir, t.file);
    const bytes = readAt(file, t.offset, t.byteLength, `tensor "${name}"`);
    if (this.verify) checkHash(t, bytes, file);
    return bytes;
  }
}

function checkHash(t: BundleTensor, bytes: Uint8Array, file: string): void {
  const h = crypto.createHash('sha256').update(bytes).digest('hex');
  if (h !== t.sha256) throw new BundleError(`${file}: tensor "${t.name}" is corrupt (sha256 ${h}, manifest says ${t.sha256})`, file, t.name);
}

export interface OpenedBundle {
  readonly dir: string;
  readonly manifest: BundleManifest;
  readonly config: ModelConfig;
  readonly store: TensorStore;
  /** the bundle directory when it holds tokenizer.json, else null */
  readonly tokenizerDir: string | null;
  readonly heads: boolean;
  readonly generation: Record<string, unknown> | null;
}

/**
 * Open a bundle. Blob sizes are always checked (truncation is reported by tensor name at open); with
 * `verify`, every tensor read is hashed and compared to the manifest.
 */
export function openBundle(dir: string, opts: { verify: boolean }): OpenedBundle {
  const mf = path.join(dir, 'bundle.json');
  if (!fs.existsSync(mf)) throw new BundleError(`${dir}: no bundle.json (not a locret bundle, or writing was interrupted)`, mf);
  let manifest: BundleManifest;
  try {
    manifest = JSON.parse(fs.readFileSync(mf, 'utf8'));
  } catch (e) {
    throw new BundleError(`${mf}: not valid JSON (${(e as Error).message})`, mf);
  }
  if (manifest?.format !== BUNDLE_FORMAT) throw new BundleError(`${mf}: not a locret bundle manifest`, mf);
  if (manifest.version !== BUNDLE_VERSION)
    throw new BundleError(`${mf}: bundle format version ${manifest.version}, this locret reads version ${BUNDLE_VERSION}`, mf);
  const sizes = new Map<string, number>();
  for (const t of manifest.tensors) {
    if (t.file !== path.basename(t.file)) throw new BundleError(`${mf}: tensor "${t.name}" names bad file ${t.file}`, mf, t.name);
    const file = path.join(dir, t.file);
    if (!sizes.has(t.file)) sizes.set(t.file, fs.existsSync(file) ? fs.statSync(file).size : -1);
    const size = sizes.get(t.file)!;
    if (size < 0) throw new BundleError(`${file}: missing (holds tensor "${t.name}")`, file, t.name);
    if (t.offset + t.byteLength > size)
      throw new BundleError(`${file}: truncated: tensor "${t.name}" needs bytes up to ${t.offset + t.byteLength}, file has ${size}`, file, t.name);
    if (!['f32', 'f16', 'q8', 'q4'].includes(t.dtype)) throw new BundleError(`${mf}: tensor "${t.name}" has unknown dtype ${t.dtype}`, mf, t.name);
    if (bundleTensorBytes(t.dtype, t.shape) !== t.byteLength)
      throw new BundleError(`${mf}: tensor "${t.name}" byteLength ${t.byteLength} does not match shape [${t.shape}] ${t.dtype}`, mf, t.name);
  }
  return {
    dir,
    manifest,
    config: manifest.config,
    store: new BundleStore(dir, manifest, opts.verify),
    tokenizerDir: manifest.tokenizer ? dir : null,
    heads: manifest.heads,
    generation: manifest.generation,
  };
}

/** Hash every tensor now (streaming, one tensor in memory at a time); throws naming the first corrupt one. */
export function verifyBundle(dir: string): void {
  const b = openBundle(dir, { verify: true });
  for (const name of b.store.names()) b.store.readRaw(name);
}
