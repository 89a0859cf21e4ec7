/**
 * q8 / q4 weights through compile, bundle and upload: a q4 bundle stores exactly quantize() of the HF tensors (and
 * loading it does not re-quantize: the GPU buffers hold the stored bytes, split into parts with their own scales
 * when over the binding limit); an f16 bundle loaded as q4 quantizes at load to the same bytes; random q8 / q4
 * benchmark weights are valid and sized as stored; the memory planner keeps retaining heads f16.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { weightName as W } from '../ir/config.js';
import { randomWeights } from '../runtime/bench.js';
import { compileModel } from '../runtime/compile.js';
import { GpuRunner } from '../runtime/gpu/runner.js';
import { createGpuContext } from '../runtime/gpu/device.js';
import { f16BitsToNumber } from '../runtime/io/dtype.js';
import { openBundle } from '../runtime/io/bundle.js';
import { openModel, type ModelSource } from '../runtime/model-source.js';
import { planMemory } from '../runtime/plan-memory.js';
import { dequantize, quantize, quantizedBytes, type QuantDtype } from '../runtime/quant.js';
import { isQuantizable, quantDtypeFor, uploadWeights, weightBytes, weightParts, type GpuWeight } from '../runtime/weights.js';
import { TINY_LLAMA } from './paths.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'locret-io-quant-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const bytesOf = (a: ArrayBufferView) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);
const sameBytes = (a: ArrayBufferView, b: ArrayBufferView, what: string) => expect(bytesOf(a).equals(bytesOf(b)), what).toBe(true);
const BACKBONE = ['embed', 'lm_head', 'L0.qkv', 'L3.o', 'L5.gate_up', 'L7.down'];
/** q4 storage of a tiny-llama matrix: the output projection stays q8 */
const qdt = (name: string): QuantDtype => (name === 'lm_head' ? 'q8' : 'q4');

/** What the GPU holds for a quantized weight: quants and (unpadded) scales of every part, concatenated. */
async function readQuantized(r: GpuRunner, w: GpuWeight): Promise<{ quants: Uint32Array; scales: Uint16Array }> {
  const K = w.shape[1]!;
  const per = w.dtype === 'q8' ? 4 : 8;
  const quants: number[] = [];
  const scales: number[] = [];
  for (const p of weightParts(w)) {
    quants.push(...new Uint32Array(await r.read(p.buf, (p.rows * K * 4) / per)));
    scales.push(...new Uint16Array(await r.read(p.scales!, Math.ceil((p.rows * K) / 32 / 2) * 4)).subarray(0, (p.rows * K) / 32));
  }
  return { quants: Uint32Array.from(quants), scales: Uint16Array.from(scales) };
}

describe('q4 bundle', () => {
  const hf = openModel(TINY_LLAMA);
  const bundle = path.join(tmp, 'q4');
  let src: ModelSource;
  beforeAll(() => {
    const notes: string[] = [];
    compileModel(TINY_LLAMA, bundle, { dtype: 'q4', onNote: (n) => notes.push(n) });
    expect(notes, 'every tiny-llama matrix has rows of a multiple of 32').toEqual([]);
    src = openModel(bundle);
  });

  it('stores quantize() of the backbone matrices (dtype in the manifest), norms f32', () => {
    const m = openBundle(bundle, { verify: true }).manifest;
    // the output projection stays q8 under q4 (tiny-llama has its own lm_head)
    for (const t of m.tensors) expect(t.dtype, t.name).toBe(isQuantizable(t.name) ? (t.name === 'lm_head' ? 'q8' : 'q4') : t.shape.length === 2 ? 'f16' : 'f32');
    for (const name of BACKBONE) {
      const t = hf.tensors.get(name)!;
      const [rows, K] = t.shape as [number, number];
      const dt = qdt(name);
      const want = quantize(t.f32(), rows, K, dt);
      const got = src.tensors.get(name)!;
      expect(got.quantized?.dtype).toBe(dt);
      const q = got.quantized!.read();
      sameBytes(q.quants, want.quants, `${name} quants`);
      sameBytes(q.scales, want.scales, `${name} scales`);
      sameBytes(got.f32(), dequantize(want, rows, K, dt), `${name} widened`);
      const e = m.tensors.find((x) => x.name === name)!;
      expect(e.byteLength).toBe(quantizedBytes(dt, rows, K).quants + (rows * K) / 16);
    }
  });

  it('uploads as stored (no re-quantizing), split with per-part scales; an f16 bundle with q4 quantizes at load', async () => {
    // 256 KiB bindings: the 4096×384 q4 embedding (768 KiB of quants) splits into parts
    const r = new GpuRunner(await createGpuContext({ maxBinding: 256 * 1024 }));
    // a view of the bundle whose quantized tensors cannot be widened: the upload must use the stored bytes
    const noWiden = new Map([...src.tensors].map(([n, t]) => [n, t.quantized ? { ...t, f32: () => { throw new Error(`${n} widened`); } } : t]));
    const stored = uploadWeights(r, { ...src, tensors: noWiden }, undefined);
    const f16Bundle = path.join(tmp, 'f16');
    compileModel(TINY_LLAMA, f16Bundle, { dtype: 'f16' });
    const atLoad = uploadWeights(r, openModel(f16Bundle), 'q4');
    expect(stored.get('embed')!.parts!.length).toBeGreaterThan(1);
    for (const name of BACKBONE) {
      const a = stored.get(name)!;
      const b = atLoad.get(name)!;
      expect([a.dtype, b.dtype]).toEqual([qdt(name), qdt(name)]);
      const want = src.tensors.get(name)!.quantized!.read();
      const ga = await readQuantized(r, a);
      const gb = await readQuantized(r, b);
      sameBytes(ga.quants, want.quants, `${name} stored quants`);
      sameBytes(ga.scales, want.scales, `${name} stored scales`);
      // f16 rounding first: the at-load quantization sees the f16 values, so compare with quantize() of those
      const t = openModel(f16Bundle).tensors.get(name)!;
      const w16 = quantize(t.f32(), t.shape[0]!, t.shape[1]!, qdt(name));
      sameBytes(gb.quants, w16.quants, `${name} at-load quants`);
      sameBytes(gb.scales, w16.scales, `${name} at-load scales`);
    }
    expect(stored.get('L0.attn_norm')!.dtype).toBe('f32');
    // an explicit other format dequantizes the stored tensors
    const f32 = uploadWeights(r, src, 'f32');
    expect(f32.get('L0.qkv')!.dtype).toBe('f32');
  });
});

