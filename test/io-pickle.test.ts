import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { afterAll, describe, expect, it } from 'vitest';
import { CheckpointError, PickleError } from '../runtime/io/errors.js';
import { openSafetensors } from '../runtime/io/safetensors.js';
import { openTorchFile } from '../runtime/io/torch-pickle.js';
import { ZipReader } from '../runtime/io/zip.js';

const MODELS = path.resolve(__dirname, '../../shared/models');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'locret-io-pk-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** Minimal zip writer (CRC left 0: the reader does not check it) to craft archives. */
function writeZip(file: string, entries: { name: string; data: Uint8Array; deflate?: boolean }[]): void {
  const parts: Buffer[] = [];
  const central: Buffer[] = [];
  let off = 0;
  for (const e of entries) {
    const body = e.deflate ? zlib.deflateRawSync(e.data) : Buffer.from(e.data);
    const name = Buffer.from(e.name);
    const h = Buffer.alloc(30);
    h.writeUInt32LE(0x04034b50, 0);
    h.writeUInt16LE(e.deflate ? 8 : 0, 8);
    h.writeUInt32LE(body.length, 18);
    h.writeUInt32LE(e.data.length, 22);
    h.writeUInt16LE(name.length, 26);
    const c = Buffer.alloc(46);
    c.writeUInt32LE(0x02014b50, 0);
    c.writeUInt16LE(e.deflate ? 8 : 0, 10);
    c.writeUInt32LE(body.length, 20);
    c.writeUInt32LE(e.data.length, 24);
    c.writeUInt16LE(name.length, 28);
    c.writeUInt32LE(off, 42);
    parts.push(h, name, body);
    central.push(c, name);
    off += 30 + name.length + body.length;
  }
  const cd = Buffer.concat(central);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(entries.length, 8);
  end.writeUInt16LE(entries.length, 10);
  end.writeUInt32LE(cd.length, 12);
  end.writeUInt32LE(off, 16);
  fs.writeFileSync(file, Buffer.concat([...parts, cd, end]));
}

/** Every entry of an existing archive, optionally transformed. */
function entriesOf(file: string) {
  const z = new ZipReader(file);
  return [...z.entries.values()].map((e) => ({ name: e.name, data: z.read(e) }));
}

function expectSameAsSafetensors(bin: string, st: string): void {
  const a = openTorchFile(bin);
  const b = openSafetensors(st);
  expect([...a.names()].sort()).toEqual([...b.names()].sort());
  for (const n of b.names()) {
    expect(a.info(n)).toMatchObject({ dtype: b.info(n).dtype, shape: b.info(n).shape });
    expect(Buffer.from(a.readRaw(n)).equals(Buffer.from(b.readRaw(n)))).toBe(true);
  }
}

/** A protocol-2 pickle from opcode bytes and strings. */
const pk = (...parts: (number[] | string)[]) =>
  new Uint8Array(parts.flatMap((p) => (typeof p === 'string' ? [...Buffer.from(p)] : p)));

