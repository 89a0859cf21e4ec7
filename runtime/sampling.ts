/** Token choice from logits: greedy, or temperature with top-k / top-p (nucleus) filtering, seeded. */

export interface SamplingOptions {
  /** 0 (default) = greedy */
  readonly temperature?: number;
  readonly topK?: number;
  readonly topP?: number;
  readonly seed?: number;
}

export function argmaxOf(x: Float32Array, from = 0, n = x.length - from): number {
  let best = from;
  for (let i = from + 1; i < from + n; i++) if (x[i]! > x[best]!) best = i;
  return best - from;
}

/** mulberry32: small, fast, and reproducible across platforms */
export function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function validateSampling(o: SamplingOptions): void {
  if (o.temperature !== undefined && !(o.temperature >= 0)) throw new Error(`temperature must be >= 0, got ${o.temperature}`);
  if (o.topK !== undefined && !(Number.isInteger(o.topK) && o.topK > 0)) throw new Error(`top-k must be a positive integer, got ${o.topK}`);
  if (o.topP !== undefined && !(o.topP > 0 && o.topP <= 1)) throw new Error(`top-p must be in (0, 1], got ${o.topP}`);
}

export function sample(logits: Float32Array, o: SamplingOptions, rand: () => number): number {
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
      acc += probs[i]! / sum;
      if (acc >= o.topP) {
        cut = i + 1;
        break;
      }
    }
    idx = idx.slice(0, cut);
    probs = probs.slice(0, cut);
    sum = probs.reduce((a, b) => a + b, 0);
  }
  let r = rand() * sum;
  for (let i = 0; i < probs.length; i++) {
    r -= probs[i]!;
    if (r <= 0) return idx[i]!;
  }
  return idx[idx.length - 1]!;
}
