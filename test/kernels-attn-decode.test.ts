/**
 * The bandwidth decode attention (compiler/kernels/attention-decode.ts, variants v1 and v2) vs the CPU reference: T = 1..8 queries,
 * awkward cache lengths, GQA groups 1/3/4, head dims 64/96/128 (one partial rotary span), f32/f16/int8 caches,
 * subgroup and workgroup-memory reductions, with and without lse, split and unsplit; and decode over a cache whose
 * keys were rotated in place (rotateCacheKeys, checked key by key) gives the same attention.
 */
import { describe, expect, it } from 'vitest';
import { attentionScratchBytes, type AttentionOpts } from '../compiler/kernels/attention.js';
import { planV2, tuningV2 } from '../compiler/kernels/attention-decode-v2.js';
import { attentionDecode, attentionDecodePlan, attentionDecodeV2Plan, decodeScratchBytes, type DecodeOpts } from '../compiler/kernels/attention-decode.js';
import type { CacheDtype } from '../compiler/kernels/attn-common.js';
import { ropeTable } from '../runtime/rope.js';
import type { GpuRunner } from '../runtime/gpu/runner.js';
import { expectClose, f16BitsToF32, gpuRunner, rand, weightsFor } from './gpu-harness.js';
import { refAttention, refRotatedKey, type RefAttnShape } from './ref/gpu-attention.js';
import { rotateCacheKeys } from '../compiler/kernels/rotate-keys.js';
import { dequantizeRows, quantizeRows, rowWords } from './ref/kv-int8.js';

interface Case {
  KV: number;
  G: number;
  D: number;
  rot: number;
  T: number;
  /** cache entries the last query sees (base + T) */
  len: number;
  dtype: CacheDtype;
  splits?: number;
  /** keys per batch; default 1 here: the CPU driver's shader compile time grows with the batch's unrolled code */
  nk?: number;
  /** v2 only: lanes per key, threads per workgroup (keys per lane group per round: nk, at most 2) */
  kl?: number;
  nt?: number;
  /** v2 only: rows per workgroup (default by cache length: 2 for the short caches here) */
  rows?: number;
  /** v2 only: next round's loads issued before this round's arithmetic (default on for f32/f16) */
  prefetch?: boolean;
  /** v2 only: rounds loaded ahead with prefetch (2: two register sets) */
  depth?: 1 | 2;
  /** v2 on rotated keys only: q in workgroup memory */
  qShared?: boolean;
  /** v2, int8 cache: key dots as packed int8 dot products (default: where the device has them) */
  intDot?: boolean;
}

const POSITIONS = 1100;

/** K/V as the GPU stores them plus the values the reference must use; slots >= len hold NaN (poison on read). */
function cacheOf(dtype: CacheDtype, x: Float32Array, KV: number, capacity: number, D: number, len: number) {
  const rows = KV * capacity;
  if (dtype === 'int8') {
    const gpu = quantizeRows(x, rows, D);
    const nan = new Uint32Array(new Float32Array([NaN]).buffer)[0]!;
    for (let g = 0; g < KV; g++) for (let s = len; s < capacity; s++) gpu[(g * capacity + s) * rowWords(D) + D / 4] = nan;
    return { gpu, ref: dequantizeRows(gpu, rows, D) };
  }
  const y = x.slice();
  for (let g = 0; g < KV; g++) y.fill(NaN, (g * capacity + len) * D, (g * capacity + capacity) * D);
  return weightsFor(dtype, y);
}

function inputs(c: Case, seed: number) {
  const H = c.KV * c.G;
  const base = c.len - c.T;
  const capacity = c.len + 5;
  const sh: RefAttnShape = { H, KV: c.KV, D: c.D, rotaryDim: c.rot, T: c.T, base, capacity, scale: 1 / Math.sqrt(c.D) };
  const q = rand(c.T * H * c.D, seed, 2);
  const k = cacheOf(c.dtype, rand(c.KV * capacity * c.D, seed + 1, 2), c.KV, capacity, c.D, c.len);
  const v = cacheOf(c.dtype, rand(c.KV * capacity * c.D, seed + 2), c.KV, capacity, c.D, c.len);
  // positions as after eviction with original positions: arbitrary, unsorted
  const kpos = Uint32Array.from(rand(c.KV * capacity, seed + 3), (x) => Math.floor(((x + 1) / 2) * (POSITIONS - 1)));
  const rope = ropeTable({ kind: 'default', theta: 10000, rotaryDim: c.rot }, POSITIONS);
  return { sh, capacity, base, q, k, v, kpos, rope };
}

