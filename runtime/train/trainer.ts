/**
 * Retaining-head training on a frozen backbone (the Locret recipe). Per sample:
 *
 *   1. forward over prompt + answer with the full cache (policy 'full', no eviction), in chunks so activations stay
 *      bounded; the graph carries the heads (withHeads) and an `after` hook copies each layer's pre-RoPE
 *      concat(Q, K, V) rows out of the buffer the next layer reuses into this trainer's per-layer buffers
 *   2. on the GPU (step.ts): labels, head forward/backward, AdamW with value clipping, loss and overlap metric
 *   3. read back 16 bytes: loss and metric
 *
 * Optimizer: torch.optim.AdamW as the official train.py builds it (betas 0.9/0.95, eps 1e-8, and torch's default
 * weight decay 0.01, which that script does not override), clip_grad_value_ 0.5, linear warm-up over the first
 * 2/3 of the steps then linear decay (schedule.ts).
 */
import { RETAINING_HIDDEN, qkvWidth, type ModelConfig } from '../../ir/config.js';
import type { NodeOf } from '../../ir/ops.js';
import { captureRows } from '../../compiler/kernels/train-labels.js';
import type { Dispatch, GpuRunner } from '../gpu/runner.js';
import { ropeTable, useLongFactors } from '../rope.js';
import { Session } from '../session.js';
import type { GpuWeight } from '../weights.js';
import type { CheckpointMeta } from './checkpoint.js';
import type { TrainSample } from './data.js';
import { GpuHeads, headDimsOf, initHeads, type HeadDims, type HeadTensors } from './heads.js';
import { lrAt } from './schedule.js';
import { StepBuffers, trainStepDispatches, type ModelDims } from './step.js';

export interface TrainOptions {
  readonly steps: number;
  readonly lr: number;
  readonly maxTokens: number;
  readonly seed: number;
  /** forward chunk (rows per submission) */
  readonly chunk?: number;
  readonly beta1?: number;
  readonly beta2?: number;
  readonly eps?: number;
  readonly weightDecay?: number;
  readonly clip?: number;
  readonly neighbour?: number;
}

export const TRAIN_DEFAULTS = { lr: 5e-4, maxTokens: 4096, chunk: 512, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.01, clip: 0.5, neighbour: 0.0025 };

export interface StepResult {
  readonly loss: number;
  /** mean top-10% overlap of predicted and label scores over layers and heads */
  readonly overlap: number;
  readonly smoothL1: number;
  readonly neighbour: number;
  readonly lr: number;
  readonly tokens: number;
}

export class HeadTrainer {
  readonly heads: GpuHeads;
  readonly dims: ModelDims;
  readonly headDims: HeadDims;
  /** optimizer steps taken */
  step = 0;
  private readonly bufs: StepBuffers;
  private readonly pre: GPUBuffer[]; // per layer (maxTokens, W) pre-RoPE rows of the current sample
  private readonly session: Session;
  private rope: { buf: GPUBuffer; long: boolean } | null = null;
  private cursor = 0; // first row of the forward step being recorded
  private rows = 0; // rows of the current sample

  constructor(
    readonly runner: GpuRunner,
    readonly config: ModelConfig,
    backbone: ReadonlyMap<string, GpuWeight>,
    readonly opts: TrainOptions,
    init?: { tensors: HeadTensors; step: number },
  ) {
    const c = config;
    this.dims = { layers: c.numLayers, numHeads: c.numHeads, numKvHeads: c.numKvHeads, headDim: c.headDim, rotaryDim: c.rope.rotaryDim, hidden: RETAINING_HIDDEN };
    const W = qkvWidth(c);
    this.headDims = headDimsOf(c);
    this.heads = new GpuHeads(runner, this.headDims, init?.tensors ?? initHeads(this.headDims, opts.seed));
    this.step = init?.step ?? 0;
    this.bufs = new StepBuffers(runner, this.dims, opts.maxTokens);
    this.pre = Array.from({ length: c.numLayers }, (_, l) => runner.createBuffer(opts.maxTokens * W * 4, `train.pre${l}`));
    // the backbone as loaded, with this trainer's heads (f32 master weights, updated in place) as L{i}.fc1/fc2
    const weights = new Map(backbone);
    for (const [k, v] of this.heads.asWeights()) weights.set(k, v);
    const chunk = Math.min(opts.chunk ?? TRAIN_DEFAULTS.chunk, opts.maxTokens);
    this.session = new Session(runner, c, weights, {
      policy: 'full', budget: opts.maxTokens, chunk, stabilizer: 0, positions: 'original', maxNew: 1, withHeads: true,
      after: (n, plan) => (n.op === 'retaining_head' ? this.capture(n, plan.output(n.pre)) : []),
    });
  }

