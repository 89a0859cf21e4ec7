import { describe, expect, it } from 'vitest';
import { evict, evictLayoutFor, evictScratchBytes, type EvictLayout, type EvictScratch } from '../compiler/kernels/evict.js';
import { evictSingle } from '../compiler/kernels/evict-single.js';
import type { CacheDtype } from '../compiler/kernels/attn-common.js';
import type { GpuRunner } from '../runtime/gpu/runner.js';
import { fillScores } from '../compiler/kernels/scores.js';
import { gpuRunner, rand } from './gpu-harness.js';
import { refEvict, refFillScores } from './ref/gpu-attention.js';
import { refEvictHoles } from './ref/evict-holes.js';
import { dequantizeRows, quantizeRows, rowWords } from './ref/kv-int8.js';

interface Case {
  name: string;
  KV: number;
  D: number;
  dtype: 'f32' | 'f16' | 'int8';
  len: number;
  keep: number;
  forcedFrom: number;
  compact: boolean;
  /** score generator: ties (few distinct values), mixed (ties, ±0, ±inf, negatives), equal (all the same) */
  scores: 'ties' | 'mixed' | 'equal';
  /** selection workgroup size (default 256) */
  threads?: number;
  /** run the single-workgroup kernel (evict-single.ts) instead, the baseline bench/evict-check.ts times */
  single?: boolean;
}

/** Scratch for one call, filled with garbage so a read of an unwritten scratch word shows. */
function scratchFor(r: GpuRunner, dtype: CacheDtype, D: number, KV: number, capacity: number, layout: EvictLayout = 'ordered'): EvictScratch {
  const sb = evictScratchBytes(layout, dtype, D, KV, capacity);
  return { rows: sb.rows ? r.upload(words(1, sb.rows / 4, 1, 0x5a5a), 'rows') : null, meta: r.upload(words(1, sb.meta / 4, 1, 0xa5a5), 'meta') };
}

/** Per head, slots [0, len) hold a shuffled permutation of the ranks [0, len) (what the holes layout leaves behind). */
function shuffledRanks(KV: number, len: number, capacity: number, seed: number): Uint32Array {
  const out = Uint32Array.from({ length: KV * capacity }, (_, i) => 0xdead0000 + i); // past len: never read
  const r = rand(KV * len, seed);
  for (let h = 0; h < KV; h++) {
    const p = Array.from({ length: len }, (_, i) => i);
    for (let i = len - 1; i > 0; i--) {
      const j = Math.floor(((r[h * len + i]! + 1) / 2) * (i + 1)) % (i + 1);
      [p[i], p[j]] = [p[j]!, p[i]!];
    }
    out.set(p, h * capacity);
  }
  return out;
}

const destroyScratch = (r: GpuRunner, s: EvictScratch) => [s.rows, s.meta].forEach((b) => b && r.destroy(b));

function makeScores(kind: Case['scores'], n: number, seed: number): Float32Array {
  const r = rand(n, seed);
  return r.map((x, i) => {
    if (kind === 'equal') return 0.25;
    if (kind === 'ties') return Math.floor((x + 1) * 3) - 2; // {-2..3}: many ties at any threshold
    const m = i % 11;
    if (m === 0) return Infinity;
    if (m === 1) return -Infinity;
    if (m === 2) return -0;
    if (m === 3) return 0;
    if (m === 4) return Math.floor(x * 4); // ties
    return x * 1e3;
  });
}

/** Distinct word per (head, slot, word) so any misplaced or torn row shows. */
function words(KV: number, capacity: number, W: number, salt: number): Uint32Array {
  const out = new Uint32Array(KV * capacity * W);
  for (let i = 0; i < out.length; i++) out[i] = (Math.imul(i + 1, 2654435761) ^ salt) >>> 0;
  return out;
}

