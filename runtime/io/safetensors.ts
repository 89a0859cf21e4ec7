/**
 * safetensors reader: an 8-byte little-endian header length, a JSON header mapping names to
 * {dtype, shape, data_offsets: [begin, end]} (relative to the end of the header), then the raw bytes.
 * Only the header is read at open; tensor bytes are read on demand at their offsets so an 8B checkpoint never
 * sits whole in memory. Sharded checkpoints (`model.safetensors.index.json`) are a name → shard map over these.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { DTYPE_BYTES } from './dtype.js';
import { CheckpointError } from './errors.js';
import { BaseStore, fileSize, readAt, RoutedStore } from './store-base.js';
import type { StoredDtype, TensorInfo, TensorStore } from './tensor-store.js';
import { openTorchFile } from './torch-pickle.js';

export { CheckpointError } from './errors.js';

/** The reference implementation refuses headers above 100 MB; a larger value means a corrupt or foreign file. */
const MAX_HEADER_BYTES = 100 * 1024 * 1024;

const DTYPES: Record<string, StoredDtype> = { F32: 'f32', F16: 'f16', BF16: 'bf16' };

interface Entry {
  info: TensorInfo;
  /** absolute byte offset in the file */
  start: number;
  byteLength: number;
  /** set when the dtype is one we cannot read; reported when the tensor is actually used */
  unsupported?: string;
}

export class SafetensorsStore extends BaseStore {
  private readonly entries = new Map<string, Entry>();
  readonly metadata: Record<string, string>;
  get source(): string {
    return this.file;
  }

  constructor(readonly file: string) {
    super();
    const size = fileSize(file);
    if (size < 8) throw new CheckpointError(`${file}: ${size} bytes is too short for a safetensors file`, file);
    const n = Number(new DataView(readAt(file, 0, 8, 'header size').buffer).getBigUint64(0, true));
    if (n < 2 || n > MAX_HEADER_BYTES)
      throw new CheckpointError(`${file}: header size ${n} is bogus (not a safetensors file, or corrupt)`, file);
    if (8 + n > size)
      throw new CheckpointError(`${file}: header of ${n} bytes runs past the end of the ${size}-byte file (truncated)`, file);
    let header: Record<string, unknown>;
    try {
      header = JSON.parse(new TextDecoder().decode(readAt(file, 8, n, 'header')));
    } catch (e) {
      throw new CheckpointError(`${file}: header is not valid JSON (${(e as Error).message})`, file);
    }
    if (typeof header !== 'object' || header === null || Array.isArray(header))
      throw new CheckpointError(`${file}: header is not a JSON object`, file);
    this.metadata = (header.__metadata__ as Record<string, string>) ?? {};
    const dataStart = 8 + n;
    for (const [name, raw] of Object.entries(header)) {
      if (name === '__metadata__') continue;
      this.entries.set(name, this.parseEntry(name, raw, dataStart, size));
    }
  }

  private parseEntry(name: string, raw: unknown, dataStart: number, size: number): Entry {
    const where = `${this.file}: tensor "${name}"`;
    const r = raw as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    const shape = r?.shape;
    const offs = r?.data_offsets;
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0))
      throw new CheckpointError(`${where}: bad shape ${JSON.stringify(shape)}`, this.file, name);
    if (!Array.isArray(offs) || offs.length !== 2 || !offs.every((d) => Number.isSafeInteger(d) && d >= 0) || offs[0] > offs[1])
      throw new CheckpointError(`${where}: bad data_offsets ${JSON.stringify(offs)}`, this.file, name);
    const [begin, end] = offs as [number, number];
    if (dataStart + end > size)
      throw new CheckpointError(
        `${where}: data [${begin}, ${end}) runs past the end of the file (${size - dataStart} data bytes; truncated download?)`,
        this.file,
        name,
      );
    const dtype = DTYPES[String(r.dtype)];
    const info: TensorInfo = { name, dtype: dtype ?? 'f32', shape: shape as number[], file: this.file };
    const e: Entry = { info, start: dataStart + begin, byteLength: end - begin };
    if (!dtype) {
      e.unsupported = String(r.dtype);
      return e;
    }
    const expect = (shape as number[]).reduce((a, b) => a * b, 1) * DTYPE_BYTES[dtype];
    if (expect !== end - begin)
      throw new CheckpointError(`${where}: ${end - begin} data bytes but shape [${shape}] of ${r.dtype} needs ${expect}`, this.file, name);
    return e;
  }

  private entry(name: string): Entry {
    const e = this.entries.get(name);
    if (!e) throw new CheckpointError(`${this.file}: no tensor named "${name}"`, this.file, name);
    if (e.unsupported)
      throw new CheckpointError(
        `${this.file}: tensor "${name}" has unsupported dtype ${e.unsupported} (locret reads F32, F16, BF16)`,
        this.file,
        name,
      );
    return e;
  }
  names(): readonly string[] {
    return [...this.entries.keys()];
  }
  has(name: string): boolean {
    return this.entries.has(name);
  }
  info(name: string): TensorInfo {
    return this.entry(name).info;
  }
  readRaw(name: string): Uint8Array {
    const e = this.entry(name);
    return readAt(this.file, e.start, e.byteLength, `tensor "${name}"`);
  }
}

