/**
 * Plain CPU references for the GPU kernel families (compiler/kernels/): loops in f64, results rounded to f32.
 * Weights are passed as the f32 values the GPU sees (f16-rounded by the test for f16 dtypes).
 */

const fr = Math.fround;

/** x[row] rms-normalized with weight nw: x · 1/sqrt(mean(x²) + eps) · nw. */
function normRow(x: Float32Array, off: number, K: number, nw: Float32Array, eps: number): Float64Array {
  let s = 0;
  for (let k = 0; k < K; k++) s += x[off + k]! * x[off + k]!;
  const r = 1 / Math.sqrt(s / K + eps);
  const out = new Float64Array(K);
  for (let k = 0; k < K; k++) out[k] = x[off + k]! * r * nw[k]!;
  return out;
}

function rowOf(x: Float32Array, off: number, K: number): Float64Array {
  return Float64Array.from(x.subarray(off, off + K));
}

function dot(a: Float64Array, w: Float32Array, off: number): number {
  let s = 0;
  for (let k = 0; k < a.length; k++) s += a[k]! * w[off + k]!;
  return s;
}

const silu = (g: number) => g / (1 + Math.exp(-g));

export interface MatmulRefOpts {
  norm: boolean;
  bias: boolean;
  epilogue: 'store' | 'residual' | 'silu' | 'swiglu';
}

/**
 * y (T, N): store f(x)·wᵀ(+b); residual yIn + f(x)·wᵀ(+b); silu silu(f(x)·wᵀ(+b)); swiglu silu(f(x)·gᵀ + b_g) · (f(x)·uᵀ + b_u) with
 * w = (2N, K) and bias (2N).
 */
export function matmulRef(
  o: MatmulRefOpts,
  d: { T: number; N: number; K: number; eps?: number; xRow0?: number },
  x: Float32Array,
  w: Float32Array,
  normW?: Float32Array,
  bias?: Float32Array,
  yIn?: Float32Array,
): Float32Array {
  const { T, N, K } = d;
  const eps = d.eps ?? 1e-6;
  const x0 = d.xRow0 ?? 0;
  const y = new Float32Array(T * N);
  for (let t = 0; t < T; t++) {
    const a = o.norm ? normRow(x, (x0 + t) * K, K, normW!, eps) : rowOf(x, (x0 + t) * K, K);
    for (let n = 0; n < N; n++) {
      const b0 = o.bias ? bias![n]! : 0;
      const g = dot(a, w, n * K) + b0;
      if (o.epilogue === 'swiglu') {
        const u = dot(a, w, (N + n) * K) + (o.bias ? bias![N + n]! : 0);
        y[t * N + n] = fr(silu(g) * u);
      } else if (o.epilogue === 'residual') y[t * N + n] = fr(yIn![t * N + n]! + g);
      else if (o.epilogue === 'silu') y[t * N + n] = fr(silu(g));
      else y[t * N + n] = fr(g);
    }
  }
  return y;
}

export function rmsnormRef(T: number, N: number, eps: number, x: Float32Array, w: Float32Array): Float32Array {
  const y = new Float32Array(T * N);
  for (let t = 0; t < T; t++) y.set(normRow(x, t * N, N, w, eps), t * N);
  return y;
}

export function siluMulRef(T: number, N: number, gu: Float32Array): Float32Array {
  const y = new Float32Array(T * N);
  for (let t = 0; t < T; t++) for (let j = 0; j < N; j++) y[t * N + j] = fr(silu(gu[t * 2 * N + j]!) * gu[t * 2 * N + N + j]!);
  return y;
}

/** HF rotate_half RoPE of x (T, heads, D) at positions pos0 + t; returns a new array. */
export function ropeRef(
  d: { T: number; heads: number; headDim: number; rotaryDim: number; pos0: number },
  x: Float32Array,
  table: Float32Array,
): Float32Array {
  const { T, heads, headDim: D, rotaryDim, pos0 } = d;
  const half = rotaryDim / 2;
  const y = Float32Array.from(x);
  for (let t = 0; t < T; t++) {
    for (let h = 0; h < heads; h++) {
      const o = (t * heads + h) * D;
      for (let i = 0; i < half; i++) {
        const c = table[((pos0 + t) * half + i) * 2]!;
        const s = table[((pos0 + t) * half + i) * 2 + 1]!;
        const x1 = x[o + i]!;
        const x2 = x[o + i + half]!;
        y[o + i] = fr(x1 * c - x2 * s);
        y[o + i + half] = fr(x2 * c + x1 * s);
      }
    }
  }
  return y;
}

