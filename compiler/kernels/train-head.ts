/**
 * The small parts of a retaining head's forward and backward (the two big matmuls are train-matmul.ts):
 *
 *   forward   h = pre · fc1ᵀ (train-matmul 'nt'), kept for the backward
 *             pred[t, g] = Σ_j silu(h[t, j]) · fc2[g, j]                              headPred
 *   backward  ∂fc2[g, j] = Σ_t ∂pred[t, g] · silu(h[t, j])                            headGradFc2
 *             dh[t, j]   = (Σ_g ∂pred[t, g] · fc2[g, j]) · silu'(h[t, j])  (in place)  headGradHidden
 *             ∂fc1       = dhᵀ · pre (train-matmul 'tn')
 * silu(x) = x·σ(x), silu'(x) = σ(x)·(1 + x·(1 − σ(x))). All f32.
 */
import { kernel, ro, rw, wgsl } from '../wgsl.js';
import type { Dispatch } from '../../runtime/gpu/runner.js';
import { assertDims, builtins, foldGrid, linearWg } from './mm-common.js';

const WG = 256;

const SIGMOID = 'fn sigmoid(x: f32) -> f32 { return 1.0 / (1.0 + exp(-x)); }';

/** pred (T, KV) from the kept pre-activations h (T, hidden); one thread per (token, KV head). */
export function headPred(d: { T: number; KV: number; hidden: number }, b: { h: GPUBuffer; fc2: GPUBuffer; pred: GPUBuffer }): Dispatch {
  const { T, KV, hidden } = d;
  assertDims('headPred', { T, KV, hidden });
  const spec = kernel({ op: 'train_head_pred' }, () => ({
    bindings: [
      ro('h', 'array<f32>'), // (T, hidden) fc1 outputs before silu
      ro('fc2', 'array<f32>'), // (KV, hidden)
      rw('pred', 'array<f32>'), // (T, KV)
    ],
    params: [['n', 'u32'], ['KV', 'u32'], ['HID', 'u32']],
    workgroupSize: [WG, 1, 1],
    body: wgsl`${SIGMOID}
@compute @workgroup_size(${WG})
fn main(${builtins}) {
  let i = ${linearWg} * ${WG}u + lid;
  if (i >= params.n) { return; }
  let t = i / params.KV;
  let g = i % params.KV;
  var s = 0.0;
  for (var j = 0u; j < params.HID; j++) {
    let x = h[t * params.HID + j];
    s += x * sigmoid(x) * fc2[g * params.HID + j];
  }
  pred[i] = s;
}`,
  }));
  return { kernel: spec, buffers: { ...b }, params: { n: T * KV, KV, HID: hidden }, workgroups: foldGrid(Math.ceil((T * KV) / WG)) };
}

const JL = 64; // hidden units per workgroup
const TS = WG / JL; // token slices per workgroup, summed in workgroup memory

/**
 * ∂fc2 (KV, hidden) = Σ_t ∂pred[t, g] · silu(h[t, j]). A workgroup owns 64 hidden units; its 4 token slices each
 * sum a quarter of the tokens in registers (all KV heads at once), then a workgroup reduction adds the slices.
 */
export function headGradFc2(
  d: { T: number; KV: number; hidden: number },
  b: { h: GPUBuffer; dpred: GPUBuffer; gfc2: GPUBuffer },
): Dispatch {
  const { T, KV, hidden } = d;
  assertDims('headGradFc2', { T, KV, hidden });
  const spec = kernel({ op: 'train_head_gfc2', kv: KV }, () => ({
    bindings: [
      ro('h', 'array<f32>'), // (T, hidden)
      ro('dpred', 'array<f32>'), // (T, KV) ∂loss/∂pred
      rw('gfc2', 'array<f32>'), // (KV, hidden)
    ],
    params: [['T', 'u32'], ['HID', 'u32']],
    workgroupSize: [WG, 1, 1],
    body: wgsl`${SIGMOID}
const KV = ${KV}u;
var<workgroup> red: array<f32, ${WG}>; // (TS, JL) partial sums of one head
@compute @workgroup_size(${WG})
fn main(${builtins}) {
  let jl = lid % ${JL}u;
  let s = lid / ${JL}u;
  let j = wid.x * ${JL}u + jl;
  var acc: array<f32, ${KV}>;
  if (j < params.HID) {
    for (var t = s; t < params.T; t += ${TS}u) {
      let x = h[t * params.HID + j];
      let a = x * sigmoid(x);
      for (var g = 0u; g < KV; g++) { acc[g] += dpred[t * KV + g] * a; }
    }
  }
  for (var g = 0u; g < KV; g++) {
    red[lid] = acc[g];
    workgroupBarrier();
    if (s == 0u && j < params.HID) {
      var sum = 0.0;
      for (var q = 0u; q < ${TS}u; q++) { sum += red[q * ${JL}u + jl]; }
      gfc2[g * params.HID + j] = sum;
    }
    workgroupBarrier();
  }
}`,
  }));
  return { kernel: spec, buffers: { ...b }, params: { T, HID: hidden }, workgroups: [Math.ceil(hidden / JL)] };
}

/** h (T, hidden) is overwritten by dh = (∂pred · fc2) ⊙ silu'(h); run after headGradFc2, which reads h. */
export function headGradHidden(
  d: { T: number; KV: number; hidden: number },
  b: { h: GPUBuffer; dpred: GPUBuffer; fc2: GPUBuffer },
): Dispatch {
  const { T, KV, hidden } = d;
  assertDims('headGradHidden', { T, KV, hidden });
  const spec = kernel({ op: 'train_head_dh', kv: KV }, () => ({
    bindings: [
      rw('h', 'array<f32>'), // (T, hidden): h in, dh out
      ro('dpred', 'array<f32>'), // (T, KV)
      ro('fc2', 'array<f32>'), // (KV, hidden)
    ],
    params: [['n', 'u32'], ['HID', 'u32']],
    workgroupSize: [WG, 1, 1],
    body: wgsl`${SIGMOID}
const KV = ${KV}u;
@compute @workgroup_size(${WG})
fn main(${builtins}) {
  let i = ${linearWg} * ${WG}u + lid;
  if (i >= params.n) { return; }
  let t = i / params.HID;
  let j = i % params.HID;
  var da = 0.0;
  for (var g = 0u; g < KV; g++) { da += dpred[t * KV + g] * fc2[g * params.HID + j]; }
  let x = h[i];
  let sg = sigmoid(x);
  h[i] = da * sg * (1.0 + x * (1.0 - sg));
}`,
  }));
  return { kernel: spec, buffers: { ...b }, params: { n: T * hidden, HID: hidden }, workgroups: foldGrid(Math.ceil((T * hidden) / WG)) };
}
