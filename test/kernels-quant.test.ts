/**
 * q8 / q4 block-quantized weights in the prefill-side kernels vs the CPU references fed the dequantized weights
 * (dequantization is exact, so the only difference is f32 accumulation order: f32 tolerances): the chunk loader on
 * its own (both chunk widths), the tiled matmul with every epilogue, norm and bias, over parts that cut mid scale
 * word, qkv_rope's tiled path, and the embedding gather from quantized table parts. Decode-sized T (gemv) is
 * covered where the gemv kernels are.
 */
import { describe, expect, it } from 'vitest';
import { embedding } from '../compiler/kernels/elementwise.js';
import { matmul, matmulParts, type MatmulOpts } from '../compiler/kernels/matmul.js';
import { builtins, linearWg, quantHalfLoader, vt, weightLoader, type Unit } from '../compiler/kernels/mm-common.js';
import { GEMV_MAX_T } from '../compiler/kernels/mm-core.js';
import { qkvRope, type QkvOpts } from '../compiler/kernels/qkv-rope.js';
import { kernel, rw, wgsl } from '../compiler/wgsl.js';
import type { GpuRunner } from '../runtime/gpu/runner.js';
import type { QuantDtype } from '../runtime/quant.js';
import { f16ToF32, f32ToF16 } from '../runtime/io/dtype.js';
import { ropeTable } from '../runtime/rope.js';
import { expectClose, gpuRunner, rand } from './gpu-harness.js';
import { destroyParts, matmulBuffers, quantWeights, uploadQuantParts } from './quant-harness.js';
import { embeddingRef, matmulRef, qkvRopeRef } from './ref/gpu-ops.js';

const QDTYPES: readonly QuantDtype[] = ['q8', 'q4'];

/** out[i·U + j] = w_ld(i)[j] for every chunk: the loader alone. */
function loaderProbe(dtype: QuantDtype, U: Unit, chunks: number, b: { w: GPUBuffer; w_s: GPUBuffer; out: GPUBuffer }) {
  const spec = kernel({ op: 'test_quant_loader', wdtype: dtype, u: U }, () => {
    const w = weightLoader('w', dtype, U, '(rows, K)');
    return {
      bindings: [...w.bindings, rw('out', `array<${vt(U)}>`)],
      params: [['n', 'u32']],
      workgroupSize: [64, 1, 1],
      body: wgsl`${w.fn}
@compute @workgroup_size(64)
fn main(${builtins}) {
  let i = ${linearWg} * 64u + lid;
  if (i < params.n) { out[i] = w_ld(i); }
}`,
    };
  });
  return { kernel: spec, buffers: b, params: { n: chunks }, workgroups: [Math.ceil(chunks / 64)] as const };
}

/** out[i] = w_ldh(i) widened to f32 (the tensor-core staging's f16 loader, 4 elements per chunk). */
function halfLoaderProbe(dtype: QuantDtype, chunks: number, b: { w: GPUBuffer; w_s: GPUBuffer; out: GPUBuffer }) {
  const spec = kernel({ op: 'test_quant_half_loader', wdtype: dtype }, () => {
    const w = weightLoader('w', dtype, 4, '(rows, K)');
    return {
      bindings: [...w.bindings, rw('out', 'array<vec4<f32>>')],
      params: [['n', 'u32']],
      workgroupSize: [64, 1, 1],
      enables: ['f16'],
      body: wgsl`${quantHalfLoader('w', dtype)}
@compute @workgroup_size(64)
fn main(${builtins}) {
  let i = ${linearWg} * 64u + lid;
  if (i < params.n) { out[i] = vec4<f32>(w_ldh(i)); }
}`,
    };
  });
  return { kernel: spec, buffers: b, params: { n: chunks }, workgroups: [Math.ceil(chunks / 64)] as const };
}