const opts = (c: Case): AttentionOpts => ({ cacheDtype: c.dtype, numHeads: c.KV * c.G, numKvHeads: c.KV, headDim: c.D, rotaryDim: c.rot });

const cases: Case[] = [
  { KV: 2, G: 4, D: 128, rot: 128, T: 1, len: 1, dtype: 'f16' },
  { KV: 2, G: 3, D: 64, rot: 64, T: 1, len: 7, dtype: 'f32' },
  { KV: 1, G: 4, D: 128, rot: 128, T: 1, len: 300, dtype: 'f16', nk: 0 },
  { KV: 2, G: 1, D: 96, rot: 32, T: 1, len: 1000, dtype: 'int8' },
  { KV: 2, G: 4, D: 64, rot: 64, T: 3, len: 7, dtype: 'int8', nk: 2 },
  { KV: 2, G: 3, D: 128, rot: 128, T: 5, len: 300, dtype: 'f32' },
  { KV: 1, G: 4, D: 96, rot: 96, T: 8, len: 1000, dtype: 'f16' },
  { KV: 3, G: 1, D: 64, rot: 64, T: 8, len: 8, dtype: 'f16' },
  { KV: 2, G: 4, D: 128, rot: 64, T: 2, len: 300, dtype: 'f16', splits: 7, nk: 4 },
  { KV: 1, G: 3, D: 64, rot: 64, T: 6, len: 1000, dtype: 'int8', splits: 1 },
  { KV: 2, G: 4, D: 128, rot: 128, T: 8, len: 300, dtype: 'f32' },
];

/** v2 on the same cases plus its own knobs: 16 lanes per key (wider than the CPU driver's subgroups: the
 * workgroup-memory branch), 4 lanes, small workgroups, 2 keys per round */
const casesV2: Case[] = [
  ...[0, 3, 6, 8, 9].map((i) => cases[i]!),
  { KV: 2, G: 4, D: 128, rot: 128, T: 1, len: 300, dtype: 'f16', kl: 16, splits: 3 },
  { KV: 1, G: 3, D: 96, rot: 32, T: 4, len: 200, dtype: 'f32', kl: 4, nt: 32 },
  { KV: 2, G: 4, D: 64, rot: 64, T: 2, len: 1000, dtype: 'int8', nk: 2, nt: 64 },
  // the long-cache shape (4 rows, 2 keys per round) on a short cache
  { KV: 2, G: 4, D: 128, rot: 128, T: 1, len: 700, dtype: 'f16', nk: 2, rows: 4 },
  { KV: 2, G: 3, D: 64, rot: 32, T: 3, len: 500, dtype: 'f32', nk: 2, rows: 4, splits: 2 },
  // plain rounds (the default loads each round's words while computing the previous one): f16, f32, pass-through
  // dims, keys not a multiple of a round
  { KV: 2, G: 4, D: 128, rot: 128, T: 1, len: 333, dtype: 'f16', rows: 2, prefetch: false },
  { KV: 1, G: 3, D: 96, rot: 32, T: 4, len: 250, dtype: 'f32', nk: 2, rows: 4, splits: 3, prefetch: false },
  { KV: 2, G: 2, D: 64, rot: 64, T: 2, len: 90, dtype: 'f16', nt: 32, kl: 4, prefetch: false },
  // two rounds in flight: an odd number of rounds (the second half of the last pair is masked), pass-through dims,
  // several splits
  { KV: 2, G: 4, D: 128, rot: 128, T: 1, len: 333, dtype: 'f16', rows: 2, depth: 2 },
  { KV: 1, G: 3, D: 96, rot: 32, T: 4, len: 250, dtype: 'f32', splits: 3, depth: 2 },
];

