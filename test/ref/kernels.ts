/**
 * Plain CPU reference kernels (f32 storage, f64 accumulation). The ground truth for the GPU kernels: obvious code,
 * no tricks beyond a 4-row blocked matmul loop. Layouts are row-major; activations are (T, width).
 * See the header of ./model.ts for the numerical details these follow to reproduce HF transformers (fp32).
 */
import type { RopeConfig } from '../../ir/config.js';

const f32 = Math.fround;

/** HF RMSNorm: v = mean(x²) (f32), y = w * f32(x * f32(1/sqrt(f32(v + eps)))). x (T, D). */
export function rmsnorm(x: Float32Array, T: number, D: number, w: Float32Array, eps: number): Float32Array {
  const y = new Float32Array(T * D);
  for (let t = 0; t < T; t++) {
    const o = t * D;
    let ss = 0;
    for (let i = 0; i < D; i++) ss += x[o + i] * x[o + i];
    const r = f32(1 / Math.sqrt(f32(f32(ss / D) + f32(eps))));
    for (let i = 0; i < D; i++) y[o + i] = f32(w[i] * f32(x[o + i] * r));
  }
  return y;
}

/**
 * y = x · Wᵀ (+ bias). x (T, K), W (N, K) row-major (HF Linear layout), y (T, N) f32. f64 accumulation.
 * The loop is blocked over 4 rows of x × 4 rows of W (16 running sums; each load is used 4 times); tails run
 * one dot product at a time. Each output is still one plain sequential sum over k.
 */
export function matmul(
  x: Float32Array, T: number, K: number, W: Float32Array, N: number, bias?: Float32Array,
): Float32Array {
  if (x.length < T * K || W.length < N * K) throw new Error(`matmul: shapes x ${x.length} vs ${T}x${K}, W ${W.length} vs ${N}x${K}`);
  const y = new Float32Array(T * N);
  let t = 0;
  for (; t + 4 <= T; t += 4) {
    const x0 = t * K, x1 = x0 + K, x2 = x1 + K, x3 = x2 + K;
    let n = 0;
    for (; n + 4 <= N; n += 4) {
      const w0 = n * K, w1 = w0 + K, w2 = w1 + K, w3 = w2 + K;
      let a00 = 0, a01 = 0, a02 = 0, a03 = 0, a10 = 0, a11 = 0, a12 = 0, a13 = 0;
      let a20 = 0, a21 = 0, a22 = 0, a23 = 0, a30 = 0, a31 = 0, a32 = 0, a33 = 0;
      for (let k = 0; k < K; k++) {
        const u0 = W[w0 + k], u1 = W[w1 + k], u2 = W[w2 + k], u3 = W[w3 + k];
        const p0 = x[x0 + k];
        a00 += p0 * u0; a01 += p0 * u1; a02 += p0 * u2; a03 += p0 * u3;
        const p1 = x[x1 + k];
        a10 += p1 * u0; a11 += p1 * u1; a12 += p1 * u2; a13 += p1 * u3;
        const p2 = x[x2 + k];
        a20 += p2 * u0; a21 += p2 * u1; a22 += p2 * u2; a23 += p2 * u3;
        const p3 = x[x3 + k];
        a30 += p3 * u0; a31 += p3 * u1; a32 += p3 * u2; a33 += p3 * u3;
      }
      const b0 = bias ? bias[n] : 0, b1 = bias ? bias[n + 1] : 0, b2 = bias ? bias[n + 2] : 0, b3 = bias ? bias[n + 3] : 0;
      let o = t * N + n;
      y[o] = a00 + b0; y[o + 1] = a01 + b1; y[o + 2] = a02 + b2; y[o + 3] = a03 + b3; o += N;
      y[o] = a10 + b0; y[o + 1] = a11 + b1; y[o + 2] = a12 + b2; y[o + 3] = a13 + b3; o += N;
      y[o] = a20 + b0; y[o + 1] = a21 + b1; y[o + 2] = a22 + b2; y[o + 3] = a23 + b3; o += N;
      y[o] = a30 + b0; y[o + 1] = a31 + b1; y[o + 2] = a32 + b2; y[o + 3] = a33 + b3;
    }
    for (; n < N; n++) {
      for (let j = 0; j < 4; j++) y[(t + j) * N + n] = dot(x, (t + j) * K, W, n * K, K) + (bias ? bias[n] : 0);
    }
  }
  for (; t < T; t++) {
    for (let n = 0; n < N; n++) y[t * N + n] = dot(x, t * K, W, n * K, K) + (bias ? bias[n] : 0);
  }
  return y;
}

