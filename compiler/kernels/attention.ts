/**
 * Causal attention of a chunk of queries over the fixed-size KV cache (flash-style online softmax).
 *
 * One workgroup owns one KV head, a block of BQ queries and (flash-decoding) one split of the key range. Its rows
 * are the BQ × G (query, head) pairs of the GQA group, so every K/V tile loaded into workgroup memory (RoPE applied
 * on load from the slot's stored position) is reused by all query heads of the group and all queries of the block.
 * With `kRot` (keys rotated once per layer into f16 by rotate-keys.ts) the tiles load rotated keys with plain loads:
 * every block of queries loads every key, so rotating each (position, rope-table and partner loads) once per block
 * repeats that work T/BQ times. Used for f16 and int8 caches, whose keys carry no more than f16 precision.
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
import { NEG, attentionBindings, workgroupReduce, checkHeadDims, tileLoad, FMA_THREADS, FMA_TILE_KEYS, type CacheDtype } from './attn-common.js';
import { attentionKeyInputs } from './rotate-keys.js';
import { decodeScratchBytes } from './attention-decode.js';
import { fmaBlockQueries, shuffleKernel, shuffleRows } from './attention-shuffle.js';

export interface AttentionOpts {
  cacheDtype: CacheDtype;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  rotaryDim: number;
  /**
   * the device's narrowest subgroup (0 or absent: no `subgroups`): where a row's lanes fit one, they sum their partial
   * dots with subgroupShuffleXor (attention-shuffle.ts) instead of through workgroup memory
   */
  subgroupMin?: number;
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
  kCache: GPUBuffer; // (KV, capacity, D) f32|f16, or (KV, capacity, D/4 + 1) u32 int8 rows; keys before RoPE
  vCache: GPUBuffer; // (KV, capacity, D) f32|f16, or (KV, capacity, D/4 + 1) u32 int8 rows
  kpos: GPUBuffer; // (KV, capacity) u32
  rope: GPUBuffer; // (positions, rotaryDim/2) vec2<f32>(cos, sin)
  out: GPUBuffer; // (T, H*D) f32
  lse?: GPUBuffer; // (T, H) f32 log-sum-exp of the scaled logits
  scratch?: GPUBuffer; // attentionScratchBytes(o, d) bytes, needed when the plan splits keys
  kRot?: GPUBuffer; // (KV, capacity, D) f16: the keys the chunk sees are rotated into it first (rotate-keys.ts)
}

const W = FMA_THREADS; // threads per workgroup
const BK = FMA_TILE_KEYS; // keys per tile
const TARGET_WG = 512; // workgroups wanted in flight (a few per SM on H100/H200)
const MIN_SPLIT_KEYS = 64; // below this a split is more overhead than work
const MAX_SPLITS = 1024; // the combine kernel keeps one weight per split in workgroup memory

export interface Plan {
  G: number;
  BQ: number;
  /** lanes per row (per row group with shuffles) */
  TPR: number;
  /** rows per thread group, sharing each key load (the shuffle kernel; 1 otherwise) */
  RT: number;
  /** partial dots summed with subgroup shuffles (attention-shuffle.ts) */
  shuffle: boolean;
  nQB: number;
  splits: number;
  splitKeys: number;
  /** splits before rounding the split size to whole tiles: >= splits, and nondecreasing in base */
  splitsBound: number;
}

function plan(o: AttentionOpts, d: AttentionDims): Plan {
  checkHeadDims(o.headDim, o.rotaryDim);
  if (o.numHeads % o.numKvHeads !== 0) throw new Error(`numHeads ${o.numHeads} not a multiple of numKvHeads ${o.numKvHeads}`);
  const G = o.numHeads / o.numKvHeads;
  if (G > W) throw new Error(`GQA group of ${G} heads exceeds ${W}`);
  // ~32 rows per workgroup: enough reuse of each K/V tile while q and the accumulator stay in registers
  const BQ = Math.max(1, Math.min(d.T, fmaBlockQueries(G) ?? Math.floor(32 / G)));
  const R = BQ * G;
  const DQ = o.headDim / 4;
  let TPR = 1;
  while (TPR * 2 <= 32 && R * TPR * 2 <= W && DQ % (TPR * 2) === 0) TPR *= 2;
  const sh = shuffleRows(o, G, R);
  const nQB = Math.ceil(d.T / BQ);
  const kvEnd = d.base + d.T;
  let splits = d.splits ?? Math.min(Math.ceil(TARGET_WG / (nQB * o.numKvHeads)), Math.ceil(kvEnd / MIN_SPLIT_KEYS));
  splits = Math.max(1, Math.min(splits, Math.ceil(kvEnd / BK), MAX_SPLITS));
  const splitsBound = splits;
  const splitKeys = Math.ceil(Math.ceil(kvEnd / splits) / BK) * BK;
  splits = Math.ceil(kvEnd / splitKeys);
  return { G, BQ, TPR: sh?.TPR ?? TPR, RT: sh?.RT ?? 1, shuffle: sh !== null, nQB, splits, splitKeys, splitsBound };
}

