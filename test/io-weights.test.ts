import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { qkvWidth } from '../ir/config.js';
import { CheckpointError } from '../runtime/io/errors.js';
import { readModelConfig } from '../runtime/io/hf-config.js';
import { openCheckpoint, openSafetensors, writeSafetensors } from '../runtime/io/safetensors.js';
import { canonicalWeights, loadRetainingHeads } from '../runtime/io/weight-map.js';

const MODELS = path.resolve(__dirname, '../../shared/models');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'locret-io-wm-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const llamaDir = path.join(MODELS, 'tiny-llama');

/** Bitwise equality of two float arrays (toEqual on 10^5+ elements is very slow). */
const bits = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);
const same = (a: Float32Array, b: Float32Array) => expect(a.length === b.length && bits(a).equals(bits(b))).toBe(true);

/** Copy of tiny-llama's checkpoint with one tensor dropped or replaced. */
function editedLlama(name: string, edit: (t: { name: string; dtype: 'bf16'; shape: number[]; data: Uint8Array }[]) => void): string {
  const s = openSafetensors(path.join(llamaDir, 'model.safetensors'));
  const ts = s.names().map((n) => ({ name: n, dtype: 'bf16' as const, shape: [...s.info(n).shape], data: s.readRaw(n) }));
  edit(ts);
  const dir = path.join(tmp, name);
  fs.mkdirSync(dir);
  writeSafetensors(path.join(dir, 'model.safetensors'), ts);
  return dir;
}

