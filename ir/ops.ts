/**
 * The closed op catalog of the model-graph IR. A graph describes one forward step over `T` new tokens (a prefill
 * chunk, the question, or one decode token); `T` stays symbolic so one graph serves every step. Nodes are plain
 * readonly data; shape and dtype rules live in verify.ts, lowering in compiler/.
 */

export const OPS = [
  'input_ids', // (T) u32 token ids of the step
  'weight', // a stored tensor, by canonical name
  'embedding', // (T, hidden) rows of the table
  'rmsnorm', // (T, N) x·rsqrt(mean(x²)+eps)·w
  'linear', // (T, N) x·Wᵀ (+ bias)
  'kv_store', // writes K, V (pre-RoPE) of a qkv row block into layer's cache; yields Q (T, H, D) pre-RoPE
  'rope', // (T, heads, D) rotates by the step's positions
  'retaining_head', // writes Locret scores of the step's tokens into layer's cache; yields (T, KV) scores
  'attention', // (T, H·D) GQA attention of the step's queries over layer's cache
  'attention_stats', // H2O / SnapKV: attention each cached entry receives, written as its eviction score
  'silu_mul', // (T, N) silu(gate)·up of a (T, 2N) gate_up block
  'add', // elementwise sum
  'last_rows', // (R, N) the last R rows (logits are needed only for the newest token while generating)
  // fused ops, produced only by compiler/fuse.ts
  'norm_linear', // linear with an RMSNorm prologue
  'qkv_rope', // rmsnorm + qkv linear + kv_store + rope in one kernel
  'linear_residual', // residual + x·Wᵀ written into the residual's buffer
  'norm_linear_swiglu', // rmsnorm + gate_up linear + silu_mul
  'pre_output', // the pre-RoPE concat(Q, K, V) a qkv_rope node also writes (read by a retaining head)
  'norm_retaining_head', // rmsnorm + a folded retaining head (fc1 · Wqkv over the normalized rows)
] as const;
export type Op = (typeof OPS)[number];

export type DType = 'f32' | 'u32';
/** A dimension is a number or the step's symbolic token count (or a multiple of nothing else: kept simple). */
export type Dim = number | 'T';
export type Shape = readonly Dim[];

export type NodeId = number;

interface Base<O extends Op> {
  readonly id: NodeId;
  readonly op: O;
  readonly shape: Shape;
  readonly dtype: DType;
}

