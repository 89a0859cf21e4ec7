/**
 * The plain form of the GPU sampler (compiler/kernels/sample.ts), in f64 with a full sort: NaN logits never kept;
 * top-k keeps every token whose logit is at least the k-th largest (ties kept); top-p keeps every token at least as
 * likely as the one where the sorted prefix's weight reaches p of the top-k total (ties kept); the draw u · (kept
 * weight) walks the kept tokens thread by thread (token i is in chunk ⌊i / U⌋ of thread ⌊i / U⌋ mod WG), then by id.
 *
 * How close the outcome came to changing, relative to the weight involved, so that an f32 kernel is held to this
 * reference only where it is clear of its rounding: `cutMargin`, between p · total and the weights kept at and
 * just above the top-p cut value; `walkMargin`, between the draw and the walk boundaries around it (the tokens on
 * either side in the walk are `neighbors`).
 */
import type { SampleOpts } from '../../compiler/kernels/sample.js';
import { SAMPLE_WG, sampleUnit } from '../../compiler/kernels/sample.js';

export interface SampleGpuRef {
  readonly token: number;
  readonly cutMargin: number;
  readonly walkMargin: number;
  readonly neighbors: readonly number[];
}

export function sampleGpuRef(x: Float32Array, o: SampleOpts, u: number): SampleGpuRef {
  const n = x.length;
  const valid = Array.from(x.keys()).filter((i) => !Number.isNaN(x[i]!));
  let top = 0;
  for (const i of valid) if (x[i]! > x[top]! || Number.isNaN(x[top]!)) top = i;
  const sorted = [...valid].sort((a, b) => x[b]! - x[a]! || a - b);
  const fallback = { token: top, cutMargin: Infinity, walkMargin: Infinity, neighbors: [] };
  if (!sorted.length) return fallback;
  const m = x[sorted[0]!]!;
  const w = (i: number) => Math.exp((x[i]! - m) / o.temperature);
  const k = Math.min(o.topK ?? n, sorted.length);
  const tauK = x[sorted[k - 1]!]!;
  const keptK = sorted.filter((i) => x[i]! >= tauK);
  const total = keptK.reduce((a, i) => a + w(i), 0);
  if (!(total > 0 && total < 3e38)) return fallback;
  let tau = tauK;
  let cutMargin = Infinity;
  if (o.topP !== undefined && o.topP < 1) {
    const need = o.topP * total;
    // by distinct value, descending: the weight of every token at or above it
    let above = 0;
    for (let j = 0; j < keptK.length; ) {
      const v = x[keptK[j]!]!;
      let atOrAbove = above;
      while (j < keptK.length && x[keptK[j]!]! === v) atOrAbove += w(keptK[j++]!);
      if (atOrAbove >= need) {
        tau = v;
        cutMargin = Math.min(atOrAbove - need, need - above) / total;
        break;
      }
      above = atOrAbove;
    }
  }
  const U = sampleUnit(n);
  const thread = (i: number) => Math.floor(i / U) % SAMPLE_WG;
  const kept = keptK.filter((i) => x[i]! >= tau && w(i) > 0).sort((a, b) => thread(a) - thread(b) || a - b);
  const keptTotal = kept.reduce((a, i) => a + w(i), 0);
  const r = u * keptTotal;
  let acc = 0;
  for (const [j, i] of kept.entries()) {
    const before = acc;
    acc += w(i);
    if (acc > r) {
      return { token: i, cutMargin, walkMargin: Math.min(r - before, acc - r) / keptTotal, neighbors: [kept[j - 1], kept[j + 1]].filter((t) => t !== undefined) };
    }
  }
  return { token: kept[kept.length - 1]!, cutMargin, walkMargin: 0, neighbors: kept.slice(-2, -1) };
}
