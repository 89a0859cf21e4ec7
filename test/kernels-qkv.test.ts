/**
 * Fused QKV projection + RoPE + cache write vs the CPU reference (rmsnorm → matmul → rotate q, scatter k/v/pos),
 * on both matmul paths, every weight dtype, bias on/off, f32/f16 caches, partial rotary, and pre on/off, keys
 * written before RoPE or rotated (decode over a rotated cache). Cache slots outside [slot0, slot0 + T) must keep
 * their previous contents.
 */
import { describe, expect, it } from 'vitest';
import { qkvRope, type QkvOpts } from '../compiler/kernels/qkv-rope.js';
import type { GpuRunner } from '../runtime/gpu/runner.js';
import { ropeTable } from '../runtime/rope.js';
import { expectClose, f16BitsToF32, gpuRunner, rand, weightsFor } from './gpu-harness.js';
import { f32ToF16Bits } from './ref/f16.js';
import { qkvRopeRef } from './ref/gpu-ops.js';
import { withEnv } from './with-env.js';

interface Case {
  o: QkvOpts;
  T: number;
  K: number;
  slot0: number;
  pos0: number;
  capacity: number;
}

const roundF16 = (x: Float32Array) => Float32Array.from(f32ToF16Bits(x), f16BitsToF32);

async function check(r: GpuRunner, c: Case, seed: number): Promise<void> {
  const { o, T, K, slot0, pos0, capacity } = c;
  const { numHeads: H, numKvHeads: KV, headDim: D } = o;
  const Wd = (H + 2 * KV) * D;
  const eps = 1e-5;
  const x = rand(T * K, seed, 2);
  const normW = rand(K, seed + 1, 0.5).map((v) => 1 + v);
  const w = weightsFor(o.wdtype, rand(Wd * K, seed + 2, 0.5));
  const bias = rand(Wd, seed + 3);
  const table = ropeTable({ kind: 'default', theta: 10000, rotaryDim: o.rotaryDim }, pos0 + T);
  // previous cache contents, already representable in the cache dtype so untouched slots compare exactly
  const cacheInit = (s: number) => (o.cacheDtype === 'f16' ? roundF16(rand(KV * capacity * D, s)) : rand(KV * capacity * D, s));
  const k0 = cacheInit(seed + 4);
  const v0 = cacheInit(seed + 5);
  const kpos0 = new Uint32Array(KV * capacity).fill(0xdead);
  const cacheGpu = (a: Float32Array) => (o.cacheDtype === 'f16' ? f32ToF16Bits(a) : a);
  const b = {
    x: r.upload(x, 'x'),
    normW: r.upload(normW, 'normW'),
    w: r.upload(w.gpu, 'w'),
    bias: o.bias ? r.upload(bias, 'bias') : undefined,
    rope: r.upload(table, 'rope'),
    q: r.upload(new Float32Array(T * H * D).fill(NaN), 'q'),
    kCache: r.upload(cacheGpu(k0), 'k'),
    vCache: r.upload(cacheGpu(v0), 'v'),
    kpos: r.upload(kpos0, 'kpos'),
    pre: o.writePre ? r.upload(o.halfPre ? new Uint16Array(T * Wd).fill(0x7e00) : new Float32Array(T * Wd).fill(NaN), 'pre') : undefined,
  };
  r.run([qkvRope(o, { T, K, eps, slot0, pos0, capacity }, b)]);

  const kWant = Float32Array.from(k0);
  const vWant = Float32Array.from(v0);
  const kposWant = Uint32Array.from(kpos0);
  const want = qkvRopeRef(o, { T, K, eps, slot0, pos0, capacity }, x, normW, w.ref, o.bias ? bias : undefined, table, kWant, vWant, kposWant);
  const readCache = async (buf: GPUBuffer) =>
    o.cacheDtype === 'f16'
      ? Float32Array.from(new Uint16Array(await r.read(buf, KV * capacity * D * 2)), f16BitsToF32)
      : r.readF32(buf, KV * capacity * D);
  const what = `${o.wdtype} bias=${o.bias} cache=${o.cacheDtype}${o.rotateKeys ? ' keys rotated' : ''} H=${H} KV=${KV} D=${D} rot=${o.rotaryDim} T=${T} K=${K}`;
  const tol = o.wdtype === 'f32' ? 1e-4 : 1e-3;
  const cacheTol = o.cacheDtype === 'f16' ? 2e-3 : tol;
  expectClose(await r.readF32(b.q, T * H * D), want.q, tol, `${what}: q`);
  const cw = (a: Float32Array) => (o.cacheDtype === 'f16' ? roundF16(a) : a);
  expectClose(await readCache(b.kCache), cw(kWant), cacheTol, `${what}: kCache`);
  expectClose(await readCache(b.vCache), cw(vWant), cacheTol, `${what}: vCache`);
  expect(Array.from(await r.readU32(b.kpos, KV * capacity)), `${what}: kpos`).toEqual(Array.from(kposWant));
  // f16 pre: the reference rounded to f16 (half an f16 ulp more than the f32 tolerance allows)
  if (b.pre && o.halfPre) expectClose(Float32Array.from(new Uint16Array(await r.read(b.pre, T * Wd * 2)), f16BitsToF32), roundF16(want.pre), 2e-3, `${what}: pre f16`);
  else if (b.pre) expectClose(await r.readF32(b.pre, T * Wd), want.pre, tol, `${what}: pre`);
  for (const buf of Object.values(b)) if (buf) r.destroy(buf);
}

