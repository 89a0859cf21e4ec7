/**
 * One AdamW step over a flat f32 tensor, as torch.optim.AdamW does it (decoupled weight decay first), after
 * clamping each gradient element to [−clip, clip] (torch's clip_grad_value_):
 *
 *   g  = clamp(grad, −clip, clip)
 *   p *= 1 − lr·wd
 *   m  = β1·m + (1 − β1)·g            v = β2·v + (1 − β2)·g²
 *   p -= (lr / bc1) · m / (√v / √bc2 + ε)        bc1 = 1 − β1^step, bc2 = 1 − β2^step (host, per step)
 */
import { kernel, ro, rw, wgsl } from '../wgsl.js';
import type { Dispatch } from '../../runtime/gpu/runner.js';
import { assertDims, builtins, foldGrid, linearWg } from './mm-common.js';

export interface AdamWHyper {
  readonly lr: number;
  readonly beta1: number;
  readonly beta2: number;
  readonly eps: number;
  readonly weightDecay: number;
  readonly clip: number;
  /** 1-based step count (bias corrections) */
  readonly step: number;
}

const WG = 256;

export function adamw(d: { n: number } & AdamWHyper, b: { p: GPUBuffer; m: GPUBuffer; v: GPUBuffer; grad: GPUBuffer }): Dispatch {
  const { n } = d;
  assertDims('adamw', { n, step: d.step });
  if (d.step < 1) throw new Error('adamw: step counts from 1');
  const spec = kernel({ op: 'train_adamw' }, () => ({
    bindings: [
      rw('p', 'array<f32>'), // (n) parameters
      rw('m', 'array<f32>'), // (n) first moment
      rw('v', 'array<f32>'), // (n) second moment
      ro('grad', 'array<f32>'), // (n) gradient
    ],
    params: [['n', 'u32'], ['lr', 'f32'], ['b1', 'f32'], ['b2', 'f32'], ['eps', 'f32'], ['decay', 'f32'], ['clip', 'f32'], ['stepSize', 'f32'], ['bc2s', 'f32']],
    workgroupSize: [WG, 1, 1],
    body: wgsl`@compute @workgroup_size(${WG})
fn main(${builtins}) {
  let i = ${linearWg} * ${WG}u + lid;
  if (i >= params.n) { return; }
  let g = clamp(grad[i], -params.clip, params.clip);
  let mi = params.b1 * m[i] + (1.0 - params.b1) * g;
  let vi = params.b2 * v[i] + (1.0 - params.b2) * g * g;
  m[i] = mi;
  v[i] = vi;
  let pi = p[i] * params.decay;
  p[i] = pi - params.stepSize * mi / (sqrt(vi) / params.bc2s + params.eps);
}`,
  }));
  const bc1 = 1 - Math.pow(d.beta1, d.step);
  const bc2 = 1 - Math.pow(d.beta2, d.step);
  return {
    kernel: spec,
    buffers: { ...b },
    params: { n, lr: d.lr, b1: d.beta1, b2: d.beta2, eps: d.eps, decay: 1 - d.lr * d.weightDecay, clip: d.clip, stepSize: d.lr / bc1, bc2s: Math.sqrt(bc2) },
    workgroups: foldGrid(Math.ceil(n / WG)),
  };
}
