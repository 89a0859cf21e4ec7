/**
 * Unfused building blocks (embedding, rmsnorm, add, siluMul, rope, argmax), the retaining head (fc1 matmul with the
 * silu epilogue, then the fc2 scores kernel, as lower.ts emits them), and fusion equality: each fused matmul
 * prologue/epilogue equals its unfused composition.
 */
import { describe, expect, it } from 'vitest';
import { add, argmax, embedding, rmsnorm, rope, siluMul } from '../compiler/kernels/elementwise.js';
import { matmul, type WeightDtype } from '../compiler/kernels/matmul.js';
import { retainingScores } from '../compiler/kernels/retaining.js';
import type { GpuRunner } from '../runtime/gpu/runner.js';
import { ropeTable } from '../runtime/rope.js';
import { expectClose, gpuRunner, rand, weightsFor } from './gpu-harness.js';
import { f16ToF32 } from '../runtime/io/dtype.js';
import { argmaxRef, embeddingRef, retainingRef, rmsnormRef, ropeRef, siluMulRef } from './ref/gpu-ops.js';

const tolFor = (d: WeightDtype) => (d === 'f32' ? 1e-4 : 1e-3);

async function checkEmbedding(r: GpuRunner, wdtype: WeightDtype, hidden: number): Promise<void> {
  const vocab = 37;
  const ids = Uint32Array.from([5, 0, 36, 5, 17, 2, 36]);
  const table = weightsFor(wdtype, rand(vocab * hidden, hidden));
  const b = { ids: r.upload(ids, 'ids'), table: r.upload(table.gpu, 'table'), y: r.createBuffer(ids.length * hidden * 4, 'y') };
  r.run([embedding({ wdtype }, { T: ids.length, hidden }, b)]);
  // a gather: exact, whatever the dtype
  expectClose(await r.readF32(b.y, ids.length * hidden), embeddingRef(hidden, ids, table.ref), 0, `embedding ${wdtype} ${hidden}`);
}

/** The retaining head as lowered: hid = silu(pre · fc1ᵀ) in a (maxT, hidden) scratch, then scores from fc2. */
async function checkRetaining(r: GpuRunner, wdtype: WeightDtype, T: number, W: number, KV: number, seed: number): Promise<void> {
  const hidden = 1024;
  const maxT = T + 5; // the plan sizes the scratch for its largest step
  const slot0 = 3;
  const capacity = slot0 + T + 2;
  const pre = rand(T * W, seed);
  const fc1 = weightsFor(wdtype, rand(hidden * W, seed + 1, 0.5));
  const fc2 = weightsFor(wdtype, rand(KV * hidden, seed + 2, 0.1));
  const scores0 = rand(KV * capacity, seed + 3);
  const b = {
    pre: r.upload(pre, 'pre'),
    fc1: r.upload(fc1.gpu, 'fc1'),
    fc2: r.upload(fc2.gpu, 'fc2'),
    hid: r.upload(rand(maxT * hidden, seed + 4), 'hid'), // stale contents: every row the step reads is rewritten
    scores: r.upload(scores0, 'scores'),
  };
  r.run([
    matmul({ wdtype, norm: false, bias: false, epilogue: 'silu' }, { T, N: hidden, K: W }, { x: b.pre, w: b.fc1, y: b.hid }),
    retainingScores({ wdtype }, { T, KV, hidden, slot0, capacity }, { hid: b.hid, fc2: b.fc2, scores: b.scores }),
  ]);
  const want = Float32Array.from(scores0);
  retainingRef({ T, W, KV, hidden, slot0, capacity }, pre, fc1.ref, fc2.ref, want);
  expectClose(await r.readF32(b.scores, KV * capacity), want, tolFor(wdtype), `retaining ${wdtype} T=${T} W=${W} KV=${KV}`);
  for (const buf of Object.values(b)) r.destroy(buf);
}

