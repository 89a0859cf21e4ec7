/**
 * matmul kernels vs the CPU reference: every weight dtype × norm × bias × epilogue, on the gemv path (T ≤ 8) and
 * the tiled path, over awkward shapes (odd N/K, K not a multiple of 4, partial tiles, x row offsets).
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { matmul, type MatmulOpts, type WeightDtype } from '../compiler/kernels/matmul.js';
import type { GpuRunner } from '../runtime/gpu/runner.js';
import { expectClose, gpuRunner, rand, weightsFor } from './gpu-harness.js';
import { matmulRef } from './ref/gpu-ops.js';
import { withEnv } from './with-env.js';

const EPILOGUES = ['store', 'residual', 'silu', 'swiglu'] as const;
/** (N, K) pairs cycled through the variants so each variant sees different alignments */
const SHAPES: readonly (readonly [number, number])[] = [
  [67, 130],
  [64, 64],
  [130, 67],
  [3, 384],
  [384, 3],
  [64, 96],
  [5, 67],
  [130, 128],
];
const GEMV_T = [1, 3, 8, 2];
const TILED_T = [67, 129, 9, 64];

function variants(dtypes: readonly WeightDtype[]): MatmulOpts[] {
  const out: MatmulOpts[] = [];
  for (const wdtype of dtypes)
    for (const epilogue of EPILOGUES)
      for (const norm of [false, true]) for (const bias of [false, true]) out.push({ wdtype, norm, bias, epilogue });
  return out;
}

const label = (o: MatmulOpts) => `${o.wdtype} ${o.epilogue}${o.norm ? ' +norm' : ''}${o.bias ? ' +bias' : ''}`;

async function check(r: GpuRunner, o: MatmulOpts, T: number, N: number, K: number, seed: number, xRow0 = 0): Promise<void> {
  const rows = o.epilogue === 'swiglu' ? 2 * N : N;
  const x = rand((xRow0 + T) * K, seed, 2);
  const w = weightsFor(o.wdtype, rand(rows * K, seed + 1, 0.5));
  const normW = rand(K, seed + 2, 0.5).map((v) => 1 + v);
  const bias = rand(rows, seed + 3);
  const yIn = rand(T * N, seed + 4);
  const bufs = {
    x: r.upload(x, 'x'),
    w: r.upload(w.gpu, 'w'),
    normW: o.norm ? r.upload(normW, 'normW') : undefined,
    bias: o.bias ? r.upload(bias, 'bias') : undefined,
    y: r.upload(o.epilogue === 'residual' ? yIn : new Float32Array(T * N).fill(NaN), 'y'),
  };
  r.run([matmul(o, { T, N, K, eps: 1e-5, xRow0 }, bufs)]);
  const got = await r.readF32(bufs.y, T * N);
  const want = matmulRef(o, { T, N, K, eps: 1e-5, xRow0 }, x, w.ref, normW, bias, yIn);
  for (const b of Object.values(bufs)) if (b) r.destroy(b);
  expectClose(got, want, o.wdtype === 'f32' ? 1e-4 : 1e-3, `${label(o)} T=${T} N=${N} K=${K} xRow0=${xRow0}`);
}

function suite(name: string, dtypes: readonly WeightDtype[], runner: () => Promise<GpuRunner>): void {
  describe(name, () => {
    let r: GpuRunner;
    beforeAll(async () => {
      r = await runner();
    });
    variants(dtypes).forEach((o, i) => {
      it(label(o), async () => {
        const [N, K] = SHAPES[i % SHAPES.length]!;
        const [N2, K2] = SHAPES[(i + 3) % SHAPES.length]!;
        await check(r, o, GEMV_T[i % GEMV_T.length]!, N, K, 100 + i, i % 2);
        await check(r, o, TILED_T[i % TILED_T.length]!, N2, K2, 200 + i, (i >> 1) % 2);
      });
    });
  });
}

suite('matmul (shader-f16 device)', ['f32', 'f16'], () => gpuRunner());
suite('matmul f16p (device without shader-f16)', ['f16p'], () => gpuRunner({ disableF16: true }));

