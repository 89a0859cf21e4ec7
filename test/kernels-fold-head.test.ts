/**
 * The retaining-head fold (compiler/kernels/fold-head.ts: fc1 · Wqkv and fc1 · b, once per layer at load) against a
 * CPU reference in f64 over the stored values: every qkv weight dtype (q8 / q4 dequantized as the kernel reads
 * them), f32 / f16 / packed-f16 fc1, with and without a bias, sizes that fill no tile evenly.
 */
import { describe, expect, it } from 'vitest';
import { foldHead, type FoldOpts } from '../compiler/kernels/fold-head.js';
import type { GpuRunner } from '../runtime/gpu/runner.js';
import { expectClose, f16BitsToF32, gpuRunner, rand, weightsFor } from './gpu-harness.js';
import { quantWeights } from './quant-harness.js';

function foldRef(fc1: Float32Array, w: Float32Array, bias: Float32Array | undefined, R: number, C: number, Hd: number) {
  const out = new Float32Array(R * Hd);
  const outBias = new Float32Array(R);
  for (let j = 0; j < R; j++) {
    for (let h = 0; h < Hd; h++) {
      let s = 0;
      for (let c = 0; c < C; c++) s += fc1[j * C + c]! * w[c * Hd + h]!;
      out[j * Hd + h] = s;
    }
    if (bias) {
      let s = 0;
      for (let c = 0; c < C; c++) s += fc1[j * C + c]! * bias[c]!;
      outBias[j] = s;
    }
  }
  return { out, outBias };
}

async function check(r: GpuRunner, o: FoldOpts, R: number, C: number, Hd: number, seed: number): Promise<void> {
  const fc1 = weightsFor(o.fc1Dtype, rand(R * C, seed, 0.5));
  const raw = rand(C * Hd, seed + 1, 0.5);
  const q = o.wDtype === 'q8' || o.wDtype === 'q4' ? quantWeights(o.wDtype, raw, C, Hd) : undefined;
  const w = q ? { gpu: q.q.quants, ref: q.ref } : weightsFor(o.wDtype, raw);
  const bias = o.bias ? rand(C, seed + 2) : undefined;
  const half = o.outDtype === 'f16';
  const b = {
    fc1: r.upload(fc1.gpu, 'fc1'),
    w: r.upload(w.gpu, 'w'),
    wScales: q ? r.upload(q.q.scales, 'w_s') : undefined,
    bias: bias ? r.upload(bias, 'bias') : undefined,
    out: r.upload(half ? new Uint16Array(R * Hd).fill(0x7e00) : new Float32Array(R * Hd).fill(NaN), 'out'),
    outBias: bias ? r.upload(new Float32Array(R).fill(NaN), 'outBias') : undefined,
  };
  const d = foldHead(o, { R, C, Hd }, b);
  expect(d.kernel.name).toContain('fold_head');
  r.run([d]);
  const got = half ? Float32Array.from(new Uint16Array(await r.read(b.out, R * Hd * 2)), f16BitsToF32) : await r.readF32(b.out, R * Hd);
  const want = foldRef(fc1.ref, w.ref, bias, R, C, Hd);
  const what = `fc1 ${o.fc1Dtype}, w ${o.wDtype}, out ${o.outDtype}${o.bias ? ', bias' : ''}, R=${R} C=${C} Hd=${Hd}`;
  // f32 sums of C products (f32: 1e-5 of the largest value); an f16 output adds its rounding, 2^-11 of itself
  expectClose(got, want.out, half ? 1.5e-3 : 1e-5, what, 1e-9);
  if (b.outBias) expectClose(await r.readF32(b.outBias, R), want.outBias, 1e-5, `${what}: bias`, 1e-9);
  for (const x of Object.values(b)) if (x) r.destroy(x);
}

describe('foldHead (shader-f16 device)', () => {
  it('f16 fc1 and qkv weights, f16 output, with and without bias, partial tiles and slabs', async () => {
    const r = await gpuRunner();
    await check(r, { fc1Dtype: 'f16', wDtype: 'f16', outDtype: 'f16', bias: false }, 70, 100, 45, 1);
    // the bias column (Hd) falls on a tile of its own: Hd = 64
    await check(r, { fc1Dtype: 'f16', wDtype: 'f16', outDtype: 'f16', bias: true }, 65, 37, 64, 2);
  });
  it('f32 fc1 and weights, f32 output, bias', async () => {
    const r = await gpuRunner();
    await check(r, { fc1Dtype: 'f32', wDtype: 'f32', outDtype: 'f32', bias: true }, 33, 130, 70, 3);
  });
  it('q8 and q4 qkv weights dequantized as read (groups of 32 along the hidden dim)', async () => {
    const r = await gpuRunner();
    await check(r, { fc1Dtype: 'f16', wDtype: 'q8', outDtype: 'f16', bias: true }, 40, 48, 96, 4);
    await check(r, { fc1Dtype: 'f16', wDtype: 'q4', outDtype: 'f16', bias: false }, 64, 80, 160, 5);
  });
  it('rejects mismatched buffers and an f16 output from f32 fc1', () => {
    const stub = {} as GPUBuffer;
    expect(() => foldHead({ fc1Dtype: 'f16', wDtype: 'f16', outDtype: 'f16', bias: true }, { R: 4, C: 4, Hd: 4 }, { fc1: stub, w: stub, out: stub })).toThrow(/bias/);
    expect(() => foldHead({ fc1Dtype: 'f16', wDtype: 'q4', outDtype: 'f16', bias: false }, { R: 4, C: 4, Hd: 32 }, { fc1: stub, w: stub, out: stub })).toThrow(/scales/);
    expect(() => foldHead({ fc1Dtype: 'f32', wDtype: 'f16', outDtype: 'f16', bias: false }, { R: 4, C: 4, Hd: 4 }, { fc1: stub, w: stub, out: stub })).toThrow(/f16 output/);
  });
});

describe('foldHead f16p (device without shader-f16)', () => {
  it('packed f16 fc1 and weights, f32 output, bias', async () => {
    const r = await gpuRunner({ disableF16: true });
    await check(r, { fc1Dtype: 'f16p', wDtype: 'f16p', outDtype: 'f32', bias: true }, 50, 66, 38, 6);
  });
});
