/**
 * Plain CPU references (f64 arithmetic) for the attention-family kernels: causal attention over cache slots with
 * keys rotated from their stored positions, log-sum-exp, the H2O / SnapKV statistics, baseline score fills, and the
 * eviction select + in-order compaction.
 */

export interface RefAttnShape {
  H: number;
  KV: number;
  D: number;
  rotaryDim: number;
  T: number;
  base: number;
  capacity: number;
  scale: number;
}

/** Key of slot s of KV head g, rotated with rope[pos] (HF rotate_half; dims ≥ rotaryDim unchanged). */
export function refRotatedKey(sh: RefAttnShape, kCache: Float32Array, kpos: Uint32Array, rope: Float32Array, g: number, s: number): Float64Array {
  const { D, rotaryDim, capacity } = sh;
  const half = rotaryDim / 2;
  const at = (g * capacity + s) * D;
  const p = kpos[g * capacity + s]!;
  const out = new Float64Array(D);
  for (let i = 0; i < D; i++) {
    const x = kCache[at + i]!;
    if (i >= rotaryDim) out[i] = x;
    else {
      const f = i % half;
      const c = rope[(p * half + f) * 2]!;
      const sn = rope[(p * half + f) * 2 + 1]!;
      out[i] = i < half ? x * c - kCache[at + i + half]! * sn : x * c + kCache[at + i - half]! * sn;
    }
  }
  return out;
}

/** Scaled logits of query t / head h against slots 0 ..= base + t. */
function logits(sh: RefAttnShape, q: Float32Array, keys: Float64Array[][], t: number, h: number): Float64Array {
  const { H, KV, D, base, scale } = sh;
  const g = Math.floor(h / (H / KV));
  const n = base + t + 1;
  const out = new Float64Array(n);
  for (let s = 0; s < n; s++) {
    const k = keys[g]![s]!;
    let dot = 0;
    for (let i = 0; i < D; i++) dot += q[(t * H + h) * D + i]! * k[i]!;
    out[s] = dot * scale;
  }
  return out;
}

function allKeys(sh: RefAttnShape, kCache: Float32Array, kpos: Uint32Array, rope: Float32Array): Float64Array[][] {
  const n = sh.base + sh.T;
  return Array.from({ length: sh.KV }, (_, g) => Array.from({ length: n }, (_, s) => refRotatedKey(sh, kCache, kpos, rope, g, s)));
}

/** out (T, H*D) and lse (T, H). */
export function refAttention(
  sh: RefAttnShape,
  q: Float32Array,
  kCache: Float32Array,
  vCache: Float32Array,
  kpos: Uint32Array,
  rope: Float32Array,
): { out: Float32Array; lse: Float32Array } {
  const { H, KV, D, T, capacity } = sh;
  const keys = allKeys(sh, kCache, kpos, rope);
  const out = new Float32Array(T * H * D);
  const lse = new Float32Array(T * H);
  for (let t = 0; t < T; t++) {
    for (let h = 0; h < H; h++) {
      const g = Math.floor(h / (H / KV));
      const lg = logits(sh, q, keys, t, h);
      const m = Math.max(...lg);
      let sum = 0;
      const acc = new Float64Array(D);
      for (let s = 0; s < lg.length; s++) {
        const p = Math.exp(lg[s]! - m);
        sum += p;
        for (let i = 0; i < D; i++) acc[i] += p * vCache[(g * capacity + s) * D + i]!;
      }
      for (let i = 0; i < D; i++) out[(t * H + h) * D + i] = acc[i]! / sum;
      lse[t * H + h] = m + Math.log(sum);
    }
  }
  return { out, lse };
}

/**
 * H2O: scores[g, s] += Σ_{t sees s, h in group} exp(logit - lse[t, h]).
 * SnapKV: scores[g, s] = avg_pool1d(k=5, pad=2, count_include_pad) over s < base+T of
 * (1/w) Σ_{last w queries} Σ_{h in group} p(t, h, s); w = min(window, T). Returns the updated copy of `scores`.
 */