describe('quantized chunk loader', () => {
  for (const dtype of QDTYPES)
    it(`${dtype} straight to f16 (tensor-core staging): exactly dequantize() rounded to f16, every quant level`, async () => {
      const r = await gpuRunner();
      if (!r.gpu.f16) return; // no shader-f16: no tensor-core path either
      const [rows, K] = [9, 288];
      // each group ramps over the whole range, so every q8 / q4 level and both signs meet several scales
      const w = Float32Array.from({ length: rows * K }, (_, i) => ((i % 32) / 31 - 0.5) * 2 * (1 + (Math.floor(i / 32) % 7)) + ((i * 7919) % 13) * 1e-3);
      const { q, ref } = quantWeights(dtype, w, rows, K);
      const [part] = uploadQuantParts(r, dtype, q, rows, K);
      const out = r.createBuffer(rows * K * 4, 'out');
      r.run([halfLoaderProbe(dtype, (rows * K) / 4, { w: part!.buf, w_s: part!.scales!, out })]);
      expectClose(await r.readF32(out, rows * K), f16ToF32(f32ToF16(ref)), 0, `${dtype} half loader`);
      destroyParts(r, [part!]);
      r.destroy(out);
    });

  for (const dtype of QDTYPES)
    for (const U of [4, 1] as const)
      it(`${dtype}, ${U} element(s) per chunk: exactly dequantize()`, async () => {
        const r = await gpuRunner();
        const [rows, K] = [7, 96]; // 21 groups: an odd count, the last scale word half used
        const w = rand(rows * K, 11, 1.5);
        w[5] = -3; // q4's −8 level; q8's −127
        const { q, ref } = quantWeights(dtype, w, rows, K);
        const [part] = uploadQuantParts(r, dtype, q, rows, K);
        const out = r.createBuffer(rows * K * 4, 'out');
        r.run([loaderProbe(dtype, U, (rows * K) / U, { w: part!.buf, w_s: part!.scales!, out })]);
        expectClose(await r.readF32(out, rows * K), ref, 0, `${dtype} U=${U} loader`);
        destroyParts(r, [part!]);
        r.destroy(out);
      });
});

/** the epilogues a backbone matmul uses (MatmulOpts narrowed to what the reference implements) */
type QOpts = MatmulOpts & { readonly wdtype: QuantDtype; readonly epilogue: 'store' | 'residual' | 'swiglu' };

const label = (o: QOpts) => `${o.wdtype} ${o.epilogue}${o.norm ? ' +norm' : ''}${o.bias ? ' +bias' : ''}`;

async function checkMatmul(r: GpuRunner, o: QOpts, T: number, N: number, K: number, seed: number, cuts: readonly number[] = [], xRow0 = 0): Promise<void> {
  expect(T).toBeGreaterThan(GEMV_MAX_T); // the tiled path
  const rows = o.epilogue === 'swiglu' ? 2 * N : N;
  const x = rand((xRow0 + T) * K, seed, 2);
  const { q, ref } = quantWeights(o.wdtype, rand(rows * K, seed + 1, 0.5), rows, K);
  const normW = rand(K, seed + 2, 0.5).map((v) => 1 + v);
  const bias = rand(rows, seed + 3);
  const yIn = rand(T * N, seed + 4);
  const parts = uploadQuantParts(r, o.wdtype, q, rows, K, cuts);
  const b = matmulBuffers(r, o, T, N, { x, normW, bias, yIn });
  const d = { T, N, K, eps: 1e-5, xRow0 };
  const ds = parts.length === 1 ? [matmul(o, d, { ...b, w: parts[0]!.buf, wScales: parts[0]!.scales })] : matmulParts(o, d, b, parts);
  r.run(ds);
  const got = await r.readF32(b.y, T * N);
  const want = matmulRef(o, d, x, ref, normW, bias, yIn);
  for (const buf of Object.values(b)) if (buf) r.destroy(buf);
  destroyParts(r, parts);
  expectClose(got, want, 1e-4, `${label(o)} T=${T} N=${N} K=${K} xRow0=${xRow0} in ${parts.length} part(s)`);
}