export function openSafetensors(file: string): TensorStore {
  return new SafetensorsStore(file);
}

const DTYPE_NAMES: Record<StoredDtype, string> = { f32: 'F32', f16: 'F16', bf16: 'BF16' };

/** Write a single-file safetensors (small exports and test fixtures; the whole file is assembled in memory). */
export function writeSafetensors(
  file: string,
  tensors: readonly { name: string; dtype: StoredDtype; shape: readonly number[]; data: Uint8Array }[],
  metadata: Record<string, string> = { format: 'pt' },
): void {
  const header: Record<string, unknown> = { __metadata__: metadata };
  let at = 0;
  for (const t of tensors) {
    header[t.name] = { dtype: DTYPE_NAMES[t.dtype], shape: t.shape, data_offsets: [at, at + t.data.byteLength] };
    at += t.data.byteLength;
  }
  const raw = new TextEncoder().encode(JSON.stringify(header));
  // pad with spaces so the data section is 8-byte aligned, as the reference writer does
  const head = new Uint8Array(Math.ceil(raw.byteLength / 8) * 8).fill(0x20);
  head.set(raw);
  const out = new Uint8Array(8 + head.byteLength + at);
  new DataView(out.buffer).setBigUint64(0, BigInt(head.byteLength), true);
  out.set(head, 8);
  let p = 8 + head.byteLength;
  for (const t of tensors) {
    out.set(t.data, p);
    p += t.data.byteLength;
  }
  fs.writeFileSync(file, out);
}

/** Open a sharded checkpoint from its index (`weight_map`: tensor name → shard file name). */
export function openShardIndex(indexFile: string, open: (file: string) => TensorStore = openSafetensors): TensorStore {
  let index: { weight_map?: Record<string, unknown> };
  try {
    index = JSON.parse(fs.readFileSync(indexFile, 'utf8'));
  } catch (e) {
    throw new CheckpointError(`${indexFile}: cannot read shard index (${(e as Error).message})`, indexFile);
  }
  const map = index?.weight_map;
  if (!map || typeof map !== 'object') throw new CheckpointError(`${indexFile}: no "weight_map" object`, indexFile);
  const dir = path.dirname(indexFile);
  const shards = new Map<string, TensorStore>();
  const route = new Map<string, TensorStore>();
  for (const [name, shard] of Object.entries(map)) {
    // shard names are plain file names next to the index; refuse anything that would escape the directory
    if (typeof shard !== 'string' || shard !== path.basename(shard))
      throw new CheckpointError(`${indexFile}: tensor "${name}" maps to bad shard name ${JSON.stringify(shard)}`, indexFile, name);
    let store = shards.get(shard);
    if (!store) {
      const file = path.join(dir, shard);
      if (!fs.existsSync(file))
        throw new CheckpointError(`${indexFile}: tensor "${name}" maps to shard ${shard}, which is missing (${file})`, file, name);
      store = open(file);
      shards.set(shard, store);
    }
    if (!store.has(name))
      throw new CheckpointError(`${indexFile}: tensor "${name}" is listed in shard ${shard} but that file does not contain it`, path.join(dir, shard), name);
    route.set(name, store);
  }
  return new RoutedStore(route, indexFile);
}

/**
 * Open a HF checkpoint directory: `model.safetensors`, sharded `model.safetensors.index.json`, or as a fallback
 * the older `pytorch_model.bin` (single or sharded) through the restricted pickle reader.
 */
export function openCheckpoint(dir: string): TensorStore {
  const p = (f: string) => path.join(dir, f);
  if (fs.existsSync(p('model.safetensors.index.json'))) return openShardIndex(p('model.safetensors.index.json'));
  if (fs.existsSync(p('model.safetensors'))) return openSafetensors(p('model.safetensors'));
  if (fs.existsSync(p('pytorch_model.bin.index.json'))) return openShardIndex(p('pytorch_model.bin.index.json'), openTorchFile);
  if (fs.existsSync(p('pytorch_model.bin'))) return openTorchFile(p('pytorch_model.bin'));
  throw new CheckpointError(
    `${dir}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin found`,
    dir,
  );
}
