/**
 * `torch.save` state dicts (the format the official Locret heads ship in) without Python: a zip archive holding
 * `<name>/data.pkl` (the pickled dict) and `<name>/data/<key>` (one raw little-endian storage per key). The pickle
 * is interpreted by the restricted VM in pickle-vm.ts; tensors become views (offset + shape) into the storages,
 * read lazily.
 */
import { DTYPE_BYTES } from './dtype.js';
import { CheckpointError, PickleError } from './errors.js';
import { Global, runPickle, Tuple, type Opaque, type PValue } from './pickle-vm.js';
import { BaseStore, readAt } from './store-base.js';
import type { StoredDtype, TensorInfo, TensorStore } from './tensor-store.js';
import { ZipReader, type ZipEntry } from './zip.js';

export { PickleError } from './errors.js';

const STORAGE_DTYPES: Record<string, StoredDtype> = {
  'torch.BFloat16Storage': 'bf16',
  'torch.HalfStorage': 'f16',
  'torch.FloatStorage': 'f32',
};
const REBUILD_TENSOR = 'torch._utils._rebuild_tensor_v2';
const REBUILD_PARAM = 'torch._utils._rebuild_parameter';
const ORDERED_DICT = 'collections.OrderedDict';
const ALLOWED = new Set([...Object.keys(STORAGE_DTYPES), REBUILD_TENSOR, REBUILD_PARAM, ORDERED_DICT]);

/** The pickle is metadata only; anything this large is not a state dict. */
const MAX_PICKLE_BYTES = 64 * 1024 * 1024;

interface StorageRef extends Opaque {
  readonly kind: 'storage';
  readonly dtype: StoredDtype;
  readonly entry: ZipEntry;
  readonly numel: number;
}
interface TensorRef extends Opaque {
  readonly kind: 'tensor';
  readonly storage: StorageRef;
  readonly offset: number;
  readonly shape: number[];
}

const isInt = (v: PValue): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
const intTuple = (v: PValue): number[] | null =>
  v instanceof Tuple && v.items.every(isInt) ? (v.items as number[]) : null;

export class TorchStore extends BaseStore {
  private readonly tensors = new Map<string, TensorRef>();
  private readonly zip: ZipReader;
  get source(): string {
    return this.file;
  }

  constructor(readonly file: string) {
    super();
    const magic = readAt(file, 0, 4, 'magic');
    if (!(magic[0] === 0x50 && magic[1] === 0x4b))
      throw new CheckpointError(`${file}: not a zip-format torch.save file (legacy pre-1.6 torch format is not supported)`, file);
    this.zip = new ZipReader(file);
    const pkls = [...this.zip.entries.keys()].filter((n) => /^[^/]+\/data\.pkl$/.test(n));
    if (pkls.length !== 1) throw new PickleError(`${file}: expected one <name>/data.pkl in the archive, found ${pkls.length}`, file);
    const prefix = pkls[0].slice(0, -'data.pkl'.length);
    const bo = this.zip.entries.get(`${prefix}byteorder`);
    if (bo && new TextDecoder().decode(this.zip.read(bo)).trim() !== 'little')
      throw new PickleError(`${file}: big-endian storages are not supported`, file);
    const pklEntry = this.zip.entries.get(pkls[0])!;
    if (pklEntry.size > MAX_PICKLE_BYTES) throw new PickleError(`${file}: data.pkl is ${pklEntry.size} bytes, too large for a state dict`, file);

    const root = runPickle(this.zip.read(pklEntry), {
      allowedGlobals: ALLOWED,
      persistentLoad: (pid) => this.storage(pid, prefix),
      reduce: (fn, args) => this.reduce(fn, args),
    }, file);
    this.collect(root, '');
  }

  private fail(msg: string): never {
    throw new PickleError(`${this.file}: ${msg}`, this.file);
  }

