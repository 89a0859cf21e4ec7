/**
 * int8 KV cache: the CPU row quantizer, the GPU quantizing store (unfused kv_store and the staged path behind the
 * fused qkv_rope), and attention / attention statistics reading an int8 cache (prefill and split decode).
 */
import { describe, expect, it } from 'vitest';
import { attention, attentionPlan, attentionScratchBytes, type AttentionOpts } from '../compiler/kernels/attention.js';
import { kvStore } from '../compiler/kernels/cache-store.js';
import { kvQuantize } from '../compiler/kernels/kv-int8.js';
import { attentionStats, zeroScores } from '../compiler/kernels/scores.js';
import { ropeTable } from '../runtime/rope.js';
import { expectClose, gpuRunner, rand } from './gpu-harness.js';
import { refAttention, refAttentionStats, type RefAttnShape } from './ref/gpu-attention.js';
import { codeAt, dequantizeRows, quantizeRows, rowWords, scaleAt } from './ref/kv-int8.js';

/** Row r of a (rows, D) f32 matrix → its `(words)` quantized image must match the reference's, row by row. */
function expectRowsMatch(got: Uint32Array, want: Uint32Array, x: Float32Array, rows: number, D: number, what: string): void {
  for (let r = 0; r < rows; r++) {
    const s = scaleAt(want, D, r);
    expect(Math.abs(scaleAt(got, D, r) - s), `${what}: scale of row ${r}`).toBeLessThanOrEqual(s * 1e-6);
    for (let i = 0; i < D; i++) {
      const d = Math.abs(codeAt(got, D, r, i) - codeAt(want, D, r, i));
      if (d === 0) continue;
      // a GPU division may land on the other side of a rounding tie than the correctly rounded CPU one: one code
      // off is allowed only there
      const frac = Math.abs(Math.abs(x[r * D + i]! / s) % 1 - 0.5);
      expect(d === 1 && frac < 1e-4, `${what}: row ${r} dim ${i}: code ${codeAt(got, D, r, i)} vs ${codeAt(want, D, r, i)}`).toBe(true);
    }
  }
}

describe('int8 row quantizer (CPU reference)', () => {
  it('round trip within half a step, extremes map to ±127, zero rows stay zero', () => {
    const D = 64;
    const x = rand(5 * D, 1, 3);
    x.fill(0, 2 * D, 3 * D); // a zero row
    x[4 * D + 7] = -40; // an outlier dominates its row's scale
    const w = quantizeRows(x, 5, D);
    expect(w.length).toBe(5 * rowWords(D));
    const y = dequantizeRows(w, 5, D);
    for (let r = 0; r < 5; r++) {
      const s = scaleAt(w, D, r);
      let m = 0;
      for (let i = 0; i < D; i++) {
        m = Math.max(m, Math.abs(x[r * D + i]!));
        expect(Math.abs(y[r * D + i]! - x[r * D + i]!)).toBeLessThanOrEqual(s / 2 + 1e-6 * m);
        expect(Math.abs(codeAt(w, D, r, i))).toBeLessThanOrEqual(127);
      }
      expect(s).toBe(Math.fround(m / 127));
      if (m > 0) expect(Math.max(...Array.from({ length: D }, (_, i) => Math.abs(codeAt(w, D, r, i))))).toBe(127);
    }
    expect(codeAt(w, D, 4, 7)).toBe(-127);
    expect(Array.from(y.subarray(2 * D, 3 * D)).every((v) => v === 0)).toBe(true);
  });
});

