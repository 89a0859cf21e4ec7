/** Retaining-head training kernels against the CPU reference (and the reference against finite differences). */
import { describe, expect, it } from 'vitest';
import { adamw } from '../compiler/kernels/train-adamw.js';
import { headGradFc2, headGradHidden, headPred } from '../compiler/kernels/train-head.js';
import { captureRows, trainLabels } from '../compiler/kernels/train-labels.js';
import { overlapBlocks, trainLoss, trainOverlap, trainReduce } from '../compiler/kernels/train-loss.js';
import { trainMatmul } from '../compiler/kernels/train-matmul.js';
import { ropeTable } from '../runtime/rope.js';
import { expectClose, gpuRunner, rand } from './gpu-harness.js';
import { adamwStep, headBackward, headForward, headLoss, labelsRef, layerLoss, overlapRef } from './ref/train.js';



describe('train matmul', () => {
  for (const [M, N, K] of [[1, 1, 1], [67, 16, 40], [5, 129, 3], [70, 65, 130]] as const) {
    it(`nt and tn ${M}x${N}x${K}`, async () => {
      const r = await gpuRunner();
      const A = rand(M * K, 1), B = rand(N * K, 2);
      const want = new Float64Array(M * N);
      for (let m = 0; m < M; m++) for (let n = 0; n < N; n++) {
        let s = 0;
        for (let k = 0; k < K; k++) s += A[m * K + k]! * B[n * K + k]!;
        want[m * N + n] = s;
      }
      // the same product with both operands stored K-major
      const At = new Float32Array(M * K), Bt = new Float32Array(N * K);
      for (let m = 0; m < M; m++) for (let k = 0; k < K; k++) At[k * M + m] = A[m * K + k]!;
      for (let n = 0; n < N; n++) for (let k = 0; k < K; k++) Bt[k * N + n] = B[n * K + k]!;
      const c1 = r.createBuffer(M * N * 4, 'c1'), c2 = r.createBuffer(M * N * 4, 'c2');
      r.run([
        trainMatmul({ layout: 'nt' }, { M, N, K }, { a: r.upload(A, 'a'), b: r.upload(B, 'b'), c: c1 }),
        trainMatmul({ layout: 'tn' }, { M, N, K }, { a: r.upload(At, 'at'), b: r.upload(Bt, 'bt'), c: c2 }),
      ]);
      expectClose(await r.readF32(c1, M * N), want, 1e-5, 'nt');
      expectClose(await r.readF32(c2, M * N), want, 1e-5, 'tn');
    });
  }
});

describe('head forward, loss and backward', () => {
  const W = 40, HID = 16, KV = 2;
  for (const T of [1, 5, 67]) {
    it(`T=${T}, W=${W}, hidden ${HID}, KV ${KV}`, async () => {
      const r = await gpuRunner();
      const pre = rand(T * W, 10 + T);
      const fc1 = rand(HID * W, 20, 1 / Math.sqrt(W));
      const fc2 = rand(KV * HID, 30, 1 / Math.sqrt(HID));
      const stride = T + 3; // labels rows longer than T, as the trainer's are
      const labels = rand(KV * stride, 40, 2); // some |d| > 1: both SmoothL1 branches
      const c1 = 1 / (3 * KV * T);
      const c2 = T > 1 ? 0.0025 / (KV * (T - 1)) : 0;
      const k = Math.floor(T / 10);
      const ref = headForward(pre, T, W, fc1, fc2, KV);
      const loss = layerLoss(ref.pred, labels, stride, T, KV, c1, c2);
      const back = headBackward(pre, T, W, ref.h, loss.dpred, fc2, KV);

      const srow = 2 + overlapBlocks(T);
      const b = {
        pre: r.upload(pre, 'pre'), fc1: r.upload(fc1, 'fc1'), fc2: r.upload(fc2, 'fc2'), labels: r.upload(labels, 'labels'),
        h: r.createBuffer(T * HID * 4, 'h'), pred: r.createBuffer(T * KV * 4, 'pred'), dpred: r.createBuffer(T * KV * 4, 'dpred'),
        gfc1: r.createBuffer(HID * W * 4, 'gfc1'), gfc2: r.createBuffer(KV * HID * 4, 'gfc2'),
        stats: r.createBuffer(KV * srow * 4, 'stats'), out: r.createBuffer(16, 'out'),
      };
      const dims = { T, KV, hidden: HID };
      r.run([trainMatmul({ layout: 'nt' }, { M: T, N: HID, K: W }, { a: b.pre, b: b.fc1, c: b.h }), headPred(dims, { h: b.h, fc2: b.fc2, pred: b.pred })]);
      const hGpu = await r.readF32(b.h, T * HID);
      expectClose(hGpu, ref.h, 1e-5, 'h');
      expectClose(await r.readF32(b.pred, T * KV), ref.pred, 1e-5, 'pred');
      const ld = { T, KV, labelOff: 0, stride, statRow0: 0, srow };
      r.run([
        trainLoss({ ...ld, c1, c2 }, { pred: b.pred, labels: b.labels, dpred: b.dpred, stats: b.stats }),
        trainOverlap({ ...ld, k }, { pred: b.pred, labels: b.labels, stats: b.stats }),
        trainReduce({ rows: KV, srow, blocks: overlapBlocks(T), k }, { stats: b.stats, out: b.out }),
        headGradFc2(dims, { h: b.h, dpred: b.dpred, gfc2: b.gfc2 }),
        headGradHidden(dims, { h: b.h, dpred: b.dpred, fc2: b.fc2 }),
        trainMatmul({ layout: 'tn' }, { M: HID, N: W, K: T }, { a: b.h, b: b.pre, c: b.gfc1 }),
      ]);
      expectClose(await r.readF32(b.dpred, T * KV), loss.dpred, 1e-5, 'dpred', 1e-9);
      const out = await r.readF32(b.out, 4);
      expectClose([out[0]!, out[2]!, out[3]!], [loss.smooth + loss.neighbour, loss.smooth, loss.neighbour], 1e-5, 'loss', 1e-9);
      const ov = overlapRef(await r.readF32(b.pred, T * KV), labels, stride, T, KV, k);
      expect(out[1]).toBeCloseTo(k > 0 ? ov / (KV * k) : 0, 6);
      expectClose(await r.readF32(b.gfc2, KV * HID), back.gfc2, 1e-4, 'gfc2', 1e-9);
      expectClose(await r.readF32(b.gfc1, HID * W), back.gfc1, 1e-4, 'gfc1', 1e-9);
    });
  }

  it('the CPU backward matches finite differences of the CPU loss', () => {
    const T = 7, W = 12, HID = 6, KV = 2;
    const pre = rand(T * W, 1);
    const fc1 = Float64Array.from(rand(HID * W, 2, 0.5));
    const fc2 = Float64Array.from(rand(KV * HID, 3, 0.5));
    const labels = rand(KV * T, 4, 2);
    const c1 = 1 / (KV * T), c2 = 0.1 / (KV * (T - 1)); // a larger neighbour weight, so its gradient shows
    const f = headForward(pre, T, W, fc1, fc2, KV);
    const back = headBackward(pre, T, W, f.h, layerLoss(f.pred, labels, T, T, KV, c1, c2).dpred, fc2, KV);
    const eps = 1e-6;
    const fd = (w: Float64Array, i: number) => {
      const keep = w[i]!;
      w[i] = keep + eps;
      const up = headLoss(pre, T, W, fc1, fc2, KV, labels, c1, c2);
      w[i] = keep - eps;
      const dn = headLoss(pre, T, W, fc1, fc2, KV, labels, c1, c2);
      w[i] = keep;
      return (up - dn) / (2 * eps);
    };
    for (let i = 0; i < fc1.length; i += 5) expect(back.gfc1[i]).toBeCloseTo(fd(fc1, i), 7);
    for (let i = 0; i < fc2.length; i++) expect(back.gfc2[i]).toBeCloseTo(fd(fc2, i), 7);
  });
});

