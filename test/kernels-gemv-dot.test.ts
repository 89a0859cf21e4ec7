/**
 * The decode gemv's int8 dot form (compiler/kernels/mm-gemv-dot.ts, GpuContext.intDot) vs the CPU reference that
 * quantizes x the same way (test/ref/gemv-dot.ts), so the tolerance is the f32 one of the other quantized forms:
 * one digit (q4) and two (q8), each also forced on the other, q8 / q4, T = 1..8, every epilogue, norm and bias, subgroup and workgroup-memory reductions, chunks of 8 / 16 / 32
 * elements, weight parts and x row offsets, and the 8B shapes each kind takes with this form.
 */
import { describe, expect, it } from 'vitest';
import { matmulParts, type MatmulOpts } from '../compiler/kernels/matmul.js';
import { gemvShape } from '../compiler/kernels/mm-gemv.js';
import { xqBytes } from '../compiler/kernels/mm-gemv-xq.js';
import type { GpuRunner } from '../runtime/gpu/runner.js';
import type { QuantDtype } from '../runtime/quant.js';
import { expectClose, gpuRunner, rand } from './gpu-harness.js';
import { destroyParts, matmulBuffers, quantWeights, uploadQuantParts } from './quant-harness.js';
import { dotFormX, offTies } from './ref/gemv-dot.js';
import { matmulRef } from './ref/gpu-ops.js';

type DotOpts = MatmulOpts & { readonly wdtype: QuantDtype; readonly epilogue: 'store' | 'residual' | 'swiglu' };
const EPS = 1e-5;

/**
 * One matmul in the dot form against the reference. `xq`: with the scratch for x quantized once (mm-gemv-xq.ts):
 * the quantizer comes first and every gemv reads its codes; the output must also equal the gemv quantizing x itself.
 */
async function check(r: GpuRunner, o: DotOpts, T: number, N: number, K: number, seed: number, xRow0 = 0, cuts: number[] = [], xq = false): Promise<void> {
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
  const scratch = xq ? { xq: r.createBuffer(xqBytes(T, K).xq, 'xq'), xs: r.createBuffer(xqBytes(T, K).xs, 'xs') } : undefined;
  const ds = matmulParts({ ...o, intDot: true }, { T, N, K, eps: EPS, xRow0 }, { ...b, xq: scratch }, parts);
  const gemvs = xq ? ds.slice(1) : ds;
  if (xq) expect(ds[0]!.kernel.key).toContain('quantize_x');
  for (const d of gemvs) expect(d.kernel.key).toContain(`dq=${shape.dq}`);
  for (const d of gemvs) expect(d.kernel.key.includes('xq=true')).toBe(xq);
  r.run(ds);
  const got = await r.readF32(b.y, T * N);
  if (scratch) {
    // the same matmul quantizing x inside the gemv: the same codes and scales, the rms summed in another order
    const plain = matmulBuffers(r, o, T, N, { x, normW, bias, yIn });
    r.run(matmulParts({ ...o, intDot: true }, { T, N, K, eps: EPS, xRow0 }, plain, parts));
    expectClose(got, await r.readF32(plain.y, T * N), 2e-6, `xq vs x quantized in the gemv, ${o.epilogue} norm=${o.norm} T=${T} N=${N} K=${K}`);
    for (const buf of [...Object.values(plain), scratch.xq, scratch.xs]) if (buf) r.destroy(buf);
  }
  const xHat = dotFormX(x, chunking, digits, o.norm ? EPS : undefined);
  const want = matmulRef({ norm: false, bias: o.bias, epilogue: o.epilogue }, { T, N, K }, xHat, ref, undefined, bias, yIn);
  for (const buf of Object.values(b)) if (buf) r.destroy(buf);
  destroyParts(r, parts);
  expectClose(got, want, 1e-4, `${o.wdtype} ${shape.dq} E=${shape.E} ${o.epilogue} norm=${o.norm} bias=${o.bias} sg=${o.subgroups} T=${T} N=${N} K=${K} xRow0=${xRow0} parts=${parts.length}`);
}

