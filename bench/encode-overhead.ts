/**
 * Host cost of encoding and submitting one decode step: the real dispatch list of a 32-layer Llama-shaped model
 * (tiny widths, so the GPU work is negligible and the host side dominates), run through the runner (one uniform
 * buffer per submission, cached bind groups) and through a reimplementation of the previous scheme (a uniform
 * buffer, writeBuffer and bind group per dispatch), for comparison; then the cost of building the step's dispatch
 * list from the plan, which a decode step pays before the runner, with decode dispatches reused between steps
 * (compiler/step-memo.ts) and built afresh (LOCRET_NO_STEP_MEMO=1).
 *
 *   node dist/bench/encode-overhead.js [--steps 200] [--layers 32]
 *
 * Prints the mean and median host milliseconds per step of each. GPU time is not measured (each step is waited
 * for outside the timed region).
 */
import { packParams } from '../compiler/wgsl.js';
import { randomWeights } from '../runtime/bench.js';
import { defaultGpu } from '../runtime/gpu/device.js';
import { GpuRunner, type Dispatch } from '../runtime/gpu/runner.js';
import { paramBytes } from '../runtime/gpu/uniforms.js';
import { Session } from '../runtime/session.js';
import { shapeConfig } from '../runtime/shapes.js';

const arg = (name: string, def: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : def;
};
const steps = arg('steps', 200);
const layers = arg('layers', 32);

/** The per-dispatch scheme this runner replaced: new uniform buffer, writeBuffer and bind group for each dispatch. */
function legacyRun(r: GpuRunner, ds: readonly Dispatch[]): void {
  const dev = r.device;
  const enc = dev.createCommandEncoder();
  const pass = enc.beginComputePass();
  const transient: GPUBuffer[] = [];
  for (const d of ds) {
    const p = r.pipeline(d.kernel);
    const entries: GPUBindGroupEntry[] = d.kernel.bindings.map((b, i) => {
      const res = d.buffers[b.name]!;
      return { binding: i, resource: 'buffer' in res ? res : { buffer: res } };
    });
    const dyn: number[] = [];
    if (d.kernel.params.length) {
      const data = packParams(d.kernel.params, d.params ?? {});
      const ub = dev.createBuffer({ size: data.byteLength, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
      dev.queue.writeBuffer(ub, 0, data);
      transient.push(ub);
      entries.push({ binding: d.kernel.bindings.length, resource: { buffer: ub, size: paramBytes(d.kernel.params) } });
      dyn.push(0);
    }
    pass.setPipeline(p);
    pass.setBindGroup(0, dev.createBindGroup({ layout: p.getBindGroupLayout(0), entries }), dyn);
    const [x, y = 1, z = 1] = d.workgroups;
    pass.dispatchWorkgroups(x, y, z);
  }
  pass.end();
  dev.queue.submit([enc.finish()]);
  for (const b of transient) b.destroy();
}

let lastCb = () => {};

/** Host ms of `run` per step; `after` (untimed) completes what `run` left undone. */
async function time(label: string, r: GpuRunner, ds: readonly Dispatch[], run: (ds: readonly Dispatch[]) => void, after = () => {}): Promise<void> {
  const ms: number[] = [];
  for (let i = 0; i < steps + 10; i++) {
    const t0 = performance.now();
    run(ds);
    const t = performance.now() - t0;
    after();
    await r.device.queue.onSubmittedWorkDone();
    if (i >= 10) ms.push(t); // the first steps compile pipelines and fill caches
  }
  ms.sort((a, b) => a - b);
  const mean = ms.reduce((a, b) => a + b, 0) / ms.length;
  console.log(`${label.padEnd(34)} mean ${mean.toFixed(3)} ms   median ${ms[ms.length >> 1]!.toFixed(3)} ms   per dispatch ${((1000 * mean) / ds.length).toFixed(1)} µs`);
}

async function main(): Promise<void> {
  const gpu = await defaultGpu();
  const r = new GpuRunner(gpu);
  const base = shapeConfig('llama-3.1-8b');
  const c = {
    ...base,
    hiddenSize: 256, intermediateSize: 512, numLayers: layers, numHeads: 4, numKvHeads: 2, headDim: 64, vocabSize: 4096,
    rope: { kind: 'default' as const, theta: 10000, rotaryDim: 64 },
  };
  const s = new Session(r, c, randomWeights(r, c, true), { policy: 'full', budget: 256, chunk: 64, stabilizer: 16, positions: 'compact', maxNew: 8 });
  await s.prefill([1, 2, 3, 4, 5, 6, 7, 8], 0);
  const ds = s.stepProbe(1, true);
  console.log(`${gpu.adapterName}: decode step of ${c.numLayers} layers = ${ds.length} dispatches, ${steps} steps each`);
  const created = r.uniformBuffersCreated;
  await time('runner (shared params buffer, cached bind groups)', r, ds, (d) => r.run(d));
  console.log(`  uniform buffers created during those steps: ${r.uniformBuffersCreated - created}`);
  await time('  of which record + finish only', r, ds, (d) => {
    const enc = r.device.createCommandEncoder();
    r.record(enc, d);
    const cb = enc.finish();
    lastCb = () => r.device.queue.submit([cb]);
  }, () => lastCb());
  await time('per-dispatch uniforms (previous)', r, ds, (d) => legacyRun(r, d));
  // what a decode step does on the host: build its dispatch list (kernel lookups, plans, params), then the runner
  await time('dispatch list of a step (plan)', r, ds, () => void s.stepProbe(1, true));
  await time('dispatch list + runner', r, ds, () => r.run(s.stepProbe(1, true)));
  s.release();
  // the same without reusing decode dispatches between steps (compiler/step-memo.ts)
  process.env.LOCRET_NO_STEP_MEMO = '1';
  const fresh = new Session(r, c, randomWeights(r, c, true), { policy: 'full', budget: 256, chunk: 64, stabilizer: 16, positions: 'compact', maxNew: 8 });
  await fresh.prefill([1, 2, 3, 4, 5, 6, 7, 8], 0);
  delete process.env.LOCRET_NO_STEP_MEMO;
  await time('dispatch list, built afresh', r, ds, () => void fresh.stepProbe(1, true));
  fresh.release();
  process.exit(0);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
