/**
 * The rate Dawn's subgroup matrices (f16×f16→f32 16×16×16) reach on this device, without any global memory: the
 * ceiling every tensor-core kernel (matmuls, prefill attention) works under. Each subgroup of a workgroup owns
 * FM × FN result fragments and runs `iters` rounds of products in one of three forms:
 *
 *   reg      operands loaded once from workgroup memory, then only multiply-accumulates (the issue rate)
 *   lds      FM left and FN right fragments loaded from workgroup memory every 16-deep step (the matmuls' inner loop
 *            with their slabs already staged)
 *   lds_bar  as lds, two steps per round and a workgroup barrier after each round (the matmuls' loop without the
 *            global loads and the staging stores)
 *
 * Every accumulator ends in a fragment of its own in `out`, so no product can be dropped; a shader the device rejects
 * prints an error instead of the rate of an empty dispatch.
 *
 *   node dist/bench/sgmat-peak.js [--iters 4096] [--waves 8]
 */
import { kernel, rw, wgsl, type KernelSpec } from '../compiler/wgsl.js';
import { defaultGpu } from '../runtime/gpu/device.js';
import { GpuRunner } from '../runtime/gpu/runner.js';

const arg = (name: string, def: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1]! : def;
};
const ITERS = Number(arg('iters', '4096'));
/** workgroups per SM-sized slot: the grid is waves × 132 workgroups */
const WAVES = Number(arg('waves', '8'));
const SMS = 132;
const FR = 16;
const XS = 40; // staged row stride in halves, as the matmuls (32 + 8)
const OUT_WGS = 64;
/** [subgroups, FM, FN] per timed case */
const CASES = [[4, 2, 2], [8, 2, 2], [4, 2, 4], [8, 2, 4], [4, 4, 4], [8, 4, 4], [16, 2, 2], [16, 1, 2]] as const;
const MAX_FRAGS = Math.max(...CASES.map(([SG, FM, FN]) => SG * FM * FN)); // result fragments of the largest case

type Mode = 'reg' | 'lds' | 'lds_bar';

const seq = (n: number) => Array.from({ length: n }, (_, i) => i);

function peakKernel(mode: Mode, SG: number, FM: number, FN: number): KernelSpec {
  return kernel({ op: 'sgmat_peak', mode, SG, FM, FN }, () => {
    const WG = SG * 32;
    const rowsA = SG * FM * FR; // every subgroup its own left rows
    const rowsB = FN * FR * 2; // shared right rows, two sets so consecutive rounds read different ones
    const acc = (i: number, j: number) => `c${i}_${j}`;
    const load = (kk: string, slab: string) => [
      ...seq(FM).map((i) => `      let a${i} = subgroupMatrixLoad<LeftM, row_major>(&xs, (sg * ${FM * FR}u + ${i * FR}u) * XS + ${kk}, XS);`),
      ...seq(FN).map((j) => `      let b${j} = subgroupMatrixLoad<RightM, col_major>(&ws, (${slab} * ${FN * FR}u + ${j * FR}u) * XS + ${kk}, XS);`),
    ];
    const mmas = seq(FM).flatMap((i) => seq(FN).map((j) => `      ${acc(i, j)} = subgroupMatrixMultiplyAccumulate(a${i}, b${j}, ${acc(i, j)});`));
    const loop =
      mode === 'reg'
        ? [`  {`, ...load('0u', '0u'), `    for (var it = 0u; it < params.iters; it++) {`, ...mmas, `    }`, `  }`]
        : [
            `  for (var it = 0u; it < params.iters; it++) {`,
            `    let slab = it & 1u;`,
            ...seq(mode === 'lds_bar' ? 2 : 1).flatMap((kk) => [`    {`, ...load(`${kk * FR}u`, 'slab'), ...mmas, `    }`]),
            mode === 'lds_bar' ? '    workgroupBarrier();' : '',
            `  }`,
          ];
    return {
      bindings: [rw('out', 'array<f32>')],
      params: [['iters', 'u32']],
      workgroupSize: [WG, 1, 1],
      enables: ['f16', 'subgroups', 'chromium_experimental_subgroup_matrix'],
      directives: ['diagnostic(off, chromium.subgroup_matrix_uniformity)'],
      body: wgsl`
alias LeftM = subgroup_matrix_left<f16, 16, 16>;
alias RightM = subgroup_matrix_right<f16, 16, 16>;
alias AccM = subgroup_matrix_result<f32, 16, 16>;
const XS = ${XS}u;
var<workgroup> xs: array<f16, ${rowsA * XS}>; // (SG·FM·16, XS) left rows
var<workgroup> ws: array<f16, ${rowsB * XS}>; // (2·FN·16, XS) right rows (column-major fragments)

@compute @workgroup_size(${WG})
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>, @builtin(subgroup_id) sg: u32) {
  for (var i = lid; i < ${rowsA * XS}u; i += ${WG}u) { xs[i] = f16(f32((i + wid.x) % 13u) * 0.0078125); }
  for (var i = lid; i < ${rowsB * XS}u; i += ${WG}u) { ws[i] = f16(f32(i % 11u) * 0.0078125); }
  workgroupBarrier();
${seq(FM).flatMap((i) => seq(FN).map((j) => `  var ${acc(i, j)} = AccM();`))}
${loop}
  // every accumulator reaches memory (its own fragment of out), so none of the products can be dropped; workgroups
  // OUT_WGS apart share fragments, which keeps out small (their races do not matter here)
  let frag0 = ((wid.x % ${OUT_WGS}u) * ${SG}u + sg) * ${FM * FN}u;
${seq(FM).flatMap((i) => seq(FN).map((j) => `  subgroupMatrixStore<row_major>(&out, (frag0 + ${i * FN + j}u) * 256u, ${acc(i, j)}, 16u);`))}
}`,
    };
  });
}