/** A case's caches: 9 spare slots past len, its row width in words, distinct K and V words, and its scores. */
function caseData(c: Case, seeds: readonly [k: number, v: number, scores: number]) {
  const capacity = c.len + 9;
  const W = c.dtype === 'f32' ? c.D : c.dtype === 'f16' ? c.D / 2 : rowWords(c.D);
  const k = words(c.KV, capacity, W, seeds[0]);
  const v = words(c.KV, capacity, W, seeds[1]);
  return { capacity, W, k, v, scores: makeScores(c.scores, c.KV * capacity, seeds[2]) };
}

function firstDiff(a: Uint32Array, b: Uint32Array): string {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return `at ${i}: got ${a[i]}, want ${b[i]}`;
  return 'equal';
}

const cases: Case[] = [
  { name: 'ties, forced tail', KV: 2, D: 64, dtype: 'f32', len: 300, keep: 100, forcedFrom: 280, compact: false, scores: 'ties' },
  { name: 'ties, forced tail, compact', KV: 2, D: 64, dtype: 'f32', len: 300, keep: 100, forcedFrom: 280, compact: true, scores: 'ties' },
  { name: '±inf ±0 mixed, none forced, f16', KV: 3, D: 64, dtype: 'f16', len: 1000, keep: 517, forcedFrom: 1000, compact: true, scores: 'mixed' },
  { name: 'one evicted', KV: 2, D: 64, dtype: 'f16', len: 77, keep: 76, forcedFrom: 70, compact: false, scores: 'mixed' },
  { name: 'more forced than kept (+inf ties: earlier wins)', KV: 2, D: 8, dtype: 'f32', len: 200, keep: 30, forcedFrom: 150, compact: false, scores: 'mixed' },
  { name: 'all equal: first slots win', KV: 1, D: 8, dtype: 'f32', len: 130, keep: 50, forcedFrom: 130, compact: true, scores: 'equal' },
  { name: 'large, f16 rows of 4 words', KV: 2, D: 8, dtype: 'f16', len: 5000, keep: 2048, forcedFrom: 4900, compact: false, scores: 'mixed' },
  { name: 'odd row width (3 words)', KV: 2, D: 6, dtype: 'f16', len: 129, keep: 64, forcedFrom: 120, compact: true, scores: 'ties' },
  { name: 'keep 0', KV: 1, D: 8, dtype: 'f32', len: 10, keep: 0, forcedFrom: 10, compact: false, scores: 'ties' },
  { name: 'keep == len (no-op)', KV: 2, D: 8, dtype: 'f32', len: 90, keep: 90, forcedFrom: 80, compact: true, scores: 'ties' },
  { name: 'keep > len (no-op)', KV: 2, D: 8, dtype: 'f32', len: 90, keep: 200, forcedFrom: 80, compact: false, scores: 'ties' },
  // int8 rows: D/4 codes + the scale word, so odd widths (17, 33 words) that must move whole
  { name: 'int8 rows (codes + scale)', KV: 2, D: 64, dtype: 'int8', len: 300, keep: 100, forcedFrom: 280, compact: true, scores: 'mixed' },
  { name: 'int8 rows, D=128', KV: 3, D: 128, dtype: 'int8', len: 200, keep: 77, forcedFrom: 200, compact: false, scores: 'ties' },
  // awkward sizes against the selection's per-thread runs (len / threads not whole) and the move grid
  { name: 'len not a multiple of the threads, 1024 threads', KV: 2, D: 16, dtype: 'f16', len: 3001, keep: 1500, forcedFrom: 2900, compact: true, scores: 'mixed', threads: 1024 },
  { name: 'len < threads', KV: 3, D: 8, dtype: 'f32', len: 37, keep: 20, forcedFrom: 30, compact: true, scores: 'ties', threads: 512 },
  { name: 'keep 1', KV: 2, D: 16, dtype: 'f16', len: 700, keep: 1, forcedFrom: 700, compact: true, scores: 'mixed' },
  { name: 'keep 1 of 2', KV: 1, D: 8, dtype: 'f32', len: 2, keep: 1, forcedFrom: 2, compact: false, scores: 'ties' },
  { name: 'keep len-1', KV: 4, D: 16, dtype: 'f16', len: 1025, keep: 1024, forcedFrom: 1000, compact: true, scores: 'ties', threads: 1024 },
  { name: 'all equal, large: the first keep slots win', KV: 2, D: 16, dtype: 'f16', len: 2500, keep: 1234, forcedFrom: 2500, compact: true, scores: 'equal', threads: 1024 },
  { name: 'forced region covers everything: the first keep slots win', KV: 2, D: 8, dtype: 'f32', len: 500, keep: 300, forcedFrom: 0, compact: false, scores: 'mixed' },
  { name: 'KV=8, int8 D=64 (17-word rows)', KV: 8, D: 64, dtype: 'int8', len: 513, keep: 256, forcedFrom: 450, compact: true, scores: 'mixed', threads: 1024 },
  { name: 'KV=5, f32 D=128', KV: 5, D: 128, dtype: 'f32', len: 333, keep: 111, forcedFrom: 300, compact: false, scores: 'ties' },
  { name: 'KV=8, f16 D=128 (the 8B row)', KV: 8, D: 128, dtype: 'f16', len: 1100, keep: 1000, forcedFrom: 900, compact: true, scores: 'mixed', threads: 1024 },
  // holes: 36 ranks per thread, past one 32-bit word of registers' worth, ties at the threshold
  { name: 'long runs per thread', KV: 2, D: 8, dtype: 'f16', len: 9000, keep: 8000, forcedFrom: 7000, compact: true, scores: 'ties', threads: 256 },
  { name: 'single-workgroup baseline', KV: 3, D: 16, dtype: 'f16', len: 1000, keep: 517, forcedFrom: 990, compact: true, scores: 'mixed', single: true },
];

