/**
 * Causal attention of a chunk of queries over the fixed-size KV cache (flash-style online softmax).
 *
 * One workgroup owns one KV head, a block of BQ queries and (flash-decoding) one split of the key range. Its rows
 * are the BQ × G (query, head) pairs of the GQA group, so every K/V tile loaded into workgroup memory (RoPE applied
 * on load from the slot's stored position) is reused by all query heads of the group and all queries of the block.
 * Each row is served by TPR lanes that each hold D/TPR dims of q and of the output accumulator in registers; the
 * per-lane partial dots go through workgroup memory (stage A sums them per key, stage B runs the online softmax and
 * the P·V update; every lane of a row computes the same max/sum, so no broadcast is needed).
 *
 * Prefill (T = 1024): BQ·G ≈ 32 rows, one split; ceil(T/BQ) × KV workgroups fill the GPU. Decode (T small): few
 * rows per head, so the key range is split across workgroups (partial max/sum/unnormalized output per split into
 * `scratch`) and a combine kernel merges them; every SM then streams a slice of the cache.
 */
import { kernel, ro, rw, wgsl } from '../wgsl.js';
import type { Dispatch } from '../../runtime/gpu/runner.js';
import { NEG, checkHeadDims, keyBindings, keyFns } from './attn-common.js';

export interface AttentionOpts {
  cacheDtype: 'f32' | 'f16';
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  rotaryDim: number;
}
export interface AttentionDims {
  /** queries in the chunk */
  T: number;
  /** slot of the chunk's first entry; query t sees slots 0 ..= base + t */
  base: number;
  capacity: number;
  /** logit scale (1/sqrt(headDim) usually) */
  scale: number;
  /** force the number of key splits (tests, tuning); default: enough workgroups to fill a large GPU */
  splits?: number;
}
export interface AttentionBuffers {
  q: GPUBuffer; // (T, H, D) f32, already rotated
  kCache: GPUBuffer; // (KV, capacity, D) f32|f16, keys before RoPE
  vCache: GPUBuffer; // (KV, capacity, D) f32|f16
  kpos: GPUBuffer; // (KV, capacity) u32
  rope: GPUBuffer; // (positions, rotaryDim/2) vec2<f32>(cos, sin)
  out: GPUBuffer; // (T, H*D) f32
  lse?: GPUBuffer; // (T, H) f32 log-sum-exp of the scaled logits
  scratch?: GPUBuffer; // attentionScratchBytes(o, d) bytes, needed when the plan splits keys
}

const W = 128; // threads per workgroup
const BK = 16; // keys per tile
const TARGET_WG = 512; // workgroups wanted in flight (a few per SM on H100/H200)
const MIN_SPLIT_KEYS = 64; // below this a split is more overhead than work

interface Plan {
  G: number;
  BQ: number;
  TPR: number;
  nQB: number;
  splits: number;
  splitKeys: number;
}

function plan(o: AttentionOpts, d: AttentionDims): Plan {
  checkHeadDims(o.headDim, o.rotaryDim);
  if (o.numHeads % o.numKvHeads !== 0) throw new Error(`numHeads ${o.numHeads} not a multiple of numKvHeads ${o.numKvHeads}`);
  const G = o.numHeads / o.numKvHeads;
  if (G > W) throw new Error(`GQA group of ${G} heads exceeds ${W}`);
  // ~32 rows per workgroup: enough reuse of each K/V tile while q and the accumulator stay in registers
  const BQ = Math.max(1, Math.min(d.T, Math.floor(32 / G)));
  const R = BQ * G;
  const DQ = o.headDim / 4;
  let TPR = 1;
  while (TPR * 2 <= 32 && R * TPR * 2 <= W && DQ % (TPR * 2) === 0) TPR *= 2;
  const nQB = Math.ceil(d.T / BQ);
  const kvEnd = d.base + d.T;
  let splits = d.splits ?? Math.min(Math.ceil(TARGET_WG / (nQB * o.numKvHeads)), Math.ceil(kvEnd / MIN_SPLIT_KEYS));
  splits = Math.max(1, Math.min(splits, Math.ceil(kvEnd / BK)));
  const splitKeys = Math.ceil(Math.ceil(kvEnd / splits) / BK) * BK;
  splits = Math.ceil(kvEnd / splitKeys);
  return { G, BQ, TPR, nQB, splits, splitKeys };
}

/** Bytes of `scratch` the dispatches need (0 when unsplit): splits × T × H × (D + 4) f32. Grows with base. */
export function attentionScratchBytes(o: AttentionOpts, d: AttentionDims): number {
  const p = plan(o, d);
  return p.splits > 1 ? p.splits * d.T * o.numHeads * (o.headDim + 4) * 4 : 0;
}

