/**
 * The plain sampler: every token sorted by logit (descending, ties by id), top-k then top-p cut on that order, the
 * draw walking the kept tokens by weight bucket, then id (runtime/sampling.ts's order: the distribution of a
 * sorted walk). runtime/sampling.ts must choose the same token for the same uniform draw.
 */
import type { SamplingOptions } from '../../runtime/sampling.js';
import { argmaxOf, bucketOf, log2Weight } from '../../runtime/sampling.js';

export function sampleRef(logits: Float32Array, o: SamplingOptions, rand: () => number): number {
  const temp = o.temperature ?? 0;
  if (temp === 0) return argmaxOf(logits);
  let idx = Array.from(logits.keys()).sort((a, b) => logits[b]! - logits[a]!);
  if (o.topK) idx = idx.slice(0, o.topK);
  const m = logits[idx[0]!]!;
  let probs = idx.map((i) => Math.exp((logits[i]! - m) / temp));
  let sum = probs.reduce((a, b) => a + b, 0);
  if (o.topP !== undefined && o.topP < 1) {
    let acc = 0;
    let cut = probs.length;
    for (let i = 0; i < probs.length; i++) {
      acc += probs[i]!;
      if (acc >= o.topP * sum) {
        cut = i + 1;
        break;
      }
    }
    idx = idx.slice(0, cut);
    probs = probs.slice(0, cut);
    sum = probs.reduce((a, b) => a + b, 0);
  }
  const walk = idx.map((_, i) => i).sort((a, b) => bucketOf(log2Weight(logits[idx[a]!]!, m, temp)) - bucketOf(log2Weight(logits[idx[b]!]!, m, temp)) || idx[a]! - idx[b]!);
  let r = rand() * sum;
  for (const i of walk) {
    r -= probs[i]!;
    if (r <= 0) return idx[i]!;
  }
  return idx[walk[walk.length - 1]!]!;
}