describe('evict (select + gather + scatter through a scratch)', () => {
  for (const [ci, c] of cases.entries()) {
    it(`${c.name}: KV=${c.KV} ${c.dtype} D=${c.D} len=${c.len} keep=${c.keep} forcedFrom=${c.forcedFrom} compact=${c.compact} threads=${c.threads ?? 256}`, async () => {
      const r = await gpuRunner();
      const { capacity, W, k, v, scores } = caseData(c, [0x1234 + ci, 0xbeef + ci, 50 + ci]);
      const kpos = Uint32Array.from({ length: c.KV * capacity }, (_, i) => (i * 7 + 3) % 1000);
      const want = refEvict({ ...c, capacity, words: W }, k, v, scores, kpos);
      // the optional payload (original positions) rides along on the compact cases: moved, never rewritten
      const orig = Uint32Array.from({ length: c.KV * capacity }, (_, i) => (i * 13 + 5) % 100_000);
      const wantOrig = refEvict({ ...c, compact: false, capacity, words: W }, k, v, scores, orig).kpos;
      const b: Record<string, GPUBuffer> = { kCache: r.upload(k, 'k'), vCache: r.upload(v, 'v'), scores: r.upload(scores, 'scores'), kpos: r.upload(kpos, 'kpos') };
      if (c.compact) b.orig = r.upload(orig, 'orig');
      const scratch = scratchFor(r, c.dtype, c.D, c.KV, capacity);
      const o = { cacheDtype: c.dtype, headDim: c.D, layout: 'ordered' as const, compact: c.compact, threads: c.threads };
      const d = { KV: c.KV, len: c.len, keep: c.keep, forcedFrom: c.forcedFrom, capacity };
      const bufs = { kCache: b.kCache!, vCache: b.vCache!, scores: b.scores!, kpos: b.kpos!, orig: b.orig };
      const ds = c.single ? evictSingle(o, d, bufs) : evict(o, d, { ...bufs, scratch });
      if (c.keep >= c.len || c.keep === 0) expect(ds.length).toBe(0);
      r.run(ds);
      const got = {
        k: await r.readU32(b.kCache!, k.length),
        v: await r.readU32(b.vCache!, v.length),
        scores: await r.readU32(b.scores!, scores.length),
        kpos: await r.readU32(b.kpos!, kpos.length),
      };
      if (b.orig) expect(firstDiff(await r.readU32(b.orig, orig.length), wantOrig), 'orig').toBe('equal');
      // whole buffers: kept rows in order at [0, keep), everything else untouched
      expect(firstDiff(got.scores, new Uint32Array(want.scores.buffer)), 'scores').toBe('equal');
      expect(firstDiff(got.kpos, want.kpos), 'kpos').toBe('equal');
      expect(firstDiff(got.k, want.k), 'K').toBe('equal');
      expect(firstDiff(got.v, want.v), 'V').toBe('equal');
      for (const buf of Object.values(b)) r.destroy(buf);
      destroyScratch(r, scratch);
    });
  }
});