/** Runs `body` with LOCRET_GEMV set to `spec` (chunk widths), restoring it after. */
async function withGemv(spec: string | undefined, body: () => Promise<void>): Promise<void> {
  const saved = process.env.LOCRET_GEMV;
  if (spec === undefined) delete process.env.LOCRET_GEMV;
  else process.env.LOCRET_GEMV = spec;
  try {
    await body();
  } finally {
    if (saved === undefined) delete process.env.LOCRET_GEMV;
    else process.env.LOCRET_GEMV = saved;
  }
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

  it('x quantized once (quantize_x, then the gemvs): q4 and q8, every epilogue, norm, T 1..8, parts, row offsets, both reductions', async () => {
    for (const sg of [true, false]) {
      const r = await gpuRunner(sg ? undefined : { disableSubgroups: true });
      const s = r.gpu.subgroups;
      await check(r, { wdtype: 'q4', norm: true, bias: true, epilogue: 'swiglu', subgroups: s }, 1, 37, 96, 61, 0, [1, 34, 42, 60], true);
      await check(r, { wdtype: 'q4', norm: true, bias: false, epilogue: 'residual', subgroups: s }, 3, 67, 4128, 62, 1, [], true); // a row over two quantizer workgroups
      await check(r, { wdtype: 'q4', norm: false, bias: false, epilogue: 'residual', subgroups: s }, 1, 35, 4128, 65, 0, [], true);
      await check(r, { wdtype: 'q8', norm: true, bias: false, epilogue: 'store', subgroups: s }, 8, 33, 288, 63, 2, [5], true);
      await check(r, { wdtype: 'q8', norm: false, bias: true, epilogue: 'swiglu', subgroups: s }, 2, 9, 2080, 64, 0, [], true);
    }
  }, 600_000);

  it('x quantized once in the other chunk widths and digit counts: q8 8-element chunks, q4 32, q4 in two digits, q8 in one', async () => {
    const r = await gpuRunner();
    const sg = r.gpu.subgroups;
    await withGemv('qw=2', () => check(r, { wdtype: 'q8', norm: true, bias: true, epilogue: 'residual', subgroups: sg }, 2, 33, 288, 71, 1, [], true));
    await withGemv('qw=4', () => check(r, { wdtype: 'q4', norm: true, bias: false, epilogue: 'swiglu', subgroups: sg }, 3, 67, 4128, 72, 0, [], true));
    await withGemv('dq=dot2', () => check(r, { wdtype: 'q4', norm: false, bias: true, epilogue: 'store', subgroups: sg }, 1, 67, 288, 73, 0, [], true));
    await withGemv('dq=dot1', () => check(r, { wdtype: 'q8', norm: true, bias: false, epilogue: 'store', subgroups: sg }, 5, 9, 2080, 74, 0, [], true));
  }, 600_000);

  it('prefill-sized T, float forms and q8 chunks of 8 in one digit ignore the scratch (no quantize_x)', async () => {
    const r = await gpuRunner();
    const scratch = { xq: r.createBuffer(xqBytes(16, 288).xq, 'xq'), xs: r.createBuffer(xqBytes(16, 288).xs, 'xs') };
    const o = { norm: true, bias: false, epilogue: 'store', subgroups: r.gpu.subgroups } as const;
    const b = { x: scratch.xq, normW: scratch.xq, y: scratch.xq, xq: scratch };
    const parts = [{ row0: 0, rows: 33, buf: scratch.xq, scales: scratch.xs }];
    const ops = (wdtype: QuantDtype, T: number, intDot = true) => matmulParts({ ...o, wdtype, intDot }, { T, N: 33, K: 288, eps: EPS }, b, parts).map((d) => d.kernel.key);
    const quantizes = (keys: string[]) => keys.some((k) => k.startsWith('quantize_x;') || k.includes('xq=true'));
    expect(ops('q4', 1)[0]).toMatch(/^quantize_x;/);
    expect(ops('q8', 8)[0]).toMatch(/^quantize_x;/);
    expect(quantizes(ops('q4', 16))).toBe(false);
    expect(quantizes(ops('q4', 1, false))).toBe(false);
    await withGemv('qw=2,dq=dot1', async () => expect(quantizes(ops('q8', 1))).toBe(false));
    r.destroy(scratch.xq);
    r.destroy(scratch.xs);
  });

  it('the device refuses the form when asked (LOCRET_NO_INT_DOT=1 does the same)', async () => {
    expect((await gpuRunner({ disableIntDot: true })).gpu.intDot).toBe(false);
    process.env.LOCRET_NO_INT_DOT = '1';
    try {
      expect((await gpuRunner({})).gpu.intDot).toBe(false);
    } finally {
      delete process.env.LOCRET_NO_INT_DOT;
    }
  });
});
