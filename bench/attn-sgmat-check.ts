/**
 * Checks the tensor-core prefill attention (compiler/kernels/attention-sgmat.ts) against the f32-FMA kernel
 * (attention.ts, itself tested against the CPU reference) on random caches, in both of its forms: keys rotated
 * beforehand into an f16 buffer (rotate-keys.ts, what the runtime runs) and keys rotated while each tile is staged.
 * Then times them at the Llama-3.1-8B prefill shape (chunk 1024 over 16384 earlier entries, 32/8 heads, head_dim
 * 128, f16 cache).
 *
 *   node dist/bench/attn-sgmat-check.js [--small] [--out results.json] [--splits 1,2,3,4 [--fma-env 'bq=4;bq=2']]
 *
 * `--splits` also times, at that shape, the runtime's f32-FMA form (subgroup shuffles, keys rotated into f16 first)
 * and the tensor-core form with the key range cut into each given number of splits (their combine included);
 * `--fma-env` times the FMA form again under each given LOCRET_FMA_ATTN value.
 *
 * Dawn needs `enable-dawn-features=allow_unsafe_apis,vulkan_enable_f16_on_nvidia` to expose subgroup matrices on
 * NVIDIA; it is the default here when LOCRET_DAWN_FLAGS is unset. On a device without them the kernel runs with
 * plain-WGSL stand-ins for the fragment builtins (same indexing, masking and softmax; slow), on the --small cases
 * only, and nothing is timed. Exit code 1 when any case fails.
 */
import * as fs from 'node:fs';
import { attention, attentionScratchBytes, type AttentionOpts } from '../compiler/kernels/attention.js';
import { attentionSgmat, sgmatAttentionPlan } from '../compiler/kernels/attention-sgmat.js';
import type { CacheDtype } from '../compiler/kernels/attn-common.js';
import { createGpuContext } from '../runtime/gpu/device.js';
import { GpuRunner, type Dispatch } from '../runtime/gpu/runner.js';
import { f32ToF16 } from '../runtime/io/dtype.js';
import { ropeTable } from '../runtime/rope.js';
import { rng } from '../runtime/sampling.js';

process.env.LOCRET_DAWN_FLAGS ??= 'enable-dawn-features=allow_unsafe_apis,vulkan_enable_f16_on_nvidia';
const arg = (name: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
};
const small = process.argv.includes('--small');
const outFile = arg('out');
const splitSweep = (arg('splits') ?? '').split(',').filter(Boolean).map(Number);
if (splitSweep.some((n) => !Number.isInteger(n) || n < 1)) throw new Error(`--splits: positive integers, got ${arg('splits')}`);
const fmaEnvs = (arg('fma-env') ?? '').split(';').filter(Boolean);
const TOL = 1e-2; // f16 Q, K, V and P against f32 math: max |Δ| / max |out|; lse: max |Δ|

/** tau 0: the accumulators are rescaled whenever a row's max rises (exercises the rare path on most tiles) */
interface Case { H: number; KV: number; D: number; T: number; base: number; dtype: CacheDtype; lse: boolean; splits?: number; tau?: number }
const big: Case[] = [
  { H: 8, KV: 8, D: 64, T: 9, base: 0, dtype: 'f32', lse: true },
  { H: 32, KV: 8, D: 128, T: 9, base: 16384, dtype: 'f16', lse: true },
  { H: 8, KV: 2, D: 128, T: 100, base: 500, dtype: 'f16', lse: false },
  { H: 4, KV: 4, D: 128, T: 100, base: 0, dtype: 'f32', lse: true },
  { H: 6, KV: 2, D: 64, T: 100, base: 500, dtype: 'f16', lse: true },
  { H: 8, KV: 2, D: 64, T: 1024, base: 0, dtype: 'f32', lse: false },
  { H: 8, KV: 2, D: 128, T: 100, base: 500, dtype: 'int8', lse: true },
  { H: 8, KV: 2, D: 128, T: 1024, base: 500, dtype: 'f16', lse: true, splits: 3 },
  { H: 8, KV: 2, D: 128, T: 100, base: 500, dtype: 'f16', lse: true, tau: 0 },
  { H: 32, KV: 8, D: 128, T: 1024, base: 16384, dtype: 'f16', lse: true },
];
const smallCases: Case[] = [
  { H: 4, KV: 4, D: 32, T: 9, base: 0, dtype: 'f32', lse: true },
  { H: 8, KV: 2, D: 48, T: 37, base: 40, dtype: 'f16', lse: true, splits: 2 },
  { H: 6, KV: 2, D: 32, T: 20, base: 40, dtype: 'int8', lse: false },
  { H: 4, KV: 1, D: 48, T: 37, base: 0, dtype: 'f16', lse: true },
  { H: 2, KV: 2, D: 32, T: 100, base: 70, dtype: 'f16', lse: true, tau: 0 },
];

