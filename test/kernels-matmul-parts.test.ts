/**
 * Kernels on weights split into parts of whole rows (runtime/weights.ts): matmul over parts (every epilogue, gemv
 * and tiled, parts that cut inside swiglu's gate and up halves and one that holds both) and a bare column range vs
 * the CPU reference; the embedding gathering from parts; the runner naming a binding over the limit.
 */
import { describe, expect, it } from 'vitest';
import { embedding } from '../compiler/kernels/elementwise.js';
import { matmul, matmulParts, type MatmulOpts, type WeightPart } from '../compiler/kernels/matmul.js';
import type { GpuRunner } from '../runtime/gpu/runner.js';
import { expectClose, gpuRunner, rand, weightsFor } from './gpu-harness.js';
import { embeddingRef, matmulRef } from './ref/gpu-ops.js';

/** Uploads rows [cuts[i], cuts[i+1]) of a (rows, K) weight as separate buffers. */
function uploadParts(r: GpuRunner, data: ArrayBufferView, rows: number, K: number, cuts: readonly number[]): WeightPart[] {
  const arr = data as Float32Array | Uint16Array;
  const edges = [0, ...[...new Set(cuts)].filter((c) => c > 0 && c < rows).sort((a, b) => a - b), rows];
  return edges.slice(0, -1).map((row0, i) => ({
    row0,
    rows: edges[i + 1]! - row0,
    buf: r.upload(arr.subarray(row0 * K, edges[i + 1]! * K), `w[${row0}]`),
  }));
}

async function checkParts(r: GpuRunner, o: MatmulOpts, T: number, N: number, K: number, seed: number): Promise<void> {
  const rows = o.epilogue === 'swiglu' ? 2 * N : N;
  const x = rand(T * K, seed, 2);
  const w = weightsFor(o.wdtype, rand(rows * K, seed + 1, 0.5));
  const normW = rand(K, seed + 2, 0.5).map((v) => 1 + v);
  const bias = rand(rows, seed + 3);
  const yIn = rand(T * N, seed + 4);
  // a one-row part, cuts near N (swiglu: a part holding gate and up rows), a cut inside the up half
  const parts = uploadParts(r, w.gpu, rows, K, [1, N - 3, N + 5, Math.floor((3 * rows) / 4)]);
  const b = {
    x: r.upload(x, 'x'),
    normW: o.norm ? r.upload(normW, 'normW') : undefined,
    bias: o.bias ? r.upload(bias, 'bias') : undefined,
    y: r.upload(o.epilogue === 'residual' ? yIn : new Float32Array(T * N).fill(NaN), 'y'),
  };
  const ds = matmulParts(o, { T, N, K, eps: 1e-5 }, b, parts);
  expect(ds.length).toBeGreaterThan(1);
  r.run(ds);
  const got = await r.readF32(b.y, T * N);
  const want = matmulRef(o, { T, N, K, eps: 1e-5 }, x, w.ref, normW, bias, yIn);
  for (const buf of [...Object.values(b), ...parts.map((p) => p.buf)]) if (buf) r.destroy(buf);
  expectClose(got, want, o.wdtype === 'f32' ? 1e-4 : 1e-3, `${o.wdtype} ${o.epilogue} norm=${o.norm} bias=${o.bias} T=${T} N=${N} K=${K} in ${parts.length} parts`);
}

