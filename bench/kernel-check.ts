/**
 * Tensor-core matmul check on the device: the sgmat skeleton (compiler/kernels/mm-sgmat.ts) against a CPU
 * reference on awkward and Llama-sized shapes (every epilogue, norm, bias, column ranges, x row offsets, qkv_rope
 * against its tiled path, q8 / q4 weights against their dequantized values), then sgmat vs tiled timings of the
 * Llama-3.1-8B projections at T = 1024 (f16; gate_up and down also with q8 and q4 weights).
 *
 *   LOCRET_DAWN_FLAGS=enable-dawn-features=allow_unsafe_apis,vulkan_enable_f16_on_nvidia \
 *     node dist/bench/kernel-check.js --out kc.json [--small] [--no-variants | --variants m64n128l,m64n128ld,…] [--shapes qkv,fc1,…] [--variants-only]
 *
 * On a tensor-core device (not --small) it then checks and times every sgmat variant at the 8B shapes
 * (bench/sgmat-variants.ts) and prints one TFLOP/s table; variant check failures do not fail the run (a variant
 * that fails is simply not one to pick), they are marked `!` in the table.
 *
 * Where the device has no tensor cores (e.g. the CPU driver) it says so and checks and times only the tiled path,
 * on small shapes. Big cases compare sampled rows only (the CPU reference of a 1024 × 28672 × 4096 product is slow).
 */
import * as fs from 'node:fs';
import { matmul, type MatmulDims, type MatmulOpts } from '../compiler/kernels/matmul.js';
import { fillBits, fillRandom } from '../compiler/kernels/random.js';
import { qkvRope, type QkvOpts } from '../compiler/kernels/qkv-rope.js';
import { createGpuContext } from '../runtime/gpu/device.js';
import { GpuRunner, type Dispatch } from '../runtime/gpu/runner.js';
import { f16ToF32, f32ToF16 } from '../runtime/io/dtype.js';
import { dequantize, quantize, quantizedBytes } from '../runtime/quant.js';
import { ropeTable } from '../runtime/rope.js';
import { benchSgmatVariants, LLAMA8B_SHAPES, rand, silu } from './sgmat-variants.js';

const arg = (name: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
};
const out = arg('out') ?? 'kernel-check.json';

interface Case { name: string; o: MatmulOpts; d: MatmulDims; separateUp?: boolean }

/** y[t, col0 + c] for the checked tokens, f64; rows of w per the dispatch's wRow / uRow */
function reference(c: Case, x: Float32Array, w: Float32Array, wu: Float32Array, normW: Float32Array, bias: Float32Array, yIn: Float32Array, tokens: number[]): Float64Array {
  const { T, N, K } = c.d;
  const xRow0 = c.d.xRow0 ?? 0, col0 = c.d.col0 ?? 0, cols = c.d.cols ?? N - col0, wRow = c.d.wRow ?? col0, uRow = c.d.uRow ?? N + col0;
  const y = new Float64Array(tokens.length * cols);
  const a = new Float64Array(K);
  tokens.forEach((t, ti) => {
    let ss = 0;
    for (let k = 0; k < K; k++) ss += x[(xRow0 + t) * K + k]! ** 2;
    const rinv = c.o.norm ? 1 / Math.sqrt(ss / K + (c.d.eps ?? 1e-6)) : 1;
    for (let k = 0; k < K; k++) a[k] = x[(xRow0 + t) * K + k]! * (c.o.norm ? normW[k]! * rinv : 1);
    for (let j = 0; j < cols; j++) {
      let g = 0, u = 0;
      for (let k = 0; k < K; k++) g += a[k]! * w[(wRow + j) * K + k]!;
      if (c.o.bias) g += bias[col0 + j]!;
      if (c.o.epilogue === 'swiglu') {
        for (let k = 0; k < K; k++) u += a[k]! * wu[(uRow + j) * K + k]!;
        if (c.o.bias) u += bias[N + col0 + j]!;
      }
      y[ti * cols + j] = c.o.epilogue === 'swiglu' ? silu(g) * u : c.o.epilogue === 'silu' ? silu(g) : c.o.epilogue === 'residual' ? yIn[t * N + col0 + j]! + g : g;
    }
  });
  return y;
}

