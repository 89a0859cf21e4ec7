/**
 * Training targets of the retaining heads, and the capture of the rows they are computed from.
 *
 *   label[l, g, t] = max over answer rows a (positions Tp + a) and query heads h of group g of
 *                    RoPE(q[a, h], Tp + a) · RoPE(k[t, g], t) · scale          (t < Tp, scale = 1/√head_dim)
 *
 * q and k come from the layer's captured pre-RoPE concat(Q, K, V) rows (N = Tp + Ta, W); the rotation is HF's
 * rotate_half over the first rotaryDim dimensions (i pairs with i + rotary/2), cos/sin from the f32 table
 * (positions, rotary/2) that attention uses. A workgroup holds 64 prompt tokens of one KV head; the (answer row,
 * query head) pairs of the group go through workgroup memory 8 at a time, already rotated, and each thread keeps
 * its key's 8 dot products in registers while it streams the key once per chunk.
 */
import { kernel, ro, rw, wgsl } from '../wgsl.js';
import type { Dispatch } from '../../runtime/gpu/runner.js';
import { assertDims, builtins, foldGrid, linearWg } from './mm-common.js';

const TB = 64; // prompt tokens per workgroup
const QC = 8; // (answer row, head) pairs per chunk
const MAX_D = 256;

export interface LabelDims {
  readonly Tp: number;
  readonly Ta: number;
  readonly numHeads: number;
  readonly numKvHeads: number;
  readonly headDim: number;
  readonly rotaryDim: number;
  /** offset of this layer's (KV, stride) block in `labels` */
  readonly labelOff: number;
  readonly stride: number;
}

export function trainLabels(d: LabelDims, b: { pre: GPUBuffer; rope: GPUBuffer; labels: GPUBuffer }): Dispatch {
  const { Tp, Ta, numHeads: H, numKvHeads: KV, headDim: D, rotaryDim: R, labelOff, stride } = d;
  assertDims('trainLabels', { Tp, Ta, H, KV, D, R, labelOff, stride });
  if (Tp === 0 || Ta === 0) throw new Error('trainLabels: needs prompt and answer tokens');
  if (H % KV !== 0 || R % 2 !== 0 || R > D) throw new Error(`trainLabels: bad heads ${H}/${KV} or rotary ${R} of ${D}`);
  if (Tp > stride) throw new Error(`trainLabels: ${Tp} prompt tokens exceed the label stride ${stride}`);
  if (D > MAX_D) throw new Error(`trainLabels: head_dim ${D} > ${MAX_D}`);
  // head_dim and rotary are params, not constants: one compiled variant serves every model (constant trip counts
  // made the CPU driver's compiler unroll for seconds per variant)
  const spec = kernel({ op: 'train_labels' }, () => ({
    bindings: [
      ro('pre', 'array<f32>'), // (Tp + Ta, W) pre-RoPE concat(Q, K, V) of the layer
      ro('rope', 'array<vec2<f32>>'), // (positions, rotary/2) (cos, sin)
      rw('labels', 'array<f32>'), // (layers, KV, stride)
    ],
    params: [
      ['Tp', 'u32'], ['P', 'u32'], ['grp', 'u32'], ['H', 'u32'], ['W', 'u32'], ['labelOff', 'u32'], ['stride', 'u32'], ['scale', 'f32'],
      ['D', 'u32'], ['HALF', 'u32'], ['ROT', 'u32'],
    ],
    workgroupSize: [TB, 1, 1],
    body: wgsl`const QC = ${QC}u;
var<workgroup> qs: array<f32, ${QC * MAX_D}>; // (QC, D) rotated queries of the chunk

@compute @workgroup_size(${TB})
fn main(${builtins}) {
  let D = params.D;
  let HALF = params.HALF;
  let ROT = params.ROT;
  let g = wid.y;
  let t = wid.x * ${TB}u + lid;
  let live = t < params.Tp;
  let kb = select(0u, t * params.W + (params.H + g) * D, live);
  var best = -3.0e38; // every prompt token sees at least one pair
  for (var p0 = 0u; p0 < params.P; p0 += QC) {
    for (var e = lid; e < QC * D; e += ${TB}u) {
      let p = p0 + e / D;
      let dd = e % D;
      var v = 0.0;
      if (p < params.P) {
        let row = params.Tp + p / params.grp; // answer row = its position
        let qb = row * params.W + (g * params.grp + p % params.grp) * D;
        if (dd < HALF) {
          let cs = rope[row * HALF + dd];
          v = pre[qb + dd] * cs.x - pre[qb + dd + HALF] * cs.y;
        } else if (dd < ROT) {
          let cs = rope[row * HALF + dd - HALF];
          v = pre[qb + dd] * cs.x + pre[qb + dd - HALF] * cs.y;
        } else {
          v = pre[qb + dd];
        }
      }
      qs[e] = v;
    }
    workgroupBarrier();
    if (live) {
      var acc: array<f32, ${QC}>;
      for (var q = 0u; q < QC; q++) { acc[q] = 0.0; } // explicit: some drivers keep the previous chunk's values
      for (var i = 0u; i < HALF; i++) {
        let cs = rope[t * HALF + i];
        let k1 = pre[kb + i];
        let k2 = pre[kb + i + HALF];
        let r1 = k1 * cs.x - k2 * cs.y;
        let r2 = k2 * cs.x + k1 * cs.y;
        for (var q = 0u; q < QC; q++) { acc[q] += r1 * qs[q * D + i] + r2 * qs[q * D + i + HALF]; }
      }
      for (var i = ROT; i < D; i++) {
        let kv = pre[kb + i];
        for (var q = 0u; q < QC; q++) { acc[q] += kv * qs[q * D + i]; }
      }
      for (var q = 0u; q < QC; q++) {
        if (p0 + q < params.P) { best = max(best, acc[q]); }
      }
    }
    workgroupBarrier();
  }
  if (live) { labels[params.labelOff + g * params.stride + t] = best * params.scale; }
}`,
  }));
  const grp = H / KV;
  return {
    kernel: spec,
    buffers: { ...b },
    params: { Tp, P: Ta * grp, grp, H, W: (H + 2 * KV) * D, labelOff, stride, scale: 1 / Math.sqrt(D), D, HALF: R / 2, ROT: R },
    workgroups: [Math.ceil(Tp / TB), KV],
  };
}

/** dst rows [row0, row0 + T) = src rows [0, T), rows of W f32 (a layer's pre rows out of a reused buffer). */
export function captureRows(d: { T: number; W: number; row0: number }, b: { src: GPUBuffer; dst: GPUBuffer }): Dispatch {
  const { T, W, row0 } = d;
  assertDims('captureRows', { T, W, row0 });
  const WG = 256;
  const spec = kernel({ op: 'train_capture' }, () => ({
    bindings: [
      ro('src', 'array<f32>'), // (T, W) the step's rows
      rw('dst', 'array<f32>'), // (rows, W) the sample's rows
    ],
    params: [['n', 'u32'], ['off', 'u32']],
    workgroupSize: [WG, 1, 1],
    body: wgsl`@compute @workgroup_size(${WG})
fn main(${builtins}) {
  let i = ${linearWg} * ${WG}u + lid;
  if (i < params.n) { dst[params.off + i] = src[i]; }
}`,
  }));
  return { kernel: spec, buffers: { ...b }, params: { n: T * W, off: row0 * W }, workgroups: foldGrid(Math.ceil((T * W) / WG)) };
}
