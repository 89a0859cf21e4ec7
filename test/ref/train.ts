/**
 * CPU reference of retaining-head training (f64 accumulation): head forward, the loss and its gradient, the
 * analytic backward, AdamW with value clipping, the attention-score labels and the top-k overlap metric.
 * Layouts match the kernels: pre (T, W), fc1 (hidden, W), fc2 (KV, hidden), h (T, hidden), pred (T, KV),
 * labels (KV, T).
 */

const sigmoid = (x: number) => 1 / (1 + Math.exp(-x));

export interface HeadForward {
  /** (T, hidden) fc1 outputs before silu */
  readonly h: Float64Array;
  /** (T, KV) */
  readonly pred: Float64Array;
}

export function headForward(pre: ArrayLike<number>, T: number, W: number, fc1: ArrayLike<number>, fc2: ArrayLike<number>, KV: number): HeadForward {
  const hid = fc1.length / W;
  const h = new Float64Array(T * hid);
  const pred = new Float64Array(T * KV);
  for (let t = 0; t < T; t++) {
    for (let j = 0; j < hid; j++) {
      let s = 0;
      for (let k = 0; k < W; k++) s += pre[t * W + k]! * fc1[j * W + k]!;
      h[t * hid + j] = s;
    }
    for (let g = 0; g < KV; g++) {
      let s = 0;
      for (let j = 0; j < hid; j++) {
        const x = h[t * hid + j]!;
        s += x * sigmoid(x) * fc2[g * hid + j]!;
      }
      pred[t * KV + g] = s;
    }
  }
  return { h, pred };
}

export interface LossParts {
  /** c1 · Σ SmoothL1 */
  readonly smooth: number;
  /** c2 · Σ (pred[t] − pred[t+1])² */
  readonly neighbour: number;
  /** (T, KV) ∂(smooth + neighbour)/∂pred */
  readonly dpred: Float64Array;
}

/** One layer's loss terms; labels (KV, stride) from offset 0. */
export function layerLoss(pred: ArrayLike<number>, labels: ArrayLike<number>, stride: number, T: number, KV: number, c1: number, c2: number): LossParts {
  let s1 = 0;
  let s2 = 0;
  const dpred = new Float64Array(T * KV);
  for (let g = 0; g < KV; g++) {
    for (let t = 0; t < T; t++) {
      const p = pred[t * KV + g]!;
      const d = p - labels[g * stride + t]!;
      const ad = Math.abs(d);
      s1 += ad < 1 ? 0.5 * d * d : ad - 0.5;
      let gr = c1 * Math.max(-1, Math.min(1, d));
      if (t + 1 < T) {
        const e = p - pred[(t + 1) * KV + g]!;
        s2 += e * e;
        gr += 2 * c2 * e;
      }
      if (t > 0) gr -= 2 * c2 * (pred[(t - 1) * KV + g]! - p);
      dpred[t * KV + g] = gr;
    }
  }
  return { smooth: c1 * s1, neighbour: c2 * s2, dpred };
}

/** ∂fc1 (hidden, W) and ∂fc2 (KV, hidden) from the kept h and ∂pred. */
export function headBackward(
  pre: ArrayLike<number>, T: number, W: number, h: Float64Array, dpred: ArrayLike<number>, fc2: ArrayLike<number>, KV: number,
): { gfc1: Float64Array; gfc2: Float64Array } {
  const hid = h.length / T;
  const gfc2 = new Float64Array(KV * hid);
  const dh = new Float64Array(T * hid);
  for (let t = 0; t < T; t++) {
    for (let j = 0; j < hid; j++) {
      const x = h[t * hid + j]!;
      const sg = sigmoid(x);
      let da = 0;
      for (let g = 0; g < KV; g++) {
        gfc2[g * hid + j] += dpred[t * KV + g]! * x * sg;
        da += dpred[t * KV + g]! * fc2[g * hid + j]!;
      }
      dh[t * hid + j] = da * sg * (1 + x * (1 - sg));
    }
  }
  const gfc1 = new Float64Array(hid * W);
  for (let t = 0; t < T; t++) {
    for (let j = 0; j < hid; j++) {
      const d = dh[t * hid + j]!;
      if (d === 0) continue;
      for (let k = 0; k < W; k++) gfc1[j * W + k] += d * pre[t * W + k]!;
    }
  }
  return { gfc1, gfc2 };
}