  /** persistent id ('storage', <storage type>, key, location, numel) → a checked reference to data/<key> */
  private storage(pid: PValue, prefix: string): StorageRef {
    const it = pid instanceof Tuple ? pid.items : [];
    const [tag, type, key, , numel] = it;
    if (it.length !== 5 || tag !== 'storage' || !(type instanceof Global) || typeof key !== 'string' || !isInt(numel))
      this.fail('unexpected persistent id (not a torch storage)');
    const dtype = STORAGE_DTYPES[(type as Global).qualified];
    if (!dtype) this.fail(`unsupported storage type ${(type as Global).qualified}`);
    const entry = this.zip.entries.get(`${prefix}data/${key}`);
    if (!entry) this.fail(`storage ${key} is missing from the archive`);
    const bytes = (numel as number) * DTYPE_BYTES[dtype];
    if (entry!.size !== bytes) this.fail(`storage ${key}: ${entry!.size} bytes in the archive, ${numel} x ${dtype} needs ${bytes}`);
    return { opaque: true, kind: 'storage', dtype, entry: entry!, numel: numel as number };
  }

  private reduce(fn: Global, args: Tuple): PValue {
    const a = args.items;
    switch (fn.qualified) {
      case ORDERED_DICT:
        if (a.length !== 0) this.fail('OrderedDict with arguments');
        return new Map();
      case REBUILD_PARAM: {
        const t = a[0] as TensorRef;
        if (t?.kind !== 'tensor') this.fail('_rebuild_parameter of a non-tensor');
        return t;
      }
      case REBUILD_TENSOR: {
        // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
        const st = a[0] as StorageRef;
        const offset = a[1];
        const shape = intTuple(a[2]);
        const stride = intTuple(a[3]);
        if (st?.kind !== 'storage' || !isInt(offset) || !shape || !stride || shape.length !== stride.length)
          this.fail('malformed _rebuild_tensor_v2 arguments');
        // only row-major contiguous views can be read as one byte range (size-1 dims may carry any stride)
        let expect = 1;
        for (let d = shape!.length - 1; d >= 0; d--) {
          if (shape![d] !== 1 && stride![d] !== expect)
            this.fail(`non-contiguous tensor (shape [${shape}], stride [${stride}]); re-save it with .contiguous()`);
          expect *= shape![d];
        }
        if ((offset as number) + expect > st.numel)
          this.fail(`tensor view [offset ${offset}, ${expect} elements] exceeds its storage of ${st.numel}`);
        return { opaque: true, kind: 'tensor', storage: st, offset: offset as number, shape: shape! } as TensorRef;
      }
    }
    return this.fail(`refusing to call ${fn.qualified}`);
  }

  /** The root is a (possibly nested) dict of tensors; nested dicts flatten to dotted names. */
  private collect(v: PValue, prefix: string): void {
    if (!(v instanceof Map)) this.fail(`${prefix || 'root'} is not a dict of tensors`);
    for (const [k, t] of v as Map<PValue, PValue>) {
      if (typeof k !== 'string') this.fail('state dict has a non-string key');
      const name = prefix + (k as string);
      if ((t as TensorRef)?.kind === 'tensor') this.tensors.set(name, t as TensorRef);
      else if (t instanceof Map) this.collect(t, name + '.');
      else this.fail(`entry "${name}" is not a tensor`);
    }
  }

  private ref(name: string): TensorRef {
    const t = this.tensors.get(name);
    if (!t) throw new CheckpointError(`${this.file}: no tensor named "${name}"`, this.file, name);
    return t;
  }
  names(): readonly string[] {
    return [...this.tensors.keys()];
  }
  has(name: string): boolean {
    return this.tensors.has(name);
  }
  info(name: string): TensorInfo {
    const t = this.ref(name);
    return { name, dtype: t.storage.dtype, shape: t.shape, file: this.file };
  }
  readRaw(name: string): Uint8Array {
    const t = this.ref(name);
    const size = DTYPE_BYTES[t.storage.dtype];
    const numel = t.shape.reduce((a, b) => a * b, 1);
    return this.zip.read(t.storage.entry, t.offset * size, numel * size);
  }
}

export function openTorchFile(file: string): TensorStore {
  return new TorchStore(file);
}