describe('torch .bin (restricted pickle)', () => {
  it('tiny-llama retaining_heads.bin equals the safetensors copy bit for bit', () => {
    const d = path.join(MODELS, 'tiny-llama');
    expectSameAsSafetensors(path.join(d, 'retaining_heads.bin'), path.join(d, 'retaining_heads.safetensors'));
  });

  it('tiny-phi3 phi3_retaining_heads.bin equals the safetensors copy bit for bit', () => {
    const d = path.join(MODELS, 'tiny-phi3');
    expectSameAsSafetensors(path.join(d, 'phi3_retaining_heads.bin'), path.join(d, 'phi3_retaining_heads.safetensors'));
  });

  it('reads deflated archives too', () => {
    const d = path.join(MODELS, 'tiny-phi3');
    const f = path.join(tmp, 'deflated.bin');
    writeZip(f, entriesOf(path.join(d, 'phi3_retaining_heads.bin')).map((e) => ({ ...e, deflate: true })));
    expect(new ZipReader(f).entries.get('phi3_retaining_heads/data/0')!.method).toBe(8);
    expectSameAsSafetensors(f, path.join(d, 'phi3_retaining_heads.safetensors'));
  });

  const malicious = (name: string, pkl: Uint8Array, extra: { name: string; data: Uint8Array }[] = []) => {
    const f = path.join(tmp, name);
    writeZip(f, [{ name: 'archive/data.pkl', data: pkl }, ...extra]);
    return f;
  };

  it('refuses GLOBAL os.system without executing anything', () => {
    // cos\nsystem\n(S'touch pwned'\ntR.  — written with BINUNICODE so only the GLOBAL is the problem
    const f = malicious('evil.bin', pk([0x80, 2], 'cos\nsystem\n', [0x28, 0x58, 5, 0, 0, 0], 'touch', [0x74, 0x52, 0x2e]));
    expect(() => openTorchFile(f)).toThrow(PickleError);
    expect(() => openTorchFile(f)).toThrow(/refusing global os\.system/);
    const g = malicious('evil2.bin', pk([0x80, 4, 0x8c, 8], 'builtins', [0x8c, 4], 'eval', [0x93, 0x2e]));
    expect(() => openTorchFile(g)).toThrow(/refusing global builtins\.eval/);
  });

  it('refuses unknown opcodes, truncation and bad structure with clear messages', () => {
    expect(() => openTorchFile(malicious('inst.bin', pk([0x80, 2, 0x69], 'os\nsystem\n')))).toThrow(/unsupported opcode INST/);
    expect(() => openTorchFile(malicious('trunc.bin', pk([0x80, 2, 0x58, 0xff, 0xff, 0, 0], 'abc')))).toThrow(/needs 65535 bytes but only 3 remain/);
    expect(() => openTorchFile(malicious('nodict.bin', pk([0x80, 2, 0x4b, 7, 0x2e])))).toThrow(/root is not a dict of tensors/);
    expect(() => openTorchFile(malicious('getmiss.bin', pk([0x80, 2, 0x68, 3, 0x2e])))).toThrow(/memo key 3 not set/);
    // a storage whose declared size exceeds the archive entry
    const tensor = pk(
      [0x80, 2, 0x7d, 0x58, 1, 0, 0, 0], 'w',
      'ctorch._utils\n_rebuild_tensor_v2\n', [0x28, 0x28, 0x58, 7, 0, 0, 0], 'storage', 'ctorch\nFloatStorage\n',
      [0x58, 1, 0, 0, 0], '0', [0x58, 3, 0, 0, 0], 'cpu', [0x4a, 0, 0, 0, 1, 0x74, 0x51, 0x4b, 0, 0x4b, 4, 0x85, 0x4b, 1, 0x85, 0x89, 0x4e, 0x74, 0x52, 0x73, 0x2e],
    );
    expect(() => openTorchFile(malicious('big.bin', tensor, [{ name: 'archive/data/0', data: new Uint8Array(16) }]))).toThrow(
      /storage 0: 16 bytes in the archive, 16777216 x f32 needs 67108864/,
    );
    expect(() => openTorchFile(malicious('nostorage.bin', tensor))).toThrow(/storage 0 is missing/);
  });

  it('refuses non-contiguous tensors and reads offset views', () => {
    // w = storage(6 floats)[offset 2], shape (2, 2), stride given by the test
    const build = (s0: number, s1: number) => pk(
      [0x80, 2, 0x7d, 0x58, 1, 0, 0, 0], 'w',
      'ctorch._utils\n_rebuild_tensor_v2\n', [0x28, 0x28, 0x58, 7, 0, 0, 0], 'storage', 'ctorch\nFloatStorage\n',
      [0x58, 1, 0, 0, 0], '0', [0x58, 3, 0, 0, 0], 'cpu', [0x4b, 6, 0x74, 0x51, 0x4b, 2, 0x4b, 2, 0x4b, 2, 0x86, 0x4b, s0, 0x4b, s1, 0x86, 0x89, 0x4e, 0x74, 0x52, 0x73, 0x2e],
    );
    const data = new Uint8Array(new Float32Array([0, 1, 2, 3, 4, 5]).buffer);
    const ok = openTorchFile(malicious('view.bin', build(2, 1), [{ name: 'archive/data/0', data }]));
    expect(ok.info('w')).toMatchObject({ dtype: 'f32', shape: [2, 2] });
    expect([...ok.readF32('w')]).toEqual([2, 3, 4, 5]);
    expect(() => openTorchFile(malicious('transposed.bin', build(1, 2), [{ name: 'archive/data/0', data }]))).toThrow(/non-contiguous tensor \(shape \[2,2\], stride \[1,2\]\)/);
  });

  it('refuses a non-zip file and a truncated archive', () => {
    const f = path.join(tmp, 'legacy.bin');
    fs.writeFileSync(f, Buffer.from([0x80, 2, 0x8a, 0x0a]));
    expect(() => openTorchFile(f)).toThrow(/legacy pre-1\.6/);
    const src = fs.readFileSync(path.join(MODELS, 'tiny-phi3/phi3_retaining_heads.bin'));
    fs.writeFileSync(f, src.subarray(0, src.length - 2000));
    expect(() => openTorchFile(f)).toThrow(CheckpointError);
  });
});
