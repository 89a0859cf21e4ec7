/**
 * Tensor-core decode attention (attention-decode-tc.ts) against the CPU reference, fragments emulated in plain WGSL
 * (the CPU driver has no subgroup matrices; bench/attn-check.ts --tc checks the real builtins on a GPU). The cache
 * holds rotated keys, so the reference sees every key at position 0 (an identity rotation). Slots past the live end
 * hold NaN: a kernel that read one into a product would return NaN.
 */
import { describe, expect, it } from 'vitest';
import { attentionDecodeTc, decodeTcPlan, decodeTcUsable, type DecodeTcOpts } from '../compiler/kernels/attention-decode-tc.js';
import { workgroupVars } from '../compiler/wgsl-workgroup.js';
import { attnInputs, type AttnCase } from './attn-inputs.js';
import { expectClose, gpuRunner } from './gpu-harness.js';
import { refAttention } from './ref/gpu-attention.js';

interface Case { H: number; KV: number; D: number; base: number; lse: boolean; splits?: number; ns?: number; tau?: number; prefetch?: boolean }
const opts = (c: Case, emulate = true): DecodeTcOpts => ({
  cacheDtype: 'f16', numHeads: c.H, numKvHeads: c.KV, headDim: c.D, rotaryDim: c.D, emulate, ns: c.ns, tau: c.tau, prefetch: c.prefetch,
});
const dims = (c: Case) => ({ T: 1, base: c.base, capacity: c.base + 8, scale: 1 / Math.sqrt(c.D), splits: c.splits });
const placeholders = { q: {}, kCache: {}, vCache: {}, kpos: {}, rope: {}, out: {}, lse: {}, scratch: { size: 1 << 30 } } as never;

describe('tensor-core decode attention: plan and layout', () => {
  it('runs single f16 queries of GQA groups up to 16 heads only', () => {
    const o = opts({ H: 32, KV: 8, D: 128, base: 0, lse: true });
    expect(decodeTcUsable(o, { T: 1 })).toBe(true);
    expect(decodeTcUsable(o, { T: 2 })).toBe(false);
    expect(decodeTcUsable({ ...o, cacheDtype: 'int8' }, { T: 1 })).toBe(false);
    expect(decodeTcUsable({ ...o, headDim: 120, rotaryDim: 120 }, { T: 1 })).toBe(false);
    expect(decodeTcUsable({ ...o, numHeads: 64, numKvHeads: 2 }, { T: 1 })).toBe(false);
  });

  it.each([[16384, undefined], [131072, undefined], [100, undefined], [16384, 7], [1000, 3]] as const)('%i slots, splits %s: whole rounds per split, every slot covered once', (kvEnd, ns) => {
    const o = { ...opts({ H: 32, KV: 8, D: 128, base: 0, lse: true }, false), ns };
    const p = decodeTcPlan(o, { T: 1, base: kvEnd - 1, capacity: kvEnd, scale: 1 });
    expect(p.splitKeys % (16 * p.NS)).toBe(0);
    expect((p.splits - 1) * p.splitKeys).toBeLessThan(kvEnd);
    expect(p.splits * p.splitKeys).toBeGreaterThanOrEqual(kvEnd);
  });

  it('every workgroup variable a multiple of 16 bytes, current builtin spelling', () => {
    for (const disp of attentionDecodeTc(opts({ H: 32, KV: 8, D: 128, base: 16383, lse: true }, false), dims({ H: 32, KV: 8, D: 128, base: 16383, lse: true }), placeholders)) {
      if (!disp.kernel.enables.includes('chromium_experimental_subgroup_matrix')) continue; // the combine kernel
      const vars = workgroupVars(disp.kernel.code);
      expect(vars.map((v) => v.name)).toEqual(expect.arrayContaining(['qS', 'sS', 'pS', 'tail', 'rowA', 'resc']));
      for (const v of vars) expect(v.bytes % 16, `${disp.kernel.name} ${v.name}: ${v.type}`).toBe(0);
      expect(disp.kernel.code).toMatch(/subgroupMatrixLoad<RightM, col_major>\(&kc, /);
      expect(disp.kernel.code).toMatch(/subgroupMatrixLoad<RightM, row_major>\(&vc, /);
    }
  });
});

describe('tensor-core decode attention numerics (fragments emulated)', () => {
  const cases: Case[] = [
    { H: 8, KV: 2, D: 32, base: 40, lse: true }, // one split, a fragment straddling the end
    { H: 6, KV: 2, D: 48, base: 100, lse: true, splits: 3, ns: 2 }, // G 3
    { H: 4, KV: 4, D: 64, base: 63, lse: false, splits: 2, ns: 1 }, // G 1, the end on a fragment boundary
    { H: 16, KV: 1, D: 32, base: 200, lse: true, splits: 4, ns: 3 }, // G 16: every fragment row live
    { H: 8, KV: 2, D: 32, base: 150, lse: true, splits: 2, tau: 0 }, // accumulators rescaled whenever a max rises
    { H: 6, KV: 2, D: 48, base: 120, lse: true, splits: 2, ns: 2, prefetch: true }, // fragments loaded a round ahead
    { H: 8, KV: 2, D: 32, base: 90, lse: false, ns: 1, prefetch: true, tau: 0 },
  ];
  for (const [i, c] of cases.entries()) {
    const p = decodeTcPlan(opts(c), dims(c));
    it(`H=${c.H}/${c.KV} D=${c.D} kvEnd=${c.base + 1}${c.lse ? ' lse' : ''} (ns ${p.NS}, splits ${p.splits} of ${p.splitKeys}${c.tau === 0 ? ', tau 0' : ''}${c.prefetch ? ', prefetch' : ''})`, async () => {
      const r = await gpuRunner();
      const x = attnInputs({ H: c.H, KV: c.KV, D: c.D, rot: c.D, T: 1, base: c.base, dtype: 'f16' } satisfies AttnCase, 900 + 10 * i);
      const kpos0 = new Uint32Array(x.kpos.length); // position 0: the keys as stored
      const want = refAttention(x.sh, x.q, x.k.ref, x.v.ref, kpos0, x.rope);
      const bufs = {
        q: r.upload(x.q, 'q'), kCache: r.upload(x.k.gpu, 'k'), vCache: r.upload(x.v.gpu, 'v'), kpos: r.upload(kpos0, 'kpos'),
        rope: r.upload(x.rope, 'rope'), out: r.createBuffer(c.H * c.D * 4, 'out'),
        lse: c.lse ? r.createBuffer(c.H * 4, 'lse') : undefined, scratch: r.createBuffer(Math.max(16, p.splits * c.H * (c.D + 4) * 4), 'scratch'),
      };
      const ds = attentionDecodeTc(opts(c), { ...dims(c), capacity: x.capacity }, bufs);
      expect(ds.length).toBe(p.splits > 1 ? 2 : 1);
      r.run(ds);
      // q, K, V and P are f16 on the tensor cores: relative to max |out|
      expectClose(await r.readF32(bufs.out, c.H * c.D), want.out, 1e-2, 'out');
      if (bufs.lse) expectClose(await r.readF32(bufs.lse, c.H), want.lse, 1e-2, 'lse');
      for (const b of Object.values(bufs)) if (b) r.destroy(b);
    }, 120_000);
  }
});
