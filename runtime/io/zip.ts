/**
 * Minimal read-only zip reader for `torch.save` archives: central directory (zip64 aware), entries stored or
 * deflated. Entry bytes are read lazily at their offsets; torch stores storages uncompressed, so a tensor read is
 * one positioned file read.
 */
import * as fs from 'node:fs';
import * as zlib from 'node:zlib';
import { CheckpointError } from './errors.js';
import { readAt } from './store-base.js';

export interface ZipEntry {
  readonly name: string;
  readonly method: number;
  readonly compressedSize: number;
  readonly size: number;
  readonly localHeaderOffset: number;
}

const EOCD_SIG = 0x06054b50;
const EOCD64_LOC_SIG = 0x07064b50;
const EOCD64_SIG = 0x06064b50;
const CDIR_SIG = 0x02014b50;
const LOCAL_SIG = 0x04034b50;

export class ZipReader {
  readonly entries = new Map<string, ZipEntry>();
  readonly size: number;
  private readonly dataOffsets = new Map<string, number>();

  constructor(readonly file: string) {
    this.size = fs.statSync(file).size;
    const fail = (why: string): never => {
      throw new CheckpointError(`${file}: not a readable zip archive (${why})`, file);
    };
    // the end-of-central-directory record sits in the last 22 + 65535 (comment) bytes
    const tailLen = Math.min(this.size, 22 + 65535);
    const tail = readAt(file, this.size - tailLen, tailLen, 'zip directory');
    const dv = new DataView(tail.buffer);
    let at = -1;
    for (let i = tailLen - 22; i >= 0; i--) if (dv.getUint32(i, true) === EOCD_SIG) { at = i; break; }
    if (at < 0) fail('no end-of-central-directory record; truncated?');
    let count = dv.getUint16(at + 10, true);
    let cdSize = dv.getUint32(at + 12, true);
    let cdOffset = dv.getUint32(at + 16, true);
    if ((count === 0xffff || cdOffset === 0xffffffff) && at >= 20 && dv.getUint32(at - 20, true) === EOCD64_LOC_SIG) {
      const rec64 = Number(dv.getBigUint64(at - 12, true));
      if (rec64 + 56 > this.size) fail('zip64 record past end of file');
      const r = new DataView(readAt(file, rec64, 56, 'zip64 directory').buffer);
      if (r.getUint32(0, true) !== EOCD64_SIG) fail('bad zip64 record');
      count = Number(r.getBigUint64(32, true));
      cdSize = Number(r.getBigUint64(40, true));
      cdOffset = Number(r.getBigUint64(48, true));
    }
    if (cdOffset + cdSize > this.size) fail('central directory past end of file; truncated?');
    const cd = readAt(file, cdOffset, cdSize, 'central directory');
    const c = new DataView(cd.buffer);
    let p = 0;
    for (let k = 0; k < count; k++) {
      if (p + 46 > cdSize || c.getUint32(p, true) !== CDIR_SIG) fail(`bad central directory entry ${k}`);
      const method = c.getUint16(p + 10, true);
      let compressedSize = c.getUint32(p + 20, true);
      let size = c.getUint32(p + 24, true);
      const nameLen = c.getUint16(p + 28, true);
      const extraLen = c.getUint16(p + 30, true);
      const commentLen = c.getUint16(p + 32, true);
      let localHeaderOffset = c.getUint32(p + 42, true);
      const name = new TextDecoder().decode(cd.subarray(p + 46, p + 46 + nameLen));
      // zip64 extra field (id 1) carries, in order, whichever of the three 32-bit fields are saturated
      let e = p + 46 + nameLen;
      const eEnd = e + extraLen;
      while (e + 4 <= eEnd) {
        const id = c.getUint16(e, true);
        const len = c.getUint16(e + 2, true);
        if (id === 1) {
          let q = e + 4;
          const next = () => { const v = Number(c.getBigUint64(q, true)); q += 8; return v; };
          if (size === 0xffffffff) size = next();
          if (compressedSize === 0xffffffff) compressedSize = next();
          if (localHeaderOffset === 0xffffffff) localHeaderOffset = next();
        }
        e += 4 + len;
      }
      this.entries.set(name, { name, method, compressedSize, size, localHeaderOffset });
      p = eEnd + commentLen;
    }
  }

  /** Absolute offset of an entry's bytes (the local header's name/extra lengths differ from the central copy). */
  dataOffset(entry: ZipEntry): number {
    let off = this.dataOffsets.get(entry.name);
    if (off !== undefined) return off;
    if (entry.localHeaderOffset + 30 > this.size)
      throw new CheckpointError(`${this.file}: entry ${entry.name} header past end of file (truncated?)`, this.file);
    const h = new DataView(readAt(this.file, entry.localHeaderOffset, 30, entry.name).buffer);
    if (h.getUint32(0, true) !== LOCAL_SIG) throw new CheckpointError(`${this.file}: entry ${entry.name}: bad local header`, this.file);
    off = entry.localHeaderOffset + 30 + h.getUint16(26, true) + h.getUint16(28, true);
    if (off + entry.compressedSize > this.size)
      throw new CheckpointError(`${this.file}: entry ${entry.name} runs past the end of the file (truncated download?)`, this.file);
    this.dataOffsets.set(entry.name, off);
    return off;
  }

  /** `length` bytes of an entry's uncompressed content from `start`. */
  read(entry: ZipEntry, start = 0, length = entry.size - start): Uint8Array {
    if (start < 0 || length < 0 || start + length > entry.size)
      throw new CheckpointError(`${this.file}: read [${start}, ${start + length}) outside entry ${entry.name} (${entry.size} bytes)`, this.file);
    const off = this.dataOffset(entry);
    if (entry.method === 0) return readAt(this.file, off + start, length, entry.name);
    if (entry.method !== 8)
      throw new CheckpointError(`${this.file}: entry ${entry.name} uses zip compression method ${entry.method} (only stored/deflate)`, this.file);
    let all: Buffer;
    try {
      // maxOutputLength bounds the allocation by the size the directory declared
      all = zlib.inflateRawSync(readAt(this.file, off, entry.compressedSize, entry.name), { maxOutputLength: Math.max(1, entry.size) });
    } catch (e) {
      throw new CheckpointError(`${this.file}: entry ${entry.name} does not inflate (${(e as Error).message})`, this.file);
    }
    if (all.length !== entry.size)
      throw new CheckpointError(`${this.file}: entry ${entry.name} inflates to ${all.length} bytes, directory says ${entry.size}`, this.file);
    return new Uint8Array(all.subarray(start, start + length));
  }
}