describe('elementwise kernels', () => {
  it('embedding: f32 and f16 tables, vec4 and scalar rows', async () => {
    const r = await gpuRunner();
    for (const wdtype of ['f32', 'f16'] as const) for (const hidden of [64, 67]) await checkEmbedding(r, wdtype, hidden);
  });

  it('rmsnorm, add, siluMul', async () => {
    const r = await gpuRunner();
    for (const [T, N] of [[3, 67], [5, 384]] as const) {
      const x = rand(T * N, N, 3);
      const w = rand(N, N + 1).map((v) => 1 + 0.5 * v);
      const b = { x: r.upload(x, 'x'), w: r.upload(w, 'w'), y: r.createBuffer(T * N * 4, 'y') };
      r.run([rmsnorm({ T, N, eps: 1e-5 }, b)]);
      expectClose(await r.readF32(b.y, T * N), rmsnormRef(T, N, 1e-5, x, w), 1e-5, `rmsnorm ${T}x${N}`);
      // f16 rows for a tensor-core matmul (N % 4 == 0 only): within f16 rounding (2^-11 relative) of the f32 ones
      if (N % 4 === 0) {
        r.run([rmsnorm({ T, N, eps: 1e-5, half: true }, b)]);
        expectClose(f16ToF32(new Uint16Array(await r.read(b.y, T * N * 2))), rmsnormRef(T, N, 1e-5, x, w), 1e-3, `rmsnorm f16 ${T}x${N}`);
      } else expect(() => rmsnorm({ T, N, eps: 1e-5, half: true }, b)).toThrow(/N % 4 == 0/);
    }
    for (const n of [1001, 1024]) {
      const a = rand(n, 1);
      const c = rand(n, 2);
      const b = { a: r.upload(a, 'a'), b: r.upload(c, 'b'), y: r.createBuffer(n * 4, 'y') };
      r.run([add({ n }, b)]);
      expectClose(await r.readF32(b.y, n), a.map((v, i) => v + c[i]!), 0, `add ${n}`);
    }
    const [T, N] = [3, 67];
    const gu = rand(T * 2 * N, 9, 4);
    const b = { gu: r.upload(gu, 'gu'), y: r.createBuffer(T * N * 4, 'y') };
    r.run([siluMul({ T, N }, b)]);
    expectClose(await r.readF32(b.y, T * N), siluMulRef(T, N, gu), 1e-5, 'siluMul');
  });

  it('rope: full and partial rotary, position offset', async () => {
    const r = await gpuRunner();
    for (const [heads, headDim, rotaryDim, pos0] of [[3, 16, 16, 0], [2, 24, 8, 50]] as const) {
      const T = 5;
      const x = rand(T * heads * headDim, headDim);
      const table = ropeTable({ kind: 'default', theta: 10000, rotaryDim }, pos0 + T);
      const b = { x: r.upload(x, 'x'), rope: r.upload(table, 'rope') };
      const d = { T, heads, headDim, rotaryDim, pos0 };
      r.run([rope(d, b)]);
      expectClose(await r.readF32(b.x, x.length), ropeRef(d, x, table), 1e-6, `rope ${headDim}/${rotaryDim}`);
    }
  });

  it('argmax: first index on ties, negative rows, rows longer than a workgroup', async () => {
    const r = await gpuRunner();
    const rows = 4;
    const n = 1000;
    const x = rand(rows * n, 4);
    x[0 * n + 700] = 5; // tie: first wins
    x[0 * n + 300] = 5;
    x[0 * n + 999] = 5;
    for (let i = 0; i < n; i++) x[1 * n + i] = -1 - Math.abs(x[1 * n + i]!); // all negative
    x.fill(2, 2 * n, 3 * n); // all equal: index 0
    x[3 * n + 999] = 9; // last element
    const b = { x: r.upload(x, 'x'), out: r.createBuffer(rows * 4, 'out') };
    r.run([argmax({ rows, n }, b)]);
    const got = Array.from(await r.readU32(b.out, rows));
    expect(got).toEqual(Array.from(argmaxRef(rows, n, x)));
    expect(got).toEqual([300, got[1], 0, 999]);
  });
});

