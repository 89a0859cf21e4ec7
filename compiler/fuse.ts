/**
 * Fusion: rewrites a verified graph so that each memory-bound chain becomes one kernel.
 *   rmsnorm → linear(qkv) → kv_store → rope      ⇒ qkv_rope            (+ pre_output when a retaining head reads qkv)
 *   rmsnorm → linear(gate_up) → silu_mul         ⇒ norm_linear_swiglu
 *   add(residual, linear(x))                     ⇒ linear_residual     (written in place into the residual stream)
 *   [last_rows →] rmsnorm → linear               ⇒ norm_linear
 *   rmsnorm → retaining_head (folded)            ⇒ norm_retaining_head
 * A chain is fused only when its inner values have no other readers (the qkv rows may also feed a retaining head),
 * and an in-place residual only when nothing reads the old residual afterwards.
 */
import { remapNode, usersOf, type Graph, type Node, type NodeId } from '../ir/ops.js';

type Omit2<T> = T extends unknown ? Omit<T, 'id'> : never;

/** A fused node replacing `root`, plus the inner nodes it swallows and what references to them become. */
interface Match {
  readonly root: NodeId;
  readonly inner: readonly NodeId[];
  readonly make: (id: (old: NodeId) => NodeId) => Omit2<Node>;
  /** inner node → 'fused' (references go to the fused node) or 'pre' (to its pre_output) */
  readonly redirect?: ReadonlyMap<NodeId, 'fused' | 'pre'>;
  readonly withPre?: boolean;
}

function findMatches(g: Graph): Match[] {
  const users = usersOf(g);
  const N = (id: NodeId) => g.nodes[id]!;
  const only = (id: NodeId, user: NodeId) => users[id]!.length === 1 && users[id]![0] === user;
  const taken = new Set<NodeId>();
  const out: Match[] = [];
  const claim = (m: Match) => {
    if ([m.root, ...m.inner].some((i) => taken.has(i))) return;
    [m.root, ...m.inner].forEach((i) => taken.add(i));
    out.push(m);
  };
  // patterns by priority: a longer chain must not lose its head to a shorter one (rmsnorm → qkv linear would
  // otherwise become a norm_linear before the qkv_rope chain is seen)
  const byPriority = (['rope', 'silu_mul', 'add', 'linear', 'retaining_head'] as const).flatMap((op) => g.nodes.filter((n) => n.op === op));
  for (const n of byPriority) {
    if (n.op === 'rope') {
      const kv = N(n.x);
      if (kv.op !== 'kv_store') continue;
      const lin = N(kv.qkv);
      if (lin.op !== 'linear') continue;
      const norm = N(lin.x);
      if (norm.op !== 'rmsnorm' || !only(norm.id, lin.id)) continue;
      const linOthers = users[lin.id]!.filter((u) => u !== kv.id);
      if (linOthers.some((u) => N(u).op !== 'retaining_head')) continue;
      if (users[kv.id]!.some((u) => u !== n.id && N(u).op !== 'attention')) continue;
      const withPre = linOthers.length > 0;
      claim({
        root: n.id,
        inner: [norm.id, lin.id, kv.id],
        withPre,
        redirect: new Map([
          [kv.id, 'fused'],
          [lin.id, 'pre'],
        ]),
        make: (id) => ({
          op: 'qkv_rope', x: id(norm.x), normW: id(norm.w), eps: norm.eps, w: id(lin.w), bias: lin.bias === null ? null : id(lin.bias),
          layer: kv.layer, writePre: withPre, shape: n.shape, dtype: 'f32',
        }),
      });
    } else if (n.op === 'silu_mul') {
      const lin = N(n.x);
      if (lin.op !== 'linear' || lin.bias !== null || !only(lin.id, n.id)) continue;
      const norm = N(lin.x);
      if (norm.op !== 'rmsnorm' || !only(norm.id, lin.id)) continue;
      claim({
        root: n.id,
        inner: [norm.id, lin.id],
        make: (id) => ({ op: 'norm_linear_swiglu', x: id(norm.x), normW: id(norm.w), eps: norm.eps, w: id(lin.w), shape: n.shape, dtype: 'f32' }),
      });
    } else if (n.op === 'add') {
      for (const [linId, resId] of [[n.b, n.a], [n.a, n.b]] as const) {
        const lin = N(linId);
        if (lin.op !== 'linear' || lin.bias !== null || !only(lin.id, n.id)) continue;
        // in place: the residual's value must not be read after this add (nor be an output)
        if (users[resId]!.some((u) => u === -1 || u > n.id) || N(resId).op === 'weight') continue;
        claim({
          root: n.id,
          inner: [lin.id],
          make: (id) => ({ op: 'linear_residual', x: id(lin.x), w: id(lin.w), residual: id(resId), shape: n.shape, dtype: 'f32' }),
        });
        break;
      }
    } else if (n.op === 'retaining_head') {
      // a folded head reads the normalized rows (its own rmsnorm node: the qkv chain keeps its own)
      const norm = N(n.pre);
      if (norm.op !== 'rmsnorm' || !only(norm.id, n.id)) continue;
      claim({
        root: n.id,
        inner: [norm.id],
        make: (id) => ({
          op: 'norm_retaining_head', x: id(norm.x), normW: id(norm.w), eps: norm.eps, fc1: id(n.fc1), fc1Bias: n.fc1Bias === null ? null : id(n.fc1Bias),
          fc2: id(n.fc2), layer: n.layer, shape: n.shape, dtype: 'f32',
        }),
      });
    } else if (n.op === 'linear') {
      const norm = N(n.x);
      if (norm.op !== 'rmsnorm' || !only(norm.id, n.id) || taken.has(n.id)) continue;
      const lr = N(norm.x);
      const fromLast = lr.op === 'last_rows' && only(lr.id, norm.id);
      const src = fromLast ? lr.x : norm.x;
      claim({
        root: n.id,
        inner: fromLast ? [lr.id, norm.id] : [norm.id],
        make: (id) => ({
          op: 'norm_linear', x: id(src), xRowsFromEnd: fromLast ? lr.rows : 'all', normW: id(norm.w), eps: norm.eps,
          w: id(n.w), bias: n.bias === null ? null : id(n.bias), shape: n.shape, dtype: 'f32',
        }),
      });
    }
  }
  return out;
}

