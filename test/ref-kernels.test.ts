import { describe, it, expect } from 'vitest';
import { readFileSync } from 'node:fs';
import type { RopeConfig } from '../ir/config.js';
import {
  matmul, rmsnorm, swiglu, swigluFused, ropeInvFreq, ropeCosSin, ropeApply, attendHeads, attendAtPositions,
  causalAttention, splitHeads, longropeUsesLong,
} from './ref/kernels.js';
import { refConfig, refWeights } from './ref/load-for-ref.js';
import { RefSession, refForward } from './ref/model.js';
import { locretGenerate, seededRandom } from './ref/locret.js';

const rnd = seededRandom(1234);
const randn = (n: number): Float32Array => Float32Array.from({ length: n }, () => rnd() * 2 - 1);
const close = (a: ArrayLike<number>, b: ArrayLike<number>, tol: number): void => {
  expect(a.length).toBe(b.length);
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]) / (1e-6 + Math.abs(b[i])));
  expect(worst).toBeLessThan(tol);
};

describe('reference kernels', () => {
  it('matmul matches a naive triple loop on awkward shapes (with bias)', () => {
    for (const [T, K, N] of [[1, 1, 1], [3, 67, 5], [5, 129, 7], [8, 64, 4], [67, 3, 129]]) {
      const x = randn(T * K), W = randn(N * K), b = randn(N);
      const y = matmul(x, T, K, W, N, b);
      const r = new Float32Array(T * N);
      for (let t = 0; t < T; t++) for (let n = 0; n < N; n++) {
        let s = 0;
        for (let k = 0; k < K; k++) s += x[t * K + k] * W[n * K + k];
        r[t * N + n] = s + b[n];
      }
      close(y, r, 1e-6);
    }
  });

  it('rmsnorm, swiglu', () => {
    const x = randn(3 * 67), w = randn(67);
    const y = rmsnorm(x, 3, 67, w, 1e-5);
    let ss = 0;
    for (let i = 67; i < 134; i++) ss += x[i] ** 2;
    expect(y[67 + 5]).toBeCloseTo((w[5] * x[67 + 5]) / Math.sqrt(ss / 67 + 1e-5), 5);
    const g = randn(6), u = randn(6), gu = new Float32Array([...g.slice(0, 3), ...u.slice(0, 3), ...g.slice(3), ...u.slice(3)]);
    close(swigluFused(gu, 2, 3), swiglu(g, u), 1e-7);
    expect(swiglu(new Float32Array([1]), new Float32Array([2]))[0]).toBeCloseTo(2 / (1 + Math.exp(-1)), 6);
  });

  it('rope: rotate_half pairs (i, i+half), relative-position invariance, partial rotary passthrough', () => {
    const rope: RopeConfig = { kind: 'default', theta: 10000, rotaryDim: 8 };
    const D = 12, q = randn(D), k = randn(D);
    const dotAt = (pq: number, pk: number): number => {
      const a = ropeApply(q, 1, 1, D, ropeCosSin(rope, [pq])), b = ropeApply(k, 1, 1, D, ropeCosSin(rope, [pk]));
      expect(Array.from(a.slice(8))).toEqual(Array.from(q.slice(8)));
      return a.reduce((s, v, i) => s + v * b[i], 0);
    };
    expect(dotAt(7, 3)).toBeCloseTo(dotAt(104, 100), 4);
    const inv = ropeInvFreq(rope);
    const c = ropeCosSin(rope, [5]);
    const r = ropeApply(q, 1, 1, D, c);
    expect(r[1]).toBeCloseTo(q[1] * Math.cos(5 * inv[1]) - q[5] * Math.sin(5 * inv[1]), 5);
    expect(r[5]).toBeCloseTo(q[5] * Math.cos(5 * inv[1]) + q[1] * Math.sin(5 * inv[1]), 5);
  });

  it('phi3 longrope: short factors up to original context, long above, attention factor on cos/sin', () => {
    const cfg = refConfig('../shared/models/tiny-phi3');
    const rope = cfg.rope;
    if (rope.kind !== 'longrope') throw new Error('expected longrope');
    expect(rope.attentionFactor).toBeCloseTo(Math.sqrt(1 + Math.log(8) / Math.log(512)), 12);
    expect(longropeUsesLong(rope, 512)).toBe(false);
    expect(longropeUsesLong(rope, 513)).toBe(true);
    expect(ropeInvFreq(rope, 512)[1]).toBeCloseTo(1 / (rope.shortFactor[1] * 10000 ** (2 / 64)), 7);
    expect(ropeInvFreq(rope, 513)[1]).toBeCloseTo(1 / (rope.longFactor[1] * 10000 ** (2 / 64)), 7);
    expect(ropeInvFreq(rope, 10, true)[1]).toBeCloseTo(1 / (rope.longFactor[1] * 10000 ** (2 / 64)), 7);
    const t = ropeCosSin(rope, [0]);
    expect(t.cos[0]).toBeCloseTo(rope.attentionFactor, 6);
  });

  it('attendHeads equals a naive per-query softmax (GQA, mask, prefix visibility)', () => {
    const H = 6, KV = 2, D = 5, S = 9, Tq = 4;
    const q = randn(Tq * H * D), k = randn(S * KV * D), v = randn(S * KV * D);
    const heads = splitHeads(k, v, S, KV, D);
    const mask = (t: number, s: number, g: number): boolean => (s + t + g) % 3 !== 0;
    const vis = (t: number): number => S - Tq + t + 1;
    const out = attendHeads(q, Tq, H, D, heads, vis, mask);
    for (let t = 0; t < Tq; t++) for (let h = 0; h < H; h++) {
      const g = Math.floor(h / 3);
      const ws: number[] = [], idx: number[] = [];
      for (let s = 0; s < vis(t); s++) if (mask(t, s, g)) {
        let d = 0;
        for (let i = 0; i < D; i++) d += q[(t * H + h) * D + i] * k[(s * KV + g) * D + i];
        ws.push(d / Math.sqrt(D)); idx.push(s);
      }
      const m = Math.max(...ws), e = ws.map((x) => Math.exp(x - m)), z = e.reduce((a, b) => a + b, 0);
      for (let i = 0; i < D; i++) {
        const ref = idx.reduce((a, s, j) => a + (e[j] / z) * v[(s * KV + g) * D + i], 0);
        expect(out[(t * H + h) * D + i]).toBeCloseTo(ref, 5);
      }
    }
    close(causalAttention(q, k, v, Tq, S, H, KV, D), attendHeads(q, Tq, H, D, heads, vis), 1e-7);
  });

  it('attendAtPositions with positions 0..S-1 equals rotating first then causal attention', () => {
    const rope: RopeConfig = { kind: 'default', theta: 500000, rotaryDim: 8 };
    const H = 4, KV = 2, D = 8, S = 7, Tq = 3;
    const q = randn(Tq * H * D), k = randn(S * KV * D), v = randn(S * KV * D);
    const pos = Array.from({ length: S }, (_, i) => i), qPos = pos.slice(S - Tq);
    const kr = ropeApply(k, S, KV, D, ropeCosSin(rope, pos));
    const qr = ropeApply(q, Tq, H, D, ropeCosSin(rope, qPos));
    const a = causalAttention(qr, kr, v, Tq, S, H, KV, D);
    const heads = splitHeads(k, v, S, KV, D).map((h) => ({ kPre: h.k, v: h.v, len: S, pos }));
    close(attendAtPositions(q, qPos, H, D, rope, heads, (t) => S - Tq + t + 1), a, 1e-5);
  });
});

