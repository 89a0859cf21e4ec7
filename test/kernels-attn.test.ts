import { describe, expect, it } from 'vitest';
import { attention, attentionPlan, attentionScratchBytes, type AttentionOpts } from '../compiler/kernels/attention.js';
import { attentionStats, zeroScores } from '../compiler/kernels/scores.js';
import { attnInputs, type AttnCase } from './attn-inputs.js';
import { rotatedKeysBytes } from '../compiler/kernels/rotate-keys.js';
import { gpuRunner, rand, expectClose } from './gpu-harness.js';
import { refAttention, refAttentionStats } from './ref/gpu-attention.js';
import { withEnv } from './with-env.js';

type Case = AttnCase;

const opts = (c: Case): AttentionOpts => ({ cacheDtype: c.dtype, numHeads: c.H, numKvHeads: c.KV, headDim: c.D, rotaryDim: c.rot });

const cases: Case[] = [
  { H: 6, KV: 2, D: 64, rot: 64, T: 67, base: 130, dtype: 'f32' },
  { H: 6, KV: 2, D: 64, rot: 32, T: 67, base: 0, dtype: 'f32', splits: 1 },
  { H: 6, KV: 2, D: 64, rot: 32, T: 3, base: 5, dtype: 'f16' },
  { H: 6, KV: 2, D: 64, rot: 64, T: 1, base: 130, dtype: 'f32' },
  { H: 6, KV: 2, D: 64, rot: 32, T: 1, base: 130, dtype: 'f16' },
  { H: 4, KV: 4, D: 64, rot: 64, T: 1, base: 0, dtype: 'f32' },
  { H: 4, KV: 4, D: 64, rot: 32, T: 3, base: 130, dtype: 'f32' },
  { H: 4, KV: 4, D: 64, rot: 64, T: 67, base: 5, dtype: 'f16' },
  { H: 6, KV: 2, D: 64, rot: 32, T: 3, base: 130, dtype: 'f32', splits: 5 },
  { H: 8, KV: 2, D: 128, rot: 128, T: 3, base: 130, dtype: 'f16', splits: 1 },
  // even GQA groups (two rows per thread group with shuffles), a 1024-token-like chunk shape cut down, odd sizes
  { H: 8, KV: 2, D: 128, rot: 128, T: 37, base: 61, dtype: 'f16' },
  { H: 8, KV: 2, D: 128, rot: 64, T: 19, base: 0, dtype: 'f32', splits: 3 },
  { H: 3, KV: 3, D: 96, rot: 32, T: 41, base: 9, dtype: 'f16' },
];