export function fuse(g: Graph): Graph {
  const matches = findMatches(g);
  const byRoot = new Map(matches.map((m) => [m.root, m]));
  const inner = new Map<NodeId, Match>();
  for (const m of matches) for (const i of m.inner) inner.set(i, m);
  const nodes: Node[] = [];
  const remap = new Map<NodeId, NodeId>();
  const preOf = new Map<Match, NodeId>();
  const id = (old: NodeId): NodeId => {
    const m = inner.get(old);
    if (m) {
      const how = m.redirect?.get(old);
      if (how === 'pre') return preOf.get(m)!;
      if (how === 'fused') return remap.get(m.root)!;
      throw new Error(`fuse: node ${old} was fused away but is still referenced`);
    }
    const r = remap.get(old);
    if (r === undefined) throw new Error(`fuse: node ${old} referenced before definition`);
    return r;
  };
  const push = (n: Omit2<Node>): NodeId => {
    const nid = nodes.length;
    nodes.push({ ...n, id: nid } as Node);
    return nid;
  };
  for (const n of g.nodes) {
    if (inner.has(n.id)) continue;
    const m = byRoot.get(n.id);
    if (!m) {
      const { id: _old, ...copy } = remapNode(n, id);
      remap.set(n.id, push(copy as Omit2<Node>));
      continue;
    }
    const fid = push(m.make(id));
    remap.set(n.id, fid);
    if (m.withPre) {
      const { numHeads: h, numKvHeads: kv, headDim: d } = g.dims;
      preOf.set(m, push({ op: 'pre_output', of: fid, shape: ['T', (h + 2 * kv) * d], dtype: 'f32' }));
    }
  }
  return { nodes, outputs: g.outputs.map(id), dims: g.dims };
}
