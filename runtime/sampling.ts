/**
 * Token choice options and the seeded generator. Greedy picks are the argmax; sampled tokens (temperature, top-k,
 * top-p) are drawn on the GPU by compiler/kernels/sample.ts, one uniform draw of `rng` per token, so that decode
 * steps queue back to back without reading the logits back.
 */

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
  if (o.temperature !== undefined && !(o.temperature >= 0 && Number.isFinite(o.temperature))) throw new Error(`temperature must be a finite number >= 0, got ${o.temperature}`);
  if (o.topK !== undefined && !(Number.isInteger(o.topK) && o.topK > 0)) throw new Error(`top-k must be a positive integer, got ${o.topK}`);
  if (o.topP !== undefined && !(o.topP > 0 && o.topP <= 1)) throw new Error(`top-p must be in (0, 1], got ${o.topP}`);
}