const base: QkvOpts = {
  wdtype: 'f32',
  bias: false,
  cacheDtype: 'f32',
  numHeads: 4,
  numKvHeads: 2,
  headDim: 16,
  rotaryDim: 16,
  writePre: true,
};

describe('qkvRope (shader-f16 device)', () => {
  it('f32 weights, f32 cache, pre: gemv and tiled', async () => {
    const r = await gpuRunner();
    await check(r, { o: base, T: 3, K: 64, slot0: 5, pos0: 7, capacity: 40 }, 1);
    await check(r, { o: base, T: 67, K: 64, slot0: 2, pos0: 100, capacity: 80 }, 2);
  });
  it('f16 weights + bias, f16 cache, partial rotary, no pre, GQA 6:1', async () => {
    const r = await gpuRunner();
    const o: QkvOpts = { ...base, wdtype: 'f16', bias: true, cacheDtype: 'f16', numHeads: 6, numKvHeads: 1, headDim: 24, rotaryDim: 8, writePre: false };
    await check(r, { o, T: 1, K: 67, slot0: 9, pos0: 3, capacity: 12 }, 3);
    await check(r, { o, T: 129, K: 67, slot0: 0, pos0: 0, capacity: 130 }, 4);
  });
  it('f32 weights + bias, f16 cache, pre, head_dim 64', async () => {
    const r = await gpuRunner();
    const o: QkvOpts = { ...base, bias: true, cacheDtype: 'f16', numHeads: 2, numKvHeads: 1, headDim: 64, rotaryDim: 64 };
    await check(r, { o, T: 8, K: 130, slot0: 1, pos0: 1, capacity: 9 }, 5);
    await check(r, { o, T: 9, K: 130, slot0: 0, pos0: 20, capacity: 16 }, 6);
  });
  it('keys written rotated: f32 and f16 caches, partial rotary, decode and prefill paths', async () => {
    const r = await gpuRunner();
    await check(r, { o: { ...base, rotateKeys: true }, T: 1, K: 64, slot0: 5, pos0: 7, capacity: 40 }, 9);
    const o: QkvOpts = { ...base, wdtype: 'f16', bias: true, cacheDtype: 'f16', numHeads: 6, numKvHeads: 2, headDim: 24, rotaryDim: 8, writePre: false, rotateKeys: true };
    await check(r, { o, T: 2, K: 67, slot0: 9, pos0: 30, capacity: 12 }, 10);
    await check(r, { o, T: 33, K: 67, slot0: 0, pos0: 3, capacity: 40 }, 11);
  });
  it('pre-RoPE rows written as f16 (halfPre, for a retaining head on the tensor cores): gemv and tiled, partial rotary', async () => {
    const r = await gpuRunner();
    const o: QkvOpts = { ...base, wdtype: 'f16', bias: true, cacheDtype: 'f16', numHeads: 6, numKvHeads: 2, headDim: 24, rotaryDim: 8, halfPre: true };
    await check(r, { o, T: 2, K: 67, slot0: 3, pos0: 5, capacity: 8 }, 14);
    await check(r, { o, T: 70, K: 68, slot0: 1, pos0: 4, capacity: 80 }, 15);
  });
  it('wide FMA tiles (mm-tiled-wide.ts, forced): f16 weights + bias, pre, partial tiles, keys rotated or not', async () => {
    const r = await gpuRunner();
    const o: QkvOpts = { ...base, wdtype: 'f16', bias: true, cacheDtype: 'f16', numHeads: 6, numKvHeads: 2, headDim: 24, rotaryDim: 8 };
    await withEnv({ LOCRET_TILED: 'wide' }, async () => {
      await check(r, { o, T: 130, K: 68, slot0: 1, pos0: 4, capacity: 140 }, 12);
      await check(r, { o: { ...o, rotateKeys: true, writePre: false }, T: 129, K: 36, slot0: 0, pos0: 9, capacity: 130 }, 13);
    });
  });
});

describe('qkvRope f16p (device without shader-f16)', () => {
  it('packed weights, with and without bias, f32 cache', async () => {
    const r = await gpuRunner({ disableF16: true });
    const o: QkvOpts = { ...base, wdtype: 'f16p', bias: true, numHeads: 3, numKvHeads: 3, headDim: 8, rotaryDim: 4 };
    await check(r, { o, T: 2, K: 67, slot0: 4, pos0: 11, capacity: 6 }, 7);
    await check(r, { o: { ...o, bias: false, writePre: false }, T: 67, K: 384, slot0: 3, pos0: 5, capacity: 70 }, 8);
  });
});
