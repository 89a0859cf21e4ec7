/**
 * Token choice from logits: greedy, or temperature with top-k / top-p (nucleus) filtering, seeded.
 *
 * What is drawn (test/ref/sampling.ts is the plain form; the same token comes out for the same uniform draw):
 * tokens ordered by logit, descending, ties by id; top-k keeps the first k of that order, top-p the shortest prefix
 * of what is left whose weight reaches p · (its total). The draw u · (kept weight) then walks the kept tokens bucket by
 * bucket, heaviest first (bucket b: weight w = exp((logit − max) / T) in (2^-(b+1), 2^-b], see log2Weight), by id
 * within a bucket: the same distribution as walking them sorted, without sorting.
 *
 * Nothing sorts the vocabulary (sorting Llama-3's 128,256 logits in JS took ~50 ms a token, ten times a decode
 * step): top-k is a selection, top-p a weighted selection inside the bucket where its prefix ends, and the draw
 * skips whole buckets by their weight.
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

/**
 * The draw's weights in base 2: a token's weight is w = exp((logit − max) / T) = 2^-y with y = (max − logit) ·
 * log2(e) / T ≥ 0, and its bucket is floor(y) (w in (2^-(b+1), 2^-b]); the tail (and NaN) share the last bucket.
 */
export const BUCKETS = 2048;
export function log2Weight(logit: number, max: number, temp: number): number {
  return (max - logit) * (Math.LOG2E / temp);
}
export function bucketOf(y: number): number {
  const b = Math.floor(y);
  return b >= 0 ? Math.min(BUCKETS - 1, b) : BUCKETS - 1;
}

/**
 * 2^-y for y ≥ 0, within a few ulp of Math.exp's: a table of 2^-(k/64) and e^t for |t| < ln2/64 by its Taylor series
 * to t^6 (remainder < 4e-18). Math.exp alone took ~17 ns a call in V8, most of a 128K-token draw.
 */
const EXP2_FRAC = Float64Array.from({ length: 64 }, (_, k) => Math.pow(2, -k / 64));
const EXP2_INT = Float64Array.from({ length: BUCKETS }, (_, b) => Math.pow(2, -b));
const [LN2, C2, C3, C4, C5, C6] = [Math.LN2, 1 / 2, 1 / 6, 1 / 24, 1 / 120, 1 / 720];
export function exp2Neg(y: number): number {
  if (!(y < BUCKETS)) return y === y ? 0 : NaN; // beyond the table (all below the smallest subnormal) or NaN
  const i = (y * 64) | 0; // floor: 0 ≤ y · 64 < 2^17, exact
  const t = (i * (1 / 64) - y) * LN2; // in (−ln2/64, 0]
  const e = 1 + t * (1 + t * (C2 + t * (C3 + t * (C4 + t * (C5 + t * C6)))));
  return EXP2_INT[i >> 6]! * EXP2_FRAC[i & 63]! * e;
}

export function sample(logits: Float32Array, o: SamplingOptions, rand: () => number): number {
  const temp = o.temperature ?? 0;
  if (temp === 0) return argmaxOf(logits);
  const ids = o.topK !== undefined && o.topK < logits.length ? topKIds(logits, o.topK) : allIds(logits.length);
  const n = ids.length;
  let m = -Infinity;
  for (let j = 0; j < n; j++) m = Math.max(m, logits[ids[j]!]!);
  const { w, bucket, inCut } = scratch(n); // (n) each, over the positions of ids
  const mass = new Float64Array(BUCKETS); // weight per bucket
  let sum = 0;
  for (let j = 0; j < n; j++) {
    const y = log2Weight(logits[ids[j]!]!, m, temp);
    w[j] = exp2Neg(y); // exp((logit − max) / temperature): 1 for the top token
    mass[(bucket[j] = bucketOf(y))]! += w[j]!;
    sum += w[j]!;
  }
  if (!(sum > 0)) return argmaxOf(logits); // every kept logit −∞ (or NaN): nothing to weigh
  // top-p keeps every bucket heavier than the one where the sorted prefix reaches p, and the sorted prefix of that
  // bucket that does (flagged in inCut)
  let cut = BUCKETS;
  let total = sum;
  if (o.topP !== undefined && o.topP < 1) {
    const need = o.topP * sum;
    let acc = 0;
    let c = 0;
    while (c < BUCKETS && acc + mass[c]! < need) acc += mass[c++]!;
    if (c < BUCKETS) {
      mass[c] = cutBucket(logits, ids, w, bucket, c, need - acc, inCut);
      total = acc + mass[c]!;
      cut = c;
    }
  }
  // the draw walks the kept tokens bucket by bucket, heaviest first, by id within a bucket: whole buckets the draw
  // passes are subtracted at once, the one where it ends is walked token by token
  let last = Math.min(cut, BUCKETS - 1);
  while (last > 0 && !(mass[last]! > 0)) last--;
  let r = rand() * total;
  let hit = -1;
  for (let b = 0; b <= last; b++) {
    if (!(mass[b]! > 0)) continue;
    if (r > mass[b]! && b < last) {
      r -= mass[b]!;
      continue;
    }
    for (let j = 0; j < n; j++) {
      if (bucket[j] !== b || (b === cut && !inCut[j])) continue;
      hit = j;
      if ((r -= w[j]!) <= 0) return ids[j]!;
    }
  }
  return ids[hit]!; // rounding left a little of the draw: the last kept token (the plain walk's last)
}