/**
 * Bytes of `scratch` that cover every call with T' <= d.T queries ending at or before slot d.base + d.T (so one
 * buffer sized with the largest chunk at the end of the cache also serves every decode step): splits × T' × H ×
 * (D + 4) f32, maximized over T' (0 when nothing splits), for this kernel and the decode kernel
 * (attention-decode.ts, which takes chunks of T' <= DECODE_MAX_T). The bound uses the split count before rounding,
 * which is nondecreasing in base.
 */
export function attentionScratchBytes(o: AttentionOpts, d: AttentionDims): number {
  const end = d.base + d.T;
  let most = 0;
  for (let t = 1; t <= d.T; t++) {
    const p = plan(o, { ...d, T: t, base: end - t });
    if (p.splitsBound > 1) most = Math.max(most, p.splitsBound * t * o.numHeads * (o.headDim + 4) * 4);
  }
  return Math.max(most, decodeScratchBytes(o, d));
}

/** rk: keys come rotated from kRot instead of being rotated from the cache while loaded */
function mainKernel(o: AttentionOpts, p: Plan, split: boolean, withLse: boolean, rk: boolean) {
  const { G, BQ, TPR } = p;
  const H = o.numHeads;
  const DQ = o.headDim / 4;
  const R = BQ * G;
  const NQ = DQ / TPR;
  const key = { op: 'attention', cache: o.cacheDtype, H, G, D: o.headDim, BQ, TPR, split, lse: withLse, rk };
  // generated straight-line code: one named register per quad (q/acc never spill to local memory) and every global
  // load of a tile issued before any is used
  const qs = Array.from({ length: NQ }, (_, j) => j);
  const tile = tileLoad(o, rk);
  return kernel(key, () => ({
    bindings: attentionBindings(o.cacheDtype, split, withLse, 'vec4<f32>', rk),
    params: [['T', 'u32'], ['base', 'u32'], ['capacity', 'u32'], ['rot', 'u32'], ['splitKeys', 'u32'], ['splits', 'u32'], ['tpr', 'u32'], ['scale', 'f32']],
    workgroupSize: [W, 1, 1],
    body: wgsl`
const DQ = ${DQ}u;
const H = ${H}u;
const G = ${G}u;
const BQ = ${BQ}u;
const R = ${R}u;
const TPR = ${TPR}u;
const BK = ${BK}u;
const NEG = ${NEG};
${tile.decls}
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
  let qAt = (t * H + h) * DQ + lane;
${qs.map((j) => `  var q${j} = vec4<f32>(0.0);
  var a${j} = vec4<f32>(0.0);`)}
  if (rowOk) {
    // scale folded into q once instead of once per logit
${qs.map((j) => `    q${j} = q[qAt + ${j * TPR}u] * params.scale;`)}
  }
  var m = NEG;
  var l = 0.0;

  // keys of this split that the block's last query can see (uniform: from workgroup id and params only)
  let blockEnd = params.base + min(wg.x * BQ + BQ, params.T);
  let k0 = wg.z * params.splitKeys;
  let k1 = min(k0 + params.splitKeys, blockEnd);
  for (var kb = k0; kb < k1; kb += BK) {
${tile.load}
    workgroupBarrier();
    // Key loops run to the tile's valid count (uniform, known only at run time): besides skipping the padding of the
    // last tile this keeps CPU Vulkan compilers from fully unrolling them (minutes of shader compile).
    let nk = min(BK, k1 - kb);
    if (live) {
      for (var kk = 0u; kk < nk; kk++) {
        let kAt = kk * DQ + lane;
        part[(kk * R + row) * TPR + lane] = ${qs.map((j) => `dot(q${j}, kT[kAt + ${j * TPR}u])`).join(' + ')};
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
${qs.map((j) => `      a${j} *= alpha;`)}
      var ps = 0.0;
      for (var kk = 0u; kk < nk; kk++) {
        let sv = sf[kk * R + row];
        let pk = select(0.0, exp(sv - mt), sv > -1.0e38);
        ps += pk;
        let vAt = kk * DQ + lane;
${qs.map((j) => `        a${j} += pk * vT[vAt + ${j * TPR}u];`)}
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
  let oAt = (wg.z * TH + t * H + h) * DQ + lane;
${qs.map((j) => `  scratch[oAt + ${j * TPR}u] = a${j};`).join('\n')}
  // (max, sum) after all splits' outputs: the combine kernel weighs split i by exp(m_i - M)
  if (lane == 0u) { scratch[params.splits * TH * DQ + wg.z * TH + t * H + h] = vec4<f32>(m, l, 0.0, 0.0); }`
    : `  let inv = 1.0 / l;
${qs.map((j) => `  out[qAt + ${j * TPR}u] = a${j} * inv;`).join('\n')}
${withLse ? `  if (lane == 0u) { lse[t * H + h] = m + log(l); }` : ''}`
}
}`,
  }));
}

const WC = 64; // combine threads

/**
 * Merges the per-split partials of one (query, head): out = Σ o_i e^(m_i - M) / L with L = Σ l_i e^(m_i - M),
 * lse = M + log L. Max and sum are tree-reduced over the splits; the output quads are split among SG groups of
 * splits so that all threads stream the partials.
 */
export function combineKernel(o: AttentionOpts, withLse: boolean) {
  const DQ = o.headDim / 4;
  const SG = Math.max(1, Math.floor(WC / DQ)); // split groups
  return kernel({ op: 'attention_combine', D: o.headDim, lse: withLse }, () => ({
    bindings: [
      ro('scratch', 'array<vec4<f32>>'), // see the split attention kernel
      rw('out', 'array<vec4<f32>>'), // (T, H*D)
      ...(withLse ? [rw('lse', 'array<f32>')] : []), // (T, H)
    ],
    params: [['TH', 'u32'], ['splits', 'u32']],
    workgroupSize: [WC, 1, 1],
    body: wgsl`
const DQ = ${DQ}u;
const SG = ${SG}u;
const NEG = ${NEG};
var<workgroup> red: array<f32, ${WC}>;
var<workgroup> wt: array<f32, ${MAX_SPLITS}>; // e^(m_i - M) / L per split
var<workgroup> acc: array<vec4<f32>, ${SG * DQ}>;

${workgroupReduce(WC)}

@compute @workgroup_size(${WC})
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>) {
  let th = min(wg.x + wg.y * 65535u, params.TH - 1u); // clamped, not returned: barriers below need every thread
  let mlAt = params.splits * params.TH * DQ;
  var mx = NEG;
  for (var i = lid; i < params.splits; i += ${WC}u) { mx = max(mx, scratch[mlAt + i * params.TH + th].x); }
  mx = reduce(lid, mx, true);
  var sum = 0.0;
  // an all-masked split has m = NEG, l = 0: its weight exp(NEG - mx) is exactly 0
  for (var i = lid; i < params.splits; i += ${WC}u) {
    let v = scratch[mlAt + i * params.TH + th];
    sum += v.y * exp(v.x - mx);
  }
  sum = reduce(lid, sum, false);
  for (var i = lid; i < params.splits; i += ${WC}u) { wt[i] = exp(scratch[mlAt + i * params.TH + th].x - mx) / sum; }
  workgroupBarrier();
  let sg = lid / DQ;
  for (var j = lid % DQ; j < DQ; j += ${WC}u) {
    if (sg < SG) {
      var a = vec4<f32>(0.0);
      for (var i = sg; i < params.splits; i += SG) { a += scratch[(i * params.TH + th) * DQ + j] * wt[i]; }
      acc[sg * DQ + j] = a;
    }
  }
  workgroupBarrier();
  if (wg.x + wg.y * 65535u >= params.TH) { return; }
  for (var j = lid; j < DQ; j += ${WC}u) {
    var a = acc[j];
    for (var k = 1u; k < SG; k++) { a += acc[k * DQ + j]; }
    out[th * DQ + j] = a;
  }
${withLse ? '  if (lid == 0u) { lse[th] = mx + log(sum); }' : ''}
}`,
  }));
}

/**
 * Attention of a chunk (T queries at slots [base, base+T)) over the cache; 1 dispatch, or 2 when keys are split, and
 * one more first with `b.kRot`: the keys the chunk sees rotated once into it.
 */
export function attention(o: AttentionOpts, d: AttentionDims, b: AttentionBuffers): Dispatch[] {
  const p = plan(o, d);
  const withLse = b.lse !== undefined;
  const split = p.splits > 1;
  const rk = b.kRot !== undefined;
  const { buffers: common, pre } = attentionKeyInputs(o, d, b);
  const params = { T: d.T, base: d.base, capacity: d.capacity, rot: o.rotaryDim, splitKeys: p.splitKeys, splits: p.splits, tpr: p.TPR, scale: d.scale };
  const workgroups = [p.nQB, o.numKvHeads, p.splits] as const;
  if (!split) {
    const outs: Record<string, GPUBuffer> = withLse ? { out: b.out, lse: b.lse! } : { out: b.out };
    return [...pre, { kernel: (p.shuffle ? shuffleKernel : mainKernel)(o, p, false, withLse, rk), buffers: { ...common, ...outs }, params, workgroups }];
  }
  const need = p.splits * d.T * o.numHeads * (o.headDim + 4) * 4;
  if (!b.scratch || b.scratch.size < need) throw new Error(`attention: ${p.splits} key splits need a scratch buffer of ${need} bytes`);
  const TH = d.T * o.numHeads;
  const outs: Record<string, GPUBuffer> = withLse ? { scratch: b.scratch, out: b.out, lse: b.lse! } : { scratch: b.scratch, out: b.out };
  return [
    ...pre,
    { kernel: (p.shuffle ? shuffleKernel : mainKernel)(o, p, true, false, rk), buffers: { ...common, scratch: b.scratch }, params, workgroups },
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