function mainKernel(o: AttentionOpts, p: Plan, split: boolean, withLse: boolean) {
  const { G, BQ, TPR } = p;
  const H = o.numHeads;
  const DQ = o.headDim / 4;
  const R = BQ * G;
  const NQ = DQ / TPR;
  const key = { op: 'attention', cache: o.cacheDtype, H, G, D: o.headDim, BQ, TPR, split, lse: withLse };
  return kernel(key, () => ({
    bindings: [
      ro('q', 'array<vec4<f32>>'), // (T, H, D) as quads, rotated
      ...keyBindings(o.cacheDtype, true),
      ...(split
        ? [rw('scratch', 'array<vec4<f32>>')] // [splits][T*H][D/4] unnormalized out, then [splits][T*H] (max, sum, 0, 0)
        : [rw('out', 'array<vec4<f32>>'), ...(withLse ? [rw('lse', 'array<f32>')] : [])]), // (T, H*D); (T, H)
    ],
    params: [['T', 'u32'], ['base', 'u32'], ['capacity', 'u32'], ['rot', 'u32'], ['splitKeys', 'u32'], ['splits', 'u32'], ['tpr', 'u32'], ['scale', 'f32']],
    workgroupSize: [W, 1, 1],
    body: wgsl`
const DQ = ${DQ}u;
const H = ${H}u;
const G = ${G}u;
const BQ = ${BQ}u;
const R = ${R}u;
const TPR = ${TPR}u;
const NQ = ${NQ}u;
const BK = ${BK}u;
const NEG = ${NEG};
${keyFns(o.cacheDtype, true)}

var<workgroup> kT: array<vec4<f32>, ${BK * DQ}>; // (BK, D) rotated keys of the tile
var<workgroup> vT: array<vec4<f32>, ${BK * DQ}>; // (BK, D) values of the tile
var<workgroup> part: array<f32, ${BK * R * TPR}>; // (BK, R, TPR) per-lane partial dots (lane fastest: no conflicts)
var<workgroup> sf: array<f32, ${BK * R}>; // (BK, R) scaled, masked logits

@compute @workgroup_size(${W})
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>) {
  let g = wg.y;
  let row = lid / TPR;
  let lane = lid % TPR;
  let live = row < R;
  let t = wg.x * BQ + row / G;
  let h = g * G + row % G;
  let rowOk = live && t < params.T;
  let rowEnd = params.base + t + 1u; // keys this row may see: [0, rowEnd)

  var qr: array<vec4<f32>, NQ>;
  var acc: array<vec4<f32>, NQ>;
  if (rowOk) {
    for (var j = 0u; j < NQ; j++) {
      // scale folded into q once instead of once per logit
      qr[j] = q[(t * H + h) * DQ + j * TPR + lane] * params.scale;
    }
  }
  var m = NEG;
  var l = 0.0;

  // keys of this split that the block's last query can see (uniform: from workgroup id and params only)
  let blockEnd = params.base + min(wg.x * BQ + BQ, params.T);
  let k0 = wg.z * params.splitKeys;
  let k1 = min(k0 + params.splitKeys, blockEnd);
  for (var kb = k0; kb < k1; kb += BK) {
    for (var e = lid; e < BK * DQ; e += ${W}u) {
      let s = kb + e / DQ;
      var kv = vec4<f32>(0.0);
      var vv = vec4<f32>(0.0);
      if (s < k1) {
        kv = rotK(g, s, e % DQ);
        vv = vq(g, s, e % DQ);
      }
      kT[e] = kv;
      vT[e] = vv;
    }
    workgroupBarrier();
    // Key loops run to the tile's valid count (uniform, known only at run time): besides skipping the padding of the
    // last tile this keeps CPU Vulkan compilers from fully unrolling them (minutes of shader compile); the inner
    // loops over this lane's quads keep constant bounds so qr/acc stay in registers.
    let nk = min(BK, k1 - kb);
    if (live) {
      for (var kk = 0u; kk < nk; kk++) {
        var dt = 0.0;
        for (var j = 0u; j < NQ; j++) { dt += dot(qr[j], kT[kk * DQ + j * TPR + lane]); }
        part[(kk * R + row) * TPR + lane] = dt;
      }
    }
    workgroupBarrier();
    // stage A: lanes split the tile's keys, each finishes whole logits for its row
    if (live) {
      for (var kk = lane; kk < nk; kk += TPR) {
        var sv = 0.0;
        for (var i = 0u; i < params.tpr; i++) { sv += part[(kk * R + row) * TPR + i]; } // tpr == TPR, see nk
        sf[kk * R + row] = select(NEG, sv, rowOk && kb + kk < rowEnd);
      }
    }
    workgroupBarrier();
    // stage B: online softmax; masked keys get p = 0 explicitly (an all-masked tile would otherwise give exp(0))
    if (rowOk) {
      var mt = m;
      for (var kk = 0u; kk < nk; kk++) { mt = max(mt, sf[kk * R + row]); }
      let alpha = exp(m - mt);
      for (var j = 0u; j < NQ; j++) { acc[j] *= alpha; }
      var ps = 0.0;
      for (var kk = 0u; kk < nk; kk++) {
        let sv = sf[kk * R + row];
        let p = select(0.0, exp(sv - mt), sv > -1.0e38);
        ps += p;
        for (var j = 0u; j < NQ; j++) { acc[j] += p * vT[kk * DQ + j * TPR + lane]; }
      }
      l = l * alpha + ps;
      m = mt;
    }
    workgroupBarrier();
  }
  if (!rowOk) { return; }
${
  split
    ? `  let TH = params.T * H;
  let th = t * H + h;
  for (var j = 0u; j < NQ; j++) { scratch[(wg.z * TH + th) * DQ + j * TPR + lane] = acc[j]; }
  // (max, sum) after all splits' outputs: the combine kernel weighs split i by exp(m_i - M)
  if (lane == 0u) { scratch[params.splits * TH * DQ + wg.z * TH + th] = vec4<f32>(m, l, 0.0, 0.0); }`
    : `  let inv = 1.0 / l;
  for (var j = 0u; j < NQ; j++) { out[(t * H + h) * DQ + j * TPR + lane] = acc[j] * inv; }
${withLse ? `  if (lane == 0u) { lse[t * H + h] = m + log(l); }` : ''}`
}
}`,
  }));
}