/**
 * Of bucket c's positions, flags in `inCut` the shortest prefix of the sorted order (logit descending, ties by id)
 * whose weight reaches `need`, and returns that prefix's weight: a quickselect that carries the weight of the larger
 * side (expected O(size)), where sorting a bucket of a flat distribution (~all of a 128K vocabulary) took ~10 ms.
 * Partitions are stable (larger, equal, smaller: each kept in id order), so ties at a pivot stay in id order.
 */
function cutBucket(logits: Float32Array, ids: Int32Array, w: Float64Array, bucket: Uint16Array, c: number, need: number, inCut: Uint8Array): number {
  let size = 0;
  for (let j = 0; j < bucket.length; j++) if (bucket[j] === c) size++;
  // (size) positions, their logits and weights, and the same again as the partition's destination
  let P = new Int32Array(size);
  let L = new Float32Array(size);
  let W = new Float64Array(size);
  let Q = new Int32Array(size);
  let M = new Float32Array(size);
  let X = new Float64Array(size);
  for (let j = 0, i = 0; j < bucket.length; j++) {
    if (bucket[j] !== c) continue;
    P[i] = j;
    L[i] = logits[ids[j]!]!;
    W[i++] = w[j]!;
  }
  let lo = 0;
  let hi = size;
  let kept = 0;
  while (lo < hi) {
    const x = L[lo]!, y = L[(lo + hi) >>> 1]!, z = L[hi - 1]!;
    const p = Math.max(Math.min(x, y), Math.min(Math.max(x, y), z));
    let nGt = 0;
    let nEq = 0;
    let above = 0;
    for (let i = lo; i < hi; i++) {
      if (L[i]! > p) {
        nGt++;
        above += W[i]!;
      } else if (L[i] === p) nEq++;
    }
    let g = lo;
    let e = lo + nGt;
    let l = lo + nGt + nEq;
    for (let i = lo; i < hi; i++) {
      const v = L[i]!;
      const d = v > p ? g++ : v === p ? e++ : l++;
      Q[d] = P[i]!;
      M[d] = v;
      X[d] = W[i]!;
    }
    const [P2, L2, W2] = [Q, M, X];
    [Q, M, X] = [P, L, W];
    [P, L, W] = [P2, L2, W2];
    if (nGt && kept + above >= need) {
      hi = lo + nGt; // the prefix ends among the larger logits
      continue;
    }
    for (let i = lo; i < lo + nGt; i++) inCut[P[i]!] = 1;
    kept += above;
    for (let i = lo + nGt; i < lo + nGt + nEq; i++) {
      inCut[P[i]!] = 1;
      if ((kept += W[i]!) >= need) return kept;
    }
    lo += nGt + nEq;
  }
  return kept;
}

/** Reused per-position arrays of sample() (1.3 MB at Llama-3's vocabulary: not reallocated every token). */
let scratchN = 0;
let scratchArrays = { w: new Float64Array(0), bucket: new Uint16Array(0), inCut: new Uint8Array(0) };
function scratch(n: number): typeof scratchArrays {
  if (n > scratchN) {
    scratchN = n;
    scratchArrays = { w: new Float64Array(n), bucket: new Uint16Array(n), inCut: new Uint8Array(n) };
  }
  const { w, bucket, inCut } = scratchArrays;
  inCut.fill(0, 0, n);
  return { w: w.subarray(0, n), bucket: bucket.subarray(0, n), inCut: inCut.subarray(0, n) };
}

const idsCache = new Map<number, Int32Array>();
function allIds(V: number): Int32Array {
  let a = idsCache.get(V);
  if (!a) idsCache.set(V, (a = Int32Array.from({ length: V }, (_, i) => i)));
  return a;
}

/** Ids of the k largest logits, ties to the lower id (the first k of the sorted order), in id order. */
function topKIds(logits: Float32Array, k: number): Int32Array {
  const theta = kthSmallest(logits.slice(), logits.length - k);
  let above = 0;
  for (let i = 0; i < logits.length; i++) if (logits[i]! > theta) above++;
  let ties = k - above;
  const out = new Int32Array(k);
  let n = 0;
  for (let i = 0; i < logits.length && n < k; i++) {
    const v = logits[i]!;
    if (v > theta || (v === theta && ties-- > 0)) out[n++] = i;
  }
  return out;
}

/** Hoare quickselect (median-of-three pivot): the value of rank t (0-based, ascending); reorders `a`. */
function kthSmallest(a: Float32Array, t: number): number {
  let lo = 0;
  let hi = a.length - 1;
  while (hi > lo) {
    const x = a[lo]!, y = a[(lo + hi) >>> 1]!, zz = a[hi]!;
    const p = Math.max(Math.min(x, y), Math.min(Math.max(x, y), zz));
    let i = lo;
    let j = hi;
    while (i <= j) {
      while (a[i]! < p) i++;
      while (a[j]! > p) j--;
      if (i <= j) {
        const s = a[i]!;
        a[i++] = a[j]!;
        a[j--] = s;
      }
    }
    if (t <= j) hi = j;
    else if (t >= i) lo = i;
    else return a[t]!;
  }
  return a[t]!;
}