describe('attention over the cache', () => {
  for (const [i, c] of cases.entries()) {
    const p = attentionPlan(opts(c), { T: c.T, base: c.base, capacity: c.base + c.T + 7, scale: 1, splits: c.splits });
    it(`H=${c.H}/${c.KV} D=${c.D} rot=${c.rot} T=${c.T} base=${c.base} ${c.dtype} (BQ=${p.BQ} TPR=${p.TPR} splits=${p.splits})`, async () => {
      const r = await gpuRunner();
      const x = attnInputs(c, 100 + i * 10);
      const want = refAttention(x.sh, x.q, x.k.ref, x.v.ref, x.kpos, x.rope);
      const d = { T: c.T, base: c.base, capacity: x.capacity, scale: x.sh.scale, splits: c.splits };
      const bufs = {
        q: r.upload(x.q, 'q'),
        kCache: r.upload(x.k.gpu, 'k'),
        vCache: r.upload(x.v.gpu, 'v'),
        kpos: r.upload(x.kpos, 'kpos'),
        rope: r.upload(x.rope, 'rope'),
        out: r.createBuffer(c.T * c.H * c.D * 4, 'out'),
        lse: r.createBuffer(c.T * c.H * 4, 'lse'),
        scratch: r.createBuffer(Math.max(16, attentionScratchBytes(opts(c), d)), 'scratch'),
      };
      r.run(attention(opts(c), d, bufs));
      const tol = c.dtype === 'f32' ? 1e-4 : 2e-3;
      expectClose(await r.readF32(bufs.out, c.T * c.H * c.D), want.out, tol, 'out');
      expectClose(await r.readF32(bufs.lse, c.T * c.H), want.lse, tol, 'lse');
      if (i === 0) {
        // lse is optional: the output must not change without it (split path; unsplit differs only in its epilogue)
        const out2 = r.createBuffer(c.T * c.H * c.D * 4, 'out2');
        r.run(attention(opts(c), d, { ...bufs, lse: undefined, out: out2 }));
        expectClose(await r.readF32(out2, c.T * c.H * c.D), want.out, tol, 'out (no lse)');
        r.destroy(out2);
      }
      if (c.dtype === 'f16') {
        // keys rotated once into kRot (f16, starting as NaN: slots past the chunk must stay unread), one more dispatch
        const kRot = r.upload(new Uint16Array(rotatedKeysBytes({ numKvHeads: c.KV, headDim: c.D }, x.capacity) / 2).fill(0x7e00), 'krot');
        const ds = attention(opts(c), d, { ...bufs, kRot });
        expect(ds.length).toBe(attention(opts(c), d, bufs).length + 1);
        r.run(ds);
        expectClose(await r.readF32(bufs.out, c.T * c.H * c.D), want.out, tol, 'out (keys from kRot)');
        expectClose(await r.readF32(bufs.lse, c.T * c.H), want.lse, tol, 'lse (keys from kRot)');
        r.destroy(kRot);
      }
      // the same call with each row's lanes summed by subgroup shuffles (attention-shuffle.ts), where the device has them:
      // one row per thread group (the default), the GQA group's heads two or three at a time (LOCRET_FMA_ATTN=rt=…);
      // with rotated keys the next tile is loaded while the current one is used unless pf=0; bk=16: 16-key tiles
      const sg = { ...opts(c), subgroupMin: r.gpu.subgroupMinSize };
      if (r.gpu.subgroups && r.gpu.subgroupMinSize >= 2) {
        const G = c.H / c.KV;
        const rts = G % 2 === 0 ? [undefined, 2] : G % 3 === 0 ? [undefined, 3] : [undefined];
        const specs = [...rts.map((rt) => (rt ? `rt=${rt}` : undefined)), ...(c.dtype === 'f16' ? ['pf=0', `bk=16${rts[1] ? `,rt=${rts[1]}` : ''}`] : [])];
        for (const spec of specs) {
          const rt = spec?.match(/rt=(\d)/)?.[1];
          const pf = c.dtype === 'f16' && !spec?.includes('pf=0'); // kRot's prefetch form reads an f16 cache
          const bk16 = spec?.includes('bk=16') ?? false;
          const kRot = r.upload(new Uint16Array(rotatedKeysBytes({ numKvHeads: c.KV, headDim: c.D }, x.capacity) / 2).fill(0x7e00), 'krot');
          const plan = () => ({ ps: attentionPlan(sg, d), ds: attention(sg, d, bufs), dsRot: attention(sg, d, { ...bufs, kRot }) });
          const { ps, ds, dsRot } = spec === undefined ? plan() : withEnv({ LOCRET_FMA_ATTN: spec }, plan);
          expect([ps.shuffle, ps.RT], `case ${i}: the shuffle kernel applies`).toEqual([true, rt ? Number(rt) : 1]);
          expect([ps.BQ, ps.splits]).toEqual([p.BQ, p.splits]); // same grid and scratch as above
          expect(ds.map((x) => x.kernel.name).join(' ')).toContain('attention_shuffle');
          const names = dsRot.map((x) => x.kernel.name).join(' ');
          expect([names.includes('pf-1'), names.includes('bk-16')], `case ${i} ${spec}: prefetch, 16-key tiles`).toEqual([pf, bk16]);
          const what = `shuffles, RT=${ps.RT} TPR=${ps.TPR}${pf ? ' prefetch' : ''}${bk16 ? ' 16-key tiles' : ''}`;
          r.run(ds);
          expectClose(await r.readF32(bufs.out, c.T * c.H * c.D), want.out, tol, `out (${what})`);
          expectClose(await r.readF32(bufs.lse, c.T * c.H), want.lse, tol, `lse (${what})`);
          if (c.dtype === 'f16') {
            r.run(dsRot);
            expectClose(await r.readF32(bufs.out, c.T * c.H * c.D), want.out, tol, `out (${what}, keys from kRot)`);
            expectClose(await r.readF32(bufs.lse, c.T * c.H), want.lse, tol, `lse (${what}, keys from kRot)`);
          }
          r.destroy(kRot);
        }
      }
      for (const b of Object.values(bufs)) r.destroy(b);
    });
  }
});