describe('AdamW with value clipping', () => {
  it('two steps equal the CPU reference', async () => {
    const r = await gpuRunner();
    const n = 1037;
    const p0 = rand(n, 5), g1 = rand(n, 6, 1.2), g2 = rand(n, 7, 0.3);
    const hyper = { lr: 5e-3, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.01, clip: 0.5 };
    const s = { p: Float64Array.from(p0), m: new Float64Array(n), v: new Float64Array(n) };
    const b = { p: r.upload(p0, 'p'), m: r.createBuffer(n * 4, 'm'), v: r.createBuffer(n * 4, 'v'), grad: r.upload(g1, 'g') };
    r.write(b.m, new Float32Array(n));
    r.write(b.v, new Float32Array(n));
    r.run([adamw({ n, ...hyper, step: 1 }, b)]);
    adamwStep(s, g1, { ...hyper, step: 1 });
    r.write(b.grad, g2);
    r.run([adamw({ n, ...hyper, step: 2 }, b)]);
    adamwStep(s, g2, { ...hyper, step: 2 });
    expectClose(await r.readF32(b.p, n), s.p, 1e-5, 'p');
    expectClose(await r.readF32(b.m, n), s.m, 1e-5, 'm');
    expectClose(await r.readF32(b.v, n), s.v, 1e-5, 'v', 1e-6);
  });
});

describe('labels', () => {
  for (const [H, KV, D, rot, Tp, Ta] of [[4, 2, 8, 8, 67, 3], [6, 2, 16, 8, 5, 1], [2, 2, 64, 64, 130, 9]] as const) {
    it(`H ${H}, KV ${KV}, D ${D}, rotary ${rot}, ${Tp} prompt + ${Ta} answer tokens`, async () => {
      const r = await gpuRunner();
      const W = (H + 2 * KV) * D;
      const N = Tp + Ta;
      const pre = rand(N * W, 100 + Tp, 1.5);
      const table = ropeTable({ kind: 'default', theta: 10000, rotaryDim: rot }, N);
      const want = labelsRef(pre, Tp, Ta, H, KV, D, rot, table);
      const layers = 2, stride = Tp + 4, l = 1;
      // the layer's rows arrive in two steps through the capture kernel, as the trainer's forward does
      const stage = r.upload(pre, 'stage');
      const rows = r.createBuffer(N * W * 4, 'rows');
      const cut = Math.ceil(N / 2);
      const tail = r.upload(pre.subarray(cut * W), 'tail');
      const labels = r.createBuffer(layers * KV * stride * 4, 'labels');
      r.run([
        captureRows({ T: cut, W, row0: 0 }, { src: stage, dst: rows }),
        captureRows({ T: N - cut, W, row0: cut }, { src: tail, dst: rows }),
        trainLabels({ Tp, Ta, numHeads: H, numKvHeads: KV, headDim: D, rotaryDim: rot, labelOff: l * KV * stride, stride }, { pre: rows, rope: r.upload(table, 'rope'), labels }),
      ]);
      const all = await r.readF32(labels, layers * KV * stride);
      const got = new Float32Array(KV * Tp);
      for (let g = 0; g < KV; g++) got.set(all.subarray((l * KV + g) * stride, (l * KV + g) * stride + Tp), g * Tp);
      expectClose(got, want, 1e-5, 'labels');
    });
  }
});