/** Merges the per-split partials: out = Σ o_i e^(m_i - M) / Σ l_i e^(m_i - M), lse = M + log(Σ l_i e^(m_i - M)). */
function combineKernel(o: AttentionOpts, withLse: boolean) {
  const DQ = o.headDim / 4;
  return kernel({ op: 'attention_combine', D: o.headDim, lse: withLse }, () => ({
    bindings: [
      ro('scratch', 'array<vec4<f32>>'), // see the split attention kernel
      rw('out', 'array<vec4<f32>>'), // (T, H*D)
      ...(withLse ? [rw('lse', 'array<f32>')] : []), // (T, H)
    ],
    params: [['TH', 'u32'], ['splits', 'u32']],
    workgroupSize: [64, 1, 1],
    body: wgsl`
const DQ = ${DQ}u;
const NEG = ${NEG};
@compute @workgroup_size(64)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>) {
  let th = wg.x + wg.y * 65535u;
  if (th >= params.TH) { return; }
  let mlAt = params.splits * params.TH * DQ;
  var mx = NEG;
  for (var i = 0u; i < params.splits; i++) { mx = max(mx, scratch[mlAt + i * params.TH + th].x); }
  var sum = 0.0;
  // an all-masked split has m = NEG, l = 0: its weight exp(NEG - mx) is exactly 0
  for (var i = 0u; i < params.splits; i++) {
    let v = scratch[mlAt + i * params.TH + th];
    sum += v.y * exp(v.x - mx);
  }
  for (var j = lid; j < DQ; j += 64u) {
    var a = vec4<f32>(0.0);
    for (var i = 0u; i < params.splits; i++) {
      a += scratch[(i * params.TH + th) * DQ + j] * exp(scratch[mlAt + i * params.TH + th].x - mx);
    }
    out[th * DQ + j] = a / sum;
  }
${withLse ? '  if (lid == 0u) { lse[th] = mx + log(sum); }' : ''}
}`,
  }));
}

/** Attention of a chunk (T queries at slots [base, base+T)) over the cache; 1 dispatch, or 2 when keys are split. */
export function attention(o: AttentionOpts, d: AttentionDims, b: AttentionBuffers): Dispatch[] {
  const p = plan(o, d);
  const withLse = b.lse !== undefined;
  const split = p.splits > 1;
  const common = { q: b.q, kCache: b.kCache, vCache: b.vCache, kpos: b.kpos, rope: b.rope };
  const params = { T: d.T, base: d.base, capacity: d.capacity, rot: o.rotaryDim, splitKeys: p.splitKeys, splits: p.splits, tpr: p.TPR, scale: d.scale };
  const workgroups = [p.nQB, o.numKvHeads, p.splits] as const;
  if (!split) {
    const outs: Record<string, GPUBuffer> = withLse ? { out: b.out, lse: b.lse! } : { out: b.out };
    return [{ kernel: mainKernel(o, p, false, withLse), buffers: { ...common, ...outs }, params, workgroups }];
  }
  if (!b.scratch) throw new Error(`attention: ${p.splits} key splits need a scratch buffer of ${attentionScratchBytes(o, d)} bytes`);
  const TH = d.T * o.numHeads;
  const outs: Record<string, GPUBuffer> = withLse ? { scratch: b.scratch, out: b.out, lse: b.lse! } : { scratch: b.scratch, out: b.out };
  return [
    { kernel: mainKernel(o, p, true, false), buffers: { ...common, scratch: b.scratch }, params, workgroups },
    {
      kernel: combineKernel(o, withLse),
      buffers: outs,
      params: { TH, splits: p.splits },
      workgroups: [Math.min(TH, 65535), Math.ceil(TH / 65535)],
    },
  ];
}

/** The plan's shape, for tests and benchmarks: rows per workgroup, lanes per row, key splits. */
export function attentionPlan(o: AttentionOpts, d: AttentionDims): Readonly<Plan> {
  return plan(o, d);
}