describe('weight-map', () => {
  it('llama: q/k/v and gate/up rows are concatenated in order', () => {
    const cfg = readModelConfig(llamaDir);
    const store = openCheckpoint(llamaDir);
    const w = canonicalWeights(cfg, store);
    expect(w.size).toBe(1 + 8 * 6 + 2);
    const qkv = w.get('L3.qkv')!;
    expect(qkv.shape).toEqual([qkvWidth(cfg), 384]);
    expect(qkv.sources).toEqual(['q', 'k', 'v'].map((x) => `model.layers.3.self_attn.${x}_proj.weight`));
    const data = qkv.load();
    const q = store.readF32('model.layers.3.self_attn.q_proj.weight');
    const k = store.readF32('model.layers.3.self_attn.k_proj.weight');
    const v = store.readF32('model.layers.3.self_attn.v_proj.weight');
    same(data.subarray(0, q.length), q);
    same(data.subarray(q.length, q.length + k.length), k);
    same(data.subarray(q.length + k.length), v);
    const gu = w.get('L0.gate_up')!.load();
    same(gu.subarray(0, 1024 * 384), store.readF32('model.layers.0.mlp.gate_proj.weight'));
    same(gu.subarray(1024 * 384), store.readF32('model.layers.0.mlp.up_proj.weight'));
    expect(w.get('lm_head')!.shape).toEqual([4096, 384]);
    expect(w.has('L0.qkv_bias')).toBe(false);
  });

  it('phi3: fused tensors pass through unchanged', () => {
    const dir = path.join(MODELS, 'tiny-phi3');
    const cfg = readModelConfig(dir);
    const store = openCheckpoint(dir);
    const w = canonicalWeights(cfg, store);
    expect(w.size).toBe(1 + 2 * 6 + 2);
    expect(w.get('L1.qkv')!.sources).toEqual(['model.layers.1.self_attn.qkv_proj.weight']);
    expect(w.get('L1.gate_up')!.shape).toEqual([1024, 256]);
    same(w.get('L1.gate_up')!.load(), store.readF32('model.layers.1.mlp.gate_up_proj.weight'));
  });

  it('qwen2: biases concatenated, lm_head absent when tied', () => {
    const dir = path.join(MODELS, 'tiny-qwen2');
    const cfg = readModelConfig(dir);
    const store = openCheckpoint(dir);
    const w = canonicalWeights(cfg, store);
    expect(w.has('lm_head')).toBe(false);
    expect(w.size).toBe(1 + 3 * 7 + 1);
    const b = w.get('L2.qkv_bias')!;
    expect(b.shape).toEqual([(8 + 4) * 32]);
    expect(b.sourceDtype).toBe('f16');
    const data = b.load();
    same(data.subarray(0, 256), store.readF32('model.layers.2.self_attn.q_proj.bias'));
    same(data.subarray(256 + 64), store.readF32('model.layers.2.self_attn.v_proj.bias'));
  });

  it('wrong shape names tensor, file, expected and actual', () => {
    const cfg = { ...readModelConfig(llamaDir), intermediateSize: 1000 };
    expect(() => canonicalWeights(cfg, openCheckpoint(llamaDir))).toThrow(
      /model\.safetensors: tensor "model\.layers\.0\.mlp\.down_proj\.weight" has shape \[384,1024\], expected \[384,1000\]/,
    );
    const dir = editedLlama('transposed', (ts) => {
      const t = ts.find((x) => x.name === 'model.layers.5.self_attn.k_proj.weight')!;
      t.shape = [384, 128];
    });
    expect(() => canonicalWeights(readModelConfig(llamaDir), openCheckpoint(dir))).toThrow(CheckpointError);
    expect(() => canonicalWeights(readModelConfig(llamaDir), openCheckpoint(dir))).toThrow(/"model\.layers\.5\.self_attn\.k_proj\.weight" has shape \[384,128\], expected \[128,384\]/);
  });

  it('missing tensor / extra layer / stray bias', () => {
    const cfg = readModelConfig(llamaDir);
    const d1 = editedLlama('missing', (ts) => ts.splice(ts.findIndex((t) => t.name === 'model.layers.7.mlp.up_proj.weight'), 1));
    expect(() => canonicalWeights(cfg, openCheckpoint(d1))).toThrow(/missing\/model\.safetensors: no tensor "model\.layers\.7\.mlp\.up_proj\.weight"/);
    const d2 = editedLlama('nohead', (ts) => ts.splice(ts.findIndex((t) => t.name === 'lm_head.weight'), 1));
    expect(() => canonicalWeights(cfg, openCheckpoint(d2))).toThrow(/no tensor "lm_head\.weight" \(untied lm_head\)/);
    expect(canonicalWeights({ ...cfg, tieWordEmbeddings: true }, openCheckpoint(d2)).has('lm_head')).toBe(false);
    expect(() => canonicalWeights({ ...cfg, numLayers: 7 }, openCheckpoint(llamaDir))).toThrow(/more layers than num_hidden_layers 7/);
    const d3 = editedLlama('bias', (ts) => ts.push({ name: 'model.layers.0.self_attn.o_proj.bias', dtype: 'bf16', shape: [384], data: new Uint8Array(768) }));
    expect(() => canonicalWeights(cfg, openCheckpoint(d3))).toThrow(/o_proj\.bias" but the config implies no such bias/);
  });

  it('retaining heads from .safetensors and .bin agree and have the right shapes', () => {
    const cfg = readModelConfig(llamaDir);
    const a = loadRetainingHeads(path.join(llamaDir, 'retaining_heads.safetensors'), cfg);
    const b = loadRetainingHeads(path.join(llamaDir, 'retaining_heads.bin'), cfg);
    expect(a.size).toBe(16);
    expect(a.get('L7.fc1')!.shape).toEqual([1024, 640]);
    expect(a.get('L7.fc2')!.shape).toEqual([2, 1024]);
    for (const [k, t] of a) same(b.get(k)!.load(), t.load());

    const phiDir = path.join(MODELS, 'tiny-phi3');
    const phi = loadRetainingHeads(path.join(phiDir, 'phi3_retaining_heads.bin'), readModelConfig(phiDir));
    expect(phi.get('L1.fc2')!.shape).toEqual([4, 1024]);
    // heads for another model: shape mismatch is reported with the official name
    expect(() => loadRetainingHeads(path.join(phiDir, 'phi3_retaining_heads.safetensors'), cfg)).toThrow(
      /"model\.layers\.0\.self_attn\.fc1\.weight" has shape \[1024,768\], expected \[1024,640\]/,
    );
  });

  it('retaining heads: prefix variants accepted, missing layers refused', () => {
    const cfg = readModelConfig(llamaDir);
    const s = openSafetensors(path.join(llamaDir, 'retaining_heads.safetensors'));
    const f = path.join(tmp, 'prefixed.safetensors');
    writeSafetensors(f, s.names().map((n) => ({ name: `base_model.model.${n}`, dtype: 'bf16' as const, shape: s.info(n).shape, data: s.readRaw(n) })));
    expect(loadRetainingHeads(f, cfg).get('L3.fc1')!.sources[0]).toBe('base_model.model.model.layers.3.self_attn.fc1.weight');
    const g = path.join(tmp, 'partial.safetensors');
    writeSafetensors(g, s.names().filter((n) => !n.includes('layers.6.')).map((n) => ({ name: n, dtype: 'bf16' as const, shape: s.info(n).shape, data: s.readRaw(n) })));
    expect(() => loadRetainingHeads(g, cfg)).toThrow(/no retaining head tensor "model\.layers\.6\.self_attn\.fc1\.weight" for layer 6/);
  });
});
