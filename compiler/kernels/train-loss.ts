/**
 * Loss, its gradient, and the top-10% overlap metric of retaining-head training, per layer:
 *
 *   loss_l = c1 · Σ_{g,t} SmoothL1_β=1(pred[t,g] − label[g,t]) + c2 · Σ_{g, t<T−1} (pred[t,g] − pred[t+1,g])²
 *
 * with c1 = 1 / (layers·KV·T) (the mean over layers, heads and tokens) and c2 = λ / (KV·(T−1)) (the neighbour MSE's
 * mean within the layer; the trainer picks λ). Each (layer, head) writes its two sums into a row of `stats`
 * (layers·KV, 2 + blocks); trainReduce adds every row into the step's scalars, so the host reads 16 bytes a step.
 *
 * Overlap: token t is in a score's top k (k = ⌊T/10⌋) when fewer than k tokens beat it, ties going to the lower
 * index (exactly k members). O(T²) comparisons per head, staged through workgroup memory 256 tokens at a time.
 */
import { kernel, ro, rw, wgsl } from '../wgsl.js';
import type { Dispatch } from '../../runtime/gpu/runner.js';
import { assertDims, builtins } from './mm-common.js';

const WG = 256;

export interface LossDims {
  readonly T: number;
  readonly KV: number;
  /** offset of this layer's labels (KV, stride) in `labels` */
  readonly labelOff: number;
  readonly stride: number;
  /** first stats row of this layer (= layer·KV) and the row length */
  readonly statRow0: number;
  readonly srow: number;
  readonly c1: number;
  readonly c2: number;
}

/** ∂loss/∂pred (T, KV) and the layer's loss sums; one workgroup per KV head. */
export function trainLoss(d: LossDims, b: { pred: GPUBuffer; labels: GPUBuffer; dpred: GPUBuffer; stats: GPUBuffer }): Dispatch {
  const { T, KV, labelOff, stride, statRow0, srow } = d;
  assertDims('trainLoss', { T, KV, labelOff, stride, statRow0, srow });
  const spec = kernel({ op: 'train_loss' }, () => ({
    bindings: [
      ro('pred', 'array<f32>'), // (T, KV) predicted scores
      ro('labels', 'array<f32>'), // (layers, KV, stride) targets
      rw('dpred', 'array<f32>'), // (T, KV) ∂loss/∂pred
      rw('stats', 'array<f32>'), // (layers·KV, srow)
    ],
    params: [['T', 'u32'], ['KV', 'u32'], ['labelOff', 'u32'], ['stride', 'u32'], ['statRow0', 'u32'], ['srow', 'u32'], ['c1', 'f32'], ['c2', 'f32']],
    workgroupSize: [WG, 1, 1],
    body: wgsl`var<workgroup> r1: array<f32, ${WG}>;
var<workgroup> r2: array<f32, ${WG}>;
@compute @workgroup_size(${WG})
fn main(${builtins}) {
  let g = wid.x;
  let KV = params.KV;
  var s1 = 0.0;
  var s2 = 0.0;
  for (var t = lid; t < params.T; t += ${WG}u) {
    let p = pred[t * KV + g];
    let d = p - labels[params.labelOff + g * params.stride + t];
    let ad = abs(d);
    s1 += select(ad - 0.5, 0.5 * d * d, ad < 1.0);
    var gr = params.c1 * clamp(d, -1.0, 1.0);
    if (t + 1u < params.T) {
      let e = p - pred[(t + 1u) * KV + g];
      s2 += e * e;
      gr += 2.0 * params.c2 * e;
    }
    if (t > 0u) { gr -= 2.0 * params.c2 * (pred[(t - 1u) * KV + g] - p); }
    dpred[t * KV + g] = gr;
  }
  r1[lid] = s1;
  r2[lid] = s2;
  workgroupBarrier();
  for (var h = ${WG / 2}u; h > 0u; h >>= 1u) {
    if (lid < h) { r1[lid] += r1[lid + h]; r2[lid] += r2[lid + h]; }
    workgroupBarrier();
  }
  if (lid == 0u) {
    let row = (params.statRow0 + g) * params.srow;
    stats[row] = params.c1 * r1[0];
    stats[row + 1u] = params.c2 * r2[0];
  }
}`,
  }));
  return { kernel: spec, buffers: { ...b }, params: { T, KV, labelOff, stride, statRow0, srow, c1: d.c1, c2: d.c2 }, workgroups: [KV] };
}

/** Token blocks the overlap kernel writes per (layer, head): stats rows need 2 + this many columns. */
export function overlapBlocks(T: number): number {
  return Math.ceil(T / WG);
}