describe('retaining head', () => {
  // T ≤ 8 runs fc1 on the gemv path, larger T on the tiled one; W % 4 ≠ 0 takes scalar loads
  it('f32 and f16 weights, decode-sized and chunk-sized T', async () => {
    const r = await gpuRunner();
    await checkRetaining(r, 'f32', 1, 64, 8, 1);
    await checkRetaining(r, 'f32', 17, 67, 3, 2);
    await checkRetaining(r, 'f32', 300, 24, 2, 3);
    await checkRetaining(r, 'f16', 1, 41, 1, 4);
    await checkRetaining(r, 'f16', 300, 67, 8, 5);
    await checkRetaining(r, 'f16', 17, 40, 5, 6);
  });
  it('a chunk of over 1024 tokens, one KV head', async () => {
    const r = await gpuRunner();
    await checkRetaining(r, 'f32', 1025, 8, 1, 7);
  });
  it('f16p weights (device without shader-f16)', async () => {
    const r = await gpuRunner({ disableF16: true });
    await checkRetaining(r, 'f16p', 17, 40, 4, 8);
    await checkRetaining(r, 'f16p', 5, 67, 1, 9);
    await checkRetaining(r, 'f16p', 300, 41, 7, 10);
    await checkEmbedding(r, 'f16p', 64);
    await checkEmbedding(r, 'f16p', 67);
  });
});

describe('fusion equality', () => {
  it('norm prologue, residual and swiglu epilogues equal their unfused composition', async () => {
    const r = await gpuRunner();
    for (const T of [2, 67]) {
      const [N, K] = [40, 64];
      const x = rand(T * K, T, 2);
      const nw = rand(K, 7).map((v) => 1 + 0.5 * v);
      const w = rand(2 * N * K, 8, 0.5);
      const res = rand(T * N, 9);
      const xb = r.upload(x, 'x');
      const nwb = r.upload(nw, 'nw');
      const wb = r.upload(w, 'w');
      const xn = r.createBuffer(T * K * 4, 'xn');
      const gu = r.createBuffer(T * 2 * N * 4, 'gu');
      const h = r.createBuffer(T * N * 4, 'h');
      const unfusedSwiglu = r.createBuffer(T * N * 4, 'u');
      const fusedSwiglu = r.createBuffer(T * N * 4, 'f');
      const resIn = r.upload(res, 'res');
      const unfusedRes = r.createBuffer(T * N * 4, 'ur');
      const fusedRes = r.upload(res, 'fr');
      const plain = { wdtype: 'f32', norm: false, bias: false, epilogue: 'store' } as const;
      r.run([
        rmsnorm({ T, N: K, eps: 1e-5 }, { x: xb, w: nwb, y: xn }),
        matmul(plain, { T, N: 2 * N, K }, { x: xn, w: wb, y: gu }),
        siluMul({ T, N }, { gu, y: unfusedSwiglu }),
        matmul({ ...plain, norm: true, epilogue: 'swiglu' }, { T, N, K, eps: 1e-5 }, { x: xb, w: wb, normW: nwb, y: fusedSwiglu }),
        matmul(plain, { T, N, K }, { x: xn, w: wb, y: h }),
        add({ n: T * N }, { a: resIn, b: h, y: unfusedRes }),
        matmul({ ...plain, norm: true, epilogue: 'residual' }, { T, N, K, eps: 1e-5 }, { x: xb, w: wb, normW: nwb, y: fusedRes }),
      ]);
      expectClose(await r.readF32(fusedSwiglu, T * N), await r.readF32(unfusedSwiglu, T * N), 1e-5, `swiglu T=${T}`);
      expectClose(await r.readF32(fusedRes, T * N), await r.readF32(unfusedRes, T * N), 1e-5, `residual T=${T}`);
    }
  });
});
