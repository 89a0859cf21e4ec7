/**
 * Every tensor-core matmul variant (compiler/kernels/mm-sgmat.ts SGMAT_VARIANTS) at the Llama-3.1-8B projections:
 * each is checked against a CPU reference on sampled tokens (all columns) and timed, so one run shows which
 * variant to put in SGMAT_PICK. For gate_up it also times the split route: the 1-stream store kernel over the 2N
 * gate and up rows into a (T, 2N) f32 scratch, then silu · up elementwise (elementwise.ts siluMul).
 *
 * Inputs are uploaded and the reference computed once per shape; a variant costs its compile, one checked run and
 * 3 timed submissions of `reps` runs each (the best is kept).
 */
import { matmul, type MatmulOpts } from '../compiler/kernels/matmul.js';
import { siluMul } from '../compiler/kernels/elementwise.js';
import { SGMAT_VARIANTS, sgmatPick, type SgmatVariant } from '../compiler/kernels/mm-sgmat.js';
import type { Dispatch, GpuRunner } from '../runtime/gpu/runner.js';
import { f16ToF32, f32ToF16 } from '../runtime/io/dtype.js';
import { rng } from '../runtime/sampling.js';

export interface VariantShape {
  readonly name: string;
  readonly epilogue: MatmulOpts['epilogue'];
  readonly norm: boolean;
  /** output columns (swiglu: per stream; the weight has 2N rows) */
  readonly N: number;
  readonly K: number;
  /** x stored as f16 (what the plan feeds gate_up, down and a retaining head's fc1 on tensor cores) */
  readonly halfX?: boolean;
}

export const LLAMA8B_SHAPES: readonly VariantShape[] = [
  { name: 'qkv 6144x4096', epilogue: 'store', norm: true, N: 6144, K: 4096 },
  { name: 'o 4096x4096', epilogue: 'residual', norm: false, N: 4096, K: 4096 },
  { name: 'gate_up 28672x4096', epilogue: 'swiglu', norm: true, N: 14336, K: 4096 },
  { name: 'down 4096x14336', epilogue: 'residual', norm: false, N: 4096, K: 14336 },
  // a retaining head's fc1: silu(pre · fc1ᵀ) over the f16 pre-RoPE rows, 1024 columns
  { name: 'fc1 1024x6144 f16x', epilogue: 'silu', norm: false, N: 1024, K: 6144, halfX: true },
  // folded into qkv (fc1 · Wqkv, runtime/fold-heads.ts) over the f16 normalized rows
  { name: 'fc1f 1024x4096 f16x', epilogue: 'silu', norm: false, N: 1024, K: 4096, halfX: true },
];

/** n uniform values in [-scale, scale) from the runtime's seeded generator (shared with kernel-check.ts) */
export function rand(n: number, seed: number, scale: number): Float32Array<ArrayBuffer> {
  const r = rng(seed);
  return Float32Array.from({ length: n }, () => (r() * 2 - 1) * scale);
}
export const silu = (g: number) => g / (1 + Math.exp(-g));

/** y[t, :] of the sampled tokens, f64 accumulation (swiglu: w holds gate rows 0..N, up rows N..2N) */
function reference(sh: VariantShape, T: number, x: Float32Array, w: Float32Array, normW: Float32Array, yIn: Float32Array, tokens: number[]): Float64Array {
  const { N, K } = sh;
  const y = new Float64Array(tokens.length * N);
  const a = new Float64Array(K);
  tokens.forEach((t, ti) => {
    let ss = 0;
    for (let k = 0; k < K; k++) ss += x[t * K + k]! ** 2;
    const rinv = sh.norm ? 1 / Math.sqrt(ss / K + 1e-5) : 1;
    for (let k = 0; k < K; k++) a[k] = x[t * K + k]! * (sh.norm ? normW[k]! * rinv : 1);
    const dot = (row: number) => {
      let s = 0;
      for (let k = 0; k < K; k++) s += a[k]! * w[row * K + k]!;
      return s;
    };
    for (let j = 0; j < N; j++) {
      const g = dot(j);
      y[ti * N + j] = sh.epilogue === 'swiglu' ? silu(g) * dot(N + j) : sh.epilogue === 'residual' ? yIn[t * N + j]! + g : sh.epilogue === 'silu' ? silu(g) : g;
    }
  });
  return y;
}

interface Row { shape: string; variant: string; relErr?: number; pass?: boolean; ms?: number; tflops?: number; error?: string }