const rand = (n: number, seed: number, scale: number) => {
  const r = rng(seed);
  return Float32Array.from({ length: n }, () => (r() * 2 - 1) * scale);
};

/** int8 rows (kv-int8.ts): D/4 words of codes, then the f32 scale max|x|/127. */
function int8Rows(x: Float32Array, D: number): Uint32Array {
  const rows = x.length / D;
  const out = new Uint32Array(rows * (D / 4 + 1));
  const f = new Float32Array(1);
  const fu = new Uint32Array(f.buffer);
  for (let r = 0; r < rows; r++) {
    let mx = 0;
    for (let i = 0; i < D; i++) mx = Math.max(mx, Math.abs(x[r * D + i]!));
    if (Number.isNaN(mx)) { out[r * (D / 4 + 1) + D / 4] = 0x7fc00000; continue; }
    f[0] = mx / 127;
    for (let i = 0; i < D; i++) {
      const c = f[0] > 0 ? Math.max(-127, Math.min(127, Math.round(x[r * D + i]! / f[0]))) : 0;
      out[r * (D / 4 + 1) + (i >> 2)]! |= (c & 255) << ((i & 3) * 8);
    }
    out[r * (D / 4 + 1) + D / 4] = fu[0]!;
  }
  return out;
}

function cacheData(dtype: CacheDtype, x: Float32Array, D: number): ArrayBufferView {
  return dtype === 'f32' ? x : dtype === 'f16' ? f32ToF16(x) : int8Rows(x, D);
}

async function scoped<T>(dev: GPUDevice, f: () => Promise<T>): Promise<T> {
  dev.pushErrorScope('internal');
  dev.pushErrorScope('validation');
  const v = await f();
  const e1 = await dev.popErrorScope();
  const e2 = await dev.popErrorScope();
  if (e1 || e2) throw new Error((e1 ?? e2)!.message);
  return v;
}

