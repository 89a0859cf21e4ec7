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
 * step): top-k is a selection, top-p sorts only the bucket where its prefix ends, the walk is a counting sort.
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
  if (o.temperature !== undefined && !(o.temperature >= 0)) throw new Error(`temperature must be >= 0, got ${o.temperature}`);
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
      total = acc;
      for (const j of sortedBucket(logits, ids, bucket, c)) {
        inCut[j] = 1;
        if ((total += w[j]!) >= need) break;
      }
      mass[c] = total - acc;
      cut = c;
    }
  }
  // the draw walks the kept tokens bucket by bucket, heaviest first, by id within a bucket (ids is in id order):
  // first only as deep as the buckets' mass says it ends (one more for rounding), then, if rounding says otherwise,
  // through every kept bucket
  const r = rand() * total;
  let reach = 0;
  for (let acc = mass[0]!; reach < cut && acc < r; acc += mass[++reach]!);
  let last = -1;
  for (const depth of reach + 1 < cut ? [reach + 1, cut] : [cut]) {
    let left = r;
    for (const j of byBucket(bucket, n, depth)) {
      if (bucket[j]! === cut && !inCut[j]) continue;
      last = j;
      if ((left -= w[j]!) <= 0) return ids[j]!;
    }
  }
  return ids[last]!;
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

/**
 * Positions of bucket c, sorted by logit descending, ties by id (positions follow ids, which are in id order): one
 * numeric sort of keys that pack the logit's order-preserving bits above the position (2^32 · 2^21: exact doubles).
 */
function sortedBucket(logits: Float32Array, ids: Int32Array, bucket: Uint16Array, c: number): Int32Array {
  const f = new Float32Array(1);
  const bits = new Uint32Array(f.buffer);
  const keys: number[] = [];
  for (let j = 0; j < bucket.length; j++) {
    if (bucket[j] !== c) continue;
    f[0] = logits[ids[j]!]! + 0; // −0 → +0: equal logits, equal keys
    const u = bits[0]! >>> 31 ? ~bits[0]! >>> 0 : (bits[0]! | 0x80000000) >>> 0; // ascending with the float
    keys.push((0xffffffff - u) * ID_SPAN + j);
  }
  if (bucket.length > ID_SPAN) throw new Error(`sampling: ${bucket.length} tokens exceed the ${ID_SPAN} a sort key holds`);
  return Int32Array.from(Float64Array.from(keys).sort(), (k) => k % ID_SPAN);
}
const ID_SPAN = 2 ** 21;

/** Positions (of n) in buckets 0..last, in bucket order, ascending within each (a counting sort). */
function byBucket(bucket: Uint16Array, n: number, last: number): Int32Array {
  const top = Math.min(last, BUCKETS - 1);
  const start = new Int32Array(top + 2);
  for (let j = 0; j < n; j++) if (bucket[j]! <= top) start[bucket[j]! + 1]!++;
  for (let b = 0; b <= top; b++) start[b + 1]! += start[b]!;
  const out = new Int32Array(start[top + 1]!);
  for (let j = 0; j < n; j++) if (bucket[j]! <= top) out[start[bucket[j]!]!++] = j;
  return out;
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
