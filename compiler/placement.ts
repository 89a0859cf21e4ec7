/**
 * Activation buffers of a plan, placed by liveness: every value gets a buffer sized for the largest step (`maxT`
 * rows), taken from the smallest free one that fits or created, and a buffer returns to the free list once all of
 * its values are dead. In-place kernels share their input's buffer (the residual stream, rope's rows).
 */
import { operandsOf, type Graph, type Node, type NodeId } from '../ir/ops.js';
import type { GpuRunner } from '../runtime/gpu/runner.js';

export interface Placement {
  /** each value's buffer (weights have none) */
  readonly bufs: ReadonlyMap<NodeId, GPUBuffer>;
  /** every buffer the plan created, activations first; `release` destroys them */
  readonly owned: GPUBuffer[];
  /** a plan-level buffer (scratch, stages) owned and counted like an activation */
  create(bytes: number, label: string): GPUBuffer;
  /** bytes of the counted buffers so far */
  bytes(): number;
}

function bytesOf(n: Node, maxT: number): number {
  const dims = n.shape.map((d) => (d === 'T' ? maxT : d));
  return dims.reduce((a, b) => a * b, 1) * 4;
}

/**
 * Bytes of a node's activation buffer. A retaining head's scores go straight into the cache and nothing reads its
 * value, so its buffer instead holds the (maxT, hidden) f32 silu activations passed between its two kernels: a
 * plan-sized scratch that the liveness allocator recycles right after the node, like any dead activation.
 */
function bufferBytes(g: Graph, n: Node, maxT: number): number {
  if (n.op === 'retaining_head' || n.op === 'norm_retaining_head') return maxT * (g.nodes[n.fc1]!.shape[0] as number) * 4;
  return bytesOf(n, maxT);
}

export function placeActivations(g: Graph, runner: GpuRunner, maxT: number): Placement {
  // liveness: last reader of each value (outputs live forever)
  const lastUse = g.nodes.map((n) => n.id);
  for (const n of g.nodes) for (const a of operandsOf(n)) lastUse[a] = Math.max(lastUse[a]!, n.id);
  for (const o of g.outputs) lastUse[o] = Infinity;
  const alias = new Map<NodeId, NodeId>(); // node → node whose buffer it reuses
  // in-place kernels: the residual stream is updated where it lies; rope rotates its input rows in place
  for (const n of g.nodes) {
    if (n.op === 'linear_residual') alias.set(n.id, n.residual);
    if (n.op === 'rope') alias.set(n.id, n.x);
  }
  const owned: GPUBuffer[] = [];
  const free: GPUBuffer[] = [];
  const size = new Map<GPUBuffer, number>();
  const bufs = new Map<NodeId, GPUBuffer>();
  const create = (bytes: number, label: string): GPUBuffer => {
    const b = runner.createBuffer(bytes, label);
    size.set(b, bytes);
    owned.push(b);
    return b;
  };
  const take = (bytes: number, label: string): GPUBuffer => {
    let best = -1;
    for (let i = 0; i < free.length; i++) if (size.get(free[i]!)! >= bytes && (best < 0 || size.get(free[i]!)! < size.get(free[best]!)!)) best = i;
    return best >= 0 ? free.splice(best, 1)[0]! : create(bytes, label);
  };
  const holders = new Map<GPUBuffer, number>(); // buffer → last use among its values
  const place = (n: Node) => {
    const a = alias.get(n.id);
    const b = a !== undefined ? bufs.get(a)! : take(bufferBytes(g, n, maxT), `${n.op}#${n.id}`);
    bufs.set(n.id, b);
    holders.set(b, Math.max(holders.get(b) ?? -1, lastUse[n.id]!));
    return b;
  };
  for (const n of g.nodes) {
    if (n.op === 'weight' || bufs.has(n.id)) continue;
    const b = place(n);
    // a fused qkv_rope writes its pre-RoPE side output in the same kernel: place it now, before anything is freed
    if (n.op === 'qkv_rope' && n.writePre) {
      const pre = g.nodes.find((m) => m.op === 'pre_output' && m.of === n.id);
      if (pre) place(pre);
    }
    // release buffers whose values are all dead after this node
    for (const [hb, last] of holders) {
      if (last <= n.id && hb !== b) {
        holders.delete(hb);
        free.push(hb);
      }
    }
  }
  return { bufs, owned, create, bytes: () => owned.reduce((a, b) => a + (size.get(b) ?? 0), 0) };
}