describe('int8 quantizing store', () => {
  it('kv_store (unfused): q copied, K/V rows quantized into slots slot0.., kpos written, nothing else touched', async () => {
    const r = await gpuRunner();
    const H = 6, KV = 2, D = 64, T = 5, cap = 20, slot0 = 7, pos0 = 100;
    const W = (H + 2 * KV) * D;
    const qkv = rand(T * W, 11, 2);
    qkv.fill(0, 3 * W + H * D, 3 * W + H * D + D); // token 3's first key row is all zero
    const RW = rowWords(D);
    const init = Uint32Array.from({ length: KV * cap * RW }, (_, i) => (i * 2654435761) >>> 0);
    const b = {
      qkv: r.upload(qkv, 'qkv'), q: r.createBuffer(T * H * D * 4, 'q'),
      kCache: r.upload(init, 'k'), vCache: r.upload(init, 'v'), kpos: r.upload(new Uint32Array(KV * cap).fill(7), 'kpos'),
    };
    r.run([kvStore({ cacheDtype: 'int8', numHeads: H, numKvHeads: KV, headDim: D }, { T, slot0, pos0, capacity: cap }, b)]);
    const q = await r.readF32(b.q, T * H * D);
    for (let t = 0; t < T; t++) expect(Array.from(q.subarray(t * H * D, (t + 1) * H * D))).toEqual(Array.from(qkv.subarray(t * W, t * W + H * D)));
    const kpos = await r.readU32(b.kpos, KV * cap);
    for (const [isV, buf] of [[false, b.kCache], [true, b.vCache]] as const) {
      const got = await r.readU32(buf, init.length);
      for (let h = 0; h < KV; h++) {
        const x = new Float32Array(T * D);
        for (let t = 0; t < T; t++) x.set(qkv.subarray(t * W + H * D + (isV ? KV * D : 0) + h * D, t * W + H * D + (isV ? KV * D : 0) + (h + 1) * D), t * D);
        const at = (h * cap + slot0) * RW;
        expectRowsMatch(got.subarray(at, at + T * RW), quantizeRows(x, T, D), x, T, D, `${isV ? 'V' : 'K'} head ${h}`);
        // slots outside [slot0, slot0 + T) untouched
        expect(Array.from(got.subarray(h * cap * RW, at))).toEqual(Array.from(init.subarray(h * cap * RW, at)));
        expect(Array.from(got.subarray(at + T * RW, (h + 1) * cap * RW))).toEqual(Array.from(init.subarray(at + T * RW, (h + 1) * cap * RW)));
        for (let s = 0; s < cap; s++) expect(kpos[h * cap + s]).toBe(s >= slot0 && s < slot0 + T ? pos0 + s - slot0 : 7);
      }
    }
    for (const buf of Object.values(b)) r.destroy(buf);
  });

  // D = 12: 3 quads per row, 21 rows per workgroup (one idle thread); D = 96: rows of 24 threads (16 idle);
  // D = 512: 128 quads, threads loop over their row
  for (const D of [12, 96, 512]) {
    it(`staged (behind qkv_rope): D=${D}`, async () => {
      const r = await gpuRunner();
      const KV = 3, T = 7, stageCap = 9, cap = 30, slot0 = 20, pos0 = 3;
      const ks = rand(KV * stageCap * D, 20 + D, 5);
      const vs = rand(KV * stageCap * D, 21 + D, 0.01);
      const RW = rowWords(D);
      const b = {
        kSrc: r.upload(ks, 'ks'), vSrc: r.upload(vs, 'vs'),
        kCache: r.createBuffer(KV * cap * RW * 4, 'k'), vCache: r.createBuffer(KV * cap * RW * 4, 'v'), kpos: r.createBuffer(KV * cap * 4, 'kpos'),
      };
      r.run([kvQuantize({ numHeads: KV, numKvHeads: KV, headDim: D, mode: 'staged' }, { T, slot0, pos0, capacity: cap, stageCap }, b)]);
      const kpos = await r.readU32(b.kpos, KV * cap);
      for (const [name, src, buf] of [['K', ks, b.kCache], ['V', vs, b.vCache]] as const) {
        const got = await r.readU32(buf, KV * cap * RW);
        for (let h = 0; h < KV; h++) {
          const x = src.slice(h * stageCap * D, (h * stageCap + T) * D);
          const at = (h * cap + slot0) * RW;
          expectRowsMatch(got.subarray(at, at + T * RW), quantizeRows(x, T, D), x, T, D, `${name} head ${h}`);
          for (let t = 0; t < T; t++) expect(kpos[h * cap + slot0 + t]).toBe(pos0 + t);
        }
      }
      for (const buf of Object.values(b)) r.destroy(buf);
    });
  }

  it('rejects a head size that is not a multiple of 4', () => {
    expect(() => kvStore({ cacheDtype: 'int8', numHeads: 2, numKvHeads: 1, headDim: 6 }, { T: 1, slot0: 0, pos0: 0, capacity: 4 }, {} as never))
      .toThrow(/multiple of 4/);
  });
});

interface Case {
  H: number;
  KV: number;
  D: number;
  rot: number;
  T: number;
  base: number;
  splits?: number;
}

const POSITIONS = 400;

/** Random queries and cache; the int8 cache, and the f32 values it dequantizes to (what the kernel must see). */
function inputs(c: Case, seed: number) {
  const capacity = c.base + c.T + 7;
  const sh: RefAttnShape = { H: c.H, KV: c.KV, D: c.D, rotaryDim: c.rot, T: c.T, base: c.base, capacity, scale: 1 / Math.sqrt(c.D) };
  const q = rand(c.T * c.H * c.D, seed, 2);
  const k = rand(c.KV * capacity * c.D, seed + 1, 2);
  const v = rand(c.KV * capacity * c.D, seed + 2);
  const kw = quantizeRows(k, c.KV * capacity, c.D);
  const vw = quantizeRows(v, c.KV * capacity, c.D);
  // slots past the visible range get a NaN scale: a read there would poison the output
  for (let g = 0; g < c.KV; g++) {
    for (let s = c.base + c.T; s < capacity; s++) {
      kw[(g * capacity + s) * rowWords(c.D) + c.D / 4] = 0x7fc00000;
      vw[(g * capacity + s) * rowWords(c.D) + c.D / 4] = 0x7fc00000;
    }
  }
  const kpos = Uint32Array.from(rand(c.KV * capacity, seed + 3), (x) => Math.floor(((x + 1) / 2) * (POSITIONS - 1)));
  const rope = ropeTable({ kind: 'default', theta: 10000, rotaryDim: c.rot }, POSITIONS);
  return { sh, capacity, q, k, v, kw, vw, kDeq: dequantizeRows(kw, c.KV * capacity, c.D), vDeq: dequantizeRows(vw, c.KV * capacity, c.D), kpos, rope };
}