describe("evict, layout 'holes' (the chunk's survivors fill the evicted slots, positions become ranks)", () => {
  // every case but the single-workgroup baseline, each head's positions a shuffled permutation of its ranks
  for (const [ci, c] of cases.filter((x) => !x.single).entries()) {
    it(`${c.name}: KV=${c.KV} ${c.dtype} D=${c.D} len=${c.len} keep=${c.keep} forcedFrom=${c.forcedFrom} threads=${c.threads ?? 256}`, async () => {
      const r = await gpuRunner();
      const { capacity, W, k, v, scores } = caseData(c, [0x4321 + ci, 0xfeed + ci, 90 + ci]);
      const kpos = shuffledRanks(c.KV, c.len, capacity, 700 + ci);
      const orig = Uint32Array.from({ length: c.KV * capacity }, (_, i) => (i * 13 + 5) % 100_000);
      const want = refEvictHoles({ ...c, capacity, words: W }, k, v, scores, kpos, orig);
      const b = { kCache: r.upload(k, 'k'), vCache: r.upload(v, 'v'), scores: r.upload(scores, 'scores'), kpos: r.upload(kpos, 'kpos'), orig: r.upload(orig, 'orig') };
      const scratch = scratchFor(r, c.dtype, c.D, c.KV, capacity, 'holes');
      const ds = evict({ cacheDtype: c.dtype, headDim: c.D, layout: 'holes', compact: true, threads: c.threads }, { KV: c.KV, len: c.len, keep: c.keep, forcedFrom: c.forcedFrom, capacity }, { ...b, scratch });
      expect(ds.length).toBe(c.keep >= c.len || c.keep === 0 ? 0 : 2);
      r.run(ds);
      // whole buffers: survivors below keep untouched but for their rank, holes filled, everything else untouched
      expect(firstDiff(await r.readU32(b.scores, scores.length), new Uint32Array(want.scores.buffer)), 'scores').toBe('equal');
      expect(firstDiff(await r.readU32(b.kpos, kpos.length), want.kpos), 'kpos').toBe('equal');
      expect(firstDiff(await r.readU32(b.orig, orig.length), want.orig!), 'orig').toBe('equal');
      expect(firstDiff(await r.readU32(b.kCache, k.length), want.k), 'K').toBe('equal');
      expect(firstDiff(await r.readU32(b.vCache, v.length), want.v), 'V').toBe('equal');
      for (const buf of Object.values(b)) r.destroy(buf);
      destroyScratch(r, scratch);
    });
  }

  it('keeps the same entries as the ordered layout: sorted by position, the caches are equal', async () => {
    const r = await gpuRunner();
    const KV = 3, D = 16, len = 1500, keep = 700, forcedFrom = 1100, capacity = 1510, W = D / 2;
    const k = words(KV, capacity, W, 0x31);
    const v = words(KV, capacity, W, 0x32);
    const scores = makeScores('mixed', KV * capacity, 33);
    const ranks = Uint32Array.from({ length: KV * capacity }, (_, i) => i % capacity);
    const run = async (layout: EvictLayout) => {
      const b = { kCache: r.upload(k, 'k'), vCache: r.upload(v, 'v'), scores: r.upload(scores, 'scores'), kpos: r.upload(ranks, 'kpos') };
      const scratch = scratchFor(r, 'f16', D, KV, capacity, layout);
      r.run(evict({ cacheDtype: 'f16', headDim: D, layout, compact: true, threads: 512 }, { KV, len, keep, forcedFrom, capacity }, { ...b, scratch }));
      const got = { k: await r.readU32(b.kCache, k.length), v: await r.readU32(b.vCache, v.length), scores: await r.readU32(b.scores, scores.length), kpos: await r.readU32(b.kpos, ranks.length) };
      for (const buf of Object.values(b)) r.destroy(buf);
      destroyScratch(r, scratch);
      return got;
    };
    const ordered = await run('ordered');
    const holes = await run('holes');
    for (let h = 0; h < KV; h++) {
      const bySlot = Array.from({ length: keep }, (_, s) => holes.kpos[h * capacity + s]!);
      expect([...bySlot].sort((a, b) => a - b), `head ${h}: positions are the ranks`).toEqual(Array.from({ length: keep }, (_, i) => i));
      for (let s = 0; s < keep; s++) {
        const a = h * capacity + bySlot[s]!, b = h * capacity + s; // rank a in ordered ↔ slot b in holes
        expect(holes.scores[b], `head ${h} slot ${s} score`).toBe(ordered.scores[a]);
        expect(Array.from(holes.k.subarray(b * W, b * W + W)), `head ${h} slot ${s} K`).toEqual(Array.from(ordered.k.subarray(a * W, a * W + W)));
        expect(Array.from(holes.v.subarray(b * W, b * W + W)), `head ${h} slot ${s} V`).toEqual(Array.from(ordered.v.subarray(a * W, a * W + W)));
      }
    }
  });

  it('positions that are not ranks give a wrong cache, but nothing is written past the live slots', async () => {
    const r = await gpuRunner();
    const KV = 2, D = 8, len = 300, keep = 200, capacity = 320, W = D;
    const k = words(KV, capacity, W, 0x41);
    const v = words(KV, capacity, W, 0x42);
    const scores = makeScores('ties', KV * capacity, 43);
    const kpos = Uint32Array.from({ length: KV * capacity }, (_, i) => (i * 7919) % 100_000); // duplicates, out of range
    const b = { kCache: r.upload(k, 'k'), vCache: r.upload(v, 'v'), scores: r.upload(scores, 'scores'), kpos: r.upload(kpos, 'kpos') };
    const scratch = scratchFor(r, 'f32', D, KV, capacity, 'holes');
    r.run(evict({ cacheDtype: 'f32', headDim: D, layout: 'holes', compact: true }, { KV, len, keep, forcedFrom: 250, capacity }, { ...b, scratch }));
    const got = { k: await r.readU32(b.kCache, k.length), s: await r.readU32(b.scores, scores.length), p: await r.readU32(b.kpos, kpos.length) };
    const sw = new Uint32Array(scores.buffer);
    for (let h = 0; h < KV; h++) {
      const from = h * capacity + len, to = (h + 1) * capacity;
      expect(firstDiff(got.k.subarray(from * W, to * W), k.subarray(from * W, to * W)), `head ${h} K past len`).toBe('equal');
      expect(firstDiff(got.s.subarray(from, to), sw.subarray(from, to)), `head ${h} scores past len`).toBe('equal');
      expect(firstDiff(got.p.subarray(from, to), kpos.subarray(from, to)), `head ${h} positions past len`).toBe('equal');
    }
    for (const buf of Object.values(b)) r.destroy(buf);
    destroyScratch(r, scratch);
  });

  it('is what a session picks unless positions are original or the policy pools scores along slots', () => {
    expect(evictLayoutFor(true, false)).toBe('holes');
    expect(evictLayoutFor(false, false)).toBe('ordered');
    expect(evictLayoutFor(true, true)).toBe('ordered');
    expect(() => evict({ cacheDtype: 'f32', headDim: 8, layout: 'holes', compact: false }, { KV: 1, len: 4, keep: 2, forcedFrom: 4, capacity: 4 }, {} as never)).toThrow(/compact/);
  });
});

