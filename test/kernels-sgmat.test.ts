/**
 * The tensor-core matmul skeleton (mm-sgmat.ts). The CPU driver has no subgroup matrices, so: (1) the generated
 * WGSL is checked structurally for several variants and the device is shown to reject the extension; (2) the
 * kernels run with their matrix operations emulated in plain WGSL (./sgmat-emulate.ts; LOCRET_SGMAT_EMULATE=1, slow)
 * against the CPU reference on partial tiles in both directions, a partial last K slab, every epilogue, norm, bias,
 * column ranges, x row offsets and q8 / q4 weights (dequantized while staging; the reference takes `dequantize()`d ones); (3) path selection falls back to the existing skeletons where the tensor-core one cannot run.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { matmul, type MatmulDims, type MatmulOpts } from '../compiler/kernels/matmul.js';
import { workgroupVars } from '../compiler/wgsl-workgroup.js';
import { SGMAT_VARIANTS, SGMAT_WG_BYTES, SGMAT_WG_BYTES_MAX, sgmatPick, sgmatVariant, sgmatWorkgroupBytes, type SgmatVariant } from '../compiler/kernels/mm-sgmat.js';
import { qkvRope, type QkvOpts } from '../compiler/kernels/qkv-rope.js';
import { rmsnorm } from '../compiler/kernels/elementwise.js';
import type { Dispatch, GpuRunner } from '../runtime/gpu/runner.js';
import { ropeTable } from '../runtime/rope.js';
import { expectClose, gpuRunner, rand, weightsFor } from './gpu-harness.js';
import { destroyParts, quantWeights, uploadQuantParts } from './quant-harness.js';
import { matmulRef } from './ref/gpu-ops.js';
import { emulateSubgroupMatrix } from './sgmat-emulate.js';
import { f16ToF32 } from '../runtime/io/dtype.js';
import { withEnv } from './with-env.js';

const TC = { tensorCores: true } as const;
const mmOpts = (epilogue: MatmulOpts['epilogue'], norm: boolean, bias: boolean): MatmulOpts => ({ wdtype: 'f16', norm, bias, epilogue, ...TC });
/** the kernel a matmul would dispatch (placeholder buffers: code generation never looks at them) */
const specOf = (o: MatmulOpts, d: MatmulDims) => matmul(o, d, { x: {}, w: {}, wScales: {}, y: {}, normW: {}, bias: {} } as never).kernel;

const workgroupBytes = (code: string) => workgroupVars(code).reduce((a, v) => a + v.bytes, 0);

