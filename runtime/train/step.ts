/**
 * The GPU work of one training step, after the forward has captured every layer's pre-RoPE rows: labels of all
 * layers, then per layer the head forward (keeping h), loss + ∂pred, overlap metric, backward and AdamW; finally
 * the reduction to the step's scalars. All layers train jointly (each its own head): the loss is a sum of
 * per-layer terms, so each head's gradient only involves its own layer and the layers can run one after another
 * through the same scratch buffers.
 *
 * Loss, as the official train.py computes it:
 *   mean over (layer, KV head, token) of SmoothL1(pred − label)
 *   + λ · Σ_layers mean over (KV head, t) of (pred[t] − pred[t+1])²     (λ = 0.0025; the per-layer neighbour MSE
 *                                                                      is added up over layers, never divided)
 */
import { adamw, type AdamWHyper } from '../../compiler/kernels/train-adamw.js';
import { headGradFc2, headGradHidden, headPred } from '../../compiler/kernels/train-head.js';
import { trainLabels } from '../../compiler/kernels/train-labels.js';
import { overlapBlocks, trainLoss, trainOverlap, trainReduce } from '../../compiler/kernels/train-loss.js';
import { trainMatmul } from '../../compiler/kernels/train-matmul.js';
import type { Dispatch, GpuRunner } from '../gpu/runner.js';
import type { GpuHeads } from './heads.js';

export interface ModelDims {
  readonly layers: number;
  readonly numHeads: number;
  readonly numKvHeads: number;
  readonly headDim: number;
  readonly rotaryDim: number;
  readonly hidden: number;
}

/** Scratch of the step, sized for the longest sample (`maxTokens` rows). */
export class StepBuffers {
  readonly labels: GPUBuffer; // (layers, KV, maxTokens) f32 targets
  readonly h: GPUBuffer; // (maxTokens, hidden) fc1 outputs, then dh
  readonly pred: GPUBuffer; // (maxTokens, KV)
  readonly dpred: GPUBuffer; // (maxTokens, KV) ∂loss/∂pred
  readonly gfc1: GPUBuffer; // (hidden, W)
  readonly gfc2: GPUBuffer; // (KV, hidden)
  readonly stats: GPUBuffer; // (layers·KV, srow): loss sums, then overlap counts per token block
  readonly out: GPUBuffer; // (4) loss, overlap, smoothL1 part, neighbour part
  readonly srow: number;

  constructor(readonly runner: GpuRunner, readonly d: ModelDims, readonly maxTokens: number) {
    const KV = d.numKvHeads;
    const W = (d.numHeads + 2 * KV) * d.headDim;
    this.srow = 2 + overlapBlocks(maxTokens);
    this.labels = runner.createBuffer(d.layers * KV * maxTokens * 4, 'train.labels');
    this.h = runner.createBuffer(maxTokens * d.hidden * 4, 'train.h');
    this.pred = runner.createBuffer(maxTokens * KV * 4, 'train.pred');
    this.dpred = runner.createBuffer(maxTokens * KV * 4, 'train.dpred');
    this.gfc1 = runner.createBuffer(d.hidden * W * 4, 'train.gfc1');
    this.gfc2 = runner.createBuffer(KV * d.hidden * 4, 'train.gfc2');
    this.stats = runner.createBuffer(d.layers * KV * this.srow * 4, 'train.stats');
    this.out = runner.createBuffer(16, 'train.out');
  }

  release(): void {
    for (const b of [this.labels, this.h, this.pred, this.dpred, this.gfc1, this.gfc2, this.stats, this.out]) this.runner.destroy(b);
  }
}

export interface StepInput {
  /** prompt tokens (labelled) and answer tokens (their queries define the labels) */
  readonly Tp: number;
  readonly Ta: number;
  /** per layer (≥ Tp + Ta, W) captured pre-RoPE rows */
  readonly pre: readonly GPUBuffer[];
  /** (positions ≥ Tp + Ta, rotary/2) rope table */
  readonly rope: GPUBuffer;
  /** AdamW settings of this optimizer step (lr already scheduled) */
  readonly adam: AdamWHyper;
  /** weight of the neighbour MSE (0.0025) */
  readonly neighbour: number;
  /** false: loss and metric only (no backward, no update) */
  readonly update?: boolean;
}

/** Share of tokens whose top set the overlap metric compares. */
export const TOP_FRACTION = 0.1;

export function trainStepDispatches(d: ModelDims, heads: GpuHeads, b: StepBuffers, s: StepInput): Dispatch[] {
  const { Tp, Ta } = s;
  const KV = d.numKvHeads;
  const W = (d.numHeads + 2 * KV) * d.headDim;
  const hid = d.hidden;
  const stride = b.maxTokens;
  if (Tp + Ta > stride) throw new Error(`sample of ${Tp + Ta} tokens exceeds ${stride}`);
  const k = Math.floor(TOP_FRACTION * Tp);
  const c1 = 1 / (d.layers * KV * Tp);
  const c2 = Tp > 1 ? s.neighbour / (KV * (Tp - 1)) : 0; // no neighbours in a one-token prompt
  const ds: Dispatch[] = [];
  for (let l = 0; l < d.layers; l++) {
    ds.push(trainLabels({ Tp, Ta, numHeads: d.numHeads, numKvHeads: KV, headDim: d.headDim, rotaryDim: d.rotaryDim, labelOff: l * KV * stride, stride },
      { pre: s.pre[l]!, rope: s.rope, labels: b.labels }));
  }
  const dims = { T: Tp, KV, hidden: hid };
  for (let l = 0; l < d.layers; l++) {
    const h = heads.layers[l]!;
    const ld = { T: Tp, KV, labelOff: l * KV * stride, stride, statRow0: l * KV, srow: b.srow };
    ds.push(
      trainMatmul({ layout: 'nt' }, { M: Tp, N: hid, K: W }, { a: s.pre[l]!, b: h.fc1, c: b.h }),
      headPred(dims, { h: b.h, fc2: h.fc2, pred: b.pred }),
      trainLoss({ ...ld, c1, c2 }, { pred: b.pred, labels: b.labels, dpred: b.dpred, stats: b.stats }),
      trainOverlap({ ...ld, k }, { pred: b.pred, labels: b.labels, stats: b.stats }),
    );
    if (s.update === false) continue;
    ds.push(
      headGradFc2(dims, { h: b.h, dpred: b.dpred, gfc2: b.gfc2 }),
      headGradHidden(dims, { h: b.h, dpred: b.dpred, fc2: h.fc2 }), // after ∂fc2 (which reads h), before fc2 moves
      trainMatmul({ layout: 'tn' }, { M: hid, N: W, K: Tp }, { a: b.h, b: s.pre[l]!, c: b.gfc1 }),
      adamw({ n: hid * W, ...s.adam }, { p: h.fc1, m: h.m1, v: h.v1, grad: b.gfc1 }),
      adamw({ n: KV * hid, ...s.adam }, { p: h.fc2, m: h.m2, v: h.v2, grad: b.gfc2 }),
    );
  }
  ds.push(trainReduce({ rows: d.layers * KV, srow: b.srow, blocks: overlapBlocks(Tp), k }, { stats: b.stats, out: b.out }));
  return ds;
}