export type InputIdsNode = Base<'input_ids'>;
export interface WeightNode extends Base<'weight'> {
  readonly name: string;
}
export interface EmbeddingNode extends Base<'embedding'> {
  readonly ids: NodeId;
  readonly table: NodeId;
}
export interface RmsNormNode extends Base<'rmsnorm'> {
  readonly x: NodeId;
  readonly w: NodeId;
  readonly eps: number;
}
export interface LinearNode extends Base<'linear'> {
  readonly x: NodeId;
  readonly w: NodeId;
  readonly bias: NodeId | null;
}
export interface KvStoreNode extends Base<'kv_store'> {
  readonly qkv: NodeId;
  readonly layer: number;
}
export interface RopeNode extends Base<'rope'> {
  readonly x: NodeId;
}
export interface RetainingHeadNode extends Base<'retaining_head'> {
  /** (T, C): the pre-RoPE concat(Q, K, V), or the normalized hidden rows for a folded fc1 */
  readonly pre: NodeId;
  /** (1024, C) */
  readonly fc1: NodeId;
  /** (1024) f32 bias of a folded fc1 (fc1 · qkv bias), or null */
  readonly fc1Bias: NodeId | null;
  readonly fc2: NodeId;
  readonly layer: number;
}
export interface AttentionNode extends Base<'attention'> {
  readonly q: NodeId;
  readonly layer: number;
  /** ordering edge: the step's K/V must be stored before attention reads the cache */
  readonly after: NodeId;
}
export interface AttentionStatsNode extends Base<'attention_stats'> {
  readonly q: NodeId;
  readonly layer: number;
  /** the attention node whose log-sum-exp it reuses */
  readonly attn: NodeId;
  readonly mode: 'h2o' | 'snapkv';
}
export interface SiluMulNode extends Base<'silu_mul'> {
  readonly x: NodeId;
}
export interface AddNode extends Base<'add'> {
  readonly a: NodeId;
  readonly b: NodeId;
}
export interface LastRowsNode extends Base<'last_rows'> {
  readonly x: NodeId;
  /** 'all' keeps every row (goldens and evaluation of every position) */
  readonly rows: number | 'all';
}
export interface NormLinearNode extends Base<'norm_linear'> {
  readonly x: NodeId;
  /** rows of x are read from this row on (a fused last_rows) */
  readonly xRowsFromEnd: number | 'all';
  readonly normW: NodeId;
  readonly eps: number;
  readonly w: NodeId;
  readonly bias: NodeId | null;
}
export interface QkvRopeNode extends Base<'qkv_rope'> {
  readonly x: NodeId;
  readonly normW: NodeId;
  readonly eps: number;
  readonly w: NodeId;
  readonly bias: NodeId | null;
  readonly layer: number;
  /** whether the pre-RoPE concat(Q, K, V) is also written (a retaining head reads it) */
  readonly writePre: boolean;
}
export interface LinearResidualNode extends Base<'linear_residual'> {
  readonly x: NodeId;
  readonly w: NodeId;
  readonly residual: NodeId;
}
export interface NormLinearSwigluNode extends Base<'norm_linear_swiglu'> {
  readonly x: NodeId;
  readonly normW: NodeId;
  readonly eps: number;
  readonly w: NodeId;
}

export interface PreOutputNode extends Base<'pre_output'> {
  readonly of: NodeId;
}
/** a folded retaining head reading the layer input x through the attention rmsnorm */
export interface NormRetainingHeadNode extends Base<'norm_retaining_head'> {
  readonly x: NodeId;
  readonly normW: NodeId;
  readonly eps: number;
  readonly fc1: NodeId;
  readonly fc1Bias: NodeId | null;
  readonly fc2: NodeId;
  readonly layer: number;
}

export type Node =
  | InputIdsNode
  | WeightNode
  | EmbeddingNode
  | RmsNormNode
  | LinearNode
  | KvStoreNode
  | RopeNode
  | RetainingHeadNode
  | AttentionNode
  | AttentionStatsNode
  | SiluMulNode
  | AddNode
  | LastRowsNode
  | NormLinearNode
  | QkvRopeNode
  | LinearResidualNode
  | NormLinearSwigluNode
  | PreOutputNode
  | NormRetainingHeadNode;

export type NodeOf<O extends Op> = Extract<Node, { op: O }>;

/** Operand ids of a node, in a fixed order (used by verify, liveness and fusion). */
export const operands: { readonly [O in Op]: (n: NodeOf<O>) => readonly NodeId[] } = {
  input_ids: () => [],
  weight: () => [],
  embedding: (n) => [n.ids, n.table],
  rmsnorm: (n) => [n.x, n.w],
  linear: (n) => (n.bias === null ? [n.x, n.w] : [n.x, n.w, n.bias]),
  kv_store: (n) => [n.qkv],
  rope: (n) => [n.x],
  retaining_head: (n) => (n.fc1Bias === null ? [n.pre, n.fc1, n.fc2] : [n.pre, n.fc1, n.fc1Bias, n.fc2]),
  attention: (n) => [n.q, n.after],
  attention_stats: (n) => [n.q, n.attn],
  silu_mul: (n) => [n.x],
  add: (n) => [n.a, n.b],
  last_rows: (n) => [n.x],
  norm_linear: (n) => (n.bias === null ? [n.x, n.normW, n.w] : [n.x, n.normW, n.w, n.bias]),
  qkv_rope: (n) => (n.bias === null ? [n.x, n.normW, n.w] : [n.x, n.normW, n.w, n.bias]),
  linear_residual: (n) => [n.x, n.w, n.residual],
  norm_linear_swiglu: (n) => [n.x, n.normW, n.w],
  pre_output: (n) => [n.of],
  norm_retaining_head: (n) => (n.fc1Bias === null ? [n.x, n.normW, n.fc1, n.fc2] : [n.x, n.normW, n.fc1, n.fc1Bias, n.fc2]),
};