describe('attention statistics (H2O accumulate, SnapKV replace)', () => {
  const statCases: (Case & { mode: 'h2o' | 'snapkv'; window?: number })[] = [
    { H: 6, KV: 2, D: 64, rot: 32, T: 67, base: 130, dtype: 'f32', mode: 'h2o' },
    { H: 4, KV: 4, D: 64, rot: 64, T: 3, base: 5, dtype: 'f16', mode: 'h2o' },
    { H: 6, KV: 2, D: 64, rot: 64, T: 67, base: 5, dtype: 'f32', mode: 'snapkv' },
    { H: 4, KV: 4, D: 64, rot: 32, T: 1, base: 130, dtype: 'f16', mode: 'snapkv', window: 8 },
    { H: 6, KV: 2, D: 64, rot: 64, T: 3, base: 0, dtype: 'f32', mode: 'snapkv' },
  ];
  for (const [i, c] of statCases.entries()) {
    it(`${c.mode} H=${c.H}/${c.KV} rot=${c.rot} T=${c.T} base=${c.base} ${c.dtype}`, async () => {
      const r = await gpuRunner();
      const x = attnInputs(c, 700 + i * 10);
      const { lse } = refAttention(x.sh, x.q, x.k.ref, x.v.ref, x.kpos, x.rope);
      // earlier chunks' accumulated scores, which H2O must add to and SnapKV must replace
      const prev = rand(c.KV * x.capacity, 900 + i, 4).map(Math.abs);
      const want0 = prev.slice();
      for (let g = 0; g < c.KV; g++) want0.fill(0, g * x.capacity + c.base, g * x.capacity + c.base + c.T);
      const want = refAttentionStats(x.sh, c.mode, c.window ?? 32, x.q, x.k.ref, x.kpos, x.rope, lse, want0);
      const b = {
        q: r.upload(x.q, 'q'),
        kCache: r.upload(x.k.gpu, 'k'),
        kpos: r.upload(x.kpos, 'kpos'),
        rope: r.upload(x.rope, 'rope'),
        lse: r.upload(lse, 'lse'),
        scores: r.upload(prev, 'scores'),
      };
      const o = { ...opts(c), mode: c.mode, window: c.window };
      const d = { T: c.T, base: c.base, capacity: x.capacity, scale: x.sh.scale };
      r.run([zeroScores({ KV: c.KV, slot0: c.base, T: c.T, capacity: x.capacity }, b), ...attentionStats(o, d, b)]);
      const got = await r.readF32(b.scores, c.KV * x.capacity);
      expectClose(got, want, c.dtype === 'f32' ? 1e-4 : 2e-3, `${c.mode} scores`, 1e-3);
      for (const buf of Object.values(b)) r.destroy(buf);
    });
  }
});

describe('attention scratch sizing', () => {
  it('one buffer sized for the largest chunk at the end of the cache covers every smaller call', () => {
    const o: AttentionOpts = { cacheDtype: 'f16', numHeads: 32, numKvHeads: 8, headDim: 128, rotaryDim: 128 };
    const capacity = 18432;
    const bound = attentionScratchBytes(o, { T: 1024, base: capacity - 1024, capacity, scale: 1 });
    for (const T of [1, 2, 3, 4, 8, 17, 64, 100, 1024]) {
      for (let base = 0; base + T <= capacity; base += 97) {
        const p = attentionPlan(o, { T, base, capacity, scale: 1 });
        if (p.splits > 1) expect(p.splits * T * 32 * 132 * 4).toBeLessThanOrEqual(bound);
      }
    }
  });
});
