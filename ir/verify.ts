/**
 * Shape and dtype checks, run before lowering. Every error names the node, its op and the shapes involved, e.g.
 *   node 12 (linear): x (T, 384) does not match w (640, 383) on the contracted dim
 */
import { assertNever, operandsOf, type Graph, type Node, type NodeOf, type Op, type Shape } from './ops.js';

export class GraphError extends Error {}

const fmt = (s: Shape) => `(${s.join(', ')})`;

type Check<O extends Op> = (n: NodeOf<O>, get: (id: number) => Node, g: Graph) => void;

function fail(n: Node, msg: string): never {
  throw new GraphError(`node ${n.id} (${n.op}): ${msg}`);
}
function expectShape(n: Node, what: string, got: Shape, want: Shape): void {
  if (got.length !== want.length || got.some((d, i) => d !== want[i])) fail(n, `${what} ${fmt(got)}, expected ${fmt(want)}`);
}
function expectF32(n: Node, what: string, m: Node): void {
  if (m.dtype !== 'f32') fail(n, `${what} must be f32, got ${m.dtype}`);
}
function checkLinear(n: Node, x: Node, w: Node, bias: Node | null, out: number): void {
  expectF32(n, 'x', x);
  if (x.shape.length !== 2 || w.shape.length !== 2) fail(n, `x ${fmt(x.shape)} and w ${fmt(w.shape)} must be 2-D`);
  if (x.shape[1] !== w.shape[1]) fail(n, `x ${fmt(x.shape)} does not match w ${fmt(w.shape)} on the contracted dim`);
  if (bias) expectShape(n, 'bias', bias.shape, [w.shape[0]!]);
  expectShape(n, 'output', n.shape, [x.shape[0]!, out]);
}

/** a retaining head's weights over rows of width w: fc1 (R, w), its bias (R), fc2 (KV, R) */
function checkHead(n: Node, fc1: Shape, bias: Shape | null, fc2: Shape, w: number, kv: number): void {
  if (fc1.length !== 2 || fc1[1] !== w) fail(n, `fc1 ${fmt(fc1)} must be (hidden, ${w})`);
  if (bias) expectShape(n, 'fc1 bias', bias, [fc1[0]!]);
  expectShape(n, 'fc2', fc2, [kv, fc1[0]!]);
}