function dot(a: Float32Array, ao: number, b: Float32Array, bo: number, n: number): number {
  let s = 0;
  for (let i = 0; i < n; i++) s += a[ao + i] * b[bo + i];
  return s;
}

export function add(a: Float32Array, b: Float32Array): Float32Array {
  if (a.length !== b.length) throw new Error('add: length mismatch');
  const y = new Float32Array(a.length);
  for (let i = 0; i < a.length; i++) y[i] = a[i] + b[i];
  return y;
}

export function siluScalar(v: number): number {
  return v / (1 + Math.exp(-v));
}

export function silu(x: Float32Array): Float32Array {
  const y = new Float32Array(x.length);
  for (let i = 0; i < x.length; i++) y[i] = siluScalar(x[i]);
  return y;
}

/** silu(gate) * up, elementwise. */
export function swiglu(gate: Float32Array, up: Float32Array): Float32Array {
  const y = new Float32Array(gate.length);
  for (let i = 0; i < gate.length; i++) y[i] = f32(siluScalar(gate[i])) * up[i];
  return y;
}

/** swiglu on a fused (T, 2I) gate_up output: columns [0, I) gate, [I, 2I) up → (T, I). */
export function swigluFused(gu: Float32Array, T: number, I: number): Float32Array {
  const y = new Float32Array(T * I);
  for (let t = 0; t < T; t++) {
    for (let i = 0; i < I; i++) y[t * I + i] = f32(siluScalar(gu[t * 2 * I + i])) * gu[t * 2 * I + I + i];
  }
  return y;
}

// ---------------------------------------------------------------- RoPE

/** Does a longrope table for this total sequence length use the long factors? (HF: seq_len > original) */
export function longropeUsesLong(rope: RopeConfig, seqLen: number, forceLong = false): boolean {
  return rope.kind === 'longrope' && (forceLong || seqLen > rope.originalMaxPositions);
}

/**
 * inv_freq (rotaryDim/2) exactly as HF computes it in f32. For longrope, `seqLenForLongrope` (the current total
 * sequence length, HF: max(position_ids)+1) > original_max_position_embeddings selects the long factors.
 */
export function ropeInvFreq(rope: RopeConfig, seqLenForLongrope = 0, forceLong = false): Float32Array {
  const dim = rope.rotaryDim;
  const half = dim / 2;
  const inv = new Float32Array(half);
  const theta = f32(rope.theta);
  for (let i = 0; i < half; i++) {
    const expo = f32((2 * i) / dim);
    const p = f32(Math.pow(theta, expo));
    if (rope.kind === 'longrope') {
      const ext = longropeUsesLong(rope, seqLenForLongrope, forceLong) ? rope.longFactor : rope.shortFactor;
      inv[i] = f32(1 / f32(f32(ext[i]) * p));
    } else {
      inv[i] = f32(1 / p);
    }
  }
  if (rope.kind !== 'llama3') return inv;
  // transformers _compute_llama3_parameters, op by op in f32. `c / tensor` is tensor.reciprocal() * c in torch.
  const factor = f32(rope.factor);
  const lowW = rope.originalMaxPositions / rope.lowFreqFactor;
  const highW = rope.originalMaxPositions / rope.highFreqFactor;
  const out = new Float32Array(half);
  for (let i = 0; i < half; i++) {
    const wavelen = f32(f32(1 / inv[i]) * f32(2 * Math.PI));
    let l = wavelen > lowW ? f32(inv[i] / factor) : inv[i];
    const smooth = f32(
      f32(f32(f32(1 / wavelen) * f32(rope.originalMaxPositions)) - f32(rope.lowFreqFactor)) /
        f32(rope.highFreqFactor - rope.lowFreqFactor),
    );
    const smoothed = f32(f32(f32(f32(1 - smooth) * l) / factor) + f32(smooth * l));
    const medium = !(wavelen < highW) && !(wavelen > lowW);
    if (medium) l = smoothed;
    out[i] = l;
  }
  return out;
}

/** The factor multiplying cos and sin (longrope's attention factor, else 1). */
export function ropeAttentionFactor(rope: RopeConfig): number {
  return rope.kind === 'longrope' ? rope.attentionFactor : 1;
}

/** cos/sin tables (P, rotaryDim/2), row p for positions[p]. */
export interface RopeTable {
  readonly cos: Float32Array;
  readonly sin: Float32Array;
  readonly half: number;
  readonly rows: number;
}