describe('matmul over weight parts', () => {
  const cases: [MatmulOpts, number, number][] = [];
  for (const wdtype of ['f32', 'f16'] as const)
    for (const epilogue of ['store', 'residual', 'swiglu'] as const)
      for (const [norm, bias] of [[true, false], [false, true]] as const) cases.push([{ wdtype, norm, bias, epilogue }, 67, 132]);
  cases.forEach(([o, N, K], i) => {
    it(`${o.wdtype} ${o.epilogue}${o.norm ? ' +norm' : ''}${o.bias ? ' +bias' : ''}: gemv and tiled`, async () => {
      const r = await gpuRunner();
      await checkParts(r, o, [1, 3, 8][i % 3]!, N, K, 300 + i);
      await checkParts(r, o, [67, 9][i % 2]!, N + 64, K - 1, 400 + i);
    });
  });

  it('f16p (packed) store and swiglu', async () => {
    const r = await gpuRunner({ disableF16: true });
    await checkParts(r, { wdtype: 'f16p', norm: true, bias: true, epilogue: 'store' }, 2, 130, 64, 11);
    await checkParts(r, { wdtype: 'f16p', norm: true, bias: false, epilogue: 'swiglu' }, 40, 70, 68, 12);
  });

  it('a column range writes only its columns of y (row stride N)', async () => {
    const r = await gpuRunner();
    const o: MatmulOpts = { wdtype: 'f32', norm: true, bias: true, epilogue: 'store' };
    const N = 100;
    const K = 64;
    for (const T of [2, 70]) {
      const x = rand(T * K, T, 2);
      const w = rand(N * K, T + 1, 0.5);
      const normW = rand(K, T + 2, 0.5).map((v) => 1 + v);
      const bias = rand(N, T + 3);
      const [col0, cols] = [37, 29];
      const b = {
        x: r.upload(x, 'x'),
        w: r.upload(w.subarray(col0 * K, (col0 + cols) * K), 'w-part'), // only the range's rows
        normW: r.upload(normW, 'normW'),
        bias: r.upload(bias, 'bias'),
        y: r.upload(new Float32Array(T * N).fill(NaN), 'y'),
      };
      r.run([matmul(o, { T, N, K, eps: 1e-5, col0, cols, wRow: 0 }, b)]);
      const got = await r.readF32(b.y, T * N);
      const want = matmulRef(o, { T, N, K, eps: 1e-5 }, x, w, normW, bias);
      for (const buf of Object.values(b)) r.destroy(buf);
      const inRange = (i: number) => i % N >= col0 && i % N < col0 + cols;
      expectClose(got.filter((_, i) => inRange(i)), want.filter((_, i) => inRange(i)), 1e-4, `column range T=${T}`);
      expect(got.filter((_, i) => !inRange(i)).every(Number.isNaN), 'columns outside the range untouched').toBe(true);
    }
  });
});

describe('embedding over table parts', () => {
  it('one gather per part fills every row', async () => {
    const r = await gpuRunner();
    for (const wdtype of ['f32', 'f16'] as const) {
      const [vocab, hidden] = [37, 68];
      const ids = Uint32Array.from([5, 0, 36, 5, 17, 2, 36, 12, 13]);
      const table = weightsFor(wdtype, rand(vocab * hidden, 5));
      const parts = uploadParts(r, table.gpu, vocab, hidden, [1, 13, 30]);
      const b = { ids: r.upload(ids, 'ids'), y: r.upload(new Float32Array(ids.length * hidden).fill(NaN), 'y') };
      r.run(parts.map((p) => embedding({ wdtype }, { T: ids.length, hidden, row0: p.row0, rows: p.rows }, { ...b, table: p.buf })));
      expectClose(await r.readF32(b.y, ids.length * hidden), embeddingRef(hidden, ids, table.ref), 0, `embedding ${wdtype} in parts`);
      for (const buf of [b.ids, b.y, ...parts.map((p) => p.buf)]) r.destroy(buf);
    }
  });
});

describe('binding limit', () => {
  it('a binding over maxBinding fails naming the kernel, binding and buffer', async () => {
    const r = await gpuRunner({ maxBinding: 4096 });
    expect(r.gpu.maxBinding).toBe(4096);
    const b = { ids: r.upload(new Uint32Array(4), 'ids'), table: r.createBuffer(8192, 'big-table'), y: r.createBuffer(4 * 64 * 4, 'y') };
    expect(() => r.run([embedding({ wdtype: 'f32' }, { T: 4, hidden: 64 }, b)])).toThrow(
      /kernel embedding\S*: binding 'table' \(buffer 'big-table', 8192 bytes\) exceeds the storage-binding limit of 4096 bytes/,
    );
  });
});
