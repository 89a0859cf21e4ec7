import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { openBundle, verifyBundle, writeBundle, type TensorInput } from '../runtime/io/bundle.js';
import { f16ToF32, f32ToF16 } from '../runtime/io/dtype.js';
import { BundleError } from '../runtime/io/errors.js';
import { readModelConfig } from '../runtime/io/hf-config.js';
import { openCheckpoint } from '../runtime/io/safetensors.js';
import { TextTokenizer } from '../runtime/io/tokenizer.js';
import { canonicalWeights, loadRetainingHeads } from '../runtime/io/weight-map.js';

const MODELS = path.resolve(__dirname, '../../shared/models');
const llamaDir = path.join(MODELS, 'tiny-llama');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'locret-io-bundle-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const bits = (a: ArrayBufferView) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);

describe('bundle', () => {
  const cfg = readModelConfig(llamaDir);
  const weights = canonicalWeights(cfg, openCheckpoint(llamaDir));
  const heads = loadRetainingHeads(path.join(llamaDir, 'retaining_heads.bin'), cfg);
  const all = [...weights.values(), ...heads.values()];
  const inputs = (dtype: 'f32' | 'f16'): Iterable<TensorInput> =>
    (function* () {
      for (const t of all) yield { name: t.name, shape: t.shape, dtype, data: t.load() };
    })();

  it('round-trips f32 and f16 bundles with tokenizer and heads', () => {
    for (const dtype of ['f32', 'f16'] as const) {
      const out = path.join(tmp, `rt-${dtype}`);
      const progress: string[] = [];
      const m = writeBundle(out, { config: cfg, tensors: inputs(dtype), tokenizerDir: llamaDir, onProgress: (p) => progress.push(p.name) });
      expect(progress.length).toBe(all.length);
      expect(m.weightDtype).toBe(dtype);
      for (const t of m.tensors) expect(t.offset % 256).toBe(0);
      const b = openBundle(out, { verify: true });
      expect(b.config).toEqual(cfg);
      expect(b.heads).toBe(true);
      expect(b.generation).toMatchObject({ eos_token_id: 1 });
      expect(b.tokenizerDir).toBe(out);
      expect(TextTokenizer.fromDir(b.tokenizerDir!).encode('The pass key')[0]).toBe(0);
      expect([...b.store.names()]).toEqual(all.map((t) => t.name));
      for (const t of all) {
        expect(b.store.info(t.name)).toMatchObject({ dtype, shape: t.shape });
        const want = dtype === 'f32' ? t.load() : f16ToF32(f32ToF16(t.load()));
        expect(bits(b.store.readF32(t.name)).equals(bits(want))).toBe(true);
      }
      verifyBundle(out);
    }
  });

  it('splits blobs and aligns; accepts pre-rounded f16 bits', () => {
    const out = path.join(tmp, 'small');
    const a = new Float32Array(3).fill(1.5);
    const h = f32ToF16(new Float32Array([1, 2, 3, 4, 5]));
    const m = writeBundle(out, {
      config: cfg,
      tensors: [
        { name: 'a', shape: [3], dtype: 'f32', data: a },
        { name: 'h', shape: [5], dtype: 'f16', data: h },
      ],
    });
    expect(m.weightDtype).toBe('mixed');
    expect(m.tensors[1]).toMatchObject({ file: 'weights-000.bin', offset: 256, byteLength: 10 });
    expect(m.tokenizer).toBe(false);
    const b = openBundle(out, { verify: true });
    expect([...b.store.readF32('h')]).toEqual([1, 2, 3, 4, 5]);
    expect(b.tokenizerDir).toBeNull();
    expect(() => b.store.readRaw('nope')).toThrow(/bundle has no tensor "nope"/);
    const split = writeBundle(path.join(tmp, 'split'), {
      config: cfg,
      maxBlobBytes: 1000,
      tensors: [100, 100, 600, 2000, 10].map((n, i) => ({ name: `t${i}`, shape: [n], dtype: 'f16' as const, data: new Float32Array(n).fill(i) })),
    });
    expect(split.tensors.map((t) => [t.file, t.offset])).toEqual([
      // t2 would end past 1000 bytes → new blob; t3 alone exceeds the cap → a blob of its own; t4 cannot follow it
      ['weights-000.bin', 0], ['weights-000.bin', 256], ['weights-001.bin', 0], ['weights-002.bin', 0], ['weights-003.bin', 0],
    ]);
    const sb = openBundle(path.join(tmp, 'split'), { verify: true });
    expect([...sb.store.readF32('t3')].every((x) => x === 3)).toBe(true);
    expect(() => writeBundle(path.join(tmp, 'bad'), { config: cfg, tensors: [{ name: 'x', shape: [4], dtype: 'f32', data: a }] })).toThrow(/3 values for shape \[4\]/);
    expect(() => writeBundle(path.join(tmp, 'dup'), { config: cfg, tensors: [{ name: 'a', shape: [3], dtype: 'f32', data: a }, { name: 'a', shape: [3], dtype: 'f32', data: a }] })).toThrow(/duplicate tensor "a"/);
  });

  it('detects corruption and truncation, naming the tensor', () => {
    const src = path.join(tmp, 'rt-f16');
    const out = path.join(tmp, 'corrupt');
    fs.cpSync(src, out, { recursive: true });
    const m = openBundle(out, { verify: false }).manifest;
    const victim = m.tensors.find((t) => t.name === 'L2.qkv')!;
    const blob = path.join(out, victim.file);
    const fd = fs.openSync(blob, 'r+');
    fs.writeSync(fd, new Uint8Array([0xab, 0xcd]), 0, 2, victim.offset + 100);
    fs.closeSync(fd);
    const b = openBundle(out, { verify: true });
    expect(() => b.store.readRaw('L2.qkv')).toThrow(BundleError);
    expect(() => b.store.readRaw('L2.qkv')).toThrow(/tensor "L2\.qkv" is corrupt/);
    expect(b.store.readRaw('L2.o').byteLength).toBeGreaterThan(0);
    expect(() => verifyBundle(out)).toThrow(/"L2\.qkv" is corrupt/);
    // without verify the (corrupt) bytes are returned as is
    expect(openBundle(out, { verify: false }).store.readRaw('L2.qkv').byteLength).toBe(victim.byteLength);

    const last = m.tensors[m.tensors.length - 1];
    const lastBlob = path.join(out, last.file);
    fs.truncateSync(lastBlob, last.offset + 10);
    expect(() => openBundle(out, { verify: false })).toThrow(new RegExp(`truncated: tensor "${last.name.replace('.', '\\.')}"`));
    fs.rmSync(lastBlob);
    expect(() => openBundle(out, { verify: false })).toThrow(/missing \(holds tensor/);

    const mf = path.join(out, 'bundle.json');
    const j = JSON.parse(fs.readFileSync(mf, 'utf8'));
    fs.writeFileSync(mf, JSON.stringify({ ...j, version: 99 }));
    expect(() => openBundle(out, { verify: false })).toThrow(/format version 99/);
    fs.rmSync(mf);
    expect(() => openBundle(out, { verify: false })).toThrow(/no bundle\.json/);
  });
});