export interface RopeOpts {
  /** longrope: the total sequence length deciding short/long (default max(positions)+1, as HF) */
  seqLen?: number;
  forceLong?: boolean;
}

/** HF: angle = f32(f32(pos) · inv_freq); cos = f32(cos(angle)) · attention_factor (f32), same for sin. */
export function ropeCosSin(rope: RopeConfig, positions: ArrayLike<number>, opts: RopeOpts = {}): RopeTable {
  let maxPos = -1;
  for (let i = 0; i < positions.length; i++) maxPos = Math.max(maxPos, positions[i]);
  const inv = ropeInvFreq(rope, opts.seqLen ?? maxPos + 1, opts.forceLong ?? false);
  const half = inv.length;
  const af = f32(ropeAttentionFactor(rope));
  const P = positions.length;
  const cos = new Float32Array(P * half);
  const sin = new Float32Array(P * half);
  for (let p = 0; p < P; p++) {
    const pos = f32(positions[p]);
    for (let i = 0; i < half; i++) {
      const ang = f32(pos * inv[i]);
      let c = f32(Math.cos(ang));
      let s = f32(Math.sin(ang));
      if (af !== 1) { c = f32(c * af); s = f32(s * af); }
      cos[p * half + i] = c;
      sin[p * half + i] = s;
    }
  }
  return { cos, sin, half, rows: P };
}

/**
 * Rotate x (T, nHeads, headDim) in HF's rotate_half convention on the first 2·half dims: pair (i, i+half);
 * out[i] = x[i]·cos − x[i+half]·sin, out[i+half] = x[i+half]·cos + x[i]·sin; dims ≥ 2·half pass through.
 * Row t uses table row t.
 */
export function ropeApply(x: Float32Array, T: number, nHeads: number, headDim: number, table: RopeTable): Float32Array {
  if (table.rows !== T) throw new Error(`ropeApply: table has ${table.rows} rows for ${T} tokens`);
  const y = new Float32Array(x);
  const h2 = table.half;
  for (let t = 0; t < T; t++) {
    for (let h = 0; h < nHeads; h++) {
      const o = (t * nHeads + h) * headDim;
      for (let i = 0; i < h2; i++) {
        const c = table.cos[t * h2 + i], s = table.sin[t * h2 + i];
        const a = x[o + i], b = x[o + i + h2];
        y[o + i] = f32(f32(a * c) + f32(-b * s));
        y[o + i + h2] = f32(f32(b * c) + f32(a * s));
      }
    }
  }
  return y;
}

// ---------------------------------------------------------------- attention

/** One KV head's cache: k (len, D) already rotated, v (len, D). */
export interface KvHeadCache {
  readonly k: Float32Array;
  readonly v: Float32Array;
  readonly len: number;
}

/**
 * GQA attention with per-KV-head caches (each KV head may hold different tokens, as in an evicted cache).
 * q (Tq, H, D) rotated. Query head h reads KV head floor(h / (H / KV)). Key s is visible to query t when
 * s < visibleCount(t, g) and (no mask or mask(t, s, g)). Textbook form per head and block of queries:
 * scores = Q·Kᵀ (f32), P = softmax(scores / sqrt(D)) over the visible keys (computed in f64, stored f32),
 * out = P·V (f64 accumulation).
 * A query that sees no key outputs zeros. Returns (Tq, H·D).
 */