/** The loss of one head as a function of its weights (finite-difference checks of headBackward). */
export function headLoss(
  pre: ArrayLike<number>, T: number, W: number, fc1: ArrayLike<number>, fc2: ArrayLike<number>, KV: number,
  labels: ArrayLike<number>, c1: number, c2: number,
): number {
  const { pred } = headForward(pre, T, W, fc1, fc2, KV);
  const l = layerLoss(pred, labels, T, T, KV, c1, c2);
  return l.smooth + l.neighbour;
}

export interface AdamState {
  p: Float64Array;
  m: Float64Array;
  v: Float64Array;
}

/** torch.optim.AdamW after clip_grad_value_ (in place on state). */
export function adamwStep(
  s: AdamState, grad: ArrayLike<number>,
  o: { lr: number; beta1: number; beta2: number; eps: number; weightDecay: number; clip: number; step: number },
): void {
  const bc1 = 1 - o.beta1 ** o.step;
  const bc2 = 1 - o.beta2 ** o.step;
  for (let i = 0; i < s.p.length; i++) {
    const g = Math.max(-o.clip, Math.min(o.clip, grad[i]!));
    s.p[i] *= 1 - o.lr * o.weightDecay;
    s.m[i] = o.beta1 * s.m[i]! + (1 - o.beta1) * g;
    s.v[i] = o.beta2 * s.v[i]! + (1 - o.beta2) * g * g;
    s.p[i] -= (o.lr / bc1) * s.m[i]! / (Math.sqrt(s.v[i]!) / Math.sqrt(bc2) + o.eps);
  }
}

/** HF rotate_half RoPE of one head vector (rotary dims first) at `pos`, table (positions, rot/2) (cos, sin). */
function rotate(x: ArrayLike<number>, off: number, D: number, rot: number, table: ArrayLike<number>, pos: number): Float64Array {
  const half = rot / 2;
  const out = new Float64Array(D);
  for (let i = 0; i < D; i++) out[i] = x[off + i]!;
  for (let i = 0; i < half; i++) {
    const c = table[(pos * half + i) * 2]!;
    const s = table[(pos * half + i) * 2 + 1]!;
    const a = x[off + i]!;
    const b = x[off + i + half]!;
    out[i] = a * c - b * s;
    out[i + half] = b * c + a * s;
  }
  return out;
}

/** labels (KV, Tp): max over answer rows and the group's query heads of RoPE'd q·k / √D, from pre (Tp+Ta, W). */
export function labelsRef(
  pre: ArrayLike<number>, Tp: number, Ta: number, H: number, KV: number, D: number, rot: number, table: ArrayLike<number>,
): Float64Array {
  const W = (H + 2 * KV) * D;
  const grp = H / KV;
  const out = new Float64Array(KV * Tp);
  for (let g = 0; g < KV; g++) {
    const qs: Float64Array[] = [];
    for (let a = 0; a < Ta; a++) for (let j = 0; j < grp; j++) qs.push(rotate(pre, (Tp + a) * W + (g * grp + j) * D, D, rot, table, Tp + a));
    for (let t = 0; t < Tp; t++) {
      const k = rotate(pre, t * W + (H + g) * D, D, rot, table, t);
      let best = -Infinity;
      for (const q of qs) {
        let s = 0;
        for (let i = 0; i < D; i++) s += q[i]! * k[i]!;
        best = Math.max(best, s);
      }
      out[g * Tp + t] = best / Math.sqrt(D);
    }
  }
  return out;
}

/** Indices of the top k of x (ties to the lower index), as a set. */
export function topK(x: ArrayLike<number>, k: number): Set<number> {
  const idx = Array.from({ length: x.length }, (_, i) => i);
  idx.sort((a, b) => x[b]! - x[a]! || a - b);
  return new Set(idx.slice(0, k));
}

/** Σ over heads of |topk(pred[:, g]) ∩ topk(label[g])|. */
export function overlapRef(pred: ArrayLike<number>, labels: ArrayLike<number>, stride: number, T: number, KV: number, k: number): number {
  let n = 0;
  for (let g = 0; g < KV; g++) {
    const p = Array.from({ length: T }, (_, t) => pred[t * KV + g]!);
    const l = Array.from({ length: T }, (_, t) => labels[g * stride + t]!);
    const a = topK(p, k);
    for (const i of topK(l, k)) if (a.has(i)) n++;
  }
  return n;
}