/** Per (layer, head, block of 256 tokens): how many tokens are in the top k of both pred and label. */
export function trainOverlap(
  d: { T: number; KV: number; k: number; labelOff: number; stride: number; statRow0: number; srow: number },
  b: { pred: GPUBuffer; labels: GPUBuffer; stats: GPUBuffer },
): Dispatch {
  const { T, KV, k, labelOff, stride, statRow0, srow } = d;
  assertDims('trainOverlap', { T, KV, k, labelOff, stride, statRow0, srow });
  if (2 + overlapBlocks(T) > srow) throw new Error(`trainOverlap: stats rows of ${srow} hold too few blocks for T=${T}`);
  const spec = kernel({ op: 'train_overlap' }, () => ({
    bindings: [
      ro('pred', 'array<f32>'), // (T, KV)
      ro('labels', 'array<f32>'), // (layers, KV, stride)
      rw('stats', 'array<f32>'), // (layers·KV, srow): columns 2.. get block counts
    ],
    params: [['T', 'u32'], ['KV', 'u32'], ['k', 'u32'], ['labelOff', 'u32'], ['stride', 'u32'], ['statRow0', 'u32'], ['srow', 'u32']],
    workgroupSize: [WG, 1, 1],
    body: wgsl`var<workgroup> ps: array<f32, ${WG}>;
var<workgroup> ls: array<f32, ${WG}>;
var<workgroup> cnt: array<u32, ${WG}>;
@compute @workgroup_size(${WG})
fn main(${builtins}) {
  let g = wid.y;
  let KV = params.KV;
  let lab0 = params.labelOff + g * params.stride;
  let t = wid.x * ${WG}u + lid;
  let live = t < params.T;
  var p = 0.0;
  var y = 0.0;
  if (live) { p = pred[t * KV + g]; y = labels[lab0 + t]; }
  var rp = 0u; // tokens ranked above t by pred
  var rl = 0u; // ... by label
  for (var u0 = 0u; u0 < params.T; u0 += ${WG}u) {
    let u = u0 + lid;
    if (u < params.T) { ps[lid] = pred[u * KV + g]; ls[lid] = labels[lab0 + u]; }
    workgroupBarrier();
    let n = min(${WG}u, params.T - u0);
    for (var i = 0u; i < n; i++) {
      let ui = u0 + i;
      rp += select(0u, 1u, ps[i] > p || (ps[i] == p && ui < t));
      rl += select(0u, 1u, ls[i] > y || (ls[i] == y && ui < t));
    }
    workgroupBarrier();
  }
  cnt[lid] = select(0u, 1u, live && rp < params.k && rl < params.k);
  workgroupBarrier();
  for (var h = ${WG / 2}u; h > 0u; h >>= 1u) {
    if (lid < h) { cnt[lid] += cnt[lid + h]; }
    workgroupBarrier();
  }
  if (lid == 0u) { stats[(params.statRow0 + g) * params.srow + 2u + wid.x] = f32(cnt[0]); }
}`,
  }));
  return { kernel: spec, buffers: { ...b }, params: { T, KV, k, labelOff, stride, statRow0, srow }, workgroups: [overlapBlocks(T), KV] };
}

/**
 * out (4) = [loss, overlap, smoothL1 part, neighbour part]: sums every stats row; overlap = Σ counts / (rows·k)
 * (0 when k = 0). Single workgroup; rows·(2 + blocks) values.
 */
export function trainReduce(d: { rows: number; srow: number; blocks: number; k: number }, b: { stats: GPUBuffer; out: GPUBuffer }): Dispatch {
  const { rows, srow, blocks, k } = d;
  assertDims('trainReduce', { rows, srow, blocks, k });
  const spec = kernel({ op: 'train_reduce' }, () => ({
    bindings: [
      ro('stats', 'array<f32>'), // (rows, srow)
      rw('out', 'array<f32>'), // (4) loss, overlap, smoothL1, neighbour
    ],
    params: [['rows', 'u32'], ['srow', 'u32'], ['blocks', 'u32'], ['k', 'u32']],
    workgroupSize: [WG, 1, 1],
    body: wgsl`var<workgroup> r: array<vec3<f32>, ${WG}>;
@compute @workgroup_size(${WG})
fn main(${builtins}) {
  var s = vec3<f32>(0.0);
  for (var row = lid; row < params.rows; row += ${WG}u) {
    let o = row * params.srow;
    s.x += stats[o];
    s.y += stats[o + 1u];
    for (var q = 0u; q < params.blocks; q++) { s.z += stats[o + 2u + q]; }
  }
  r[lid] = s;
  workgroupBarrier();
  for (var h = ${WG / 2}u; h > 0u; h >>= 1u) {
    if (lid < h) { r[lid] += r[lid + h]; }
    workgroupBarrier();
  }
  if (lid == 0u) {
    let tot = r[0];
    out[0] = tot.x + tot.y;
    out[1] = select(0.0, tot.z / f32(params.rows * params.k), params.k > 0u);
    out[2] = tot.x;
    out[3] = tot.y;
  }
}`,
  }));
  return { kernel: spec, buffers: { ...b }, params: { rows, srow, blocks, k }, workgroups: [1] };
}