export function attendHeads(
  q: Float32Array, Tq: number, H: number, D: number, heads: readonly KvHeadCache[],
  visibleCount: (t: number, g: number) => number, mask?: (t: number, s: number, g: number) => boolean,
): Float32Array {
  const KV = heads.length;
  if (H % KV !== 0) throw new Error(`attendHeads: ${H} heads not a multiple of ${KV} kv heads`);
  const group = H / KV;
  const scale = 1 / Math.sqrt(D);
  const out = new Float32Array(Tq * H * D);
  const TB = 128;
  for (let g = 0; g < KV; g++) {
    const S = heads[g].len;
    if (S === 0) continue;
    const k = heads[g].k, v = heads[g].v;
    const vT = new Float32Array(D * S); // (D, S): V transposed so P·V is another x·Wᵀ
    for (let s = 0; s < S; s++) for (let i = 0; i < D; i++) vT[i * S + s] = v[s * D + i];
    for (let h = g * group; h < (g + 1) * group; h++) {
      for (let t0 = 0; t0 < Tq; t0 += TB) {
        const tb = Math.min(TB, Tq - t0);
        const qh = new Float32Array(tb * D);
        for (let j = 0; j < tb; j++) qh.set(q.subarray(((t0 + j) * H + h) * D, ((t0 + j) * H + h + 1) * D), j * D);
        const sc = matmul(qh, tb, D, k, S);
        const p = new Float64Array(tb * S);
        const pf = new Float32Array(tb * S); // normalized probabilities, f32 (one rounding of an f64 softmax)
        for (let j = 0; j < tb; j++) {
          const t = t0 + j, row = j * S;
          const n = Math.min(visibleCount(t, g), S);
          let mx = -Infinity;
          for (let s = 0; s < n; s++) {
            if (mask && !mask(t, s, g)) { p[row + s] = -Infinity; continue; }
            p[row + s] = sc[row + s] * scale;
            if (p[row + s] > mx) mx = p[row + s];
          }
          if (mx === -Infinity) continue; // sees nothing: zero output
          let sum = 0;
          for (let s = 0; s < n; s++) { const e = Math.exp(p[row + s] - mx); p[row + s] = e; sum += e; }
          for (let s = 0; s < n; s++) pf[row + s] = p[row + s] / sum;
        }
        const o = matmul(pf, tb, S, vT, D);
        for (let j = 0; j < tb; j++) out.set(o.subarray(j * D, (j + 1) * D), ((t0 + j) * H + h) * D);
      }
    }
  }
  return out;
}

/** Split (S, KV, D) keys/values into per-head caches. */
export function splitHeads(k: Float32Array, v: Float32Array, S: number, KV: number, D: number): KvHeadCache[] {
  const heads: KvHeadCache[] = [];
  for (let g = 0; g < KV; g++) {
    const kh = new Float32Array(S * D), vh = new Float32Array(S * D);
    for (let s = 0; s < S; s++) {
      kh.set(k.subarray((s * KV + g) * D, (s * KV + g + 1) * D), s * D);
      vh.set(v.subarray((s * KV + g) * D, (s * KV + g + 1) * D), s * D);
    }
    heads.push({ k: kh, v: vh, len: S });
  }
  return heads;
}

/**
 * Causal GQA attention: q (Tq, H, D), k/v (S, KV, D) rotated, the queries being the last Tq of S tokens
 * (query t sees keys s ≤ past + t, past = S − Tq). Returns (Tq, H·D).
 */
export function causalAttention(
  q: Float32Array, k: Float32Array, v: Float32Array, Tq: number, S: number, H: number, KV: number, D: number,
): Float32Array {
  const past = S - Tq;
  return attendHeads(q, Tq, H, D, splitHeads(k, v, S, KV, D), (t) => past + t + 1);
}

/** A KV head holding un-rotated keys and each slot's RoPE position. */
export interface PositionedKvHead {
  readonly kPre: Float32Array;
  readonly v: Float32Array;
  readonly len: number;
  readonly pos: ArrayLike<number>;
}

/**
 * Attention with explicit positions (evicted caches): rotates q (Tq, H, D) by qPos and each head's keys by their
 * own `pos`, then attendHeads with the given visibility. `ropeOpts` picks the longrope table for every rotation.
 */
export function attendAtPositions(
  qPre: Float32Array, qPos: ArrayLike<number>, H: number, D: number, rope: RopeConfig, heads: readonly PositionedKvHead[],
  visibleCount: (t: number, g: number) => number, mask?: (t: number, s: number, g: number) => boolean,
  ropeOpts: RopeOpts = {},
): Float32Array {
  const Tq = qPos.length;
  const q = ropeApply(qPre, Tq, H, D, ropeCosSin(rope, qPos, ropeOpts));
  const rotated = heads.map((h) => ({
    k: h.len === 0 ? h.kPre : ropeApply(h.kPre.subarray(0, h.len * D), h.len, 1, D, ropeCosSin(rope, Array.from({ length: h.len }, (_, i) => h.pos[i]), ropeOpts)),
    v: h.v,
    len: h.len,
  }));
  return attendHeads(q, Tq, H, D, rotated, visibleCount, mask);
}

export function argmax(x: ArrayLike<number>, off = 0, n = x.length - off): number {
  let best = off;
  for (let i = off + 1; i < off + n; i++) if (x[i] > x[best]) best = i;
  return best - off;
}

export function logsumexp(x: ArrayLike<number>, off = 0, n = x.length - off): number {
  let mx = -Infinity;
  for (let i = off; i < off + n; i++) mx = Math.max(mx, x[i]);
  let s = 0;
  for (let i = off; i < off + n; i++) s += Math.exp(x[i] - mx);
  return mx + Math.log(s);
}