async function check(r: GpuRunner, c: Case, seed: number, withLse: boolean, variant: 'v1' | 'v2' = 'v1') {
  const H = c.KV * c.G;
  const x = inputs(c, seed);
  const want = refAttention(x.sh, x.q, x.k.ref, x.v.ref, x.kpos, x.rope);
  const d = { T: c.T, base: x.base, capacity: x.capacity, scale: x.sh.scale, splits: c.splits };
  // nk 0: the plan's own batch size (the 8B decode shape's kernel)
  const o: DecodeOpts = { ...opts(c), subgroups: r.gpu.subgroups, nk: c.nk === 0 ? undefined : (c.nk ?? 1), variant };
  if (variant === 'v2') o.v2 = { kl: c.kl, nt: c.nt, nk: c.nk === 0 ? undefined : Math.min(2, c.nk ?? 1), rows: c.rows, prefetch: c.prefetch, depth: c.depth };
  const p = variant === 'v2' ? attentionDecodeV2Plan(o, d) : attentionDecodePlan(o, d);
  const bufs = {
    q: r.upload(x.q, 'q'),
    kCache: r.upload(x.k.gpu, 'k'),
    vCache: r.upload(x.v.gpu, 'v'),
    kpos: r.upload(x.kpos, 'kpos'),
    rope: r.upload(x.rope, 'rope'),
    out: r.createBuffer(c.T * H * c.D * 4, 'out'),
    lse: withLse ? r.createBuffer(c.T * H * 4, 'lse') : undefined,
    scratch: r.createBuffer(Math.max(16, p.splits * c.T * H * (c.D + 4) * 4), 'scratch'),
  };
  r.run(attentionDecode(o, d, bufs));
  const tol = c.dtype === 'f32' ? 1e-4 : 2e-3;
  const what = `${variant} sg=${o.subgroups} splits=${p.splits} R=${p.R} NK=${p.NK}${'PF' in p && p.PF ? ` prefetch ${p.DEPTH}` : ''}`;
  expectClose(await r.readF32(bufs.out, c.T * H * c.D), want.out, tol, `out (${what})`);
  if (bufs.lse) expectClose(await r.readF32(bufs.lse, c.T * H), want.lse, tol, `lse (${what})`);
  for (const b of Object.values(bufs)) if (b) r.destroy(b);
}

describe('decode attention over the cache', async () => {
  const withSg = await gpuRunner();
  const noSg = await gpuRunner({ disableSubgroups: true });
  const runners: [string, GpuRunner][] = withSg.gpu.subgroups ? [['subgroups', withSg], ['workgroup memory', noSg]] : [['workgroup memory', noSg]];
  for (const [name, r] of runners) {
    for (const [i, c] of cases.entries()) {
      const withLse = i % 2 === 0 || c.splits !== undefined;
      it(`${name}: KV=${c.KV} G=${c.G} D=${c.D} rot=${c.rot} T=${c.T} len=${c.len} ${c.dtype}${c.splits ? ` splits=${c.splits}` : ''} nk=${c.nk ?? 1} lse=${withLse}`, async () => {
        await check(r, c, 100 + i * 10, withLse);
      });
    }
    it(`${name}: the output does not depend on asking for lse (split path)`, async () => {
      await check(r, cases[2]!, 500, false);
      await check(r, cases[2]!, 500, true);
    });
    for (const [i, c] of casesV2.entries()) {
      const withLse = i % 2 === 1 || c.splits !== undefined;
      it(`${name}: v2 KV=${c.KV} G=${c.G} D=${c.D} rot=${c.rot} T=${c.T} len=${c.len} ${c.dtype}${c.splits ? ` splits=${c.splits}` : ''} kl=${c.kl ?? '-'} nt=${c.nt ?? '-'} nk=${c.nk ?? 1}${c.rows ? ` rows=${c.rows}` : ''}${c.prefetch === false ? ' no-prefetch' : ''}${c.depth ? ` depth=${c.depth}` : ''} lse=${withLse}`, async () => {
        await check(r, c, 700 + i * 10, withLse, 'v2');
      });
    }
  }
});