describe('sgmat WGSL structure', () => {
  const cases: [MatmulOpts, MatmulDims][] = [
    [mmOpts('store', false, false), { T: 100, N: 100, K: 48 }],
    [mmOpts('store', true, true), { T: 1024, N: 6144, K: 4096 }],
    [mmOpts('residual', false, false), { T: 9, N: 4096, K: 14336 }],
    [mmOpts('swiglu', true, false), { T: 1024, N: 14336, K: 4096 }],
    [mmOpts('swiglu', true, true), { T: 33, N: 70, K: 16 }],
    [mmOpts('silu', false, true), { T: 64, N: 64, K: 64 }],
  ];
  it.each(cases.map((c) => [`${c[0].epilogue}${c[0].norm ? ' +norm' : ''}${c[0].bias ? ' +bias' : ''}`, ...c] as const))('%s', (_, o, d) => {
    const k = specOf(o, d);
    expect(k.name).toContain('path-sgmat');
    const c = k.code;
    const head = c.slice(0, c.indexOf('@group'));
    for (const e of ['f16', 'subgroups', 'chromium_experimental_subgroup_matrix']) expect(head).toContain(`enable ${e};`);
    expect(head).toContain('diagnostic(off, chromium.subgroup_matrix_uniformity);');
    expect(c).toMatch(/alias LeftM = subgroup_matrix_left<f16, 16, 16>;/);
    expect(c).toMatch(/alias RightM = subgroup_matrix_right<f16, 16, 16>;/);
    expect(c).toMatch(/alias AccM = subgroup_matrix_result<f32, 16, 16>;/);
    expect(c).toContain('@builtin(subgroup_id) sg: u32');
    const S = o.epilogue === 'swiglu' ? 2 : 1;
    const { BM, BN, SGM, SGN } = sgmatVariant(sgmatPick(S, o.norm, d.N, d.T), S);
    expect(k.name).toContain(`sgv-${sgmatPick(S, o.norm, d.N, d.T)}`);
    const frags = (BM / SGM / 16) * (BN / SGN / 16) * S;
    expect(c.match(/subgroupMatrixMultiplyAccumulate\(/g)?.length).toBe(frags * 2); // two 16-deep steps per slab
    expect(c.match(/subgroupMatrixStore<row_major>\(&os, /g)?.length).toBe(frags);
    // left operands token-major (row-major), right operands column-major over weight rows, results row-major
    expect(c).toMatch(/subgroupMatrixLoad<LeftM, row_major>\(&xs, [^;]*, XS\);/);
    expect(c).toMatch(/subgroupMatrixLoad<RightM, col_major>\(&ws, [^;]*, XS\);/);
    // the current spelling only: the bool-argument form warns at every call
    expect(c).not.toMatch(/subgroupMatrix(Load<\w+>|Store)\(/);
    expect(k.workgroupSize[0] % 32).toBe(0);
    expect(workgroupBytes(c)).toBeLessThanOrEqual(SGMAT_WG_BYTES);
    expect((c.match(/\{/g) ?? []).length).toBe((c.match(/\}/g) ?? []).length);
  });

  it('variants needing more workgroup memory than the device offers are neither picked nor taken from LOCRET_SGMAT', () => {
    const big = Object.entries(SGMAT_VARIANTS as Record<string, SgmatVariant>).filter(([, v]) => sgmatWorkgroupBytes(v, true) > SGMAT_WG_BYTES);
    expect(big.length).toBeGreaterThan(0);
    for (const [S, norm, N] of [[1, true, 6144], [1, false, 4096], [2, true, 14336], [1, false, 1024]] as const) {
      expect(sgmatWorkgroupBytes(sgmatVariant(sgmatPick(S, norm, N, 1024), S), norm)).toBeLessThanOrEqual(SGMAT_WG_BYTES);
    }
    // swiglu takes 128 columns per stream where 47 KB fit, else 64-deep slabs where 45 KB do, the plain one-stream
    // kind (o, down) 64-deep slabs, their 32-deep shapes within 32 KB; qkv (with norm) keeps its shape either way
    expect([sgmatPick(2, true, 14336, 1024, SGMAT_WG_BYTES_MAX), sgmatPick(2, true, 14336, 1024, 46 * 1024), sgmatPick(2, true, 14336, 1024, SGMAT_WG_BYTES)])
      .toEqual(['sw128n128s16lp', 'sw128n64s16lk64', 'sw128n64s16l']);
    expect([sgmatPick(1, false, 4096, 1024, SGMAT_WG_BYTES_MAX), sgmatPick(1, false, 4096, 1024, SGMAT_WG_BYTES)]).toEqual(['m128n128s16lk64', 'm64n128l']);
    expect(sgmatPick(1, true, 6144, 1024, SGMAT_WG_BYTES_MAX)).toBe('m64n128l');
    const [name, v] = big.find(([, v]) => v.streams === 1)!;
    withEnv({ LOCRET_SGMAT: `plain=${name}` }, () => {
      expect(sgmatPick(1, false, 4096, 1024, SGMAT_WG_BYTES)).not.toBe(name);
      expect(sgmatPick(1, false, 4096, 1024, SGMAT_WG_BYTES_MAX)).toBe(name);
    });
    // asked for by name on a device without the memory: a clear error, not a pipeline failure
    expect(() => matmul({ ...mmOpts('store', false, false), sgmatVariant: name, workgroupBytes: SGMAT_WG_BYTES }, { T: 100, N: 100, K: 64 }, {} as never))
      .toThrow(new RegExp(`${name} needs ${sgmatWorkgroupBytes(v, false)} bytes of workgroup memory, the device offers ${SGMAT_WG_BYTES}`));
  });

  it('small grids take 64×64 tiles, a retaining head fc1 (silu) 64×128 on 64-deep slabs where 36 KB fit, the 8B projections 64×128', () => {
    expect(sgmatPick(1, false, 1024, 1024)).toBe('m64n64');
    expect([sgmatPick(1, false, 1024, 1024, SGMAT_WG_BYTES_MAX, true), sgmatPick(1, false, 1024, 1024, SGMAT_WG_BYTES, true)]).toEqual(['m64n128lk64', 'm64n64l']);
    expect([sgmatPick(1, true, 6144, 1024), sgmatPick(1, false, 4096, 1024), sgmatPick(2, true, 14336, 1024)]).toEqual(['m64n128l', 'm64n128l', 'sw128n64s16l']);
  });

  // every shape in the table generates within the workgroup-memory budget, with its own kernel name
  it.each(Object.entries(SGMAT_VARIANTS as Record<string, SgmatVariant>))('variant %s', (name, v) => {
    const o = { ...mmOpts(v.streams === 2 ? 'swiglu' : 'store', true, true), sgmatVariant: name };
    const k = specOf(o, { T: 300, N: 1000, K: 4096 });
    expect(k.name).toContain(`sgv-${name}`);
    expect(k.workgroupSize[0]).toBe(v.SGM * v.SGN * 32);
    const frags = (v.BM / v.SGM / 16) * (v.BN / v.SGN / 16) * v.streams;
    expect(k.code.match(/subgroupMatrixMultiplyAccumulate\(/g)?.length).toBe(frags * (v.BK / 16)); // one step per 16 of the slab
    expect(workgroupBytes(k.code)).toBe(sgmatWorkgroupBytes(v, true));
    expect(workgroupBytes(k.code)).toBeLessThanOrEqual(SGMAT_WG_BYTES_MAX);
    // double-buffered slabs: one barrier in the K loop, the other set staged after the products
    const loop = k.code.slice(k.code.indexOf('for (var k0'), k.code.indexOf('// per-token Σx²')); // the K loop (then the rms pass)
    expect(loop.match(/workgroupBarrier\(\)/g)?.length).toBe(v.double ? 1 : 2);
    if (v.double) expect(loop.lastIndexOf('subgroupMatrixMultiplyAccumulate')).toBeLessThan(loop.indexOf('(1u - cur)'));
    expect(k.code).not.toMatch(/ssq\[|wr\[|xr\[/); // unrolled: no dynamically indexed private arrays
    expect((k.code.match(/\{/g) ?? []).length).toBe((k.code.match(/\}/g) ?? []).length);
  });

  // q8 / q4: the same skeleton with the dequantizing loaders feeding the weight slabs; the dtype keys the kernel
  it.each(['q8', 'q4'] as const)('%s weights', (wdtype) => {
    for (const o of [{ ...mmOpts('store', true, false), wdtype }, { ...mmOpts('swiglu', true, false), wdtype }]) {
      const k = specOf(o, { T: 1024, N: 4096, K: 4096 });
      expect(k.name).toContain('path-sgmat');
      expect(k.name).toContain(`wdtype-${wdtype}`);
      expect(k.name).not.toBe(specOf(mmOpts(o.epilogue, true, false), { T: 1024, N: 4096, K: 4096 }).name);
      const names = k.bindings.map((b) => b.name);
      expect(names).toEqual(expect.arrayContaining(o.epilogue === 'swiglu' ? ['w', 'w_s', 'wu', 'wu_s'] : ['w', 'w_s']));
      expect(k.code).toMatch(/wq0 = select\(vec4<f16>\(\), w_ldh\(/);
      expect(workgroupBytes(k.code)).toBeLessThanOrEqual(SGMAT_WG_BYTES);
    }
    for (const [name, v] of Object.entries(SGMAT_VARIANTS as Record<string, SgmatVariant>)) {
      const k = specOf({ ...mmOpts(v.streams === 2 ? 'swiglu' : 'store', true, true), wdtype, sgmatVariant: name }, { T: 300, N: 1000, K: 4096 });
      expect(k.name).toContain(`sgv-${name}`);
      expect(k.code.match(/_ld\(/g)?.length).toBeGreaterThan(0);
      expect((k.code.match(/\{/g) ?? []).length).toBe((k.code.match(/\}/g) ?? []).length);
    }
  });

  it('falls back where the tensor-core skeleton cannot run', () => {
    expect(specOf(mmOpts('store', false, false), { T: 100, N: 64, K: 40 }).name).toContain('path-tiled'); // K % 16
    expect(specOf({ ...mmOpts('store', false, false), wdtype: 'f32' }, { T: 100, N: 64, K: 64 }).name).toContain('path-tiled');
    expect(specOf({ ...mmOpts('store', false, false), wdtype: 'f16p' }, { T: 100, N: 64, K: 64 }).name).toContain('path-tiled');
    expect(specOf({ ...mmOpts('store', false, false), tensorCores: false }, { T: 100, N: 64, K: 64 }).name).toContain('path-tiled');
    expect(specOf(mmOpts('store', false, false), { T: 8, N: 64, K: 64 }).name).not.toContain('sgmat');
  });

  it('this device rejects the extension (so the real kernels only compile where it exists)', async () => {
    const r = await gpuRunner();
    if (r.gpu.subgroupMatrix) return;
    const code = specOf(mmOpts('store', false, false), { T: 100, N: 100, K: 48 }).code;
    r.device.pushErrorScope('validation');
    const mod = r.device.createShaderModule({ code });
    const info = await mod.getCompilationInfo();
    await r.device.popErrorScope();
    expect(info.messages.some((m) => m.type === 'error' && m.message.includes('chromium_experimental_subgroup_matrix'))).toBe(true);
  });
});

/** the dispatch with its kernel swapped for the emulated one (same bindings and params) */
const emulated = (d: Dispatch): Dispatch => ({ ...d, kernel: emulateSubgroupMatrix(d.kernel) });

// The emulation is slow on the CPU driver (up to minutes per case): the variants the device picks (SGMAT_PICK within
// its 32 KB: m64n128l for one stream, m64n64 for small grids, sw128n64s16l for swiglu) always run; every other case
// runs with LOCRET_SGMAT_EMULATE=1.
const more = process.env.LOCRET_SGMAT_EMULATE === '1' ? it : it.skip;
describe('sgmat numerics (subgroup matrices emulated)', () => {
  let r: GpuRunner;
  beforeAll(async () => {
    r = await gpuRunner();
  });

  async function check(o: MatmulOpts, d: MatmulDims, seed: number): Promise<void> {
    const { T, N, K } = d;
    const xRow0 = d.xRow0 ?? 0;
    const col0 = d.col0 ?? 0;
    const cols = d.cols ?? N - col0;
    const rows = o.epilogue === 'swiglu' ? 2 * N : N;
    // f16 x (halfX): the kernel reads exactly the rounded values the reference takes
    const x32 = rand((xRow0 + T) * K, seed, 2);
    const xh = o.halfX ? weightsFor('f16', x32) : undefined;
    const x = xh?.ref ?? x32;
    const raw = rand(rows * K, seed + 1, 0.5);
    // q8 / q4: one part with its scales; the reference multiplies by exactly the values the kernel dequantizes
    const qw = o.wdtype === 'q8' || o.wdtype === 'q4' ? quantWeights(o.wdtype, raw, rows, K) : undefined;
    const parts = qw ? uploadQuantParts(r, o.wdtype as 'q8' | 'q4', qw.q, rows, K) : undefined;
    const w = qw ? { gpu: undefined, ref: qw.ref } : weightsFor('f16', raw);
    const normW = rand(K, seed + 2, 0.5).map((v) => 1 + v);
    const bias = rand(rows, seed + 3);
    const yIn = rand(T * N, seed + 4);
    const bufs = {
      x: r.upload(xh?.gpu ?? x, 'x'),
      w: parts ? parts[0]!.buf : r.upload(w.gpu!, 'w'),
      wScales: parts?.[0]!.scales,
      normW: o.norm ? r.upload(normW, 'normW') : undefined,
      bias: o.bias ? r.upload(bias, 'bias') : undefined,
      y: r.upload(o.epilogue === 'residual' ? yIn : o.halfY ? new Uint16Array(T * N).fill(0x7e00) : new Float32Array(T * N).fill(NaN), 'y'), // NaN: columns not written show
    };
    const disp = matmul(o, { ...d, eps: 1e-5 }, bufs);
    expect(disp.kernel.name).toContain('path-sgmat');
    r.run([emulated(disp)]);
    const got = o.halfY ? f16ToF32(new Uint16Array(await r.read(bufs.y, T * N * 2))) : await r.readF32(bufs.y, T * N);
    for (const [k, b] of Object.entries(bufs)) if (b && k !== 'w' && k !== 'wScales') r.destroy(b);
    if (parts) destroyParts(r, parts);
    else r.destroy(bufs.w);
    const want = matmulRef(o as Parameters<typeof matmulRef>[0], { T, N, K, eps: 1e-5, xRow0 }, x, w.ref, normW, bias, yIn);
    const pick = (a: Float32Array) => Float32Array.from({ length: T * cols }, (_, i) => a[Math.floor(i / cols) * N + col0 + (i % cols)]!);
    // x · normW is rounded to f16 for the tensor cores: 1e-2 of the largest output (an f16 y adds 2^-11 of itself)
    expectClose(pick(got), pick(want), 1e-2, `${o.wdtype} ${o.epilogue}${o.norm ? ' +norm' : ''}${o.bias ? ' +bias' : ''}${o.halfX ? ' f16 x' : ''}${o.halfY ? ' f16 y' : ''} T=${T} N=${N} K=${K} cols ${col0}+${cols} xRow0=${xRow0}`);
  }

  more('store: partial tiles both ways, partial last K slab, x row offset', () => check(mmOpts('store', false, false), { T: 150, N: 200, K: 48, xRow0: 3 }, 1));
  it('store +norm +bias, column range', () => check(mmOpts('store', true, true), { T: 100, N: 150, K: 64, col0: 30, cols: 100 }, 2));
  more('residual, T just above gemv', () => check(mmOpts('residual', false, false), { T: 9, N: 130, K: 16 }, 3));
  more('swiglu +norm +bias', () => check(mmOpts('swiglu', true, true), { T: 140, N: 70, K: 80 }, 4));
  more('swiglu column range with wRow / uRow', () => check(mmOpts('swiglu', true, false), { T: 20, N: 96, K: 32, col0: 16, cols: 64, wRow: 16, uRow: 96 + 16 }, 5));

  // the other shapes of SGMAT_VARIANTS: lean x staging, prefetch, 64-token tiles, 16 subgroups
  const V = (epilogue: MatmulOpts['epilogue'], norm: boolean, bias: boolean, sgmatVariant: string): MatmulOpts => ({ ...mmOpts(epilogue, norm, bias), sgmatVariant });
  it('m64n128l residual, partial tiles both ways, x row offset', () => check(V('residual', false, false, 'm64n128l'), { T: 70, N: 150, K: 48, xRow0: 2 }, 18));
  more('m64n128lp store +norm +bias, partial tiles and last slab', () => check(V('store', true, true, 'm64n128lp'), { T: 70, N: 150, K: 48 }, 6));
  more('m128n128s16l residual, x row offset', () => check(V('residual', false, false, 'm128n128s16l'), { T: 130, N: 140, K: 48, xRow0: 2 }, 7));
  more('m128n128p store +norm (spread staging, prefetch)', () => check(V('store', true, false, 'm128n128p'), { T: 40, N: 130, K: 80 }, 8));
  more('sw128n64lp swiglu +norm +bias', () => check(V('swiglu', true, true, 'sw128n64lp'), { T: 140, N: 70, K: 48 }, 9));
  it('sw128n64s16l swiglu column range', () => check(V('swiglu', true, false, 'sw128n64s16l'), { T: 20, N: 96, K: 32, col0: 16, cols: 64, wRow: 16, uRow: 96 + 16 }, 10));
  more('sw64n64l swiglu +norm', () => check(V('swiglu', true, false, 'sw64n64l'), { T: 70, N: 70, K: 48 }, 11));
  // 64-deep slabs and double-buffered slab sets: several slabs so both sets are read and written, a partial last one.
  // Only the shapes within the CPU driver's 32 KB of workgroup memory run here; the bigger ones are the same
  // generator with other tile constants (bench/kernel-check.ts checks every variant against a CPU reference on the GPU)
  it('m64n64ld residual (double-buffered), 4 slabs, partial tiles, x row offset', () => check(V('residual', false, false, 'm64n64ld'), { T: 70, N: 150, K: 112, xRow0: 2 }, 19));
  it('m64n64lk64 store +norm +bias (64-deep), 3 slabs, partial last slab', () => check(V('store', true, true, 'm64n64lk64'), { T: 40, N: 70, K: 144 }, 20));

  // f16 activations between tensor-core matmuls (compiler/lower.ts halfSwiglu): a swiglu writing f16, a residual
  // matmul reading it, on the shapes the CPU driver picks and on a 64-deep one
  it('sw128n64s16l swiglu reading f16 x (normalized ahead), writing f16 y, partial tiles', () => check({ ...V('swiglu', false, false, 'sw128n64s16l'), halfX: true, halfY: true }, { T: 20, N: 70, K: 48 }, 21));
  more('sw128n64s16l swiglu +norm writing f16 y', () => check({ ...V('swiglu', true, false, 'sw128n64s16l'), halfY: true }, { T: 20, N: 70, K: 48 }, 24));
  it('m64n128l residual reading f16 x, partial tiles, x row offset', () => check({ ...V('residual', false, false, 'm64n128l'), halfX: true }, { T: 70, N: 150, K: 48, xRow0: 2 }, 22));
  it('m64n64l silu reading f16 x (a retaining head\'s fc1 over f16 rows, picked where 36 KB do not fit), partial tiles, 5 slabs', () => check({ ...V('silu', false, false, 'm64n64l'), halfX: true }, { T: 70, N: 90, K: 80 }, 25));
  more('m64n64 silu +bias reading f16 x', () => check({ ...V('silu', false, true, 'm64n64'), halfX: true }, { T: 40, N: 70, K: 48 }, 26));
  more('m64n64lk64 residual reading f16 x, 3 slabs, q8 weights', () => check({ ...V('residual', false, false, 'm64n64lk64'), wdtype: 'q8', halfX: true }, { T: 40, N: 70, K: 160 }, 23));

  // q8 / q4 weights (K % 32 == 0): the q4 one always runs (m128n128, partial tiles both ways); q8 on the swiglu
  // variant covers the up stream's own quants and scales (wu, wu_s)
  const Q = (wdtype: 'q8' | 'q4', epilogue: MatmulOpts['epilogue'], norm: boolean, bias: boolean): MatmulOpts => ({ ...mmOpts(epilogue, norm, bias), wdtype });
  it('q4 store +norm', () => check(Q('q4', 'store', true, false), { T: 40, N: 70, K: 64 }, 15));
  more('q8 swiglu +norm +bias', () => check(Q('q8', 'swiglu', true, true), { T: 40, N: 70, K: 64 }, 16));
  more('q8 residual, column range, x row offset', () => check(Q('q8', 'residual', false, false), { T: 20, N: 96, K: 96, col0: 16, cols: 64, xRow0: 2 }, 17));

  const qkvCase = (normed: boolean) => async () => {
    const o: QkvOpts = { wdtype: 'f16', bias: true, cacheDtype: 'f32', numHeads: 4, numKvHeads: 2, headDim: 16, rotaryDim: 8, writePre: true };
    const T = 70;
    const K = 48;
    const capacity = 100;
    const Wd = (o.numHeads + 2 * o.numKvHeads) * o.headDim;
    const table = ropeTable({ kind: 'default', theta: 10000, rotaryDim: o.rotaryDim }, 5 + T);
    const w = weightsFor('f16', rand(Wd * K, 12, 0.5));
    const inputs = { x: rand(T * K, 11, 2), normW: rand(K, 13, 0.5).map((v) => 1 + v), bias: rand(Wd, 14) };
    const run = async (tensorCores: boolean) => {
      const xIn = r.upload(inputs.x, 'x');
      const normW = r.upload(inputs.normW, 'normW');
      // normedX: the rows normalized ahead into f16 by the rmsnorm kernel, as the plan does (compiler/lower.ts prenorm)
      const xh = tensorCores && normed ? r.createBuffer(T * K * 2, 'xh') : undefined;
      if (xh) r.run([rmsnorm({ T, N: K, eps: 1e-5, half: true }, { x: xIn, w: normW, y: xh })]);
      const b = {
        x: xh ?? xIn, normW, w: r.upload(w.gpu, 'w'), bias: r.upload(inputs.bias, 'bias'),
        rope: r.upload(table, 'rope'), q: r.upload(new Float32Array(T * o.numHeads * o.headDim), 'q'),
        kCache: r.upload(new Float32Array(o.numKvHeads * capacity * o.headDim), 'k'), vCache: r.upload(new Float32Array(o.numKvHeads * capacity * o.headDim), 'v'),
        kpos: r.upload(new Uint32Array(o.numKvHeads * capacity), 'kpos'), pre: r.upload(new Float32Array(T * Wd), 'pre'),
      };
      const d = qkvRope({ ...o, tensorCores, normedX: tensorCores && normed }, { T, K, eps: 1e-5, slot0: 7, pos0: 5, capacity }, b);
      expect(d.kernel.name).toContain(tensorCores ? 'path-sgmat' : 'path-tiled');
      if (xh) expect(Object.keys(d.buffers)).not.toContain('normW');
      r.run([tensorCores ? emulated(d) : d]);
      const out = {
        q: await r.readF32(b.q, T * o.numHeads * o.headDim), k: await r.readF32(b.kCache, o.numKvHeads * capacity * o.headDim),
        v: await r.readF32(b.vCache, o.numKvHeads * capacity * o.headDim), pre: await r.readF32(b.pre, T * Wd), kpos: await r.readU32(b.kpos, o.numKvHeads * capacity),
      };
      for (const x of new Set([...Object.values(b), xIn])) r.destroy(x);
      return out;
    };
    const want = await run(false);
    const got = await run(true);
    for (const k of ['q', 'k', 'v', 'pre'] as const) expectClose(got[k], want[k], 1e-2, `qkv ${k}${normed ? ' (rows normalized ahead)' : ''}`);
    expect([...got.kpos]).toEqual([...want.kpos]);
  };
  more('qkv_rope on the sgmat path matches the tiled path', qkvCase(false));
  it('qkv_rope on the sgmat path reading rows normalized ahead (f16) matches the tiled path', qkvCase(true));
});
