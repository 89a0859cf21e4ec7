/**
 * Where prefill activations between tensor-core matmuls travel as f16 (compiler/lower.ts asks these per step): the
 * tensor cores round every matmul input to f16 when staging it anyway, and a matmul re-reads its x once per column
 * tile, so f16 halves the largest stream a prefill matmul pulls from L2 (docs/ARCHITECTURE.md).
 */
import type { NodeId, NodeOf } from '../ir/ops.js';
import { sgmatUsable } from './kernels/mm-sgmat.js';
import { env, envFlag, parsedOnce } from '../runtime/env.js';
import { cols, readers, tensorCores, w, type Ctx } from './lower-ctx.js';
import type { StepDims } from './lower.js';

/**
 * Whether a norm matmul on the tensor cores takes its rows normalized ahead, as f16, from one rmsnorm dispatch instead
 * of normalizing f32 x while staging: x is read once per column tile (gate_up at 128 columns: 224 times, qkv 48),
 * so f16 rows halve the bytes of its largest stream from L2, for one extra pass over x.
 * `LOCRET_NORM_IN_MATMUL=1|qkv|gate_up|head` (or LOCRET_F32_ACTIVATIONS=1) keeps the fused prologue (A/B timing).
 */
export const prenorm = (c: Ctx, wid: NodeId, T: number, K: number, kind: 'qkv' | 'gate_up' | 'head'): boolean =>
  c.normedHalf !== null && tensorCores(c) && K % 4 === 0 && K <= c.g.dims.hidden && sgmatUsable(w(c, wid).dtype, T, K) &&
  !envFlag('LOCRET_F32_ACTIVATIONS') && !normInMatmul(env('LOCRET_NORM_IN_MATMUL')).has(kind);
const normInMatmul = parsedOnce((spec) => new Set((spec ?? '').split(',').flatMap((k) => (k === '1' ? ['qkv', 'gate_up', 'head'] : [k]))));
/**
 * Whether a swiglu output travels as f16 in this step: the tensor cores round every matmul input to f16 when staging
 * it, so where the swiglu matmul and each of its readers (the down projections) run on them, the value is written as
 * f16 in the first place (the same numbers): half the bytes written, and half the bytes each of down's column tiles
 * reads back (x is read once per column tile: at 128 columns, 32 times). Both ends ask this with the same step dims.
 * LOCRET_F32_ACTIVATIONS=1 keeps f32 (A/B timing).
 */
export const halfSwiglu = (c: Ctx, id: NodeId, s: StepDims): boolean => {
  const n = c.g.nodes[id]!;
  if (n.op !== 'norm_linear_swiglu' || !tensorCores(c) || envFlag('LOCRET_F32_ACTIVATIONS')) return false;
  if (!sgmatUsable(w(c, n.w).dtype, c.rows(id, s), cols(c, n.x))) return false;
  const rs = readers(c.g, id);
  return rs.length > 0 && rs.every((u) => {
    const m = u < 0 ? undefined : c.g.nodes[u]!;
    return m?.op === 'linear_residual' && m.x === id && sgmatUsable(w(c, m.w).dtype, c.rows(u, s), cols(c, id));
  });
};
/**
 * Whether qkv_rope writes its pre-RoPE rows (pre_output node `pre`) as f16 in this step: as for halfSwiglu, when
 * every reader is a retaining head whose fc1 runs on the tensor cores (they stage x as f16 anyway). fc1 re-reads
 * x once per 64-column tile (16 times a chunk), 25 MB a layer as f32 at the 8B shape. Both ends ask this with the
 * same step dims; LOCRET_F32_ACTIVATIONS=1 keeps f32 (A/B timing).
 */
export const halfPre = (c: Ctx, pre: NodeId, s: StepDims): boolean => {
  if (s.decode || c.env.preRowsF32 || !tensorCores(c) || envFlag('LOCRET_F32_ACTIVATIONS')) return false;
  const rs = readers(c.g, pre);
  return rs.length > 0 && rs.every((u) => {
    const m = u < 0 ? undefined : c.g.nodes[u]!;
    return m?.op === 'retaining_head' && m.pre === pre && sgmatUsable(w(c, m.fc1).dtype, s.T, cols(c, pre));
  });
};
/**
 * Whether a folded retaining head on the tensor cores can read the f16 rows its layer's qkv_rope normalized into
 * `normedHalf` instead of normalizing them again: the same x, norm weight and eps, qkv_rope normalized ahead in this
 * step too, and nothing but weights between the two nodes (no dispatch in between, so rows and x are as qkv_rope
 * left them). Saves one rmsnorm pass over the chunk per layer. LOCRET_HEAD_OWN_NORM=1 keeps the head's own (A/B).
 */
export const headRowsFromQkv = (c: Ctx, n: NodeOf<'norm_retaining_head'>, T: number): boolean => {
  if (envFlag('LOCRET_HEAD_OWN_NORM')) return false;
  let at = n.id - 1;
  while (at >= 0 && c.g.nodes[at]!.op === 'weight') at--;
  const m = c.g.nodes[at];
  return m?.op === 'qkv_rope' && m.x === n.x && m.normW === n.normW && m.eps === n.eps && prenorm(c, m.w, T, cols(c, m.x), 'qkv');
};