const opts = (c: Case): AttentionOpts => ({ cacheDtype: 'int8', numHeads: c.H, numKvHeads: c.KV, headDim: c.D, rotaryDim: c.rot });

describe('attention over an int8 cache', () => {
  const cases: Case[] = [
    { H: 6, KV: 2, D: 64, rot: 64, T: 67, base: 130, splits: 1 }, // prefill chunk
    { H: 6, KV: 2, D: 64, rot: 32, T: 1, base: 130 }, // decode, keys split + combine
    { H: 8, KV: 2, D: 128, rot: 128, T: 3, base: 130, splits: 5 },
  ];
  for (const [i, c] of cases.entries()) {
    const p = attentionPlan(opts(c), { T: c.T, base: c.base, capacity: c.base + c.T + 7, scale: 1, splits: c.splits });
    it(`H=${c.H}/${c.KV} D=${c.D} rot=${c.rot} T=${c.T} base=${c.base} (splits=${p.splits})`, async () => {
      const r = await gpuRunner();
      const x = inputs(c, 300 + i * 10);
      const d = { T: c.T, base: c.base, capacity: x.capacity, scale: x.sh.scale, splits: c.splits };
      const bufs = {
        q: r.upload(x.q, 'q'), kCache: r.upload(x.kw, 'k'), vCache: r.upload(x.vw, 'v'), kpos: r.upload(x.kpos, 'kpos'), rope: r.upload(x.rope, 'rope'),
        out: r.createBuffer(c.T * c.H * c.D * 4, 'out'), lse: r.createBuffer(c.T * c.H * 4, 'lse'),
        scratch: r.createBuffer(Math.max(16, attentionScratchBytes(opts(c), d)), 'scratch'),
      };
      r.run(attention(opts(c), d, bufs));
      const out = await r.readF32(bufs.out, c.T * c.H * c.D);
      const lse = await r.readF32(bufs.lse, c.T * c.H);
      // against the reference on the dequantized cache: only accumulation order differs (the f32 cache's tolerance)
      const deq = refAttention(x.sh, x.q, x.kDeq, x.vDeq, x.kpos, x.rope);
      expectClose(out, deq.out, 1e-4, 'out vs dequantized');
      expectClose(lse, deq.lse, 1e-4, 'lse vs dequantized');
      // against the unquantized f32 cache: every cached value is off by at most max|row| / 254 (0.4% of its row's
      // range). An output is a convex mix of V rows in [-1, 1], so V moves it by <= 1/254 ≈ 4e-3; K errors shift the
      // logits by a few 1e-3 here (random signs average out over D). Measured: out <= 3e-3, lse <= 5e-4 relative;
      // 1e-2 leaves 3x margin over what was measured
      const f32 = refAttention(x.sh, x.q, x.k, x.v, x.kpos, x.rope);
      expectClose(out, f32.out, 1e-2, 'out vs f32 cache');
      expectClose(lse, f32.lse, 1e-2, 'lse vs f32 cache');
      for (const b of Object.values(bufs)) r.destroy(b);
    });
  }

  it('H2O statistics read the int8 keys', async () => {
    const c: Case = { H: 6, KV: 2, D: 64, rot: 32, T: 67, base: 130 };
    const r = await gpuRunner();
    const x = inputs(c, 777);
    const { lse } = refAttention(x.sh, x.q, x.kDeq, x.vDeq, x.kpos, x.rope);
    const want0 = new Float32Array(c.KV * x.capacity);
    const want = refAttentionStats(x.sh, 'h2o', 32, x.q, x.kDeq, x.kpos, x.rope, lse, want0);
    const b = {
      q: r.upload(x.q, 'q'), kCache: r.upload(x.kw, 'k'), kpos: r.upload(x.kpos, 'kpos'), rope: r.upload(x.rope, 'rope'),
      lse: r.upload(lse, 'lse'), scores: r.createBuffer(c.KV * x.capacity * 4, 'scores'),
    };
    const d = { T: c.T, base: c.base, capacity: x.capacity, scale: x.sh.scale };
    r.run([zeroScores({ KV: c.KV, slot0: 0, T: x.capacity, capacity: x.capacity }, b), ...attentionStats({ ...opts(c), mode: 'h2o' }, d, b)]);
    expectClose(await r.readF32(b.scores, c.KV * x.capacity), want, 1e-4, 'h2o scores', 1e-3);
    for (const buf of Object.values(b)) r.destroy(buf);
  });
});