export function refAttentionStats(
  sh: RefAttnShape,
  mode: 'h2o' | 'snapkv',
  window: number,
  q: Float32Array,
  kCache: Float32Array,
  kpos: Uint32Array,
  rope: Float32Array,
  lse: Float32Array,
  scores: Float32Array,
): Float32Array {
  const { H, KV, T, base, capacity } = sh;
  const G = H / KV;
  const keys = allKeys(sh, kCache, kpos, rope);
  const n = base + T;
  const res = scores.slice();
  const t0 = mode === 'h2o' ? 0 : T - Math.min(window, T);
  for (let g = 0; g < KV; g++) {
    const raw = new Float64Array(n);
    for (let t = t0; t < T; t++) {
      for (let h = g * G; h < (g + 1) * G; h++) {
        const lg = logits(sh, q, keys, t, h);
        for (let s = 0; s < lg.length; s++) raw[s] += Math.exp(lg[s]! - lse[t * H + h]!);
      }
    }
    for (let s = 0; s < n; s++) {
      if (mode === 'h2o') res[g * capacity + s] = res[g * capacity + s]! + raw[s]!;
      else {
        let sum = 0;
        for (let k = s - 2; k <= s + 2; k++) if (k >= 0 && k < n) sum += raw[k]!;
        res[g * capacity + s] = sum / (T - t0) / 5;
      }
    }
  }
  return res;
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);
/** Order-preserving f32 → u32 (negatives flipped, positives get the top bit). */
export function orderKey(x: number): number {
  f32[0] = x;
  const u = u32[0]!;
  return (u & 0x80000000 ? ~u : u | 0x80000000) >>> 0;
}

/**
 * Eviction of one layer: per KV head, slots ≥ forcedFrom count as +inf, the `keep` best (key desc, slot asc) are
 * compacted in original order. Returns new copies of the arrays (K/V as raw 32-bit words, `words` per slot).
 */
export function refEvict(
  d: { KV: number; len: number; keep: number; forcedFrom: number; capacity: number; compact: boolean; words: number },
  k: Uint32Array,
  v: Uint32Array,
  scores: Float32Array,
  kpos: Uint32Array,
): { k: Uint32Array; v: Uint32Array; scores: Float32Array; kpos: Uint32Array; kept: number[][] } {
  const r = { k: k.slice(), v: v.slice(), scores: scores.slice(), kpos: kpos.slice(), kept: [] as number[][] };
  if (d.keep >= d.len) return r;
  const W = d.words;
  for (let g = 0; g < d.KV; g++) {
    const idx = Array.from({ length: d.len }, (_, s) => s);
    const key = idx.map((s) => (s >= d.forcedFrom ? orderKey(Infinity) : orderKey(scores[g * d.capacity + s]!)));
    const best = idx.slice().sort((a, b) => key[b]! - key[a]! || a - b);
    const kept = best.slice(0, d.keep).sort((a, b) => a - b);
    r.kept.push(kept);
    kept.forEach((s, i) => {
      const src = g * d.capacity + s;
      const dst = g * d.capacity + i;
      r.k.set(k.subarray(src * W, src * W + W), dst * W);
      r.v.set(v.subarray(src * W, src * W + W), dst * W);
      r.scores[dst] = scores[src]!;
      r.kpos[dst] = d.compact ? i : kpos[src]!;
    });
  }
  return r;
}

/** The u32 hash the random policy uses (PCG output permutation), matching the WGSL. */
export function pcgHash(x: number): number {
  const state = (Math.imul(x >>> 0, 747796405) + 2891336453) >>> 0;
  const word = Math.imul(((state >>> (((state >>> 28) + 4) >>> 0)) ^ state) >>> 0, 277803737) >>> 0;
  return ((word >>> 22) ^ word) >>> 0;
}

/** fillScores reference: scores for slots [slot0, slot0+T) of every KV head (positions pos0 + t). */
export function refFillScores(
  policy: 'streaming' | 'random',
  d: { T: number; KV: number; slot0: number; pos0: number; capacity: number; seed: number; layer: number; sinks?: number },
  scores: Float32Array,
): Float32Array {
  const res = scores.slice();
  const sinks = d.sinks ?? 4;
  for (let g = 0; g < d.KV; g++) {
    for (let t = 0; t < d.T; t++) {
      const pos = d.pos0 + t;
      let v: number;
      if (policy === 'streaming') v = pos < sinks ? Infinity : pos;
      else v = (pcgHash(d.seed ^ pcgHash(d.layer ^ pcgHash(g ^ pcgHash(pos)))) >>> 8) / 16777216;
      res[g * d.capacity + d.slot0 + t] = v;
    }
  }
  return res;
}