export function operandsOf(n: Node): readonly NodeId[] {
  return (operands[n.op] as (n: Node) => readonly NodeId[])(n);
}

/** Readers of each node's value, in node order; -1 marks a graph output. */
export function usersOf(g: Graph): NodeId[][] {
  const users: NodeId[][] = g.nodes.map(() => []);
  for (const n of g.nodes) for (const a of operandsOf(n)) users[a]!.push(n.id);
  for (const o of g.outputs) users[o]!.push(-1);
  return users;
}

export function assertNever(x: never, what = 'value'): never {
  throw new Error(`unexpected ${what}: ${JSON.stringify(x)}`);
}

export interface Graph {
  readonly nodes: readonly Node[];
  /** node ids whose values leave the graph (logits) */
  readonly outputs: readonly NodeId[];
  /** the model dims the graph was built for (kernels need them) */
  readonly dims: GraphDims;
}

export interface GraphDims {
  readonly hidden: number;
  readonly numHeads: number;
  readonly numKvHeads: number;
  readonly headDim: number;
  readonly rotaryDim: number;
  readonly vocab: number;
  readonly numLayers: number;
}

type Remap = (id: NodeId) => NodeId;
/** A copy of a node with every operand passed through `f` (used by graph rewrites). */
export const mapOperands: { readonly [O in Op]: (n: NodeOf<O>, f: Remap) => NodeOf<O> } = {
  input_ids: (n) => n,
  weight: (n) => n,
  embedding: (n, f) => ({ ...n, ids: f(n.ids), table: f(n.table) }),
  rmsnorm: (n, f) => ({ ...n, x: f(n.x), w: f(n.w) }),
  linear: (n, f) => ({ ...n, x: f(n.x), w: f(n.w), bias: n.bias === null ? null : f(n.bias) }),
  kv_store: (n, f) => ({ ...n, qkv: f(n.qkv) }),
  rope: (n, f) => ({ ...n, x: f(n.x) }),
  retaining_head: (n, f) => ({ ...n, pre: f(n.pre), fc1: f(n.fc1), fc1Bias: n.fc1Bias === null ? null : f(n.fc1Bias), fc2: f(n.fc2) }),
  attention: (n, f) => ({ ...n, q: f(n.q), after: f(n.after) }),
  attention_stats: (n, f) => ({ ...n, q: f(n.q), attn: f(n.attn) }),
  silu_mul: (n, f) => ({ ...n, x: f(n.x) }),
  add: (n, f) => ({ ...n, a: f(n.a), b: f(n.b) }),
  last_rows: (n, f) => ({ ...n, x: f(n.x) }),
  norm_linear: (n, f) => ({ ...n, x: f(n.x), normW: f(n.normW), w: f(n.w), bias: n.bias === null ? null : f(n.bias) }),
  qkv_rope: (n, f) => ({ ...n, x: f(n.x), normW: f(n.normW), w: f(n.w), bias: n.bias === null ? null : f(n.bias) }),
  linear_residual: (n, f) => ({ ...n, x: f(n.x), w: f(n.w), residual: f(n.residual) }),
  norm_linear_swiglu: (n, f) => ({ ...n, x: f(n.x), normW: f(n.normW), w: f(n.w) }),
  pre_output: (n, f) => ({ ...n, of: f(n.of) }),
  norm_retaining_head: (n, f) => ({ ...n, x: f(n.x), normW: f(n.normW), fc1: f(n.fc1), fc1Bias: n.fc1Bias === null ? null : f(n.fc1Bias), fc2: f(n.fc2) }),
};

export function remapNode(n: Node, f: Remap): Node {
  return (mapOperands[n.op] as (n: Node, f: Remap) => Node)(n, f);
}