describe('evict over several layers sharing one scratch', () => {
  it('three layers of different scores in one submission each come out as the reference says', async () => {
    const r = await gpuRunner();
    const KV = 2, D = 16, len = 600, keep = 250, forcedFrom = 560, capacity = 610, W = D / 2;
    const scratch = scratchFor(r, 'f16', D, KV, capacity);
    const layers = [0, 1, 2].map((l) => {
      const k = words(KV, capacity, W, 0x77 + l);
      const v = words(KV, capacity, W, 0x99 + l);
      const scores = makeScores(l === 1 ? 'ties' : 'mixed', KV * capacity, 300 + l);
      const kpos = Uint32Array.from({ length: KV * capacity }, (_, i) => (i * 3 + l) % 5000);
      const want = refEvict({ KV, len, keep, forcedFrom, capacity, compact: true, words: W }, k, v, scores, kpos);
      const b = { kCache: r.upload(k, 'k'), vCache: r.upload(v, 'v'), scores: r.upload(scores, 'scores'), kpos: r.upload(kpos, 'kpos') };
      return { want, b, n: k.length };
    });
    r.run(layers.flatMap(({ b }) => evict({ cacheDtype: 'f16', headDim: D, layout: 'ordered', compact: true, threads: 1024 }, { KV, len, keep, forcedFrom, capacity }, { ...b, scratch })));
    for (const [l, { want, b, n }] of layers.entries()) {
      expect(firstDiff(await r.readU32(b.kCache, n), want.k), `K layer ${l}`).toBe('equal');
      expect(firstDiff(await r.readU32(b.vCache, n), want.v), `V layer ${l}`).toBe('equal');
      expect(firstDiff(await r.readU32(b.scores, KV * capacity), new Uint32Array(want.scores.buffer)), `scores layer ${l}`).toBe('equal');
      expect(firstDiff(await r.readU32(b.kpos, KV * capacity), want.kpos), `kpos layer ${l}`).toBe('equal');
      for (const buf of Object.values(b)) r.destroy(buf);
    }
    destroyScratch(r, scratch);
  });

  it('rejects a scratch too small for the caches', () => {
    const tiny = { size: 16 } as GPUBuffer;
    expect(() => evict({ cacheDtype: 'f16', headDim: 8, layout: 'ordered', compact: false }, { KV: 2, len: 10, keep: 5, forcedFrom: 10, capacity: 10 },
      { kCache: tiny, vCache: tiny, scores: tiny, kpos: tiny, scratch: { rows: tiny, meta: tiny } })).toThrow(/scratch/);
  });
});

