/**
 * Retention scores for the baseline policies. Every policy ends in the same `evict()` (top-`keep` by score, newest
 * forced), so a policy is just how `scores (KV, capacity) f32` gets filled:
 *   streaming  score = absolute position, the first `sinks` prompt positions +inf (StreamingLLM: sinks + recency)
 *   random     score = hash(seed, layer, head, position) uniform in [0, 1)
 *   h2o        accumulated attention probability over all chunks so far (attentionStats, mode 'h2o')
 *   snapkv     attention of the chunk's last `window` queries, pooled along slots (attentionStats, mode 'snapkv')
 */
import { kernel, ro, rw, wgsl } from '../wgsl.js';
import type { Dispatch } from '../../runtime/gpu/runner.js';
import type { AttentionOpts } from './attention.js';
import { checkHeadDims, keyBindings, keyFns } from './attn-common.js';

export interface FillScoresDims {
  T: number;
  KV: number;
  /** first slot written (per head) */
  slot0: number;
  /** prompt position of the entry at slot0 */
  pos0: number;
  capacity: number;
  seed: number;
  layer: number;
  /** streaming: positions < sinks get +inf (default 4) */
  sinks?: number;
}

/** Scores of the T new entries at slots [slot0, slot0+T) of every KV head. */
export function fillScores(o: { policy: 'streaming' | 'random' }, d: FillScoresDims, b: { scores: GPUBuffer }): Dispatch {
  const k = kernel({ op: 'fill_scores', policy: o.policy }, () => ({
    // written as bits: +inf cannot be spelled as a WGSL constant, and the order-preserving key needs exact bits
    bindings: [rw('scores', 'array<u32>')], // (KV, capacity) f32 bits
    params: [['T', 'u32'], ['KV', 'u32'], ['slot0', 'u32'], ['pos0', 'u32'], ['capacity', 'u32'], ['seed', 'u32'], ['layer', 'u32'], ['sinks', 'u32']],
    workgroupSize: [64, 1, 1],
    body: wgsl`
// PCG output permutation (O'Neill); nested for the 4-tuple so nearby inputs decorrelate
fn pcg(x: u32) -> u32 {
  let state = x * 747796405u + 2891336453u;
  let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
  return (word >> 22u) ^ word;
}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = gid.x;
  if (i >= params.T * params.KV) { return; }
  let g = i / params.T;
  let t = i % params.T;
  let pos = params.pos0 + t;
${
  o.policy === 'streaming'
    ? '  let v = select(bitcast<u32>(f32(pos)), 0x7f800000u, pos < params.sinks);'
    : '  let v = bitcast<u32>(f32(pcg(params.seed ^ pcg(params.layer ^ pcg(g ^ pcg(pos)))) >> 8u) / 16777216.0);'
}
  scores[g * params.capacity + params.slot0 + t] = v;
}`,
  }));
  return {
    kernel: k,
    buffers: { scores: b.scores },
    params: { T: d.T, KV: d.KV, slot0: d.slot0, pos0: d.pos0, capacity: d.capacity, seed: d.seed >>> 0, layer: d.layer, sinks: d.sinks ?? 4 },
    workgroups: [Math.ceil((d.T * d.KV) / 64)],
  };
}

/** scores[g, slot0 .. slot0+T) = 0 for every KV head (H2O: new entries start with no accumulated attention). */
export function zeroScores(d: { KV: number; slot0: number; T: number; capacity: number }, b: { scores: GPUBuffer }): Dispatch {
  const k = kernel({ op: 'zero_scores' }, () => ({
    bindings: [rw('scores', 'array<f32>')], // (KV, capacity)
    params: [['T', 'u32'], ['KV', 'u32'], ['slot0', 'u32'], ['capacity', 'u32']],
    workgroupSize: [64, 1, 1],
    body: wgsl`
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  if (gid.x >= params.T * params.KV) { return; }
  scores[(gid.x / params.T) * params.capacity + params.slot0 + gid.x % params.T] = 0.0;
}`,
  }));
  return { kernel: k, buffers: { scores: b.scores }, params: { ...d }, workgroups: [Math.ceil((d.T * d.KV) / 64)] };
}

export type StatsOpts = AttentionOpts & { mode: 'h2o' | 'snapkv'; window?: number };

// small footprint (~12.5 KB of workgroup memory at D=128) for occupancy, as in attention.ts
const W = 64;
const BS = 16; // slots per workgroup (SnapKV: 2 halo slots each side feed the pooling, 12 written)
const NG = W / BS; // row groups: threads sharing a slot split the query rows
const BR = 8; // query rows per tile

/**
 * Per-slot attention statistics of a chunk, from the chunk's queries and the lse its attention produced.
 * One workgroup per (block of slots, KV head): the block's rotated keys stay in workgroup memory while tiles of
 * query rows (query × head of the group) stream past, so each probability costs one dot product, as in attention.
 */