async function main() {
  const gpu = await createGpuContext();
  const wgLimit = gpu.limits.maxComputeWorkgroupStorageSize;
  const r = new GpuRunner(gpu);
  const dev = r.device;
  const real = gpu.subgroupMatrix;
  console.log(`device: ${gpu.adapterName}; subgroup matrices: ${real ? "yes" : "NO"}; tensorCores: ${gpu.tensorCores}; workgroup storage ${gpu.limits.maxComputeWorkgroupStorageSize} B`);
  if (!real) console.log(`this device has no chromium-experimental-subgroup-matrix: checking the kernel's emulated form on the --small cases only, no timing`);
  if (!gpu.f16) throw new Error('the tensor-core attention kernel needs shader-f16');
  const cases = small || !real ? smallCases : big;
  const results: Record<string, unknown>[] = [];
  let allPass = true;

  const setup = (c: Case, seed: number) => {
    const o: AttentionOpts = { cacheDtype: c.dtype, numHeads: c.H, numKvHeads: c.KV, headDim: c.D, rotaryDim: c.D };
    const capacity = c.base + c.T + 7;
    const P = c.base + c.T + 16;
    const k = rand(c.KV * capacity * c.D, seed + 1, 2);
    const v = rand(c.KV * capacity * c.D, seed + 2, 1);
    // slots past the chunk are NaN: a read past the visible range poisons the output
    for (let g = 0; g < c.KV; g++) {
      k.fill(NaN, (g * capacity + c.base + c.T) * c.D, (g + 1) * capacity * c.D);
      v.fill(NaN, (g * capacity + c.base + c.T) * c.D, (g + 1) * capacity * c.D);
    }
    const pr = rng(seed + 3);
    const kpos = Uint32Array.from({ length: c.KV * capacity }, () => Math.floor(pr() * P));
    const bufs = {
      q: r.upload(rand(c.T * c.H * c.D, seed, 2), 'q'),
      kCache: r.upload(cacheData(c.dtype, k, c.D), 'k'),
      vCache: r.upload(cacheData(c.dtype, v, c.D), 'v'),
      kpos: r.upload(kpos, 'kpos'),
      rope: r.upload(ropeTable({ kind: 'default', theta: 500000, rotaryDim: c.D }, P), 'rope'),
    };
    const d = { T: c.T, base: c.base, capacity, scale: 1 / Math.sqrt(c.D), splits: c.splits };
    const sp = sgmatAttentionPlan({ ...o, workgroupBytes: wgLimit }, d, Infinity);
    const mk = (tag: string, scratch: number) => ({
      ...bufs,
      out: r.createBuffer(c.T * c.H * c.D * 4, `out-${tag}`),
      lse: c.lse ? r.createBuffer(c.T * c.H * 4, `lse-${tag}`) : undefined,
      scratch: r.createBuffer(scratch, `scratch-${tag}`),
    });
    const ob = mk('old', Math.max(16, attentionScratchBytes(o, { ...d, splits: undefined })));
    const nb = { ...mk('new', sp.splits > 1 ? sp.splits * c.T * c.H * (c.D + 4) * 4 : 16), kRot: r.createBuffer(c.KV * capacity * c.D * 2, 'krot') };
    const oldD = attention(o, { ...d, splits: undefined }, ob);
    const so = { ...o, emulate: !real, tau: c.tau, workgroupBytes: wgLimit };
    // rotated: keys rotated into kRot first (the runtime's form); else rotated while staged. rows: 64 or 128 per
    // workgroup (128 where workgroup storage allows)
    const mkNew = (rotated: boolean, dd = d, rows: 64 | 128 = 128) => attentionSgmat({ ...so, rows }, dd, rotated ? nb : { ...nb, kRot: undefined });
    const release = () => {
      for (const b of [...Object.values(bufs), ob.out, ob.lse, ob.scratch, nb.out, nb.lse, nb.scratch, nb.kRot]) if (b) r.destroy(b);
    };
    return { o, so, d, sp, ob, nb, oldD, mkNew, release };
  };
  type Setup = ReturnType<typeof setup>;

  /** one form of the tensor-core kernel against the f32 kernel, already run into s.ob */
  const check = async (c: Case, s: Setup, rotated: boolean, rows: 64 | 128) => {
    await scoped(dev, async () => r.run(s.mkNew(rotated, s.d, rows)));
    const n = c.T * c.H * c.D;
    const [a, b] = [await r.readF32(s.ob.out, n), await r.readF32(s.nb.out, n)];
    let scale = 0;
    let err = 0;
    for (let j = 0; j < n; j++) scale = Math.max(scale, Math.abs(a[j]!));
    for (let j = 0; j < n; j++) err = Math.max(err, Number.isNaN(b[j]!) ? Infinity : Math.abs(a[j]! - b[j]!) / scale);
    let lseErr = 0;
    if (c.lse) {
      const [la, lb] = [await r.readF32(s.ob.lse!, c.T * c.H), await r.readF32(s.nb.lse!, c.T * c.H)];
      for (let j = 0; j < la.length; j++) lseErr = Math.max(lseErr, Number.isNaN(lb[j]!) ? Infinity : Math.abs(la[j]! - lb[j]!));
    }
    return { err, lseErr, pass: err <= TOL && lseErr <= TOL };
  };

  const caseName = (c: Case) => `H${c.H}/${c.KV} D${c.D} T${c.T} base${c.base} ${c.dtype}${c.lse ? ' lse' : ''}${c.splits ? ` splits${c.splits}` : ''}${c.tau === 0 ? ' tau0' : ''}`;
  const fmt = (x: { err: number; lseErr: number }) => `max rel err ${x.err.toExponential(2)}  lse max abs err ${x.lseErr.toExponential(2)}`;
  for (const [i, c] of cases.entries()) {
    const name = caseName(c);
    const s = setup(c, 1000 + i * 10);
    for (const [rotated, rows] of [[true, 128], [false, 128], [true, 64]] as const) {
      const nsg = sgmatAttentionPlan({ ...s.o, workgroupBytes: wgLimit, rows }, s.d, Infinity).NSG;
      if (rows === 64 && nsg === 4 && sgmatAttentionPlan({ ...s.o, workgroupBytes: wgLimit }, s.d, Infinity).NSG === 4) continue; // same kernel as above
      const form = `${rotated ? 'rotated keys' : 'rotating while staged'}, ${nsg * 16} rows`;
      try {
        await scoped(dev, async () => r.run(s.oldD));
        const x = await check(c, s, rotated, rows);
        allPass &&= x.pass;
        console.log(`${x.pass ? 'PASS' : 'FAIL'}  ${name}  ${form}  splits=${s.sp.splits}  ${fmt(x)}`);
        results.push({ name, form, splits: s.sp.splits, ...x });
      } catch (e) {
        allPass = false;
        console.log(`FAIL  ${name}  ${form}  error: ${(e as Error).message}`);
        results.push({ name, form, error: (e as Error).message, pass: false });
      }
    }
    s.release();
    if (outFile) fs.writeFileSync(outFile, JSON.stringify({ device: gpu.adapterName, partial: true, cases: results }, null, 1));
  }

  let timing: Record<string, number> | undefined;
  if (real && !small) {
    const c: Case = { H: 32, KV: 8, D: 128, T: 1024, base: 16384, dtype: 'f16', lse: false };
    const s = setup(c, 7);
    let flops = 0;
    for (let t = 0; t < c.T; t++) flops += 4 * (c.base + t + 1) * c.H * c.D;
    const time = async (ds: Dispatch[], reps = 10) => {
      for (let k = 0; k < 2; k++) r.run(ds);
      await dev.queue.onSubmittedWorkDone();
      const t0 = performance.now();
      for (let k = 0; k < reps; k++) r.run(ds);
      await dev.queue.onSubmittedWorkDone();
      return (performance.now() - t0) / reps;
    };
    const ms = {
      old: await time(s.oldD),
      rotated: await time(s.mkNew(true)),
      rotated1: await time(s.mkNew(true, { ...s.d, splits: 1 })),
      rows64: await time(s.mkNew(true, s.d, 64)),
      staged: await time(s.mkNew(false)),
    };
    const tf = (x: number) => flops / (x * 1e-3) / 1e12;
    timing = {
      old_ms: ms.old, sgmat_ms: ms.rotated, sgmat_splits: s.sp.splits, sgmat_1split_ms: ms.rotated1, sgmat_staged_rotation_ms: ms.staged,
      sgmat_64rows_ms: ms.rows64, sgmat_nsg: s.sp.NSG, old_tflops: tf(ms.old), sgmat_tflops: tf(ms.rotated), speedup: ms.old / Math.min(ms.rotated, ms.rotated1),
    };
    console.log(`8B prefill attention, one layer (T 1024 over 16384 + 1024, 32/8 heads, D 128, f16 cache):`);
    console.log(`  f32 FMA kernel                          ${ms.old.toFixed(3)} ms  ${tf(ms.old).toFixed(1)} TFLOP/s`);
    console.log(`  tensor cores, rotated keys (${s.sp.splits} split${s.sp.splits > 1 ? 's' : ''})   ${ms.rotated.toFixed(3)} ms  ${tf(ms.rotated).toFixed(1)} TFLOP/s (rotation included)`);
    console.log(`  tensor cores, rotated keys (1 split)    ${ms.rotated1.toFixed(3)} ms  ${tf(ms.rotated1).toFixed(1)} TFLOP/s`);
    console.log(`  tensor cores, rotating while staged     ${ms.staged.toFixed(3)} ms  ${tf(ms.staged).toFixed(1)} TFLOP/s`);
    console.log(`  (rows per workgroup above: ${s.sp.NSG * 16}) rotated keys, 64 rows    ${ms.rows64.toFixed(3)} ms  ${tf(ms.rows64).toFixed(1)} TFLOP/s`);
    if (splitSweep.length) {
      // the runtime's FMA form: shuffles where the device has subgroups, keys rotated once into f16 (as for an f16 cache)
      const fo = { ...s.o, subgroupMin: gpu.subgroupMinSize };
      const most = Math.max(...splitSweep) * c.T * c.H * (c.D + 4) * 4;
      const scratch = r.createBuffer(most, 'scratch-sweep');
      const fb = { ...s.ob, scratch, kRot: s.nb.kRot };
      const sb = { ...s.nb, scratch };
      const sweep: Record<string, number> = {};
      // the switch as given first (both kernels), then each --fma-env value (FMA only); read when a kernel is planned
      const given = process.env.LOCRET_FMA_ATTN;
      console.log(`  key splits (main kernel + combine), f32 FMA with shuffles and rotated keys | tensor cores, rotated keys:`);
      for (const [k, spec] of [given, ...fmaEnvs].entries()) {
        if (spec === undefined) delete process.env.LOCRET_FMA_ATTN;
        else process.env.LOCRET_FMA_ATTN = spec;
        const times = [];
        for (const n of splitSweep) {
          const dd = { ...s.d, splits: n };
          const fma = await time(attention(fo, dd, fb));
          sweep[k === 0 ? `fma_${n}_ms` : `fma_${n}_${spec}_ms`] = fma;
          let line = `${n}: ${fma.toFixed(3)} ms ${tf(fma).toFixed(1)}`;
          if (k === 0) {
            const tc = await time(attentionSgmat({ ...s.so, rows: 128 }, dd, sb));
            sweep[`sgmat_${n}_ms`] = tc;
            line += ` | ${tc.toFixed(3)} ms ${tf(tc).toFixed(1)}`;
          }
          times.push(line);
        }
        console.log(`    LOCRET_FMA_ATTN=${spec ?? ''}: ${times.join('; ')}`);
      }
      if (given === undefined) delete process.env.LOCRET_FMA_ATTN;
      else process.env.LOCRET_FMA_ATTN = given;
      r.destroy(scratch);
      timing = { ...timing, ...sweep };
    }
    s.release();
  }
  console.log(allPass ? 'ALL PASS' : 'SOME FAILED');
  if (outFile) {
    fs.writeFileSync(outFile, JSON.stringify({ device: gpu.adapterName, subgroupMatrix: real, emulated: !real, small, tolerance: TOL, cases: results, timing, pass: allPass }, null, 1));
  }
  process.exit(allPass ? 0 : 1);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