/**
 * Keys rotated in place, then v2 reading them as they are: same attention as rotating every key on load. int8 rows
 * are quantized again: each rotated key within half a step of its new scale of the exact rotation (scale = its max
 * / 127), and attention compared with the reference over those re-quantized keys (plus a looser bound against the
 * keys before it, which the second rounding must stay inside).
 */
async function checkRotated(r: GpuRunner, c: Case, seed: number) {
  const dtype = c.dtype;
  const H = c.KV * c.G;
  const x = inputs(c, seed);
  const want = refAttention(x.sh, x.q, x.k.ref, x.v.ref, x.kpos, x.rope);
  const kCache = r.upload(x.k.gpu, 'k');
  const kpos = r.upload(x.kpos, 'kpos');
  const rope = r.upload(x.rope, 'rope');
  r.run([rotateCacheKeys({ cacheDtype: dtype, numKvHeads: c.KV, headDim: c.D, rotaryDim: c.rot }, { kvEnd: c.len, capacity: x.capacity }, { kCache, kpos, rope })]);
  // every live key rotated (one more f16 rounding / int8 quantization), slots past len untouched (still NaN)
  const words = c.KV * x.capacity * c.D;
  const got = dtype === 'f16' ? Float32Array.from(new Uint16Array(await r.read(kCache, words * 2)), f16BitsToF32)
    : dtype === 'int8' ? dequantizeRows(new Uint32Array(await r.read(kCache, c.KV * x.capacity * rowWords(c.D) * 4)), c.KV * x.capacity, c.D)
      : await r.readF32(kCache, words);
  const keyWant = new Float32Array(words).fill(NaN);
  for (let g = 0; g < c.KV; g++) for (let s = 0; s < c.len; s++) keyWant.set(refRotatedKey(x.sh, x.k.ref, x.kpos, x.rope, g, s), (g * x.capacity + s) * c.D);
  const isLive = (i: number) => i % (x.capacity * c.D) < c.len * c.D;
  const live = (a: Float32Array) => a.filter((_, i) => isLive(i));
  if (dtype === 'int8') expectInt8Rows(got, keyWant, c.D, isLive);
  else expectClose(live(got), live(keyWant), dtype === 'f32' ? 1e-5 : 1e-3, `rotated keys ${dtype}`);
  expect(got.filter((_, i) => !isLive(i)).every(Number.isNaN), 'slots past the live ones untouched').toBe(true);
  // positions are not read any more: poison them
  const d = { T: c.T, base: x.base, capacity: x.capacity, scale: x.sh.scale, splits: c.splits };
  const o: DecodeOpts = { ...opts(c), subgroups: r.gpu.subgroups, keysRotated: true, intDot: c.intDot ?? r.gpu.intDot, v2: { kl: c.kl, nt: c.nt, nk: c.nk, rows: c.rows, prefetch: c.prefetch, depth: c.depth, qShared: c.qShared } };
  const p = attentionDecodeV2Plan(o, d);
  const bufs = {
    q: r.upload(x.q, 'q'), kCache, vCache: r.upload(x.v.gpu, 'v'), kpos: r.upload(new Uint32Array(c.KV * x.capacity).fill(0xffffffff), 'kpos-poison'), rope,
    out: r.createBuffer(c.T * H * c.D * 4, 'out'), lse: r.createBuffer(c.T * H * 4, 'lse'),
    scratch: r.createBuffer(Math.max(16, p.splits * c.T * H * (c.D + 4) * 4), 'scratch'),
  };
  r.run(attentionDecode(o, d, bufs));
  const tol = dtype === 'f32' ? 1e-4 : 3e-3;
  const what = `rotated keys, ${dtype} splits=${p.splits} R=${p.R} NK=${p.NK}${p.PF ? ` prefetch ${p.DEPTH}` : ''}${p.QS ? ' q-shared' : ''}${p.IQ ? ' int8 key dots' : ''}`;
  if (c.intDot !== undefined) expect(p.IQ, 'integer key dots taken').toBe(c.intDot && r.gpu.intDot);
  const out = await r.readF32(bufs.out, c.T * H * c.D);
  const lse = await r.readF32(bufs.lse, c.T * H);
  if (dtype === 'int8') {
    // exact attention over the keys as re-quantized (already rotated: no rotation in the reference)
    const exact = refAttention({ ...x.sh, rotaryDim: 0 }, x.q, got, x.v.ref, x.kpos, x.rope);
    // measured within 2e-5 for float dots and for integer dots with q in two int8 digits (one digit: 1.4e-3)
    expectClose(out, exact.out, 1e-4, `out (${what}, re-quantized keys)`);
    expectClose(lse, exact.lse, 1e-4, `lse (${what}, re-quantized keys)`);
  }
  expectClose(out, want.out, dtype === 'int8' ? 2e-2 : tol, `out (${what})`);
  expectClose(lse, want.lse, dtype === 'int8' ? 2e-2 : tol, `lse (${what})`);
  for (const b of [...Object.values(bufs), kpos]) r.destroy(b);
}

