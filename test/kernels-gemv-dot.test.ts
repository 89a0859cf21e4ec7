/**
 * The decode gemv's int8 dot form (compiler/kernels/mm-gemv-dot.ts, GpuContext.intDot) vs the CPU reference that
 * quantizes x the same way (test/ref/gemv-dot.ts), so the tolerance is the f32 one of the other quantized forms:
 * one digit (q4) and two (q8), each also forced on the other, U chunks loaded per thread at once, q8 / q4,
 * T = 1..8, every epilogue, norm and bias, subgroup and workgroup-memory reductions, chunks of 8 / 16 / 32 elements,
 * weight parts and x row offsets, and the 8B shapes each kind takes with this form.
 */
import { describe, expect, it } from 'vitest';
import { matmulParts, type MatmulOpts } from '../compiler/kernels/matmul.js';
import { gemvShape } from '../compiler/kernels/mm-gemv.js';
import type { GpuRunner } from '../runtime/gpu/runner.js';
import type { QuantDtype } from '../runtime/quant.js';
import { expectClose, gpuRunner, rand } from './gpu-harness.js';
import { destroyParts, matmulBuffers, quantWeights, uploadQuantParts, withGemv } from './quant-harness.js';
import { dotFormX, offTies } from './ref/gemv-dot.js';
import { matmulRef } from './ref/gpu-ops.js';
import { withEnv } from './with-env.js';

type DotOpts = MatmulOpts & { readonly wdtype: QuantDtype; readonly epilogue: 'store' | 'residual' | 'swiglu' };
const EPS = 1e-5;

async function check(r: GpuRunner, o: DotOpts, T: number, N: number, K: number, seed: number, xRow0 = 0, cuts: number[] = []): Promise<void> {
  const rows = o.epilogue === 'swiglu' ? 2 * N : N;
  const shape = gemvShape(o.wdtype, T, o.epilogue === 'swiglu' ? 2 : 1, K, N, true);
  const digits = shape.dq === 'dot1' ? 1 : 2;
  const x = rand((xRow0 + T) * K, seed, 2);
  const normW = rand(K, seed + 2, 0.5).map((v) => 1 + v);
  const chunking = { T, K, E: shape.E, xRow0, normW: o.norm ? normW : undefined };
  if (digits === 1) offTies(x, chunking);
  const { q, ref } = quantWeights(o.wdtype, rand(rows * K, seed + 1, 0.5), rows, K);
  const bias = rand(rows, seed + 3);
  const yIn = rand(T * N, seed + 4);
  const parts = uploadQuantParts(r, o.wdtype, q, rows, K, cuts);
  const b = matmulBuffers(r, o, T, N, { x, normW, bias, yIn });
  const ds = matmulParts({ ...o, intDot: true }, { T, N, K, eps: EPS, xRow0 }, b, parts);
  for (const d of ds) expect(d.kernel.key).toContain(`dq=${shape.dq}`);
  r.run(ds);
  const got = await r.readF32(b.y, T * N);
  const xHat = dotFormX(x, chunking, digits, o.norm ? EPS : undefined);
  const want = matmulRef({ norm: false, bias: o.bias, epilogue: o.epilogue }, { T, N, K }, xHat, ref, undefined, bias, yIn);
  for (const buf of Object.values(b)) if (buf) r.destroy(buf);
  destroyParts(r, parts);
  expectClose(got, want, 1e-4, `${o.wdtype} ${shape.dq} E=${shape.E} ${o.epilogue} norm=${o.norm} bias=${o.bias} sg=${o.subgroups} T=${T} N=${N} K=${K} xRow0=${xRow0} parts=${parts.length}`);
}

const EPILOGUES = ['store', 'residual', 'swiglu'] as const;
const SHAPES = [[67, 32], [5, 96], [130, 4128], [3, 288], [33, 64], [9, 2080], [1, 160]] as const;

