/**
 * What a node's lowering sees (compiler/lower.ts): the graph, the plan's environment and buffers, and the helpers
 * every lowering shares to reach its weights and matmuls.
 */
import { usersOf, type Graph, type NodeId, type NodeOf, type Op } from '../ir/ops.js';
import type { Dispatch } from '../runtime/gpu/runner.js';
import { weightParts, type GpuWeight } from '../runtime/weights.js';
import { matmulParts, type MatmulOpts } from './kernels/matmul.js';
import { gemvSubgroups } from './kernels/mm-gemv.js';
import { envFlag } from '../runtime/env.js';
import type { LowerEnv, StepDims } from './lower.js';

export type Emit = (s: StepDims) => Dispatch[];
export interface Ctx {
  readonly g: Graph;
  readonly env: LowerEnv;
  buf(id: NodeId): GPUBuffer;
  rows(id: NodeId, s: StepDims): number;
  readonly scratch: () => GPUBuffer;
  /** (KV, capacity, D) f16 keys rotated for the prefill attention (rotate-keys.ts), shared by every layer */
  readonly keyRot: () => GPUBuffer;
  /** int8 cache: f32 rows qkv_rope writes before kvQuantize packs them (see kv-int8.ts) */
  readonly kvStage: () => KvStage;
  /** (maxT, heads) f32 log-sum-exp of the latest attention, when attention_stats nodes read it */
  readonly lse: GPUBuffer | undefined;
  /** (maxT, hidden) f16 rows normalized ahead of a tensor-core matmul (`prenorm`), shared by every layer; null without tensor cores */
  readonly normedHalf: GPUBuffer | null;
}
export type Lowering<O extends Op> = (n: NodeOf<O>, c: Ctx) => Emit | null;

export const weightNode = (c: Ctx, id: NodeId) => {
  const n = c.g.nodes[id]!;
  if (n.op !== 'weight') throw new Error(`node ${id} (${n.op}) used as a weight`);
  return n;
};
export const w = (c: Ctx, id: NodeId): GpuWeight => c.env.weight(weightNode(c, id).name);
/** the buffer of a weight that `op` reads in one binding */
export const whole = (c: Ctx, id: NodeId, op: string): GPUBuffer => {
  const x = w(c, id);
  if (x.buf) return x.buf;
  const name = weightNode(c, id).name;
  throw new Error(`${op} reads weight ${name} [${x.shape}] in one binding, but it is split into ${x.parts.length} parts ` +
    `(over the storage-binding limit of ${c.env.runner.gpu.maxBinding} bytes); ${op} cannot run on split weights`);
};
export const optWhole = (c: Ctx, id: NodeId | null, op: string) => (id === null ? undefined : whole(c, id, op));
/** prefill matmuls on tensor cores where the device has them; LOCRET_NO_TENSOR_CORES=1 keeps the FMA tiles (A/B timing) */
export const tensorCores = (c: Ctx) => c.env.runner.gpu.tensorCores && !envFlag('LOCRET_NO_TENSOR_CORES');
export const wgBytes = (c: Ctx) => c.env.runner.gpu.limits.maxComputeWorkgroupStorageSize;
export const gemvSg = (c: Ctx) => gemvSubgroups(c.env.runner.gpu.subgroups);
/** a matmul over every part of weight `wid` */
export const mm = (c: Ctx, o: Omit<MatmulOpts, 'wdtype'>, wid: NodeId, d: Parameters<typeof matmulParts>[1], b: Parameters<typeof matmulParts>[2]) => {
  const x = w(c, wid);
  return matmulParts({ ...o, wdtype: x.dtype, tensorCores: tensorCores(c), workgroupBytes: wgBytes(c), subgroups: gemvSg(c), intDot: c.env.runner.gpu.intDot }, d, b, weightParts(x));
};
export const cols = (c: Ctx, id: NodeId) => c.g.nodes[id]!.shape[1] as number;
const readersOf = new WeakMap<Graph, NodeId[][]>();
export const readers = (g: Graph, id: NodeId): readonly NodeId[] => {
  let u = readersOf.get(g);
  if (!u) readersOf.set(g, (u = usersOf(g)));
  return u[id]!;
};

export interface KvStage {
  readonly k: GPUBuffer; // (kv_heads, maxT, head_dim) f32
  readonly v: GPUBuffer; // (kv_heads, maxT, head_dim) f32
  readonly kpos: GPUBuffer; // (kv_heads, maxT) u32, written by qkv_rope and never read (kvQuantize writes kpos)
}

export const attnOpts = (c: Ctx) => ({
  cacheDtype: c.env.cacheDtype, numHeads: c.g.dims.numHeads, numKvHeads: c.g.dims.numKvHeads, headDim: c.g.dims.headDim, rotaryDim: c.g.dims.rotaryDim,
});

