import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CheckpointError } from '../runtime/io/errors.js';
import { openCheckpoint, openSafetensors, writeSafetensors } from '../runtime/io/safetensors.js';

const MODELS = path.resolve(__dirname, '../../shared/models');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'locret-io-st-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** A safetensors file from an arbitrary header object (to craft broken ones). */
function rawFile(name: string, header: object, data: Uint8Array): string {
  const h = new TextEncoder().encode(JSON.stringify(header));
  const out = new Uint8Array(8 + h.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(h.length), true);
  out.set(h, 8);
  out.set(data, 8 + h.length);
  const f = path.join(tmp, name);
  fs.writeFileSync(f, out);
  return f;
}

function copyDir(src: string, name: string): string {
  const dst = path.join(tmp, name);
  fs.cpSync(src, dst, { recursive: true });
  for (const f of fs.readdirSync(dst)) fs.chmodSync(path.join(dst, f), 0o644);
  return dst;
}

describe('safetensors', () => {
  it('reads the tiny-llama checkpoint lazily', () => {
    const s = openSafetensors(path.join(MODELS, 'tiny-llama/model.safetensors'));
    expect(s.names().length).toBe(2 + 8 * 9 + 1);
    const info = s.info('model.layers.0.self_attn.k_proj.weight');
    expect(info).toMatchObject({ dtype: 'bf16', shape: [128, 384] });
    const raw = s.readRaw('model.norm.weight');
    expect(raw.byteLength).toBe(384 * 2);
    const f = s.readF32('model.norm.weight');
    const u16 = new Uint16Array(raw.buffer);
    for (let i = 0; i < 384; i++) expect(new Uint32Array(f.buffer)[i]).toBe(u16[i] << 16);
  });

  it('round-trips writeSafetensors', () => {
    const f = path.join(tmp, 'rt.safetensors');
    const data = new Uint8Array(new Float32Array([1, 2, 3, 4, 5, 6]).buffer);
    writeSafetensors(f, [{ name: 'a', dtype: 'f32', shape: [2, 3], data }, { name: 'b', dtype: 'f16', shape: [1], data: new Uint8Array([0, 0x3c]) }]);
    const s = openSafetensors(f);
    expect([...s.readF32('a')]).toEqual([1, 2, 3, 4, 5, 6]);
    expect([...s.readF32('b')]).toEqual([1]);
  });

  it('reads the sharded fp16 tiny-qwen2 checkpoint through its index', () => {
    const dir = path.join(MODELS, 'tiny-qwen2');
    const s = openCheckpoint(dir);
    const index = JSON.parse(fs.readFileSync(path.join(dir, 'model.safetensors.index.json'), 'utf8'));
    expect([...s.names()].sort()).toEqual(Object.keys(index.weight_map).sort());
    expect(s.info('model.layers.0.self_attn.q_proj.bias')).toMatchObject({ dtype: 'f16', shape: [256] });
    expect(s.info('model.layers.0.self_attn.q_proj.bias').file).toContain('model-00002-of-00005');
    expect(s.readF32('model.embed_tokens.weight').length).toBe(4096 * 256);
  });

  it('names file and tensor when the file is truncated', () => {
    const src = fs.readFileSync(path.join(MODELS, 'tiny-llama/model.safetensors'));
    const f = path.join(tmp, 'trunc.safetensors');
    fs.writeFileSync(f, src.subarray(0, src.length - 1000));
    expect(() => openSafetensors(f)).toThrow(CheckpointError);
    expect(() => openSafetensors(f)).toThrow(/trunc\.safetensors: tensor "[^"]+": data .*runs past the end of the file/);
    fs.writeFileSync(f, src.subarray(0, 5000)); // cut inside the header
    expect(() => openSafetensors(f)).toThrow(/header of 8200 bytes runs past the end/);
    fs.writeFileSync(f, src.subarray(0, 4));
    expect(() => openSafetensors(f)).toThrow(/too short/);
  });

  it('refuses a bogus header size, bad JSON and inconsistent offsets', () => {
    const f = path.join(tmp, 'bogus.safetensors');
    const b = new Uint8Array(64);
    new DataView(b.buffer).setBigUint64(0, 0xffffffffffn, true);
    fs.writeFileSync(f, b);
    expect(() => openSafetensors(f)).toThrow(/bogus\.safetensors: header size \d+ is bogus/);
    const j = rawFile('badjson.safetensors', {}, new Uint8Array(0));
    fs.writeFileSync(j, Buffer.concat([fs.readFileSync(j).subarray(0, 8), Buffer.from('{x')]));
    expect(() => openSafetensors(j)).toThrow(/not valid JSON/);
    const g = rawFile('len.safetensors', { w: { dtype: 'F32', shape: [3], data_offsets: [0, 8] } }, new Uint8Array(8));
    expect(() => openSafetensors(g)).toThrow(/tensor "w": 8 data bytes but shape \[3\] of F32 needs 12/);
  });

  it('reports an unsupported dtype when the tensor is used, naming it', () => {
    const f = rawFile('i64.safetensors', {
      pos: { dtype: 'I64', shape: [2], data_offsets: [0, 16] },
      w: { dtype: 'F32', shape: [1], data_offsets: [16, 20] },
    }, new Uint8Array(20));
    const s = openSafetensors(f);
    expect(s.has('pos')).toBe(true);
    expect([...s.readF32('w')]).toEqual([0]);
    expect(() => s.info('pos')).toThrow(/i64\.safetensors: tensor "pos" has unsupported dtype I64/);
  });

  it('names file and tensor for a missing tensor', () => {
    const s = openSafetensors(path.join(MODELS, 'tiny-phi3/model.safetensors'));
    expect(() => s.readRaw('model.nope.weight')).toThrow(/tiny-phi3\/model\.safetensors: no tensor named "model\.nope\.weight"/);
    const c = openCheckpoint(path.join(MODELS, 'tiny-qwen2'));
    expect(() => c.info('lm_head.weight')).toThrow(/model\.safetensors\.index\.json: no tensor named "lm_head\.weight"/);
  });

  it('refuses a shard index pointing at a missing or wrong shard', () => {
    const dir = copyDir(path.join(MODELS, 'tiny-qwen2'), 'qwen-missing');
    fs.rmSync(path.join(dir, 'model-00003-of-00005.safetensors'));
    expect(() => openCheckpoint(dir)).toThrow(/tensor "model\.layers\.\d\.[^"]+" maps to shard model-00003-of-00005\.safetensors, which is missing/);

    const dir2 = copyDir(path.join(MODELS, 'tiny-qwen2'), 'qwen-wrong');
    const ix = path.join(dir2, 'model.safetensors.index.json');
    const j = JSON.parse(fs.readFileSync(ix, 'utf8'));
    j.weight_map['model.norm.weight'] = 'model-00001-of-00005.safetensors';
    fs.writeFileSync(ix, JSON.stringify(j));
    expect(() => openCheckpoint(dir2)).toThrow(/"model\.norm\.weight" is listed in shard model-00001-of-00005\.safetensors but that file does not contain it/);

    j.weight_map['model.norm.weight'] = '../escape.safetensors';
    fs.writeFileSync(ix, JSON.stringify(j));
    expect(() => openCheckpoint(dir2)).toThrow(/bad shard name/);
    fs.writeFileSync(ix, '{"metadata": {}}');
    expect(() => openCheckpoint(dir2)).toThrow(/no "weight_map"/);
  });

  it('says what is missing in an empty directory', () => {
    expect(() => openCheckpoint(tmp)).toThrow(/no model\.safetensors/);
  });
});
