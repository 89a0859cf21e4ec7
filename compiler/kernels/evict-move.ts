/**
 * Eviction, steps 2 and 3 of 3 (see evict.ts): move every kept entry that changes slot, through a scratch copy.
 * One thread per (K|V, head, source slot, row vector), so a layer is thousands of workgroups of wide, coalesced
 * copies; entries that stay put (dst == s: every kept slot before the head's first evicted one) and evicted
 * entries are skipped after one read of their meta word.
 *
 *   gather   rows[K|V, h, s]   ← cache[h, s]        for s with meta[h, s].x ∉ {s, NONE}
 *   scatter  cache[h, dst]     ← rows[K|V, h, s]    dst = meta[h, s].x
 *            score, kpos (rank dst when compact), orig at [h, dst] ← meta[h, s].yzw
 *
 * Two dispatches because the move cannot be done in place by independent workgroups: a destination row may be
 * the source of another workgroup's entry that has not been read yet. Scores, positions and orig were already
 * copied into meta by the selection (evict-select.ts), so only the rows need the gather. The scratch is indexed
 * by source slot, so a thread's gather and scatter touch the same scratch words and no two threads share one.
 */
import { kernel, ro, rw, wgsl, type VariantKey } from '../wgsl.js';
import type { Dispatch } from '../../runtime/gpu/runner.js';
import { grid } from './cache-store.js';

export const MOVE_WG = 256;
const WG = MOVE_WG;

export interface MoveBuffers {
  kCache: GPUBuffer;
  vCache: GPUBuffer;
  scores: GPUBuffer;
  kpos: GPUBuffer;
  orig?: GPUBuffer;
  rows: GPUBuffer;
  meta: GPUBuffer;
}

/** Widest vector that divides the row: 16-byte copies for every f32/f16 row of head_dim % 8 == 0. */
export function rowVector(rowWords: number): { vw: number; vt: string; RV: number } {
  const vw = rowWords % 4 === 0 ? 4 : rowWords % 2 === 0 ? 2 : 1;
  return { vw, vt: vw === 1 ? 'u32' : `vec${vw}<u32>`, RV: rowWords / vw };
}

/**
 * WGSL prologue of the row-moving kernels (one thread per (K|V, head, row < rows, row vector), workgroups of WG):
 * returns past the grid, defines isV, h, col and the row index `rowVar`. Needs gid, nw, params.KV and RV.
 */
export function rowThreads(rows: string, rowVar: string): string {
  return `  let e = gid.x + gid.y * nw.x * ${WG}u;
  let side = params.KV * ${rows} * RV; // threads per cache (K or V)
  if (e >= 2u * side) { return; }
  let isV = e >= side;
  let r = select(e, e - side, isV);
  let col = r % RV;
  let h = (r / RV) / ${rows};
  let ${rowVar} = (r / RV) % ${rows};`;
}

export function evictMove(
  phase: 'gather' | 'scatter',
  o: { rowWords: number; compact: boolean },
  d: { KV: number; len: number; capacity: number },
  b: MoveBuffers,
): Dispatch {
  const { vt, RV } = rowVector(o.rowWords);
  const withOrig = b.orig !== undefined;
  const gather = phase === 'gather';
  // the gather moves rows only, so its variant does not depend on compact / orig
  const key: VariantKey = gather ? { op: 'evict_gather', rowWords: o.rowWords } : { op: 'evict_scatter', rowWords: o.rowWords, compact: o.compact, orig: withOrig };
  const k = kernel(key, () => ({
    bindings: [
      rw('kCache', `array<${vt}>`), // (KV, capacity, RV) raw row words
      rw('vCache', `array<${vt}>`), // (KV, capacity, RV)
      ...(gather ? [] : [
        rw('scores', 'array<u32>'), // (KV, capacity) f32 bits (moved bit-exactly)
        rw('kpos', 'array<u32>'), // (KV, capacity)
        ...(withOrig ? [rw('orig', 'array<u32>')] : []), // (KV, capacity)
      ]),
      rw('rows', `array<${vt}>`), // (2: K, V, KV, capacity, RV) scratch, by source slot
      ro('slotMeta', 'array<vec4<u32>>'), // (KV, capacity) scratch: destination, score, kpos, orig by source slot
    ],
    params: [['len', 'u32'], ['capacity', 'u32'], ['KV', 'u32']],
    workgroupSize: [WG, 1, 1],
    body: wgsl`
const RV = ${RV}u;
const NONE = 0xffffffffu;

@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
${rowThreads('params.len', 's')}
  let slot = h * params.capacity + s;
  let m = slotMeta[slot];
  let dst = m.x;
  if (dst == NONE || dst == s) { return; }
  let at = (select(0u, params.KV * params.capacity, isV) + slot) * RV + col; // scratch word
${gather ? wgsl`
  let src = slot * RV + col;
  if (isV) { rows[at] = vCache[src]; } else { rows[at] = kCache[src]; }` : wgsl`
  let to = h * params.capacity + dst;
  if (isV) { vCache[to * RV + col] = rows[at]; } else { kCache[to * RV + col] = rows[at]; }
  if (!isV && col == 0u) {
    scores[to] = m.y;
    kpos[to] = ${o.compact ? 'dst' : 'm.z'};
    ${withOrig ? 'orig[to] = m.w;' : ''}
  }`}
}`,
  }));
  const buffers: Record<string, GPUBuffer> = { kCache: b.kCache, vCache: b.vCache, rows: b.rows, slotMeta: b.meta };
  if (!gather) Object.assign(buffers, { scores: b.scores, kpos: b.kpos }, withOrig ? { orig: b.orig! } : {});
  return {
    kernel: k,
    buffers,
    params: { len: d.len, capacity: d.capacity, KV: d.KV },
    workgroups: grid(Math.ceil((2 * d.KV * d.len * RV) / WG)),
  };
}