// Steps of at least 128 tokens with vec4 rows and grids of at least 256 wide tiles take the wide FMA tiles
// (mm-tiled-wide.ts: 128 × 128, 8 × 8 per thread, next slab prefetched into registers, or not with
// LOCRET_FMA_MM=pf=0); forced here (LOCRET_TILED=wide) on small shapes: every epilogue,
// norm and bias, partial token and column tiles, a partial last slab (K % 16 != 0)
describe('matmul wide tiles', () => {
  let r: GpuRunner;
  beforeAll(async () => {
    r = await gpuRunner();
  });
  const dims = [[150, 70, 68], [128, 130, 36], [260, 200, 132]] as const;
  // each epilogue with and without norm + bias (f16 weights), and f32 weights once (same loaders as the 64 × 64 tiles)
  const cases = variants(['f16']).filter((o) => o.norm === o.bias);
  cases.push({ wdtype: 'f32', norm: true, bias: false, epilogue: 'swiglu' });
  cases.forEach((o, i) => {
    it(label(o), () => withEnv({ LOCRET_TILED: 'wide' }, async () => {
      const [T, N, K] = dims[i % dims.length]!;
      const name = () => matmul(o, { T, N, K }, { x: {}, w: {}, y: {}, normW: {}, bias: {} } as never).kernel.name;
      expect(name()).toContain('path-tiledw');
      expect(name()).not.toContain('pf-0');
      await check(r, o, T, N, K, 300 + i, i % 3);
      // the form that loads each slab in turn (no register prefetch)
      await withEnv({ LOCRET_FMA_MM: 'pf=0' }, async () => {
        expect(name()).toContain('pf-0');
        await check(r, o, T, N, K, 300 + i, i % 3);
      });
    }));
  });
  it('by default: short steps, small grids and rows not in vec4s keep the 64 × 64 tiles', () => {
    const name = (T: number, N: number, K: number, epilogue: MatmulOpts['epilogue'] = 'store') =>
      matmul({ wdtype: 'f16', norm: false, bias: false, epilogue }, { T, N, K }, { x: {}, w: {}, y: {} } as never).kernel.name;
    withEnv({ LOCRET_TILED: undefined }, () => {
      expect(name(127, 64 * 256, 64)).toContain('path-tiled_'); // under one tile of tokens
      expect(name(1024, 4096, 66)).toContain('path-tiled_'); // K % 4 != 0
      expect(name(1024, 1024, 6144)).toContain('path-tiled_'); // a retaining head's fc1 at chunk 1024: 64 wide tiles
      expect(name(1024, 4096, 4096)).toContain('path-tiledw'); // o: 256
      expect(name(256, 14336, 4096, 'swiglu')).toContain('path-tiledw'); // 64 columns per stream: 224 × 2
      expect(name(128, 14336, 4096, 'swiglu')).toContain('path-tiled_'); // 224
      expect(name(128, 8192, 3072, 'swiglu')).toContain('path-tiled_'); // 128
    });
    expect(withEnv({ LOCRET_TILED: 'base' }, () => name(1024, 4096, 4096))).toContain('path-tiled_');
  });
});

describe('matmul shapes', () => {
  it('gemv folds huge column counts into a 2D grid and tiled covers large K', async () => {
    const r = await gpuRunner();
    // 70000 columns / R per workgroup still under the limit for R=8, so force T=3 (R=4): 17500 workgroups
    const d = matmul({ wdtype: 'f32', norm: false, bias: false, epilogue: 'store' }, { T: 1, N: 600_000, K: 4 }, {
      x: r.upload(new Float32Array(4), 'x'),
      w: r.upload(new Float32Array(4), 'w'),
      y: r.upload(new Float32Array(4), 'y'),
    });
    expect(d.workgroups[0]).toBeLessThanOrEqual(65535);
    expect((d.workgroups[0] as number) * (d.workgroups[1] ?? 1) * 8).toBeGreaterThanOrEqual(600_000);
    await check(r, { wdtype: 'f16', norm: true, bias: true, epilogue: 'residual' }, 1, 70_000, 8, 7);
    await check(r, { wdtype: 'f32', norm: true, bias: false, epilogue: 'store' }, 16, 8, 2052, 9);
  });
});