describe('reference model machinery (tiny-llama)', () => {
  const dir = '../shared/models/tiny-llama';
  const cfg = refConfig(dir);
  const w = refWeights(dir, cfg);
  const ids = (JSON.parse(readFileSync(`${dir}/golden.json`, 'utf8')) as { input_ids: number[] }).input_ids;

  it('session prefill in pieces equals one full forward', () => {
    const V = cfg.vocabSize;
    const full = refForward(cfg, w, ids);
    const s = new RefSession(cfg, w);
    s.forward(ids.slice(0, 20));
    const part = s.forward(ids.slice(20), { allLogits: true });
    close(part.subarray(part.length - V), full.subarray(full.length - V), 1e-4);
  });

  it('chunked prefill without eviction (full policy, either position mode) equals plain greedy', () => {
    const want = new RefSession(cfg, w).generateGreedy(ids, 6);
    for (const positions of ['compact', 'original'] as const) {
      const r = locretGenerate(cfg, w, ids, { budget: 0, chunk: 16, stabilizer: 4, nLoc: 5, maxNew: 6, positions, policy: { kind: 'full' } });
      expect(r.tokens).toEqual(want);
    }
    // a budget above the prompt length never evicts: same tokens
    const r = locretGenerate(cfg, w, ids, { budget: 1000, chunk: 16, stabilizer: 4, nLoc: 5, maxNew: 6, policy: { kind: 'random', seed: 1 } });
    expect(r.tokens).toEqual(want);
  });

  it('evicting runs keep exactly the budget per head; original positions are kept verbatim', () => {
    const r = locretGenerate(cfg, w, ids, { budget: 12, chunk: 16, stabilizer: 4, nLoc: 5, maxNew: 3, positions: 'original', policy: { kind: 'random', seed: 7 } });
    expect(r.traces.map((t) => t.chunkEnd)).toEqual([16, 32, 48, 51]);
    for (const tr of r.traces) for (const layer of tr.kept) for (const head of layer) {
      expect(head.length).toBe(12);
      // stabilizer: the newest 4 of every non-final chunk survive
      if (tr.chunkEnd < 51) expect(head.slice(8)).toEqual([tr.chunkEnd - 4, tr.chunkEnd - 3, tr.chunkEnd - 2, tr.chunkEnd - 1]);
    }
    // after the local tokens and 3 decode steps (2 appended): 12 + 5 + 2
    expect(r.final[0][0].slice(12)).toEqual([51, 52, 53, 54, 55, 56, 57]);
  });
});