/** int8 rows rotated and quantized again: each live value within half a step (+ f32 slack) of the exact rotation. */
function expectInt8Rows(got: Float32Array, want: Float32Array, D: number, isLive: (i: number) => boolean): void {
  let worst = 0;
  for (let row = 0; row * D < want.length; row++) {
    if (!isLive(row * D)) continue;
    let m = 0;
    for (let i = 0; i < D; i++) m = Math.max(m, Math.abs(want[row * D + i]!));
    const halfStep = m / 127 / 2;
    for (let i = 0; i < D; i++) worst = Math.max(worst, Math.abs(got[row * D + i]! - want[row * D + i]!) / (halfStep * 1.01 + 1e-6));
  }
  expect(worst, 'int8 rotated keys: worst error in half steps of the new scale').toBeLessThanOrEqual(1);
}

describe('decode attention over keys rotated in place', async () => {
  const r = await gpuRunner();
  const rotCases: Case[] = [
    { KV: 2, G: 4, D: 128, rot: 128, T: 1, len: 300, dtype: 'f16' },
    { KV: 3, G: 1, D: 96, rot: 32, T: 1, len: 77, dtype: 'f32', splits: 3 },
    { KV: 1, G: 3, D: 64, rot: 64, T: 4, len: 250, dtype: 'f16', nk: 2, rows: 4, prefetch: false },
    { KV: 2, G: 2, D: 64, rot: 64, T: 1, len: 90, dtype: 'f32', nt: 32, kl: 4 },
    { KV: 2, G: 4, D: 128, rot: 128, T: 1, len: 301, dtype: 'f16', splits: 2, depth: 2 },
    // q in workgroup memory: the decode shape, and 4 queries of 3 heads (rows past T masked)
    { KV: 2, G: 4, D: 128, rot: 128, T: 1, len: 300, dtype: 'f16', splits: 2, qShared: true, depth: 2 },
    { KV: 1, G: 3, D: 64, rot: 64, T: 4, len: 250, dtype: 'f32', qShared: true },
    // q in registers, one round ahead (the default before)
    { KV: 2, G: 4, D: 128, rot: 128, T: 1, len: 300, dtype: 'f16', splits: 2, qShared: false, depth: 1 },
    // int8 rows re-quantized: the decode shape (scales prefetched with the codes, two rounds ahead), pass-through
    // dims, plain rounds, one round ahead with q in registers
    { KV: 2, G: 4, D: 128, rot: 128, T: 1, len: 300, dtype: 'int8', splits: 2 },
    { KV: 1, G: 3, D: 96, rot: 32, T: 4, len: 250, dtype: 'int8', splits: 3 },
    { KV: 2, G: 2, D: 64, rot: 64, T: 1, len: 90, dtype: 'int8', nt: 32, kl: 4, prefetch: false },
    { KV: 2, G: 4, D: 128, rot: 128, T: 2, len: 333, dtype: 'int8', qShared: false, depth: 1, nk: 2 },
    // int8 key dots on the raw codes with q in two int8 digits (where the device has them), and the float dots
    { KV: 2, G: 4, D: 128, rot: 128, T: 1, len: 300, dtype: 'int8', splits: 2, intDot: true },
    { KV: 1, G: 3, D: 96, rot: 32, T: 4, len: 250, dtype: 'int8', splits: 3, intDot: true, nk: 2 },
    { KV: 2, G: 4, D: 128, rot: 128, T: 1, len: 300, dtype: 'int8', splits: 2, intDot: false },
  ];
  for (const [i, c] of rotCases.entries()) {
    it(`KV=${c.KV} G=${c.G} D=${c.D} rot=${c.rot} T=${c.T} len=${c.len} ${c.dtype}${c.splits ? ` splits=${c.splits}` : ''}${c.depth ? ` depth=${c.depth}` : ''}${c.qShared !== undefined ? ` q-shared=${c.qShared}` : ''}${c.intDot !== undefined ? ` int-dot=${c.intDot}` : ''}`, async () => {
      await checkRotated(r, c, 900 + i * 10);
    });
  }
});