  private capture(n: NodeOf<'retaining_head'>, src: GPUBuffer): Dispatch[] {
    const chunk = this.session.opts.chunk;
    const T = Math.min(chunk, this.rows - this.cursor);
    return [captureRows({ T, W: this.headDims.W, row0: this.cursor }, { src, dst: this.pre[n.layer]! })];
  }

  private ropeFor(rows: number): GPUBuffer {
    const long = useLongFactors(this.config.rope, rows - 1);
    if (this.rope?.long === long) return this.rope.buf;
    if (this.rope) this.runner.destroy(this.rope.buf);
    const buf = this.runner.upload(ropeTable(this.config.rope, this.opts.maxTokens, long), 'train.rope'); // (maxTokens, rotary/2) vec2
    this.rope = { buf, long };
    return buf;
  }

  /** One optimizer step on one sample (`update: false`: only its loss and metric under the current heads). */
  async train(sample: TrainSample, mode: { update?: boolean } = {}): Promise<StepResult> {
    const update = mode.update ?? true;
    const { ids, promptLen: Tp } = sample;
    const Ta = ids.length - Tp;
    if (Tp < 1 || Ta < 1) throw new Error(`a training sample needs prompt and answer tokens (got ${Tp} + ${Ta})`);
    if (ids.length > this.opts.maxTokens) throw new Error(`sample of ${ids.length} tokens exceeds --max-tokens ${this.opts.maxTokens}`);
    this.rows = ids.length;
    this.cursor = 0;
    const chunk = this.session.opts.chunk;
    // prefill records each chunk's dispatches (our capture included) before submitting it, then reports the step
    await this.session.prefill(ids, 0, (done) => (this.cursor = done * chunk));
    const o = this.opts;
    const D = TRAIN_DEFAULTS;
    const lr = lrAt(this.step, o.steps, o.lr);
    const adam = { lr, beta1: o.beta1 ?? D.beta1, beta2: o.beta2 ?? D.beta2, eps: o.eps ?? D.eps, weightDecay: o.weightDecay ?? D.weightDecay, clip: o.clip ?? D.clip, step: this.step + 1 };
    this.runner.run(trainStepDispatches(this.dims, this.heads, this.bufs, { Tp, Ta, pre: this.pre, rope: this.ropeFor(ids.length), adam, neighbour: o.neighbour ?? D.neighbour, update }));
    const out = await this.runner.readF32(this.bufs.out, 4);
    if (update) this.step++;
    return { loss: out[0]!, overlap: Math.floor(0.1 * Tp) > 0 ? out[1]! : NaN, smoothL1: out[2]!, neighbour: out[3]!, lr, tokens: ids.length };
  }

  checkpointMeta(data: string): CheckpointMeta {
    return { step: this.step, steps: this.opts.steps, seed: this.opts.seed, lr: this.opts.lr, maxTokens: this.opts.maxTokens, data };
  }

  release(): void {
    this.session.release();
    this.bufs.release();
    for (const b of this.pre) this.runner.destroy(b);
    if (this.rope) this.runner.destroy(this.rope.buf);
    this.heads.release();
  }
}