describe('evict an int8 cache', () => {
  it('kept rows dequantize to their original values: each row moved with its own scale', async () => {
    const r = await gpuRunner();
    const KV = 2, D = 128, len = 150, keep = 60, capacity = 160; // the kernel variant of the 'int8 rows, D=128' case
    const RW = rowWords(D);
    // rows of very different magnitudes, so a scale left behind or taken from a neighbour shows at once
    const x = rand(KV * capacity * D, 5).map((v, i) => v * 10 ** ((Math.floor(i / D) % 7) - 3));
    const k = quantizeRows(x, KV * capacity, D);
    const v = quantizeRows(x.map((y) => -2 * y), KV * capacity, D);
    const scores = makeScores('mixed', KV * capacity, 77);
    const kpos = Uint32Array.from({ length: KV * capacity }, (_, i) => i % capacity);
    const want = refEvict({ KV, len, keep, forcedFrom: 140, capacity, compact: false, words: RW }, k, v, scores, kpos);
    const b = { kCache: r.upload(k, 'k'), vCache: r.upload(v, 'v'), scores: r.upload(scores, 'scores'), kpos: r.upload(kpos, 'kpos') };
    const scratch = scratchFor(r, 'int8', D, KV, capacity);
    r.run(evict({ cacheDtype: 'int8', headDim: D, layout: 'ordered', compact: false }, { KV, len, keep, forcedFrom: 140, capacity }, { ...b, scratch }));
    const kd = dequantizeRows(await r.readU32(b.kCache, k.length), KV * capacity, D);
    const vd = dequantizeRows(await r.readU32(b.vCache, v.length), KV * capacity, D);
    const k0 = dequantizeRows(k, KV * capacity, D);
    const v0 = dequantizeRows(v, KV * capacity, D);
    for (let g = 0; g < KV; g++) {
      want.kept[g]!.forEach((src, i) => {
        const from = (g * capacity + src) * D;
        const to = (g * capacity + i) * D;
        expect(Array.from(kd.subarray(to, to + D)), `K head ${g} slot ${i} (from ${src})`).toEqual(Array.from(k0.subarray(from, from + D)));
        expect(Array.from(vd.subarray(to, to + D)), `V head ${g} slot ${i} (from ${src})`).toEqual(Array.from(v0.subarray(from, from + D)));
      });
    }
    for (const buf of Object.values(b)) r.destroy(buf);
    destroyScratch(r, scratch);
  });

  it('rejects a head size that is not a multiple of 4', () => {
    expect(() => evict({ cacheDtype: 'int8', headDim: 6, layout: 'ordered', compact: true }, { KV: 1, len: 4, keep: 2, forcedFrom: 4, capacity: 4 }, {} as never)).toThrow(/multiple of 4/);
  });
});