describe('random quantized benchmark weights', () => {
  for (const dtype of ['q8', 'q4'] as QuantDtype[])
    it(`${dtype}: backbone quantized with a constant valid scale, byte counts as stored`, async () => {
      const r = new GpuRunner(await createGpuContext({ maxBinding: 256 * 1024 }));
      const cfg = openModel(TINY_LLAMA).config;
      const w = randomWeights(r, cfg, dtype);
      const names = [...w.keys()];
      for (const [name, x] of w) expect(x.dtype, name).toBe(isQuantizable(name) ? quantDtypeFor(name, dtype, names) : x.shape.length === 2 ? (r.gpu.f16 ? 'f16' : 'f16p') : 'f32');
      if (dtype === 'q4' && w.has(W.lmHead)) expect(w.get(W.lmHead)!.dtype).toBe('q8');
      const embed = w.get(W.embed)!;
      expect(embed.parts?.length ?? 1).toBeGreaterThan(dtype === 'q8' ? 1 : 0);
      const got = await readQuantized(r, embed);
      const s = dtype === 'q8' ? 0.02 / 127 : 0.02 / 7;
      expect(new Set(got.scales).size).toBe(1);
      expect(Math.abs(f16BitsToNumber(got.scales[0]!) - s) / s).toBeLessThan(1e-3);
      expect(new Set(got.quants).size, 'random bits').toBeGreaterThan(got.quants.length * 0.99);
      const K = cfg.hiddenSize;
      const partsBytes = weightParts(embed).reduce((a, p) => a + quantizedBytes(dtype, p.rows, K).quants + quantizedBytes(dtype, p.rows, K).scales, 0);
      expect(weightBytes(embed)).toBe(partsBytes);
      expect(weightBytes(embed)).toBeCloseTo(cfg.vocabSize * K * (dtype === 'q8' ? 8.5 : 4.5) / 8, -2);
    });
});

describe('memory plan', () => {
  it('q8 / q4 count 8.5 / 4.5 bits per backbone weight and keep retaining heads f16', () => {
    const cfg = openModel(TINY_LLAMA).config;
    for (const dtype of ['q8', 'q4'] as const) {
      const p = planMemory(cfg, { context: 1024, dtype });
      const t = (n: string) => p.detail.weights.find((x) => x.name === n)!;
      expect(t('qkv').bytes).toBe((t('qkv').params! * (dtype === 'q8' ? 8.5 : 4.5)) / 8);
      expect(t('retaining_heads_fc2').bytes).toBe(t('retaining_heads_fc2').params! * 2);
      expect(t('retaining_heads_fc1').bytes, 'fc1 is resident only as folded').toBe(0);
      expect(t('retaining_heads_folded').bytes).toBe(cfg.numLayers * 1024 * cfg.hiddenSize * 2);
      expect(t('lm_head').bytes, 'the output projection stays q8').toBe((t('lm_head').params! * 8.5) / 8);
    }
  });
});
