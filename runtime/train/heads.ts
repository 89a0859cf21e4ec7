/**
 * The trained retaining heads on the GPU: per layer the f32 master weights and their AdamW moments, plus the
 * export to the official safetensors names (`model.layers.{i}.self_attn.fc1.weight` [hidden, W], `fc2.weight`
 * [KV, hidden]) that runtime/io/weight-map.ts loadRetainingHeads reads back.
 */
import { qkvWidth, RETAINING_HIDDEN, weightName, type ModelConfig } from '../../ir/config.js';
import { Rng, rowSeed } from '../eval/tasks.js';
import { f32ToBf16 } from '../io/dtype.js';
import { writeSafetensors } from '../io/safetensors.js';
import type { GpuRunner } from '../gpu/runner.js';
import type { GpuWeight } from '../weights.js';

export interface HeadDims {
  readonly layers: number;
  /** input width (H + 2KV)·D */
  readonly W: number;
  readonly hidden: number;
  readonly KV: number;
}

export function headDimsOf(c: ModelConfig): HeadDims {
  return { layers: c.numLayers, W: qkvWidth(c), hidden: RETAINING_HIDDEN, KV: c.numKvHeads };
}

export interface LayerHead {
  readonly fc1: GPUBuffer; // (hidden, W) f32
  readonly fc2: GPUBuffer; // (KV, hidden) f32
  readonly m1: GPUBuffer; // (hidden, W) AdamW first moment of fc1
  readonly v1: GPUBuffer; // (hidden, W) second moment
  readonly m2: GPUBuffer; // (KV, hidden)
  readonly v2: GPUBuffer; // (KV, hidden)
}

/** Host copies, in the GPU layouts: per layer fc1, fc2 and their moments. */
export interface HeadTensors {
  readonly fc1: Float32Array[];
  readonly fc2: Float32Array[];
  readonly m1: Float32Array[];
  readonly v1: Float32Array[];
  readonly m2: Float32Array[];
  readonly v2: Float32Array[];
}

export const headKey = {
  fc1: (l: number) => `model.layers.${l}.self_attn.fc1.weight`,
  fc2: (l: number) => `model.layers.${l}.self_attn.fc2.weight`,
};

/** PyTorch nn.Linear's default init (kaiming_uniform with a = √5): U(−1/√fan_in, 1/√fan_in), seeded per layer. */
export function initHeads(d: HeadDims, seed: number): HeadTensors {
  const uniform = (n: number, fanIn: number, rng: Rng) => {
    const b = 1 / Math.sqrt(fanIn);
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = (2 * rng.next() - 1) * b;
    return out;
  };
  const t: HeadTensors = { fc1: [], fc2: [], m1: [], v1: [], m2: [], v2: [] };
  for (let l = 0; l < d.layers; l++) {
    const rng = new Rng(rowSeed(`heads:${seed}`, l));
    t.fc1.push(uniform(d.hidden * d.W, d.W, rng));
    t.fc2.push(uniform(d.KV * d.hidden, d.hidden, rng));
    t.m1.push(new Float32Array(d.hidden * d.W));
    t.v1.push(new Float32Array(d.hidden * d.W));
    t.m2.push(new Float32Array(d.KV * d.hidden));
    t.v2.push(new Float32Array(d.KV * d.hidden));
  }
  return t;
}

export class GpuHeads {
  readonly layers: LayerHead[];

  constructor(readonly runner: GpuRunner, readonly dims: HeadDims, init: HeadTensors) {
    this.layers = Array.from({ length: dims.layers }, (_, l) => ({
      fc1: runner.upload(init.fc1[l]!, `train.fc1.${l}`),
      fc2: runner.upload(init.fc2[l]!, `train.fc2.${l}`),
      m1: runner.upload(init.m1[l]!, `train.m1.${l}`),
      v1: runner.upload(init.v1[l]!, `train.v1.${l}`),
      m2: runner.upload(init.m2[l]!, `train.m2.${l}`),
      v2: runner.upload(init.v2[l]!, `train.v2.${l}`),
    }));
  }

  /** The heads as model weights (`L{i}.fc1` / `L{i}.fc2`, f32), for a forward that runs them. */
  asWeights(): Map<string, GpuWeight> {
    const { hidden, W, KV } = this.dims;
    const m = new Map<string, GpuWeight>();
    this.layers.forEach((h, l) => {
      m.set(weightName.fc1(l), { buf: h.fc1, dtype: 'f32', shape: [hidden, W] });
      m.set(weightName.fc2(l), { buf: h.fc2, dtype: 'f32', shape: [KV, hidden] });
    });
    return m;
  }

  async download(): Promise<HeadTensors> {
    const { hidden, W, KV } = this.dims;
    const t: HeadTensors = { fc1: [], fc2: [], m1: [], v1: [], m2: [], v2: [] };
    for (const h of this.layers) {
      t.fc1.push(await this.runner.readF32(h.fc1, hidden * W));
      t.fc2.push(await this.runner.readF32(h.fc2, KV * hidden));
      t.m1.push(await this.runner.readF32(h.m1, hidden * W));
      t.v1.push(await this.runner.readF32(h.v1, hidden * W));
      t.m2.push(await this.runner.readF32(h.m2, KV * hidden));
      t.v2.push(await this.runner.readF32(h.v2, KV * hidden));
    }
    return t;
  }

  release(): void {
    for (const h of this.layers) for (const b of [h.fc1, h.fc2, h.m1, h.v1, h.m2, h.v2]) this.runner.destroy(b);
  }
}

const bytes = (a: Float32Array | Uint16Array) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

/** Writes the heads with the official names; bf16 (as the official release) or f32. */
export function writeHeads(file: string, d: HeadDims, t: HeadTensors, dtype: 'bf16' | 'f32', metadata: Record<string, string> = {}): void {
  const enc = (x: Float32Array) => bytes(dtype === 'bf16' ? f32ToBf16(x) : x);
  const tensors = [];
  for (let l = 0; l < d.layers; l++) {
    tensors.push({ name: headKey.fc1(l), dtype, shape: [d.hidden, d.W], data: enc(t.fc1[l]!) });
    tensors.push({ name: headKey.fc2(l), dtype, shape: [d.KV, d.hidden], data: enc(t.fc2[l]!) });
  }
  writeSafetensors(file, tensors, { format: 'pt', ...metadata });
}