/** `only`: variant names to time (default all; the split route then takes the one-stream ones among them) */
export async function benchSgmatVariants(r: GpuRunner, T: number, shapes: readonly VariantShape[] = LLAMA8B_SHAPES, reps = 20, only?: readonly string[]): Promise<Row[]> {
  const rows: Row[] = [];
  const all = Object.entries(SGMAT_VARIANTS as Record<string, SgmatVariant>).filter(([n]) => !only || only.includes(n));
  for (const sh of shapes) {
    const S = sh.epilogue === 'swiglu' ? 2 : 1;
    const wRows = S * sh.N;
    // f16 x: the reference takes exactly the rounded values the kernel reads
    const x32 = rand(T * sh.K, 11, 2);
    const xBits = sh.halfX ? f32ToF16(x32) : undefined;
    const x = xBits ? f16ToF32(xBits) : x32;
    const wBits = f32ToF16(rand(wRows * sh.K, 12, 1 / Math.sqrt(sh.K)));
    const normW = rand(sh.K, 13, 0.5).map((v) => 1 + v);
    const yIn = rand(T * sh.N, 14, 1);
    const tokens = [...new Set([0, 1, 63, 64, 127, 128, 500, T - 1].filter((t) => t < T))];
    const want = reference(sh, T, x, f16ToF32(wBits), normW, yIn, tokens);
    const b = { x: r.upload(xBits ?? x, 'x'), w: r.upload(wBits, 'w'), normW: r.upload(normW, 'normW'), y: r.createBuffer(T * sh.N * 4, 'y') };
    const gu = S === 2 ? r.createBuffer(T * wRows * 4, 'gu') : undefined; // (T, 2N) split-route scratch
    const workgroupBytes = r.gpu.limits.maxComputeWorkgroupStorageSize;
    const o: MatmulOpts = { wdtype: 'f16', epilogue: sh.epilogue, norm: sh.norm, bias: false, tensorCores: true, workgroupBytes, halfX: sh.halfX };
    // [label, dispatches] per candidate: every variant of this stream count, plus (swiglu) the split route over
    // every 1-stream variant
    const cands: [string, () => Dispatch[]][] = all.filter(([, v]) => v.streams === S).map(([n]) => [n, () => [matmul({ ...o, sgmatVariant: n }, { T, N: sh.N, K: sh.K, eps: 1e-5 }, b)]]);
    if (gu) {
      for (const [n] of all.filter(([, v]) => v.streams === 1)) {
        cands.push([`split:${n}`, () => [
          matmul({ ...o, epilogue: 'store', sgmatVariant: n }, { T, N: wRows, K: sh.K, eps: 1e-5 }, { ...b, y: gu }),
          siluMul({ T, N: sh.N }, { gu, y: b.y }),
        ]]);
      }
    }
    const picked = sgmatPick(S as 1 | 2, sh.norm, sh.N, T, workgroupBytes, sh.epilogue === 'silu');
    for (const [name, mk] of cands) {
      const row: Row = { shape: sh.name, variant: name === picked ? `${name} (picked)` : name };
      try {
        const ds = mk();
        r.device.pushErrorScope('validation');
        try {
          r.device.queue.writeBuffer(b.y, 0, sh.epilogue === 'residual' ? yIn : new Float32Array(T * sh.N));
          r.run(ds);
          const got = await r.readF32(b.y, T * sh.N);
          let maxY = 0, maxE = 0;
          tokens.forEach((t, ti) => {
            for (let j = 0; j < sh.N; j++) {
              const wv = want[ti * sh.N + j]!, gv = got[t * sh.N + j]!;
              maxY = Math.max(maxY, Math.abs(wv));
              maxE = Math.max(maxE, Number.isFinite(gv) ? Math.abs(gv - wv) : Infinity);
            }
          });
          row.relErr = maxE / Math.max(maxY, 1e-30);
          row.pass = row.relErr <= 1e-2;
          // reps copies in one submission (a sub-millisecond matmul timed one submission at a time measures the
          // submission), best of 3 such batches
          const batch = Array.from({ length: reps }, () => ds).flat();
          row.ms = Infinity;
          for (let k = 0; k < 3; k++) {
            await r.device.queue.onSubmittedWorkDone();
            const t0 = performance.now();
            r.run(batch);
            await r.device.queue.onSubmittedWorkDone();
            row.ms = Math.min(row.ms, (performance.now() - t0) / reps);
          }
          row.tflops = (2 * T * wRows * sh.K) / (row.ms / 1000) / 1e12;
        } finally {
          const e = await r.device.popErrorScope();
          if (e) throw new Error(e.message);
        }
      } catch (e) {
        row.error = (e as Error).message.split('\n')[0];
        row.pass = false;
      }
      rows.push(row);
      console.log(`variant  ${sh.name.padEnd(20)} ${row.variant.padEnd(28)} ${row.error ? `ERROR ${row.error}` : `${row.ms!.toFixed(3)} ms ${row.tflops!.toPrecision(3).padStart(5)} TFLOP/s  ${row.pass ? 'PASS' : 'FAIL'} rel err ${row.relErr!.toExponential(2)}`}`);
    }
    for (const x of [...Object.values(b), gu]) if (x) r.destroy(x);
  }
  // one line per variant, one column per shape: the table to flip SGMAT_PICK from
  const names = [...new Set(rows.map((x) => x.variant.replace(' (picked)', '')))];
  console.log(`\nsgmat variants, TFLOP/s at T=${T} (* picked now, ! check failed):`);
  console.log(`${'variant'.padEnd(24)}${shapes.map((s) => s.name.padStart(22)).join('')}`);
  for (const n of names) {
    const cell = (s: VariantShape) => {
      const x = rows.find((y) => y.shape === s.name && y.variant.replace(' (picked)', '') === n);
      if (!x) return '—'.padStart(22);
      const v = x.error ? 'error' : x.tflops!.toPrecision(3);
      return `${v}${x.variant.endsWith('(picked)') ? '*' : ''}${x.pass ? '' : '!'}`.padStart(22);
    };
    console.log(`${n.padEnd(24)}${shapes.map(cell).join('')}`);
  }
  return rows;
}