const checks: { readonly [O in Op]: Check<O> } = {
  input_ids: (n) => {
    if (n.dtype !== 'u32') fail(n, `ids must be u32`);
    expectShape(n, 'ids', n.shape, ['T']);
  },
  weight: (n) => {
    if (n.shape.some((d) => typeof d !== 'number' || d <= 0)) fail(n, `weight '${n.name}' has bad shape ${fmt(n.shape)}`);
  },
  embedding: (n, get) => {
    const ids = get(n.ids);
    const t = get(n.table);
    if (ids.dtype !== 'u32') fail(n, `ids must be u32`);
    expectShape(n, 'output', n.shape, [ids.shape[0]!, t.shape[1]!]);
  },
  rmsnorm: (n, get) => {
    const x = get(n.x);
    expectF32(n, 'x', x);
    expectShape(n, 'w', get(n.w).shape, [x.shape[x.shape.length - 1]!]);
    expectShape(n, 'output', n.shape, x.shape);
  },
  linear: (n, get) => checkLinear(n, get(n.x), get(n.w), n.bias === null ? null : get(n.bias), get(n.w).shape[0] as number),
  kv_store: (n, get, g) => {
    const { numHeads: h, numKvHeads: kv, headDim: d, numLayers } = g.dims;
    const qkv = get(n.qkv);
    expectShape(n, 'qkv', qkv.shape, ['T', (h + 2 * kv) * d]);
    if (n.layer < 0 || n.layer >= numLayers) fail(n, `layer ${n.layer} out of range`);
    expectShape(n, 'output', n.shape, ['T', h, d]);
  },
  rope: (n, get, g) => {
    const x = get(n.x);
    if (x.shape[2] !== g.dims.headDim) fail(n, `x ${fmt(x.shape)} is not (T, heads, ${g.dims.headDim})`);
    if (g.dims.rotaryDim > g.dims.headDim || g.dims.rotaryDim % 2) fail(n, `rotary dim ${g.dims.rotaryDim} invalid for head dim ${g.dims.headDim}`);
    expectShape(n, 'output', n.shape, x.shape);
  },
  // unfolded: pre is the (T, (H + 2KV)·D) pre-RoPE concat(Q, K, V); folded: the (T, hidden) normalized rows
  retaining_head: (n, get, g) => {
    const { numHeads: h, numKvHeads: kv, headDim: d, hidden } = g.dims;
    const pre = get(n.pre);
    expectF32(n, 'pre', pre);
    const w = pre.shape[1];
    if (pre.shape.length !== 2 || pre.shape[0] !== 'T' || (w !== (h + 2 * kv) * d && w !== hidden)) fail(n, `pre ${fmt(pre.shape)} must be (T, ${(h + 2 * kv) * d}) or, folded, (T, ${hidden})`);
    checkHead(n, get(n.fc1).shape, n.fc1Bias === null ? null : get(n.fc1Bias).shape, get(n.fc2).shape, w as number, kv);
  },
  attention: (n, get, g) => {
    const { numHeads: h, headDim: d, numKvHeads: kv } = g.dims;
    expectShape(n, 'q', get(n.q).shape, ['T', h, d]);
    if (h % kv) fail(n, `${h} query heads do not group evenly over ${kv} KV heads`);
    expectShape(n, 'output', n.shape, ['T', h * d]);
  },
  attention_stats: (n, get, g) => {
    const { numHeads: h, headDim: d } = g.dims;
    expectShape(n, 'q', get(n.q).shape, ['T', h, d]);
    const a = get(n.attn);
    if (a.op !== 'attention' || a.layer !== n.layer) fail(n, `attn operand ${n.attn} is ${a.op}, not the attention of layer ${n.layer}`);
  },
  silu_mul: (n, get) => {
    const x = get(n.x).shape;
    if ((x[1] as number) % 2) fail(n, `x ${fmt(x)} has an odd width`);
    expectShape(n, 'output', n.shape, [x[0]!, (x[1] as number) / 2]);
  },
  add: (n, get) => {
    expectShape(n, 'b', get(n.b).shape, get(n.a).shape);
    expectShape(n, 'output', n.shape, get(n.a).shape);
  },
  last_rows: (n, get) => {
    const x = get(n.x).shape;
    expectShape(n, 'output', n.shape, [n.rows === 'all' ? x[0]! : n.rows, x[1]!]);
  },
  norm_linear: (n, get) => {
    const x = get(n.x);
    expectShape(n, 'norm', get(n.normW).shape, [x.shape[1]!]);
    const rows = n.xRowsFromEnd === 'all' ? x.shape[0]! : n.xRowsFromEnd;
    checkLinear(n, { ...x, shape: [rows, x.shape[1]!] }, get(n.w), n.bias === null ? null : get(n.bias), get(n.w).shape[0] as number);
  },
  qkv_rope: (n, get, g) => {
    const { numHeads: h, numKvHeads: kv, headDim: d } = g.dims;
    expectShape(n, 'norm', get(n.normW).shape, [get(n.x).shape[1]!]);
    expectShape(n, 'w', get(n.w).shape, [(h + 2 * kv) * d, get(n.x).shape[1]!]);
    expectShape(n, 'output', n.shape, ['T', h, d]);
  },
  linear_residual: (n, get) => {
    checkLinear(n, get(n.x), get(n.w), null, get(n.w).shape[0] as number);
    expectShape(n, 'residual', get(n.residual).shape, n.shape);
  },
  pre_output: (n, get, g) => {
    const of = get(n.of);
    if (of.op !== 'qkv_rope' || !of.writePre) fail(n, `reads node ${n.of} (${of.op}), which writes no pre-RoPE output`);
    const { numHeads: h, numKvHeads: kv, headDim: d } = g.dims;
    expectShape(n, 'output', n.shape, ['T', (h + 2 * kv) * d]);
  },
  norm_retaining_head: (n, get, g) => {
    const x = get(n.x);
    expectF32(n, 'x', x);
    expectShape(n, 'x', x.shape, ['T', g.dims.hidden]);
    expectShape(n, 'norm', get(n.normW).shape, [g.dims.hidden]);
    checkHead(n, get(n.fc1).shape, n.fc1Bias === null ? null : get(n.fc1Bias).shape, get(n.fc2).shape, g.dims.hidden, g.dims.numKvHeads);
  },
  norm_linear_swiglu: (n, get) => {
    expectShape(n, 'norm', get(n.normW).shape, [get(n.x).shape[1]!]);
    const w = get(n.w).shape;
    if ((w[0] as number) % 2) fail(n, `gate_up ${fmt(w)} has an odd row count`);
    checkLinear(n, get(n.x), get(n.w), null, (w[0] as number) / 2);
  },
};

export function verify(g: Graph): void {
  const get = (id: number): Node => {
    const m = g.nodes[id];
    if (!m) throw new GraphError(`dangling node reference ${id}`);
    return m;
  };
  for (const n of g.nodes) {
    for (const a of operandsOf(n)) if (a >= n.id) fail(n, `operand ${a} is not defined before use`);
    (checks[n.op] as Check<Op>)(n as never, get, g);
  }
  for (const o of g.outputs) get(o);
}

export { assertNever };