async function main(): Promise<void> {
  const gpu = await defaultGpu();
  if (!gpu.tensorCores) {
    console.log(`${gpu.adapterName}: no subgroup matrices (set LOCRET_DAWN_FLAGS); nothing to measure`);
    process.exit(1);
  }
  const r = new GpuRunner(gpu);
  const wgs = WAVES * SMS;
  const out = r.createBuffer(OUT_WGS * MAX_FRAGS * 256 * 4, 'out'); // (OUT_WGS, SG·FM·FN ≤ MAX_FRAGS, 16, 16) f32
  console.log(`${gpu.adapterName}  iters ${ITERS}, ${wgs} workgroups`);
  const rows: { mode: Mode; SG: number; FM: number; FN: number; ms: number; tflops: number }[] = [];
  for (const mode of ['reg', 'lds', 'lds_bar'] as const) {
    for (const [SG, FM, FN] of CASES) {
      const k = peakKernel(mode, SG, FM, FN);
      const d = { kernel: k, buffers: { out }, params: { iters: ITERS }, workgroups: [wgs, 1, 1] as const };
      try {
        // A shader Dawn rejects would otherwise time as an empty dispatch and print an absurd rate.
        r.device.pushErrorScope('validation');
        r.run([d]);
        await r.device.queue.onSubmittedWorkDone();
        const invalid = await r.device.popErrorScope();
        if (invalid) throw new Error(invalid.message.split('\n')[0]);
        let best = Infinity;
        for (let rep = 0; rep < 3; rep++) {
          const t0 = performance.now();
          r.run([d, d, d]);
          await r.device.queue.onSubmittedWorkDone();
          best = Math.min(best, (performance.now() - t0) / 3);
        }
        const steps = mode === 'lds_bar' ? 2 : 1;
        const flop = 2 * 4096 * wgs * SG * FM * FN * ITERS * steps;
        const tflops = flop / (best / 1000) / 1e12;
        rows.push({ mode, SG, FM, FN, ms: best, tflops });
        console.log(`${mode.padEnd(8)} ${String(SG).padStart(2)} subgroups × ${FM}×${FN} fragments: ${best.toFixed(3).padStart(8)} ms  ${tflops.toFixed(1).padStart(6)} TFLOP/s`);
      } catch (e) {
        console.log(`${mode} ${SG}×${FM}×${FN}: ERROR ${(e as Error).message}`);
      }
    }
  }
  if (process.env.OUT) (await import('node:fs')).writeFileSync(`${process.env.OUT}/sgmat-peak.json`, JSON.stringify({ device: gpu.adapterName, iters: ITERS, workgroups: wgs, rows }, null, 2));
  process.exit(0);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