describe('decode attention scratch sizing', () => {
  it('attentionScratchBytes (prefill-sized) covers every decode call up to the end of the cache', () => {
    for (const [KV, G, D] of [[8, 4, 128], [2, 3, 64], [1, 1, 96]] as const) {
      const o: AttentionOpts = { cacheDtype: 'f16', numHeads: KV * G, numKvHeads: KV, headDim: D, rotaryDim: D };
      for (const [capacity, maxT] of [[18432, 1024], [131072 + 2048, 1024], [300, 8], [40, 1]] as const) {
        const bound = attentionScratchBytes(o, { T: maxT, base: capacity - maxT, capacity, scale: 1 });
        expect(bound).toBeGreaterThanOrEqual(decodeScratchBytes(o, { T: maxT, base: capacity - maxT, capacity, scale: 1 }));
        for (let T = 1; T <= Math.min(8, maxT); T++) {
          for (let base = 0; base + T <= capacity; base += 97) {
            for (const p of [attentionDecodePlan(o, { T, base, capacity, scale: 1 }), attentionDecodeV2Plan({ ...o, subgroups: true }, { T, base, capacity, scale: 1 })]) {
              if (p.splits > 1) expect(p.splits * T * KV * G * (D + 4) * 4).toBeLessThanOrEqual(bound);
            }
          }
        }
      }
    }
  });
});

describe('decode attention v2 plan knobs', () => {
  it('LOCRET_ATTN_DECODE knobs parse (bad values ignored); two rounds in flight make slabs whole pairs of rounds', () => {
    expect(tuningV2('v2,kl=16,nt=64,k2=2,rows=4,pf=2')).toEqual({ kl: 16, nt: 64, nk: 2, rows: 4, pf: true, depth: 2 });
    expect(tuningV2('v2,pf=0,qs=1')).toEqual({ pf: false, qs: true });
    expect(tuningV2('v2,kl=3,nt=100,pf=3,rows=5')).toEqual({});
    const o = { cacheDtype: 'f16' as const, numHeads: 32, numKvHeads: 8, headDim: 128, rotaryDim: 128, subgroups: true };
    const d = { T: 1, base: 16383, capacity: 17408, scale: 1 };
    const one = planV2(o, d, 1024);
    const two = planV2({ ...o, depth: 2 }, d, 1024);
    expect([one.DEPTH, two.DEPTH]).toEqual([1, 2]);
    expect(two.splitKeys % (2 * two.NG * two.NK)).toBe(0);
    expect(two.splits * two.splitKeys).toBeGreaterThanOrEqual(d.base + d.T);
    // int8 rows are prefetched with their scales like the other caches
    expect(planV2({ ...o, cacheDtype: 'int8', depth: 2 }, d, 1024)).toMatchObject({ PF: true, DEPTH: 2, int8: true });
    expect(planV2({ ...o, cacheDtype: 'int8', keysRotated: true }, d, 1024)).toMatchObject({ PF: true, DEPTH: 2, QS: true });
    // rotated keys: q in workgroup memory and two rounds in flight by default; keys rotated on load keep q in registers
    expect(planV2({ ...o, keysRotated: true }, d, 1024)).toMatchObject({ QS: true, DEPTH: 2 });
    expect(planV2({ ...o, keysRotated: true, qShared: false }, d, 1024)).toMatchObject({ QS: false, DEPTH: 1 });
    expect(planV2(o, d, 1024)).toMatchObject({ QS: false, DEPTH: 1 });
  });
});
