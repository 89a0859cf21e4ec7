/** File access and TensorStore plumbing shared by the safetensors, torch and bundle readers. */
import * as fs from 'node:fs';
import { rawToF32 } from './dtype.js';
import { CheckpointError } from './errors.js';
import type { TensorInfo, TensorStore } from './tensor-store.js';

/** Read exactly `length` bytes at `position` into a fresh (hence aligned) buffer. */
export function readAt(file: string, position: number, length: number, what: string): Uint8Array {
  const out = new Uint8Array(length);
  const fd = fs.openSync(file, 'r');
  try {
    let done = 0;
    while (done < length) {
      const n = fs.readSync(fd, out, done, length - done, position + done);
      if (n === 0) throw new CheckpointError(`${file}: ${what}: unexpected end of file (truncated download?)`, file);
      done += n;
    }
  } finally {
    fs.closeSync(fd);
  }
  return out;
}

export function fileSize(file: string): number {
  try {
    return fs.statSync(file).size;
  } catch {
    throw new CheckpointError(`${file}: file not found`, file);
  }
}

/** Shared TensorStore plumbing over a name → entry table. */
export abstract class BaseStore implements TensorStore {
  abstract readonly source: string;
  abstract names(): readonly string[];
  abstract has(name: string): boolean;
  abstract info(name: string): TensorInfo;
  abstract readRaw(name: string): Uint8Array;
  readF32(name: string): Float32Array {
    const d = this.info(name).dtype;
    if (d === 'q8' || d === 'q4') throw new CheckpointError(`${this.source}: tensor "${name}" is ${d}, which this reader cannot widen`, this.source, name);
    return rawToF32(this.readRaw(name), d);
  }
}

/** Name → store routing for sharded checkpoints; errors name the shard that owns the tensor. */
export class RoutedStore extends BaseStore {
  constructor(
    private readonly route: Map<string, TensorStore>,
    readonly source: string,
  ) {
    super();
  }
  private store(name: string): TensorStore {
    const s = this.route.get(name);
    if (!s) throw new CheckpointError(`${this.source}: no tensor named "${name}"`, this.source, name);
    return s;
  }
  names(): readonly string[] {
    return [...this.route.keys()];
  }
  has(name: string): boolean {
    return this.route.has(name);
  }
  info(name: string): TensorInfo {
    return this.store(name).info(name);
  }
  readRaw(name: string): Uint8Array {
    return this.store(name).readRaw(name);
  }
  override readF32(name: string): Float32Array {
    return this.store(name).readF32(name);
  }
}