describe('tiled matmul on q8 / q4 weights', () => {
  /** (T, N, K): awkward T and N, K a multiple of 32 with an odd group count per row (96, 160) and a deep one */
  const SHAPES: readonly (readonly [number, number, number])[] = [
    [67, 130, 96],
    [9, 67, 160],
    [129, 64, 64],
    [64, 3, 384],
    [13, 100, 32],
  ];
  let i = 0;
  for (const wdtype of QDTYPES)
    for (const epilogue of ['store', 'residual', 'swiglu'] as const)
      for (const [norm, bias] of [[false, false], [true, false], [false, true], [true, true]] as const) {
        const o: QOpts = { wdtype, epilogue, norm, bias };
        const [T, N, K] = SHAPES[i % SHAPES.length]!;
        const seed = 100 + 10 * i++;
        it(label(o), async () => {
          await checkMatmul(await gpuRunner(), o, T, N, K, seed, [], seed % 2);
        });
      }

  for (const wdtype of QDTYPES)
    it(`${wdtype} over parts: a one-row part, cuts mid scale word, inside swiglu's gate and up halves`, async () => {
      const r = await gpuRunner();
      // K = 96: 3 groups per row, so a part starting at an odd row starts at an odd group (mid-word)
      await checkMatmul(r, { wdtype, norm: true, bias: true, epilogue: 'store' }, 40, 67, 96, 7, [1, 30, 64]);
      await checkMatmul(r, { wdtype, norm: true, bias: false, epilogue: 'swiglu' }, 70, 67, 96, 8, [1, 64, 67 + 5, 101]);
      await checkMatmul(r, { wdtype, norm: false, bias: false, epilogue: 'residual' }, 9, 130, 160, 9, [63, 65]);
    });

  it('a quantized matmul without its scales fails naming it', () => {
    const r = { x: {} as GPUBuffer, w: {} as GPUBuffer, y: {} as GPUBuffer };
    expect(() => matmul({ wdtype: 'q4', norm: false, bias: false, epilogue: 'store' }, { T: 16, N: 8, K: 32 }, r)).toThrow(/q4 weights need their scales buffer/);
  });
});