async function guarded<T>(r: GpuRunner, f: () => Promise<T>): Promise<T> {
  r.device.pushErrorScope('validation');
  const v = await f();
  const e = await r.device.popErrorScope();
  if (e) throw new Error(e.message);
  return v;
}

async function check(r: GpuRunner, c: Case, tensorCores: boolean, seed: number) {
  const { T, N, K } = c.d;
  const xRow0 = c.d.xRow0 ?? 0, col0 = c.d.col0 ?? 0, cols = c.d.cols ?? N - col0;
  const swiglu = c.o.epilogue === 'swiglu';
  const rows = swiglu ? 2 * N : N;
  // f16 x (halfX): the reference takes exactly the rounded values the kernel reads
  const x32 = rand((xRow0 + T) * K, seed, 2);
  const xBits = c.o.halfX ? f32ToF16(x32) : undefined;
  const x = xBits ? f16ToF32(xBits) : x32;
  const wRaw = rand(rows * K, seed + 1, 1 / Math.sqrt(K));
  // q8 / q4: quants and scales of one part; the reference multiplies by the dequantized values the kernel sees
  const wd = c.o.wdtype;
  const q = wd === 'q8' || wd === 'q4' ? quantize(wRaw, rows, K, wd) : undefined;
  if (q && c.separateUp) throw new Error('check: separateUp is for f16 weights');
  const wBits = q ? q.quants : f32ToF16(wRaw);
  const w = q ? dequantize(q, rows, K, wd as 'q8' | 'q4') : f16ToF32(wBits as Uint16Array);
  const normW = rand(K, seed + 2, 0.5).map((v) => 1 + v);
  const bias = rand(rows, seed + 3, 1);
  const yIn = rand(T * N, seed + 4, 1);
  // separateUp: the up rows live in their own buffer (a split weight), uRow counted from its start
  const upBits = c.separateUp ? (wBits as Uint16Array).slice(N * K) : undefined;
  const bufs = {
    x: r.upload(xBits ?? x, 'x'), w: r.upload(wBits, 'w'), wu: upBits ? r.upload(upBits, 'wu') : undefined, wScales: q ? r.upload(q.scales, 'w_s') : undefined,
    normW: r.upload(normW, 'normW'), bias: r.upload(bias, 'bias'), y: r.upload(c.o.epilogue === 'residual' ? yIn : c.o.halfY ? new Uint16Array(T * N) : new Float32Array(T * N), 'y'),
  };
  // the device's workgroup memory picks the tile shapes a load would (the 47 KB swiglu one where offered)
  const d = matmul({ ...c.o, tensorCores, workgroupBytes: r.gpu.limits.maxComputeWorkgroupStorageSize }, c.d, bufs);
  const got = await guarded(r, async () => {
    r.run([d]);
    return c.o.halfY ? f16ToF32(new Uint16Array(await r.read(bufs.y, T * N * 2))) : r.readF32(bufs.y, T * N);
  });
  for (const b of Object.values(bufs)) if (b) r.destroy(b);
  const tokens = T <= 160 ? [...Array(T).keys()] : [...new Set([0, 1, 15, 16, 127, 128, 129, 500, 777, T - 2, T - 1].filter((t) => t < T))];
  const want = reference(c, x, w, c.separateUp ? f16ToF32(upBits!) : w, normW, bias, yIn, tokens);
  let maxY = 0, maxE = 0;
  tokens.forEach((t, ti) => {
    for (let j = 0; j < cols; j++) {
      const wv = want[ti * cols + j]!, gv = got[t * N + col0 + j]!;
      maxY = Math.max(maxY, Math.abs(wv));
      maxE = Math.max(maxE, Number.isFinite(gv) ? Math.abs(gv - wv) : Infinity);
    }
  });
  return { kernel: d.kernel.name, relErr: maxE / Math.max(maxY, 1e-30), tokensChecked: tokens.length };
}

