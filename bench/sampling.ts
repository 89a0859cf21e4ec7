/**
 * Host sampling cost per token at Llama-3's vocabulary (128,256 logits): what a sampled decode step spends on the
 * CPU after its logits are read back. Gaussian logits at a few scales (a wider spread concentrates the mass; 0.1 is
 * about as flat as a model with random weights: the worst case, top-p then keeps most of the vocabulary).
 *
 *   node dist/bench/sampling.js [--vocab 128256] [--draws 50]
 */
import { rng, sample, type SamplingOptions } from '../runtime/sampling.js';

const arg = (name: string, def: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1]! : def;
};
const V = Number(arg('vocab', '128256'));
const draws = Number(arg('draws', '50'));
const OPTIONS: SamplingOptions[] = [{ temperature: 0.6, topP: 0.9 }, { temperature: 1 }, { temperature: 0.8, topK: 40 }, { temperature: 1, topK: 50, topP: 0.95 }];

const r = rng(1);
const gauss = () => Math.sqrt(-2 * Math.log(1 - r())) * Math.cos(2 * Math.PI * r());
for (const spread of [0.1, 2, 4, 8]) {
  const x = Float32Array.from({ length: V }, () => spread * gauss());
  for (const o of OPTIONS) {
    sample(x, o, r); // warm-up
    const t0 = performance.now();
    for (let i = 0; i < draws; i++) sample(x, o, r);
    console.log(`V ${V}  logit spread ${spread}  ${JSON.stringify(o).padEnd(42)} ${((performance.now() - t0) / draws).toFixed(2)} ms per token`);
  }
}
