/**
 * The decode gemv skeleton (compiler/kernels/mm-gemv.ts) vs the CPU reference, with subgroup reductions and with
 * the workgroup-memory fallback: every weight dtype (q8 / q4 against their exact dequantization, so f32-like
 * tolerance), T = 1..8, odd N, K off the 16-byte chunk (scalar path), tiny K, K long enough that threads loop,
 * norm / bias / epilogues, x row offsets, U chunks loaded per thread at once, and q8 / q4 over weight parts and
 * through qkv_rope.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { matmul, matmulParts, type MatmulOpts, type WeightDtype, type WeightPart } from '../compiler/kernels/matmul.js';
import { chunkElems } from '../compiler/kernels/mm-gemv-chunks.js';
import { gemvShape, gemvSubgroups, gemvTuning } from '../compiler/kernels/mm-gemv.js';
import type { GpuRunner } from '../runtime/gpu/runner.js';
import { dequantize, quantize } from '../runtime/quant.js';
import { expectClose, gpuRunner, rand, weightsFor } from './gpu-harness.js';
import { withGemv } from './quant-harness.js';
import { matmulRef } from './ref/gpu-ops.js';

interface Weights {
  /** per part: quants or elements, and q8 / q4 scales */
  parts: { data: ArrayBufferView; scales?: Uint16Array; row0: number; rows: number }[];
  /** the f32 values the reference multiplies with */
  ref: Float32Array;
}

/** A (rows, K) weight as the GPU stores it, cut into parts at `cuts` (each part quantized on its own rows). */
function makeWeights(dtype: WeightDtype, rows: number, K: number, seed: number, cuts: readonly number[] = []): Weights {
  const raw = rand(rows * K, seed, 0.5);
  const edges = [0, ...cuts.filter((c) => c > 0 && c < rows), rows];
  if (dtype === 'q8' || dtype === 'q4') {
    const q = quantize(raw, rows, K, dtype);
    const ref = dequantize(q, rows, K, dtype);
    const per = dtype === 'q8' ? 4 : 8;
    const parts = edges.slice(0, -1).map((row0, i) => {
      const n = edges[i + 1]! - row0;
      return {
        row0,
        rows: n,
        data: q.quants.subarray((row0 * K) / per, ((row0 + n) * K) / per),
        scales: q.scales.subarray((row0 * K) / 32, ((row0 + n) * K) / 32),
      };
    });
    return { parts, ref };
  }
  const w = weightsFor(dtype, raw);
  const arr = w.gpu as Float32Array | Uint16Array;
  const parts = edges.slice(0, -1).map((row0, i) => ({ row0, rows: edges[i + 1]! - row0, data: arr.subarray(row0 * K, edges[i + 1]! * K) }));
  return { parts, ref: w.ref };
}

function upload(r: GpuRunner, w: Weights): WeightPart[] {
  return w.parts.map((p) => ({
    row0: p.row0,
    rows: p.rows,
    buf: r.upload(p.data, `w[${p.row0}]`),
    scales: p.scales ? r.upload(p.scales, `w_s[${p.row0}]`) : undefined,
  }));
}

async function check(r: GpuRunner, o: MatmulOpts, T: number, N: number, K: number, seed: number, xRow0 = 0, cuts: number[] = [], keyPart = 'path=gemv'): Promise<void> {
  const rows = o.epilogue === 'swiglu' ? 2 * N : N;
  const x = rand((xRow0 + T) * K, seed, 2);
  const w = makeWeights(o.wdtype, rows, K, seed + 1, cuts);
  const normW = rand(K, seed + 2, 0.5).map((v) => 1 + v);
  const bias = rand(rows, seed + 3);
  const yIn = rand(T * N, seed + 4);
  const parts = upload(r, w);
  const b = {
    x: r.upload(x, 'x'),
    normW: o.norm ? r.upload(normW, 'normW') : undefined,
    bias: o.bias ? r.upload(bias, 'bias') : undefined,
    y: r.upload(o.epilogue === 'residual' ? yIn : new Float32Array(T * N).fill(NaN), 'y'),
  };
  const ds = matmulParts(o, { T, N, K, eps: 1e-5, xRow0 }, b, parts);
  for (const d of ds) expect(d.kernel.key).toContain('path=gemv');
  for (const d of ds) expect(d.kernel.key).toContain(keyPart);
  r.run(ds);
  const got = await r.readF32(b.y, T * N);
  const want = matmulRef({ norm: o.norm, bias: o.bias, epilogue: o.epilogue as (typeof EPILOGUES)[number] }, { T, N, K, eps: 1e-5, xRow0 }, x, w.ref, normW, bias, yIn);
  for (const buf of [...Object.values(b), ...parts.flatMap((p) => [p.buf, p.scales])]) if (buf) r.destroy(buf);
  const tol = o.wdtype === 'f16' || o.wdtype === 'f16p' ? 1e-3 : 1e-4;
  expectClose(got, want, tol, `${o.wdtype} ${o.epilogue} norm=${o.norm} bias=${o.bias} sg=${o.subgroups} T=${T} N=${N} K=${K} xRow0=${xRow0} parts=${parts.length}`);
}

