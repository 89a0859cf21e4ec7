/**
 * Decode GEMV bandwidth: each Llama-3.1-8B projection shape at T = 1, per weight dtype, with subgroup reductions
 * and without, timed as 20 back-to-back dispatches per submission. Prints GB/s of weight (+ scale) bytes read.
 *
 *   node dist/bench/gemv-bandwidth.js [--dtypes f16,q8,q4] [--reps 10]
 *   LOCRET_GEMV="wg=256,r=4" node dist/bench/gemv-bandwidth.js     (tiling override, see mm-gemv.ts)
 */
import { matmul, type MatmulOpts, type WeightDtype } from '../compiler/kernels/matmul.js';
import { fillBits } from '../compiler/kernels/random.js';
import { defaultGpu } from '../runtime/gpu/device.js';
import { GpuRunner } from '../runtime/gpu/runner.js';

const arg = (name: string, def: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1]! : def;
};
const dtypes = arg('dtypes', 'f16,q8,q4').split(',') as WeightDtype[];
const reps = Number(arg('reps', '10'));
const PER_SUBMIT = 20;

/** [name, N, K, epilogue] of one Llama-3.1-8B layer and the head */
const SHAPES = [
  ['qkv', 6144, 4096, 'store'],
  ['o_proj', 4096, 4096, 'residual'],
  ['gate_up', 14336, 4096, 'swiglu'],
  ['down', 4096, 14336, 'residual'],
  ['lm_head', 128256, 4096, 'store'],
] as const;

const bytesPerElem = (d: WeightDtype) => (d === 'f32' ? 4 : d === 'q8' ? 1 + 2 / 32 : d === 'q4' ? 0.5 + 2 / 32 : 2);

async function main(): Promise<void> {
  const gpu = await defaultGpu();
  const r = new GpuRunner(gpu);
  console.log(`${gpu.adapterName}  subgroups=${gpu.subgroups} f16=${gpu.f16} intDot=${gpu.intDot}  LOCRET_GEMV=${process.env.LOCRET_GEMV ?? ''}`);
  for (const d of dtypes) {
    const wdtype: WeightDtype = d === 'f16' && !gpu.f16 ? 'f16p' : d;
    for (const [name, N, K, epilogue] of SHAPES) {
      const rows = epilogue === 'swiglu' ? 2 * N : N;
      const wBytes = Math.ceil((rows * K * (wdtype === 'q8' ? 1 : wdtype === 'q4' ? 0.5 : wdtype === 'f32' ? 4 : 2)) / 16) * 16;
      if (wBytes > gpu.maxBinding) {
        console.log(`${wdtype} ${name}: ${wBytes} bytes over the binding limit, skipped`);
        continue;
      }
      const w = r.createBuffer(wBytes, 'w');
      const ws = wdtype === 'q8' || wdtype === 'q4' ? r.createBuffer((rows * K) / 16, 'w_s') : undefined;
      const x = r.createBuffer(K * 4, 'x');
      const y = r.createBuffer(N * 4, 'y');
      // small f16 scales (0x1000 ≈ 2^-11) keep the random quants' results finite
      r.run([fillBits({ words: wBytes / 4, seed: 1 }, { buf: w }), fillBits({ words: K, seed: 2 }, { buf: x })]);
      if (ws) r.write(ws, new Uint32Array(ws.size / 4).fill(0x10001000));
      const line: string[] = [];
      for (const subgroups of gpu.subgroups ? [true, false] : [false]) {
        const o: MatmulOpts = { wdtype, norm: epilogue === 'swiglu', bias: false, epilogue, subgroups, intDot: gpu.intDot };
        const ds = Array(PER_SUBMIT).fill(matmul(o, { T: 1, N, K }, { x, w, y, normW: x, wScales: ws }));
        r.run(ds);
        await r.device.queue.onSubmittedWorkDone();
        const t0 = performance.now();
        for (let i = 0; i < reps; i++) r.run(ds);
        await r.device.queue.onSubmittedWorkDone();
        const ms = (performance.now() - t0) / (reps * PER_SUBMIT);
        const gbs = (rows * K * bytesPerElem(wdtype)) / (ms / 1000) / 1e9;
        line.push(`sg=${subgroups ? 1 : 0} ${(ms * 1000).toFixed(1).padStart(7)} µs ${gbs.toFixed(0).padStart(5)} GB/s`);
      }
      console.log(`${wdtype.padEnd(4)} ${name.padEnd(8)} ${rows}×${K}   ${line.join('   ')}`);
      [w, x, y, ...(ws ? [ws] : [])].forEach((b) => r.destroy(b));
    }
  }
  process.exit(0);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