/** qkv_rope on the sgmat path against its tiled path (itself covered by the test suite) */
async function checkQkv(r: GpuRunner, T: number, K: number) {
  const o: QkvOpts = { wdtype: 'f16', bias: true, cacheDtype: 'f16', numHeads: 32, numKvHeads: 8, headDim: 128, rotaryDim: 128, writePre: true };
  const Wd = (o.numHeads + 2 * o.numKvHeads) * o.headDim, cap = T + 16;
  const src = { x: rand(T * K, 7, 2), normW: rand(K, 8, 0.5).map((v) => 1 + v), w: f32ToF16(rand(Wd * K, 9, 1 / Math.sqrt(K))), bias: rand(Wd, 10, 1), rope: ropeTable({ kind: 'default', theta: 500000, rotaryDim: 128 }, T + 8) };
  const run = async (tensorCores: boolean) => {
    const b = {
      x: r.upload(src.x, 'x'), normW: r.upload(src.normW, 'normW'), w: r.upload(src.w, 'w'), bias: r.upload(src.bias, 'bias'), rope: r.upload(src.rope, 'rope'),
      q: r.createBuffer(T * o.numHeads * o.headDim * 4, 'q'), kCache: r.createBuffer(o.numKvHeads * cap * o.headDim * 2, 'k'),
      vCache: r.createBuffer(o.numKvHeads * cap * o.headDim * 2, 'v'), kpos: r.createBuffer(o.numKvHeads * cap * 4, 'kpos'), pre: r.createBuffer(T * Wd * 4, 'pre'),
    };
    const d = qkvRope({ ...o, tensorCores }, { T, K, eps: 1e-5, slot0: 3, pos0: 5, capacity: cap }, b);
    const res = await guarded(r, async () => {
      r.run([d]);
      return { kernel: d.kernel.name, q: await r.readF32(b.q, T * o.numHeads * o.headDim), pre: await r.readF32(b.pre, T * Wd) };
    });
    for (const x of Object.values(b)) r.destroy(x);
    return res;
  };
  const want = await run(false), got = await run(true);
  const rel = (a: Float32Array, b: Float32Array) => {
    let e = 0, m = 0;
    for (let i = 0; i < b.length; i++) { e = Math.max(e, Number.isFinite(a[i]!) ? Math.abs(a[i]! - b[i]!) : Infinity); m = Math.max(m, Math.abs(b[i]!)); }
    return e / m;
  };
  return { kernel: got.kernel, relErr: Math.max(rel(got.q, want.q), rel(got.pre, want.pre)), tokensChecked: T };
}