const EPILOGUES = ['store', 'residual', 'swiglu'] as const;
/** (N, K) per dtype family: awkward N, K below / at / off the chunk, and a K where every thread loops */
const SHAPES: Record<'float' | 'quant', readonly (readonly [number, number])[]> = {
  float: [[67, 130], [5, 8], [130, 67], [3, 2056], [33, 3], [9, 1028], [1, 96]],
  quant: [[67, 32], [5, 96], [130, 4128], [3, 288], [33, 64], [9, 2080], [1, 160]],
};

function suite(name: string, dtypes: readonly WeightDtype[], device: Parameters<typeof gpuRunner>[0]): void {
  describe(name, () => {
    let r: GpuRunner;
    beforeAll(async () => {
      r = await gpuRunner(device);
    });
    for (const wdtype of dtypes) {
      const quant = wdtype === 'q8' || wdtype === 'q4';
      const shapes = SHAPES[quant ? 'quant' : 'float'];
      for (const sg of [true, false]) {
        it(`${wdtype} ${sg ? 'subgroup' : 'workgroup-memory'} reduction, T = 1..8, all epilogues`, async () => {
          if (sg && !r.gpu.subgroups) return; // the device has no subgroups: only the fallback applies
          let i = 0;
          // quantized kernels are large once unrolled and CPU drivers take seconds to compile each: fewer variants
          const plan = quant ? [1, 2, 5, 8].map((T, j) => [T, EPILOGUES[j % 3]!] as const) : [1, 2, 3, 4, 5, 6, 7, 8].flatMap((T) => EPILOGUES.map((e) => [T, e] as const));
          for (const [T, epilogue] of plan) {
              const [N, K] = shapes[i % shapes.length]!;
              const o: MatmulOpts = { wdtype, norm: i % 2 === 0, bias: i % 3 !== 1, epilogue, subgroups: sg };
              await check(r, o, T, N, K, 1000 + 17 * i, i % 4 === 1 ? 2 : 0);
              i++;
            }
        }, 600_000);
      }
    }
  });
}

suite('gemv (shader-f16 device)', ['f32', 'f16', 'q8', 'q4'], undefined);
suite('gemv f16p (device without shader-f16)', ['f16p'], { disableF16: true });

