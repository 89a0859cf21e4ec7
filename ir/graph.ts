/** Append-only graph builder: each method adds one node and returns its id. Shapes are inferred here and checked
 *  independently by verify.ts, so a builder bug cannot hide a shape error. */
import type { DType, Graph, GraphDims, Node, NodeId, Shape } from './ops.js';

type Omit2<T> = T extends unknown ? Omit<T, 'id'> : never;

export class GraphBuilder {
  private readonly nodes: Node[] = [];
  private readonly weights = new Map<string, NodeId>();

  constructor(readonly dims: GraphDims) {}

  add(node: Omit2<Node>): NodeId {
    const id = this.nodes.length;
    this.nodes.push({ ...node, id } as Node);
    return id;
  }

  node(id: NodeId): Node {
    const n = this.nodes[id];
    if (!n) throw new Error(`graph: no node ${id}`);
    return n;
  }

  shapeOf(id: NodeId): Shape {
    return this.node(id).shape;
  }

  inputIds(): NodeId {
    return this.add({ op: 'input_ids', shape: ['T'], dtype: 'u32' });
  }

  weight(name: string, shape: Shape, dtype: DType = 'f32'): NodeId {
    const hit = this.weights.get(name);
    if (hit !== undefined) return hit;
    const id = this.add({ op: 'weight', name, shape, dtype });
    this.weights.set(name, id);
    return id;
  }

  embedding(ids: NodeId, table: NodeId): NodeId {
    return this.add({ op: 'embedding', ids, table, shape: ['T', this.shapeOf(table)[1]!], dtype: 'f32' });
  }

  rmsnorm(x: NodeId, w: NodeId, eps: number): NodeId {
    return this.add({ op: 'rmsnorm', x, w, eps, shape: this.shapeOf(x), dtype: 'f32' });
  }

  linear(x: NodeId, w: NodeId, bias: NodeId | null = null): NodeId {
    const rows = this.shapeOf(x)[0]!;
    return this.add({ op: 'linear', x, w, bias, shape: [rows, this.shapeOf(w)[0]!], dtype: 'f32' });
  }

  kvStore(qkv: NodeId, layer: number): NodeId {
    const { numHeads, headDim } = this.dims;
    return this.add({ op: 'kv_store', qkv, layer, shape: ['T', numHeads, headDim], dtype: 'f32' });
  }

  rope(x: NodeId): NodeId {
    return this.add({ op: 'rope', x, shape: this.shapeOf(x), dtype: 'f32' });
  }

  retainingHead(pre: NodeId, fc1: NodeId, fc2: NodeId, layer: number, fc1Bias: NodeId | null = null): NodeId {
    return this.add({ op: 'retaining_head', pre, fc1, fc1Bias, fc2, layer, shape: ['T', this.dims.numKvHeads], dtype: 'f32' });
  }

  attention(q: NodeId, layer: number, after: NodeId): NodeId {
    const { numHeads, headDim } = this.dims;
    return this.add({ op: 'attention', q, layer, after, shape: ['T', numHeads * headDim], dtype: 'f32' });
  }

  attentionStats(q: NodeId, layer: number, attn: NodeId, mode: 'h2o' | 'snapkv'): NodeId {
    return this.add({ op: 'attention_stats', q, layer, attn, mode, shape: [], dtype: 'f32' });
  }

  siluMul(x: NodeId): NodeId {
    const [t, n] = this.shapeOf(x);
    return this.add({ op: 'silu_mul', x, shape: [t!, (n as number) / 2], dtype: 'f32' });
  }

  sum(a: NodeId, b: NodeId): NodeId {
    return this.add({ op: 'add', a, b, shape: this.shapeOf(a), dtype: 'f32' });
  }

  lastRows(x: NodeId, rows: number | 'all'): NodeId {
    const [t, n] = this.shapeOf(x);
    return this.add({ op: 'last_rows', x, rows, shape: [rows === 'all' ? t! : rows, n!], dtype: 'f32' });
  }

  build(outputs: readonly NodeId[]): Graph {
    return { nodes: [...this.nodes], outputs, dims: this.dims };
  }
}
