/**
 * The GPU sampler (compiler/kernels/sample.ts), which generate() uses for every sampled token, at Llama-3's
 * vocabulary (128,256 logits): timed as 20 draws per submission, and checked: on an even grid of draws each kept
 * token's share of the draws must match its probability (to one draw) and no other token may come out. Gaussian
 * logits at a few scales (a wider spread concentrates the mass; 0.1 is about as flat as a model with random weights:
 * the worst case, top-p then keeps most of the vocabulary).
 *
 *   node dist/bench/sampling.js [--vocab 128256]
 */
import { sampleToken, type SampleOpts } from '../compiler/kernels/sample.js';
import { defaultGpu } from '../runtime/gpu/device.js';
import { GpuRunner } from '../runtime/gpu/runner.js';
import { rng } from '../runtime/sampling.js';

const arg = (name: string, def: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1]! : def;
};
const V = Number(arg('vocab', '128256'));
const OPTIONS: SampleOpts[] = [{ temperature: 0.6, topP: 0.9 }, { temperature: 1 }, { temperature: 0.8, topK: 40 }, { temperature: 1, topK: 50, topP: 0.95 }];

/** Probabilities of the tokens the GPU sampler keeps (every token at or above the top-k and top-p cut values), f64. */
function keptProbabilities(x: Float32Array, o: SampleOpts): { p: Map<number, number>; cut: number } {
  const sorted = Array.from(x.keys()).sort((a, b) => x[b]! - x[a]!);
  const w = (i: number) => Math.exp((x[i]! - x[sorted[0]!]!) / o.temperature);
  const tauK = x[sorted[Math.min(o.topK ?? x.length, x.length) - 1]!]!;
  const keptK = sorted.filter((i) => x[i]! >= tauK);
  const z = keptK.reduce((a, i) => a + w(i), 0);
  let acc = 0;
  const cut = o.topP !== undefined && o.topP < 1 ? keptK.findIndex((i) => (acc += w(i)) >= o.topP! * z) : keptK.length - 1;
  const kept = keptK.filter((i) => x[i]! >= x[keptK[cut]!]!);
  const total = kept.reduce((a, i) => a + w(i), 0);
  return { p: new Map(kept.map((i) => [i, w(i) / total])), cut: x[keptK[cut]!]! };
}

async function gpuSampler(x: Float32Array): Promise<number> {
  const gpu = await defaultGpu();
  const r = new GpuRunner(gpu);
  const N = 4096;
  const grid = Float32Array.from({ length: N }, (_, j) => (j + 0.5) / N);
  const b = { x: r.upload(x, 'logits'), uniforms: r.upload(grid, 'draws'), out: r.createBuffer(4 * N, 'tokens') };
  let failed = 0;
  for (const o of OPTIONS) {
    const ds = Array.from({ length: N }, (_, j) => sampleToken(o, { n: V, draw: j, slot: j }, b));
    r.run(ds.slice(0, 20)); // warm-up
    await r.device.queue.onSubmittedWorkDone();
    let best = Infinity;
    for (let k = 0; k < 3; k++) {
      const t0 = performance.now();
      r.run(ds.slice(0, 20));
      await r.device.queue.onSubmittedWorkDone();
      best = Math.min(best, (performance.now() - t0) / 20);
    }
    r.run(ds);
    const got = await r.readU32(b.out, N);
    const { p, cut } = keptProbabilities(x, o);
    const counts = new Map<number, number>();
    for (const t of got) counts.set(t, (counts.get(t) ?? 0) + 1);
    // a token within 1e-4 of the cut value may fall either side of it in f32
    const strays = [...counts.keys()].filter((t) => !p.has(t) && !(x[t]! >= cut - 1e-4)).length;
    let worst = 0;
    for (const [t, pt] of p) worst = Math.max(worst, Math.abs((counts.get(t) ?? 0) - N * pt));
    const ok = strays === 0 && worst <= 1.5;
    if (!ok) failed++;
    console.log(`GPU  ${JSON.stringify(o).padEnd(42)} ${(best * 1000).toFixed(0).padStart(5)} µs per token  kept ${p.size}  ${ok ? 'PASS' : 'FAIL'} (largest count error ${worst.toFixed(2)} of ${N} draws, ${strays} tokens outside the kept set)`);
  }
  for (const buf of Object.values(b)) r.destroy(buf);
  return failed;
}

const r = rng(1);
const gauss = () => Math.sqrt(-2 * Math.log(1 - r())) * Math.cos(2 * Math.PI * r());
console.log(`${(await defaultGpu()).adapterName}: GPU sampler, ${V} logits, 20 draws per submission`);
let failed = 0;
for (const spread of [0.1, 2, 8]) {
  console.log(`logit spread ${spread}`);
  failed += await gpuSampler(Float32Array.from({ length: V }, () => spread * gauss()));
}
process.exit(failed ? 1 : 0);