async function timeMatmul(r: GpuRunner, name: string, o: MatmulOpts, T: number, N: number, K: number, tensorCores: boolean) {
  const rows = o.epilogue === 'swiglu' ? 2 * N : N;
  const quant = o.wdtype === 'q8' || o.wdtype === 'q4' ? quantizedBytes(o.wdtype, rows, K) : undefined;
  const b = {
    x: r.createBuffer(T * K * 4, 'x'), w: r.createBuffer(quant ? quant.quants : rows * K * 2, 'w'), wScales: quant ? r.createBuffer(quant.scales, 'w_s') : undefined,
    normW: r.createBuffer(K * 4, 'normW'), y: r.createBuffer(T * N * 4, 'y'),
  };
  // q8 / q4: random quant bits and small f16 scales (the speed does not depend on the values)
  const fillW = quant
    ? [fillBits({ words: quant.quants / 4, seed: 5 }, { buf: b.w }), fillRandom({ half: true }, { words: quant.scales / 4, seed: 6, scale: 0.002, offset: 0.003 }, { buf: b.wScales! })]
    : [fillRandom({ half: true }, { words: (rows * K) / 2, seed: 5, scale: 0.02 }, { buf: b.w })];
  r.run([fillRandom({ half: false }, { words: T * K, seed: 3, scale: 1 }, { buf: b.x }), ...fillW,
    fillRandom({ half: false }, { words: K, seed: 7, scale: 0.1, offset: 1 }, { buf: b.normW }), fillRandom({ half: false }, { words: T * N, seed: 9, scale: 1 }, { buf: b.y })]);
  const d: Dispatch = matmul({ ...o, tensorCores, workgroupBytes: r.gpu.limits.maxComputeWorkgroupStorageSize }, { T, N, K, eps: 1e-5 }, b);
  const reps = 20;
  const ms = await guarded(r, async () => {
    r.run([d]);
    await r.device.queue.onSubmittedWorkDone();
    const t0 = performance.now();
    for (let i = 0; i < reps; i++) r.run([d]);
    await r.device.queue.onSubmittedWorkDone();
    return (performance.now() - t0) / reps;
  });
  for (const x of Object.values(b)) if (x) r.destroy(x);
  const tflops = (2 * T * rows * K) / (ms / 1000) / 1e12;
  return { name, wdtype: o.wdtype, path: tensorCores ? 'sgmat' : 'tiled', kernel: d.kernel.name, T, N: rows, K, ms, tflops };
}