export interface QkvRefOpts {
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  rotaryDim: number;
  /** keys written rotated at pos0 + t, like q */
  rotateKeys?: boolean;
}

/**
 * rmsnorm → x·Wqkvᵀ(+b) → (q rotated, k/v scattered into caches at slot0 + t, kpos = pos0 + t, pre = un-rotated
 * row). kCache/vCache/kpos are updated in place (pass copies of the initial contents).
 */
export function qkvRopeRef(
  o: QkvRefOpts,
  d: { T: number; K: number; eps: number; slot0: number; pos0: number; capacity: number },
  x: Float32Array,
  normW: Float32Array,
  w: Float32Array,
  bias: Float32Array | undefined,
  table: Float32Array,
  kCache: Float32Array,
  vCache: Float32Array,
  kpos: Uint32Array,
): { q: Float32Array; pre: Float32Array } {
  const { numHeads: H, numKvHeads: KV, headDim: D } = o;
  const { T, K, slot0, pos0, capacity: cap } = d;
  const Wd = (H + 2 * KV) * D;
  const pre = matmulRef({ norm: true, bias: !!bias, epilogue: 'store' }, { T, N: Wd, K, eps: d.eps }, x, w, normW, bias);
  const qRaw = new Float32Array(T * H * D);
  for (let t = 0; t < T; t++) {
    qRaw.set(pre.subarray(t * Wd, t * Wd + H * D), t * H * D);
    for (let h = 0; h < KV; h++) {
      const slot = slot0 + t;
      for (let i = 0; i < D; i++) {
        kCache[(h * cap + slot) * D + i] = pre[t * Wd + (H + h) * D + i]!;
        vCache[(h * cap + slot) * D + i] = pre[t * Wd + (H + KV + h) * D + i]!;
      }
      kpos[h * cap + slot] = pos0 + t;
    }
  }
  const q = ropeRef({ T, heads: H, headDim: D, rotaryDim: o.rotaryDim, pos0 }, qRaw, table);
  if (o.rotateKeys) {
    const kRaw = new Float32Array(T * KV * D);
    for (let t = 0; t < T; t++) kRaw.set(pre.subarray(t * Wd + H * D, t * Wd + (H + KV) * D), t * KV * D);
    const k = ropeRef({ T, heads: KV, headDim: D, rotaryDim: o.rotaryDim, pos0 }, kRaw, table);
    for (let t = 0; t < T; t++)
      for (let h = 0; h < KV; h++) kCache.set(k.subarray((t * KV + h) * D, (t * KV + h + 1) * D), (h * cap + slot0 + t) * D);
  }
  return { q, pre };
}

/** y[t] = table[ids[t]] */
export function embeddingRef(hidden: number, ids: Uint32Array, table: Float32Array): Float32Array {
  const y = new Float32Array(ids.length * hidden);
  ids.forEach((id, t) => y.set(table.subarray(id * hidden, (id + 1) * hidden), t * hidden));
  return y;
}

/** index of the first maximum per row */
export function argmaxRef(rows: number, n: number, x: Float32Array): Uint32Array {
  const out = new Uint32Array(rows);
  for (let r = 0; r < rows; r++) {
    let best = 0;
    for (let i = 1; i < n; i++) if (x[r * n + i]! > x[r * n + best]!) best = i;
    out[r] = best;
  }
  return out;
}

/** scores (KV, capacity) updated in place at [h, slot0 + t] = fc2 · silu(fc1 · pre[t]) */
export function retainingRef(
  d: { T: number; W: number; KV: number; hidden: number; slot0: number; capacity: number },
  pre: Float32Array,
  fc1: Float32Array,
  fc2: Float32Array,
  scores: Float32Array,
): void {
  const { T, W, KV, hidden, slot0, capacity } = d;
  const h = new Float64Array(hidden);
  for (let t = 0; t < T; t++) {
    const a = rowOf(pre, t * W, W);
    for (let j = 0; j < hidden; j++) h[j] = silu(dot(a, fc1, j * W));
    for (let k = 0; k < KV; k++) scores[k * capacity + slot0 + t] = fr(dot(h, fc2, k * hidden));
  }
}