describe('baseline scores', () => {
  const d = { T: 70, KV: 3, slot0: 20, pos0: 1, capacity: 100, seed: 0xdeadbeef, layer: 5 };
  for (const policy of ['streaming', 'random'] as const) {
    it(`${policy}: exact values for the new slots, nothing else written`, async () => {
      const r = await gpuRunner();
      const init = rand(d.KV * d.capacity, 3);
      const scores = r.upload(init, 'scores');
      r.run([fillScores({ policy }, d, { scores })]);
      const got = await r.readU32(scores, init.length);
      const want = refFillScores(policy, d, init);
      expect(firstDiff(got, new Uint32Array(want.buffer))).toBe('equal');
      if (policy === 'random') {
        const vals = Array.from(want.subarray(d.slot0, d.slot0 + d.T));
        expect(Math.min(...vals)).toBeGreaterThanOrEqual(0);
        expect(Math.max(...vals)).toBeLessThan(1);
        expect(new Set(vals).size).toBe(vals.length);
      }
      r.destroy(scores);
    });
  }
  it('streaming + evict keeps the sinks and the newest entries', async () => {
    const r = await gpuRunner();
    const KV = 2;
    const capacity = 64;
    const len = 50;
    const scores = r.createBuffer(KV * capacity * 4, 'scores');
    r.run([fillScores({ policy: 'streaming' }, { T: len, KV, slot0: 0, pos0: 0, capacity, seed: 0, layer: 0, sinks: 4 }, { scores })]);
    const kpos = r.upload(Uint32Array.from({ length: KV * capacity }, (_, i) => i % capacity), 'kpos');
    const kc = r.createBuffer(KV * capacity * 8 * 4, 'k');
    const vc = r.createBuffer(KV * capacity * 8 * 4, 'v');
    const scratch = scratchFor(r, 'f32', 8, KV, capacity);
    r.run(evict({ cacheDtype: 'f32', headDim: 8, layout: 'ordered', compact: false }, { KV, len, keep: 20, forcedFrom: 45, capacity }, { kCache: kc, vCache: vc, scores, kpos, scratch }));
    const pos = await r.readU32(kpos, KV * capacity);
    const expected = [0, 1, 2, 3, ...Array.from({ length: 16 }, (_, i) => 34 + i)];
    for (let g = 0; g < KV; g++) expect(Array.from(pos.subarray(g * capacity, g * capacity + 20))).toEqual(expected);
    for (const buf of [scores, kpos, kc, vc]) r.destroy(buf);
    destroyScratch(r, scratch);
  });
});