async function main() {
  const gpu = await createGpuContext();
  const r = new GpuRunner(gpu);
  const sg = gpu.tensorCores;
  const small = process.argv.includes('--small') || !sg;
  const info = gpu.device.adapterInfo as GPUAdapterInfo & { subgroupMatrixConfigs?: unknown };
  // interface objects (getters on the prototype): copy the fields rather than JSON.stringify them
  type Config = { componentType: string; resultComponentType: string; M: number | bigint; N: number | bigint; K: number | bigint };
  const configs = [...((info?.subgroupMatrixConfigs as Config[] | undefined) ?? [])].map((c) =>
    ({ componentType: c.componentType, resultComponentType: c.resultComponentType, M: Number(c.M), N: Number(c.N), K: Number(c.K) }));
  console.log(`device: ${gpu.adapterName}; f16 ${gpu.f16}; subgroups ${gpu.subgroups}; subgroup-matrix ${gpu.subgroupMatrix}; subgroup sizes ${info?.subgroupMinSize}..${info?.subgroupMaxSize}`);
  console.log(`subgroup-matrix configs: ${JSON.stringify(configs)}; workgroup storage ${gpu.limits.maxComputeWorkgroupStorageSize}`);
  console.log(sg ? 'sgmat path: available' : 'sgmat path: UNAVAILABLE on this device (checking and timing the tiled path only)');
  const mm = (epilogue: MatmulOpts['epilogue'], norm: boolean, bias: boolean, wdtype: MatmulOpts['wdtype'] = 'f16'): MatmulOpts => ({ wdtype, epilogue, norm, bias });
  const cases: Case[] = [
    { name: 'store T=9 N=64 K=16', o: mm('store', false, false), d: { T: 9, N: 64, K: 16 } },
    { name: 'store +norm +bias T=100 N=100 K=48 xRow0=2', o: mm('store', true, true), d: { T: 100, N: 100, K: 48, xRow0: 2, eps: 1e-5 } },
    { name: 'swiglu +norm +bias T=100 N=100 K=48', o: mm('swiglu', true, true), d: { T: 100, N: 100, K: 48, eps: 1e-5 } },
    { name: 'silu +bias T=100 N=64 K=4096', o: mm('silu', false, true), d: { T: 100, N: 64, K: small ? 256 : 4096 } },
    { name: 'store +bias cols 1000+2000 of 4096, T=100 K=64', o: mm('store', false, true), d: { T: 100, N: small ? 300 : 4096, K: 64, col0: small ? 100 : 1000, cols: small ? 150 : 2000 } },
    { name: 'swiglu cols 36+64 of 100, up rows in their own buffer, T=9 K=16', o: mm('swiglu', true, false), d: { T: 9, N: 100, K: 16, col0: 36, cols: 64, wRow: 36, uRow: 36, eps: 1e-5 }, separateUp: true },
    { name: 'residual T=100 N=4096 K=4096', o: mm('residual', false, false), d: { T: 100, N: small ? 256 : 4096, K: small ? 256 : 4096 } },
    // q8 / q4 weights dequantized while staging (K % 32 == 0); the swiglu ones read wu_s as well
    { name: 'q8 swiglu +norm +bias T=100 N=100 K=64', o: mm('swiglu', true, true, 'q8'), d: { T: 100, N: 100, K: 64, eps: 1e-5 } },
    { name: 'q4 store +norm +bias T=100 N=100 K=96 xRow0=2', o: mm('store', true, true, 'q4'), d: { T: 100, N: 100, K: 96, xRow0: 2, eps: 1e-5 } },
    { name: 'q4 swiglu +norm T=100 N=100 K=64', o: mm('swiglu', true, false, 'q4'), d: { T: 100, N: 100, K: 64, eps: 1e-5 } },
  ];
  // what prefill runs on tensor cores: qkv / gate_up read rows normalized ahead as f16, swiglu writes f16 for down
  const half = (o: MatmulOpts, halfY = o.epilogue === 'swiglu', sgmatVariant?: string): MatmulOpts => ({ ...o, halfX: true, halfY, sgmatVariant });
  if (sg) cases.push(
    { name: 'f16 x, f16 y: swiglu T=100 N=100 K=48', o: half(mm('swiglu', false, false)), d: { T: 100, N: 100, K: 48 } },
    { name: 'f16 x: residual T=100 N=150 K=64 xRow0=2', o: half(mm('residual', false, false)), d: { T: 100, N: 150, K: 64, xRow0: 2 } },
    { name: 'f16 x, f16 y: q4 swiglu T=100 N=100 K=64', o: half(mm('swiglu', false, false, 'q4')), d: { T: 100, N: 100, K: 64 } },
    // the 128-column swiglu shapes (47 KB of workgroup memory where the device has it), named
    ...['sw128n128s16lp', 'sw128n128lp'].map((v): Case => ({ name: `f16 x, f16 y: ${v} swiglu T=200 N=300 K=96`, o: half(mm('swiglu', false, false), true, v), d: { T: 200, N: 300, K: 96 } })),
  );
  if (!small) cases.push(
    { name: 'f16 x, f16 y: gate_up swiglu T=1024 N=14336 (28672 rows) K=4096', o: half(mm('swiglu', false, false)), d: { T: 1024, N: 14336, K: 4096 } },
    { name: 'f16 x: down residual T=1024 N=4096 K=14336', o: half(mm('residual', false, false)), d: { T: 1024, N: 4096, K: 14336 } },
    { name: 'qkv-shaped store +norm T=1024 N=6144 K=4096', o: mm('store', true, false), d: { T: 1024, N: 6144, K: 4096, eps: 1e-5 } },
    { name: 'gate_up swiglu +norm T=1024 N=14336 (28672 rows) K=4096', o: mm('swiglu', true, false), d: { T: 1024, N: 14336, K: 4096, eps: 1e-5 } },
    { name: 'down residual T=1024 N=4096 K=14336', o: mm('residual', false, false), d: { T: 1024, N: 4096, K: 14336 } },
    { name: 'q8 gate_up swiglu +norm T=1024 N=14336 (28672 rows) K=4096', o: mm('swiglu', true, false, 'q8'), d: { T: 1024, N: 14336, K: 4096, eps: 1e-5 } },
    { name: 'q4 down residual T=1024 N=4096 K=14336', o: mm('residual', false, false, 'q4'), d: { T: 1024, N: 4096, K: 14336 } },
  );
  const paths = sg ? [true] : [false];
  const checks: Record<string, unknown>[] = [];
  let failed = 0;
  const record = (name: string, f: () => Promise<{ kernel: string; relErr: number; tokensChecked: number }>) => f().then(
    (res) => {
      const pass = res.relErr <= 1e-2;
      if (!pass) failed++;
      checks.push({ name, ...res, pass });
      console.log(`${pass ? 'PASS' : 'FAIL'}  ${name}  rel err ${res.relErr.toExponential(2)}  [${res.kernel}]`);
    },
    (e: Error) => {
      failed++;
      checks.push({ name, pass: false, error: e.message });
      console.log(`FAIL  ${name}  ${e.message}`);
    },
  );
  const variantsOnly = process.argv.includes('--variants-only'); // skip the checks and path timings
  if (!variantsOnly) for (const [i, c] of cases.entries()) for (const tc of paths) await record(c.name, () => check(r, c, tc, 100 + 10 * i));
  if (sg && !variantsOnly) await record('qkv_rope sgmat vs tiled T=100 K=4096 (32/8 heads of 128)', () => checkQkv(r, 100, 4096));
  const T = small ? 128 : 1024;
  const shapes: [string, MatmulOpts, number, number][] = small
    ? [['qkv', mm('store', true, false), 384, 256], ['down', mm('residual', false, false), 256, 512], ['q8 gate_up', mm('swiglu', true, false, 'q8'), 256, 256], ['q4 down', mm('residual', false, false, 'q4'), 256, 512]]
    : [['qkv 6144x4096', mm('store', true, false), 6144, 4096], ['o 4096x4096', mm('residual', false, false), 4096, 4096],
      ['gate_up 28672x4096', mm('swiglu', true, false), 14336, 4096], ['down 4096x14336', mm('residual', false, false), 4096, 14336],
      ...(['q8', 'q4'] as const).flatMap((q): [string, MatmulOpts, number, number][] =>
        [[`${q} gate_up 28672x4096`, mm('swiglu', true, false, q), 14336, 4096], [`${q} down 4096x14336`, mm('residual', false, false, q), 4096, 14336]])];
  const timings: Record<string, unknown>[] = [];
  for (const [name, o, N, K] of variantsOnly ? [] : shapes) {
    for (const tc of sg ? [false, true] : [false]) {
      try {
        const t = await timeMatmul(r, name, o, T, N, K, tc);
        timings.push(t);
        console.log(`time  ${name} T=${T} ${t.path}: ${t.ms.toFixed(3)} ms, ${t.tflops.toPrecision(3)} TFLOP/s`);
      } catch (e) {
        timings.push({ name, path: tc ? 'sgmat' : 'tiled', error: (e as Error).message });
        console.log(`time  ${name} ${tc ? 'sgmat' : 'tiled'}: ERROR ${(e as Error).message}`);
      }
    }
  }
  // every tensor-core variant at the 8B shapes (checked and timed): the table SGMAT_PICK is flipped from
  const only = arg('variants')?.split(','); // SGMAT_VARIANTS names (default: all)
  const shapeNames = arg('shapes')?.split(','); // LLAMA8B_SHAPES names by their first word (default: all)
  const variantShapes = LLAMA8B_SHAPES.filter((s) => !shapeNames || shapeNames.includes(s.name.split(' ')[0]!));
  const variants = sg && !small && !process.argv.includes('--no-variants') ? await benchSgmatVariants(r, T, variantShapes, undefined, only) : [];
  const report = { device: gpu.adapterName, tensorCores: sg, subgroupMatrixConfigs: configs, subgroupMaxSize: info?.subgroupMaxSize, small, checks, timings, variants, failed };
  fs.writeFileSync(out, JSON.stringify(report, null, 2));
  console.log(`${failed ? `${failed} FAILED` : 'all checks passed'}; wrote ${out}`);
  process.exit(failed ? 1 : 0);
}

await main();