describe('gemv int8 dot form', () => {
  for (const wdtype of ['q8', 'q4'] as const)
    for (const sg of [true, false])
      it(`${wdtype} ${sg ? 'subgroup' : 'workgroup-memory'} reduction, T = 1, 2, 5, 8, all epilogues`, async () => {
        const r = await gpuRunner(sg ? undefined : { disableSubgroups: true });
        let i = 0;
        for (const [T, epilogue] of [1, 2, 5, 8].map((T, j) => [T, EPILOGUES[j % 3]!] as const)) {
          const [N, K] = SHAPES[(i + (wdtype === 'q4' ? 3 : 0)) % SHAPES.length]!;
          await check(r, { wdtype, norm: i % 2 === 0, bias: i % 3 !== 1, epilogue, subgroups: r.gpu.subgroups }, T, N, K, 2000 + 17 * i, i % 4 === 1 ? 2 : 0);
          i++;
        }
      }, 600_000);

  it('the other digit count (LOCRET_GEMV=dq=dot1|dot2) matches too', async () => {
    const r = await gpuRunner();
    await withGemv('dq=dot2', async () => {
      await check(r, { wdtype: 'q4', norm: true, bias: true, epilogue: 'swiglu', subgroups: r.gpu.subgroups }, 2, 67, 288, 53);
    });
    await withGemv('dq=dot1', async () => {
      await check(r, { wdtype: 'q4', norm: true, bias: true, epilogue: 'swiglu', subgroups: r.gpu.subgroups }, 2, 67, 288, 51);
      await check(r, { wdtype: 'q8', norm: false, bias: false, epilogue: 'residual', subgroups: r.gpu.subgroups }, 5, 9, 2080, 52, 1);
    });
  }, 600_000);

  it('threads loading U chunks before computing (LOCRET_GEMV=u=2|4) match, rows ending inside a U-chunk step', async () => {
    const r = await gpuRunner();
    const sg = r.gpu.subgroups;
    for (const u of [2, 4])
      await withGemv(`u=${u}`, async () => {
        expect(gemvShape('q4', 1, 1, 4128, 67, true).U).toBe(u);
        await check(r, { wdtype: 'q4', norm: true, bias: false, epilogue: 'store', subgroups: sg }, 1, 67, 4128, 61 + u);
        await check(r, { wdtype: 'q8', norm: false, bias: true, epilogue: 'swiglu', subgroups: sg }, 2, 33, 2080, 62 + u, 1);
      });
  }, 600_000);

  it('chunks of 8 (q8) and 32 (q4) elements, weight parts cut mid scale word and inside both swiglu halves', async () => {
    const r = await gpuRunner();
    const sg = r.gpu.subgroups;
    await withGemv('qw=2', async () => {
      expect(gemvShape('q8', 1, 1, 288, 33, true).E).toBe(8);
      await check(r, { wdtype: 'q8', norm: true, bias: true, epilogue: 'swiglu', subgroups: sg }, 2, 33, 288, 31);
    });
    await withGemv('qw=4', async () => {
      expect(gemvShape('q4', 1, 1, 4128, 67, true).E).toBe(32);
      await check(r, { wdtype: 'q4', norm: true, bias: false, epilogue: 'store', subgroups: sg }, 3, 67, 4128, 32, 1);
    });
    await check(r, { wdtype: 'q4', norm: true, bias: false, epilogue: 'swiglu', subgroups: sg }, 1, 37, 96, 33, 0, [1, 34, 42, 60]);
    await check(r, { wdtype: 'q8', norm: false, bias: true, epilogue: 'residual', subgroups: sg }, 3, 37, 64, 34, 1, [5, 36]);
  }, 600_000);

  it('the 8B kinds take their own shapes (gate_up 8 columns, q4 qkv 128 threads and o / down 256, q8 qkv 8-byte chunks) and match', async () => {
    const dot = (w: QuantDtype, S: number, K: number, NC: number) => gemvShape(w, 1, S, K, NC, true);
    expect(dot('q4', 2, 4096, 14336)).toMatchObject({ R: 8, WG: 64, E: 16, dq: 'dot1' });
    expect(dot('q8', 2, 4096, 14336).dq).toBe('dot2');
    expect([dot('q4', 1, 4096, 6144).WG, dot('q4', 1, 4096, 4096).WG, dot('q4', 1, 14336, 4096).WG]).toEqual([128, 256, 256]);
    expect([dot('q8', 1, 4096, 6144).E, dot('q8', 1, 4096, 128256).E, dot('q8', 1, 4096, 4096).E, dot('q8', 2, 4096, 14336).E]).toEqual([8, 16, 16, 16]);
    // without the dot form the float forms keep their shapes
    expect(gemvShape('q4', 1, 2, 4096, 14336)).toMatchObject({ R: 4, dq: 'half' });
    expect(gemvShape('q8', 1, 1, 4096, 6144)).toMatchObject({ E: 16, dq: 'float' });
    const r = await gpuRunner();
    await check(r, { wdtype: 'q4', norm: true, bias: false, epilogue: 'swiglu', subgroups: r.gpu.subgroups }, 1, 4096, 4096, 41);
    await check(r, { wdtype: 'q8', norm: true, bias: false, epilogue: 'store', subgroups: r.gpu.subgroups }, 1, 6144, 4096, 42);
    await check(r, { wdtype: 'q4', norm: false, bias: false, epilogue: 'residual', subgroups: r.gpu.subgroups }, 1, 4096, 4096, 43);
  }, 600_000);

  it('the device refuses the form when asked (LOCRET_NO_INT_DOT=1 does the same)', async () => {
    expect((await gpuRunner({ disableIntDot: true })).gpu.intDot).toBe(false);
    expect((await withEnv({ LOCRET_NO_INT_DOT: '1' }, () => gpuRunner({}))).gpu.intDot).toBe(false);
  });
});