describe('gemv details', () => {
  it('chunks are 16-byte loads where rows stay aligned, scalars otherwise', () => {
    expect([chunkElems('f32', 4096), chunkElems('f32', 130), chunkElems('f16', 4096), chunkElems('f16p', 68)]).toEqual([4, 1, 8, 1]);
    expect([chunkElems('q8', 4096), chunkElems('q4', 4096)]).toEqual([16, 32]);
    expect(() => chunkElems('q4', 100)).toThrow(/multiple|K % 32/);
    expect(gemvShape('f16', 1, 1, 4096)).toMatchObject({ E: 8, R: 8 });
    // columns per workgroup halve until there are 1024 workgroups (or 2 columns): the 8B qkv, o/down, gate_up, head
    expect([6144, 4096, 14336, 128256, 384].map((NC) => gemvShape('f16', 1, 1, 4096, NC).R)).toEqual([4, 4, 8, 8, 2]);
    // q4: 8-byte chunks (Q4_WORDS); gate_up 4 columns per workgroup, o 128 threads (rows of 4096 and more)
    expect(gemvShape('q4', 1, 2, 4096, 14336)).toMatchObject({ R: 4, E: 16, WG: 64 });
    expect([gemvShape('q4', 1, 1, 4096, 4096).WG, gemvShape('q4', 1, 1, 4096, 6144).WG, gemvShape('q4', 1, 1, 14336, 4096).WG, gemvShape('q4', 1, 2, 3072, 8192).R]).toEqual([128, 64, 128, 8]);
    // f16 threads by kind: gate_up 64, o / down 256, qkv and the head 128; short rows and quantized weights as before
    expect([gemvShape('f16', 1, 2, 4096, 14336).WG, gemvShape('f16', 1, 1, 4096, 4096).WG, gemvShape('f16', 1, 1, 14336, 4096).WG]).toEqual([64, 256, 256]);
    expect([gemvShape('f16', 1, 1, 4096, 6144).WG, gemvShape('f16', 1, 1, 4096, 128256).WG, gemvShape('f16', 1, 2, 384, 1024).WG]).toEqual([128, 128, 64]);
    expect([gemvShape('f16', 1, 2, 3072, 8192).WG, gemvShape('f16', 1, 1, 3072, 3072).WG, gemvShape('f16', 1, 1, 8192, 3072).WG]).toEqual([128, 128, 256]);
    expect([gemvShape('q8', 1, 1, 4096, 4096).WG, gemvShape('q8', 1, 2, 4096, 14336).WG]).toEqual([128, 64]);
  });

  it('LOCRET_GEMV overrides threads and columns for timing runs, parsed once per value, bad entries ignored', async () => {
    expect(gemvTuning('wg=256,r=4')).toEqual({ wg: 256, r: 4 });
    expect(gemvTuning('wg=256,r=4')).toBe(gemvTuning('wg=256,r=4'));
    expect(gemvTuning('wg=96,r=3,x=1,r=18,dq=f64')).toEqual({});
    expect(gemvTuning('dq=int,qw=2')).toEqual({ dq: 'int', qw: 2 });
    await withGemv('wg=32,r=2', async () => {
      expect(gemvShape('f16', 1, 2, 4096, 14336)).toMatchObject({ WG: 32, R: 2 });
    });
    await withGemv('wg=128', async () => {
      expect(gemvShape('f16', 1, 2, 4096, 14336)).toMatchObject({ WG: 128, R: 8 });
    });
    expect(gemvShape('f16', 1, 2, 4096, 14336)).toMatchObject({ WG: 64, R: 8 });
  });

  it('the plan reduces through workgroup memory unless LOCRET_GEMV=sg=1 asks for subgroups on a device that has them', async () => {
    expect([gemvTuning('sg=1'), gemvTuning('sg=0'), gemvTuning('sg=2')]).toEqual([{ sg: true }, { sg: false }, {}]);
    expect([gemvSubgroups(true), gemvSubgroups(false)]).toEqual([false, false]);
    await withGemv('sg=1', async () => expect([gemvSubgroups(true), gemvSubgroups(false)]).toEqual([true, false]));
  });

  it('the f16 / q8 / q4 kinds with their own threads and columns (rows of 4096 elements and more) match the reference', async () => {
    const r = await gpuRunner();
    expect(gemvShape('f16', 2, 2, 4096, 40).WG).toBe(64);
    expect(gemvShape('f16', 1, 1, 4104, 36).WG).toBe(256);
    await check(r, { wdtype: 'f16', norm: true, bias: false, epilogue: 'swiglu', subgroups: r.gpu.subgroups }, 2, 40, 4096, 21);
    await check(r, { wdtype: 'f16', norm: false, bias: true, epilogue: 'residual', subgroups: r.gpu.subgroups }, 1, 36, 4104, 22);
    expect(gemvShape('q8', 1, 2, 4096, 24).WG).toBe(64);
    await check(r, { wdtype: 'q8', norm: true, bias: false, epilogue: 'swiglu', subgroups: r.gpu.subgroups }, 1, 24, 4096, 23);
    // q4: gate_up-sized swiglu at 4 columns per workgroup, o-sized rows with 128 threads
    expect([gemvShape('q4', 1, 2, 4096, 4096).R, gemvShape('q4', 1, 1, 4096, 40).WG]).toEqual([4, 128]);
    await check(r, { wdtype: 'q4', norm: true, bias: false, epilogue: 'swiglu', subgroups: r.gpu.subgroups }, 1, 4096, 4096, 24);
    await check(r, { wdtype: 'q4', norm: false, bias: true, epilogue: 'residual', subgroups: r.gpu.subgroups }, 2, 40, 4096, 25);
  }, 600_000);

  it('q8 / q4 with the other integer → float conversions (LOCRET_GEMV=dq=int|float) and chunk widths (qw) match the reference too', async () => {
    const r = await gpuRunner();
    for (const spec of ['dq=int', 'qw=4', 'dq=int,qw=2', 'dq=float', 'dq=float,qw=4', 'dq=float,qw=2'])
      await withGemv(spec, async () => {
        const dq = spec.includes('int') ? 'dq=int' : spec.includes('float') ? 'dq=float' : 'path=gemv';
        expect(gemvShape('q4', 1, 2, 4096, 14336)).toMatchObject({ dq: dq === 'path=gemv' ? 'half' : dq.slice(3), E: spec.includes('qw=4') ? 32 : 16 });
        expect(gemvShape('q8', 1, 1, 4096, 4096).E).toBe(spec.includes('qw=2') ? 8 : 16);
        await check(r, { wdtype: 'q8', norm: true, bias: true, epilogue: 'swiglu', subgroups: r.gpu.subgroups }, 2, 33, 288, 31, 0, [], dq);
        await check(r, { wdtype: 'q4', norm: false, bias: false, epilogue: 'residual', subgroups: r.gpu.subgroups }, 1, 67, 4128, 32, 0, [], dq);
        await check(r, { wdtype: 'q4', norm: true, bias: false, epilogue: 'store', subgroups: r.gpu.subgroups }, 3, 9, 96, 33, 1, [], dq);
      });
    // defaults by kind (quantConvert): two streams f16 form, one stream f32 form for q4 and for q8 with many columns
    expect([gemvShape('q4', 1, 2, 4096, 14336), gemvShape('q4', 1, 1, 4096, 4096), gemvShape('q8', 1, 1, 4096, 6144), gemvShape('q8', 1, 1, 4096, 4096), gemvShape('q8', 1, 2, 4096, 14336)].map((g) => g.dq)).toEqual(['half', 'float', 'float', 'half', 'half']);
  }, 600_000);

  it('threads loading U chunks before computing (LOCRET_GEMV=u=2|4; rows ending inside a U-chunk step) match the reference', async () => {
    const r = await gpuRunner();
    const sg = r.gpu.subgroups;
    for (const u of [2, 4])
      await withGemv(`u=${u}`, async () => {
        expect(gemvShape('f16', 1, 1, 4096, 4096).U).toBe(u);
        const key = `;u=${u}`;
        // f16 2056: 257 chunks over 128 threads; f32 130: scalar chunks; q4 4128: 258 chunks; norm Σx² once per chunk
        await check(r, { wdtype: 'f16', norm: true, bias: true, epilogue: 'residual', subgroups: sg }, 2, 37, 2056, 41 + u, 1, [], key);
        await check(r, { wdtype: 'f32', norm: true, bias: false, epilogue: 'swiglu', subgroups: sg }, 1, 9, 130, 42 + u, 0, [], key);
        await check(r, { wdtype: 'q4', norm: true, bias: false, epilogue: 'store', subgroups: sg }, 1, 67, 4128, 43 + u, 0, [], key);
        await check(r, { wdtype: 'q8', norm: false, bias: true, epilogue: 'swiglu', subgroups: sg }, 2, 33, 288, 44 + u, 0, [], key);
      });
    expect(gemvShape('f16', 1, 1, 4096, 4096).U).toBe(1);
    expect(gemvTuning('u=2,u=3')).toEqual({ u: 2 });
  }, 600_000);

  it('a device without subgroups still runs (fallback selected by the caller)', async () => {
    const r = await gpuRunner({ disableSubgroups: true });
    expect(r.gpu.subgroups).toBe(false);
    await check(r, { wdtype: 'q4', norm: true, bias: true, epilogue: 'swiglu', subgroups: false }, 2, 17, 128, 5);
  }, 600_000);

  it('q8 / q4 over weight parts (swiglu parts cut inside both halves) and huge column counts', async () => {
    const r = await gpuRunner();
    const sg = r.gpu.subgroups;
    await check(r, { wdtype: 'q8', norm: true, bias: false, epilogue: 'swiglu', subgroups: sg }, 1, 37, 96, 21, 0, [1, 34, 42, 60]);
    await check(r, { wdtype: 'q4', norm: false, bias: true, epilogue: 'store', subgroups: sg }, 3, 37, 64, 22, 1, [5, 36]);
    // more than 65535 workgroups: the grid folds into 2D
    await check(r, { wdtype: 'q4', norm: false, bias: false, epilogue: 'residual', subgroups: sg }, 1, 140_001, 32, 23);
    const d = matmul({ wdtype: 'f16', norm: false, bias: false, epilogue: 'store', subgroups: sg }, { T: 1, N: 1_000_000, K: 8 }, {
      x: r.upload(new Float32Array(8), 'x'),
      w: r.upload(new Uint16Array(8), 'w'),
      y: r.upload(new Float32Array(4), 'y'),
    });
    expect(d.workgroups[0]).toBeLessThanOrEqual(65535);
  }, 600_000);
});