export function attentionStats(
  o: StatsOpts,
  d: { T: number; base: number; capacity: number; scale: number },
  b: { q: GPUBuffer; kCache: GPUBuffer; kpos: GPUBuffer; rope: GPUBuffer; lse: GPUBuffer; scores: GPUBuffer },
): Dispatch[] {
  checkHeadDims(o.headDim, o.rotaryDim);
  const G = o.numHeads / o.numKvHeads;
  const D = o.headDim;
  const DQ = D / 4;
  const snap = o.mode === 'snapkv';
  const halo = snap ? 2 : 0;
  const outPer = BS - 2 * halo;
  const key = { op: 'attention_stats', mode: o.mode, cache: o.cacheDtype, H: o.numHeads, G, D };
  const k = kernel(key, () => ({
    bindings: [
      ro('q', 'array<vec4<f32>>'), // (T, H, D) rotated queries of the chunk
      ...keyBindings(o.cacheDtype, false),
      ro('lse', 'array<f32>'), // (T, H) log-sum-exp of the scaled logits (from attention)
      rw('scores', 'array<f32>'), // (KV, capacity)
    ],
    params: [['T', 'u32'], ['base', 'u32'], ['capacity', 'u32'], ['rot', 'u32'], ['t0', 'u32'], ['dq', 'u32'], ['scale', 'f32']],
    workgroupSize: [W, 1, 1],
    body: wgsl`
const DQ = ${DQ}u;
const KS = ${D + 1}u; // padded key row: slot i at i*KS, so threads of different slots hit different banks
const H = ${o.numHeads}u;
const G = ${G}u;
const BS = ${BS}u;
const BR = ${BR}u;
const NG = ${NG}u;
${keyFns(o.cacheDtype, false)}

var<workgroup> kS: array<f32, ${BS * (D + 1)}>; // (BS, D+1) rotated keys of the block
var<workgroup> qS: array<vec4<f32>, ${BR * DQ}>; // (BR, D) scaled query rows of the tile
var<workgroup> lseS: array<f32, ${BR}>;
var<workgroup> red: array<f32, ${W}>; // (NG, BS) per-group sums, then raw values

@compute @workgroup_size(${W})
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>) {
  let g = wg.y;
  let kvEnd = params.base + params.T;
  let s0 = i32(wg.x * ${outPer}u) - ${halo}; // first slot of the block (halo may be negative)
  let i = lid % BS;
  let rg = lid / BS;
  let s = s0 + i32(i);
  let slotOk = s >= 0 && u32(s) < kvEnd;
  for (var e = lid; e < BS * DQ; e += ${W}u) {
    let si = s0 + i32(e / DQ);
    var kv = vec4<f32>(0.0);
    if (si >= 0 && u32(si) < kvEnd) { kv = rotK(g, u32(si), e % DQ); }
    let at = (e / DQ) * KS + (e % DQ) * 4u;
    kS[at] = kv.x;
    kS[at + 1u] = kv.y;
    kS[at + 2u] = kv.z;
    kS[at + 3u] = kv.w;
  }
  // rows (t, head) with t in [t0, T); queries before tStart see none of the block's slots (causal)
  let nRows = (params.T - params.t0) * G;
  let sMin = u32(max(s0, 0));
  let tStart = max(params.t0, select(0u, sMin - params.base, sMin > params.base));
  var acc = 0.0;
  for (var r0 = (tStart - params.t0) * G; r0 < nRows; r0 += BR) {
    for (var e = lid; e < BR * DQ; e += ${W}u) {
      let r = r0 + e / DQ;
      var qv = vec4<f32>(0.0);
      if (r < nRows) {
        let th = (params.t0 + r / G) * H + g * G + r % G;
        qv = q[th * DQ + e % DQ] * params.scale;
        if (e % DQ == 0u) { lseS[e / DQ] = lse[th]; }
      }
      qS[e] = qv;
    }
    workgroupBarrier();
    for (var rr = rg; rr < BR; rr += NG) {
      let r = r0 + rr;
      if (r < nRows && slotOk && u32(s) <= params.base + params.t0 + r / G) {
        var dt = 0.0;
        // run-time bound (== DQ): the loop only reads workgroup memory, and CPU Vulkan compilers unroll constant ones
        for (var j = 0u; j < params.dq; j++) {
          let at = i * KS + j * 4u;
          dt += dot(qS[rr * DQ + j], vec4<f32>(kS[at], kS[at + 1u], kS[at + 2u], kS[at + 3u]));
        }
        acc += exp(dt - lseS[rr]);
      }
    }
    workgroupBarrier();
  }
  red[lid] = acc;
  workgroupBarrier();
  var raw = 0.0;
  if (rg == 0u) {
    for (var k = 0u; k < NG; k++) { raw += red[k * BS + i]; }
  }
  workgroupBarrier();
${
  snap
    ? `  if (rg == 0u) { red[i] = raw / f32(params.T - params.t0); }
  workgroupBarrier();
  // avg_pool1d(kernel 5, stride 1, padding 2, count_include_pad): out-of-range slots have raw = 0
  if (rg == 0u && slotOk && i >= 2u && i < BS - 2u) {
    scores[g * params.capacity + u32(s)] = (red[i - 2u] + red[i - 1u] + red[i] + red[i + 1u] + red[i + 2u]) / 5.0;
  }`
    : `  if (rg == 0u && slotOk) { scores[g * params.capacity + u32(s)] += raw; }`
}
}`,
  }));
  const kvEnd = d.base + d.T;
  const t0 = snap ? d.T - Math.min(o.window ?? 32, d.T) : 0;
  return [
    {
      kernel: k,
      buffers: { q: b.q, kCache: b.kCache, kpos: b.kpos, rope: b.rope, lse: b.lse, scores: b.scores },
      params: { T: d.T, base: d.base, capacity: d.capacity, rot: o.rotaryDim, t0, dq: DQ, scale: d.scale },
      workgroups: [Math.ceil(kvEnd / outPer), o.numKvHeads],
    },
  ];
}