describe('qkvRope tiled path on q8 / q4 weights', () => {
  const base: QkvOpts = { wdtype: 'q8', bias: false, cacheDtype: 'f32', numHeads: 4, numKvHeads: 2, headDim: 16, rotaryDim: 16, writePre: true };
  const cases: { o: QkvOpts; T: number; K: number; slot0: number; pos0: number; capacity: number }[] = [
    { o: base, T: 67, K: 96, slot0: 2, pos0: 100, capacity: 80 },
    { o: { ...base, wdtype: 'q4', bias: true, numHeads: 6, numKvHeads: 1, headDim: 24, rotaryDim: 8, writePre: false }, T: 9, K: 64, slot0: 3, pos0: 0, capacity: 12 },
    { o: { ...base, wdtype: 'q4' }, T: 129, K: 160, slot0: 0, pos0: 7, capacity: 130 },
    { o: { ...base, bias: true, cacheDtype: 'f32', numHeads: 2, numKvHeads: 1, headDim: 64, rotaryDim: 32 }, T: 20, K: 384, slot0: 1, pos0: 1, capacity: 21 },
  ];
  cases.forEach((c, i) => {
    it(`${c.o.wdtype} bias=${c.o.bias} H=${c.o.numHeads} KV=${c.o.numKvHeads} D=${c.o.headDim} rot=${c.o.rotaryDim} T=${c.T} K=${c.K}`, async () => {
      const r = await gpuRunner();
      const { o, T, K, slot0, pos0, capacity } = c;
      const { numHeads: H, numKvHeads: KV, headDim: D } = o;
      const Wd = (H + 2 * KV) * D;
      const seed = 50 + 10 * i;
      const x = rand(T * K, seed, 2);
      const normW = rand(K, seed + 1, 0.5).map((v) => 1 + v);
      const { q, ref } = quantWeights(o.wdtype as QuantDtype, rand(Wd * K, seed + 2, 0.5), Wd, K);
      const [part] = uploadQuantParts(r, o.wdtype as QuantDtype, q, Wd, K);
      const bias = rand(Wd, seed + 3);
      const table = ropeTable({ kind: 'default', theta: 10000, rotaryDim: o.rotaryDim }, pos0 + T);
      const k0 = rand(KV * capacity * D, seed + 4);
      const v0 = rand(KV * capacity * D, seed + 5);
      const kpos0 = new Uint32Array(KV * capacity).fill(0xdead);
      const b = {
        x: r.upload(x, 'x'),
        normW: r.upload(normW, 'normW'),
        w: part!.buf,
        wScales: part!.scales,
        bias: o.bias ? r.upload(bias, 'bias') : undefined,
        rope: r.upload(table, 'rope'),
        q: r.upload(new Float32Array(T * H * D).fill(NaN), 'q'),
        kCache: r.upload(k0, 'k'),
        vCache: r.upload(v0, 'v'),
        kpos: r.upload(kpos0, 'kpos'),
        pre: o.writePre ? r.upload(new Float32Array(T * Wd).fill(NaN), 'pre') : undefined,
      };
      r.run([qkvRope(o, { T, K, eps: 1e-5, slot0, pos0, capacity }, b)]);
      const kWant = Float32Array.from(k0);
      const vWant = Float32Array.from(v0);
      const kposWant = Uint32Array.from(kpos0);
      const want = qkvRopeRef(o, { T, K, eps: 1e-5, slot0, pos0, capacity }, x, normW, ref, o.bias ? bias : undefined, table, kWant, vWant, kposWant);
      const what = `${o.wdtype} T=${T} K=${K}`;
      expectClose(await r.readF32(b.q, T * H * D), want.q, 1e-4, `${what}: q`);
      expectClose(await r.readF32(b.kCache, KV * capacity * D), kWant, 1e-4, `${what}: kCache`);
      expectClose(await r.readF32(b.vCache, KV * capacity * D), vWant, 1e-4, `${what}: vCache`);
      expect(Array.from(await r.readU32(b.kpos, KV * capacity)), `${what}: kpos`).toEqual(Array.from(kposWant));
      if (b.pre) expectClose(await r.readF32(b.pre, T * Wd), want.pre, 1e-4, `${what}: pre`);
      for (const [k, buf] of Object.entries(b)) if (buf && k !== 'w' && k !== 'wScales') r.destroy(buf);
      destroyParts(r, [part!]);
    });
  });
});

describe('embedding gather from q8 / q4 tables', () => {
  for (const dtype of QDTYPES)
    it(`${dtype}: whole, and one gather per part (parts starting mid scale word)`, async () => {
      const r = await gpuRunner();
      const [vocab, hidden] = [37, 96];
      const ids = Uint32Array.from([5, 0, 36, 5, 17, 2, 36, 12, 13, 1]);
      const { q, ref } = quantWeights(dtype, rand(vocab * hidden, 5), vocab, hidden);
      const want = embeddingRef(hidden, ids, ref);
      for (const cuts of [[], [1, 13, 30]]) {
        const parts = uploadQuantParts(r, dtype, q, vocab, hidden, cuts);
        const b = { ids: r.upload(ids, 'ids'), y: r.upload(new Float32Array(ids.length * hidden).fill(NaN), 'y') };
        r.run(parts.map((p) => embedding({ wdtype: dtype }, { T: ids.length, hidden, row0: p.row0, rows: p.rows }, { ...b, table: p.buf, tableScales: p.scales })));
        expectClose(await r.readF32(b.y, ids.length * hidden), want, 0, `embedding ${dtype} in ${parts.length} part(s)`);
        r.destroy(b.ids);
        r.destroy(b.y);
        destroyParts(r, parts);
      }
    });
});
