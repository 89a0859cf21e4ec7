/**
 * Decode attention (T ≤ DECODE_MAX_T queries) built to stream the KV cache at memory bandwidth.
 *
 * Grid (splits, KV, row blocks). A workgroup owns one KV head, one contiguous slab of `splitKeys` cache slots and a
 * block of R (query, head) rows of the GQA group, so every K/V row it loads serves all G heads and all T queries.
 * Its W = D/4/P lanes cover one cached row: lane l reads quads l, l + W, … (P quads), so adjacent lanes read
 * adjacent 8-byte (f16) / 16-byte (f32) / 4-byte (int8) pieces and one subgroup load covers a whole row:
 *
 *   slab of keys kb .. kb+NK-1 (one batch):   key kb+0: | q0 | q1 | ... | qW-1 |   lanes 0 .. W-1
 *                                             key kb+1: | q0 | q1 | ... | qW-1 |   (same lanes, next load)
 *
 * Every load of a batch (NK keys: raw quad, RoPE partner quad, value quad, position, rope pair) is issued before
 * any is used. Each lane then holds NK × R partial dots; they are summed over the row's lanes with subgroupAdd
 * (lane 0 of each subgroup leaves its sum in workgroup memory, the W/sgs sums are added: right for any subgroup size
 * 4..128) or, without `subgroups`, through workgroup memory alone: one barrier per batch, not per key (the buffers
 * alternate between batches, so no second barrier guards their reuse). Every lane then runs the same online
 * softmax per row and updates its own output quads.
 *
 * With more than one split, each workgroup writes its unnormalized output and (max, sum) per row to `scratch` (the
 * layout of the prefill kernel's split path) and `decodeCombine` merges the splits.
 */
import { kernel, wgsl } from '../wgsl.js';
import type { Dispatch } from '../../runtime/gpu/runner.js';
import { NEG, attentionBindings, checkHeadDims, keyFns, ropeParts, SPLIT_ATTENTION_PARAMS, splitAttentionParams } from './attn-common.js';
import type { AttentionBuffers, AttentionDims, AttentionOpts } from './attention.js';
import { decodeCombine, MAX_SPLITS } from './attention-combine.js';
import { env, envPairs, parsedOnce } from '../../runtime/env.js';
import { attentionDecodeV2, planV2, type DecodeV2Opts, type DecodeV2Plan } from './attention-decode-v2.js';

/** Largest chunk the decode kernel serves; longer chunks take the prefill kernel. */
export const DECODE_MAX_T = 8;

const MAX_ROWS = 16; // (query, head) rows per workgroup: q and the output accumulators stay in registers
const MAX_LANES = 32; // lanes per cached row: one NVIDIA warp covers a D = 128 row with one quad per lane
const TARGET_WG = 2048; // ~15 single-warp workgroups per SM on a 132-SM GPU: enough loads in flight to hide latency
const MIN_SPLIT_KEYS = 64; // below this a split's partial costs more than its keys

export interface DecodeOpts extends AttentionOpts {
  /** reduce the partial dots with subgroupAdd (needs the device's `subgroups` feature) */
  subgroups: boolean;
  /** force the keys per batch (tests: CPU Vulkan compile time grows with the batch's unrolled code) */
  nk?: number;
  /** kernel variant (default: `LOCRET_ATTN_DECODE` naming `v1` or `v2`, else v1); v2 is attention-decode-v2.ts */
  variant?: 'v1' | 'v2';
  /** v2 plan knobs: lanes per key, threads per workgroup, keys per lane group per round */
  v2?: { kl?: number; nt?: number; nk?: number; rows?: number; prefetch?: boolean; depth?: 1 | 2; qShared?: boolean };
  /** the cached keys already carry RoPE (v2 only: it then reads neither positions nor the rope table) */
  keysRotated?: boolean;
  /** v2, int8 cache: key dots as packed int8 dot products on the raw codes, q in two int8 digits (GpuContext.intDot) */
  intDot?: boolean;
}

/**
 * The variant a call takes: the option, else a `v1` / `v2` token in LOCRET_ATTN_DECODE, else v2 (measured on an
 * H200 at the 8B shape, f16 cache: v2 2.3 ms = 920 GB/s at 16K entries and 1,770 GB/s at 131K, v1 555 / 629 GB/s).
 */
export function decodeVariant(o: { variant?: 'v1' | 'v2' }): 'v1' | 'v2' {
  return o.variant ?? envVariant(env('LOCRET_ATTN_DECODE'));
}
const envVariant = parsedOnce((spec) => ((spec ?? '').split(',').includes('v1') ? 'v1' : 'v2'));

interface DecodePlan {
  G: number;
  /** rows (query, head pairs) per workgroup, and row blocks */
  R: number;
  nBlocks: number;
  /** lanes per workgroup (= per cached row) and quads per lane */
  W: number;
  P: number;
  /** keys per batch (loads in flight per lane) */
  NK: number;
  splits: number;
  splitKeys: number;
  /** splits before rounding the split size to whole batches: >= splits, nondecreasing in base */
  splitsBound: number;
}

/** Tuning hook for timing runs on real GPUs (`LOCRET_ATTN_DECODE="nk=4,wg=4096"`); it changes plans, not results. */
function tuning(): { nk?: number; wg?: number } {
  return parseTuning(env('LOCRET_ATTN_DECODE')); // every layer of every decode step plans: parsed once per value
}
const parseTuning = parsedOnce((spec) => {
  const t: { nk?: number; wg?: number } = {};
  for (const [k, v] of envPairs(spec)) {
    if (k === 'nk' && [1, 2, 4, 8, 16].includes(Number(v))) t.nk = Number(v);
    if (k === 'wg' && Number(v) >= 1) t.wg = Number(v);
  }
  return t;
});

function plan(o: AttentionOpts & { nk?: number }, d: AttentionDims): DecodePlan {
  checkHeadDims(o.headDim, o.rotaryDim);
  if (o.numHeads % o.numKvHeads !== 0) throw new Error(`numHeads ${o.numHeads} not a multiple of numKvHeads ${o.numKvHeads}`);
  if (d.T < 1 || d.T > DECODE_MAX_T) throw new Error(`decode attention: T=${d.T} outside 1..${DECODE_MAX_T}`);
  const G = o.numHeads / o.numKvHeads;
  const rows = d.T * G;
  const R = Math.min(rows, MAX_ROWS);
  const nBlocks = Math.ceil(rows / R);
  const DQ = o.headDim / 4;
  let P = Math.ceil(DQ / MAX_LANES);
  while (DQ % P !== 0) P++;
  const tune = tuning();
  // NK × R partial dots per lane at most 32, so they and the batch's loaded quads fit in registers
  const NK = o.nk ?? tune.nk ?? Math.max(1, Math.min(8, Math.floor(32 / R)));
  const kvEnd = d.base + d.T;
  let splits = d.splits ?? Math.min(Math.ceil((tune.wg ?? TARGET_WG) / (nBlocks * o.numKvHeads)), Math.ceil(kvEnd / MIN_SPLIT_KEYS));
  splits = Math.max(1, Math.min(splits, Math.ceil(kvEnd / NK), MAX_SPLITS));
  const splitsBound = splits;
  const splitKeys = Math.ceil(Math.ceil(kvEnd / splits) / NK) * NK;
  splits = Math.ceil(kvEnd / splitKeys);
  return { G, R, nBlocks, W: DQ / P, P, NK, splits, splitKeys, splitsBound };
}

/** Bytes of `scratch` the decode kernel needs for any call of ≤ d.T queries ending at or before d.base + d.T. */
export function decodeScratchBytes(o: AttentionOpts, d: AttentionDims): number {
  const end = d.base + d.T;
  let most = 0;
  for (let t = 1; t <= Math.min(d.T, DECODE_MAX_T); t++) {
    const p = plan(o, { ...d, T: t, base: end - t, splits: undefined });
    if (p.splitsBound > 1) most = Math.max(most, p.splitsBound * t * o.numHeads * (o.headDim + 4) * 4);
  }
  return most;
}

const seq = (n: number) => Array.from({ length: n }, (_, i) => i);

function mainKernel(o: DecodeOpts, p: DecodePlan, split: boolean, withLse: boolean) {
  const { G, R, W, P, NK } = p;
  const H = o.numHeads;
  const DQ = o.headDim / 4;
  const NV = NK * R; // logits per batch
  const sg = o.subgroups;
  const key = { op: 'attention_decode', cache: o.cacheDtype, H, G, D: o.headDim, R, NK, sg, split, lse: withLse };
  const rs = seq(R);
  const is = seq(P);
  const ks = seq(NK);
  const v = (kk: number, r: number) => kk * R + r; // logit index within a batch
  // red holds two batches' partials (alternating); with subgroups one sum per subgroup (at most W/4 subgroups)
  const NS = Math.ceil(W / 4);
  const redLen = sg ? 2 * NV * NS : 2 * W * (NV + 1);
  return kernel(key, () => ({
    bindings: attentionBindings(o.cacheDtype, split, withLse),
    params: SPLIT_ATTENTION_PARAMS,
    workgroupSize: [W, 1, 1],
    enables: sg ? ['subgroups'] : [],
    body: wgsl`
const DQ = ${DQ}u;
const H = ${H}u;
const G = ${G}u;
const R = ${R}u;
const W = ${W}u;
const NV = ${NV}u;
const NEG = ${NEG};
${keyFns(o.cacheDtype, true)}
${ropeParts}

${sg ? `var<workgroup> red: array<f32, ${redLen}>; // (2 batches, NV logits, ${NS} subgroup slots) per-subgroup sums`
    : `var<workgroup> red: array<f32, ${redLen}>; // (2 batches, W lanes, NV + 1) per-lane partial dots (padded: no bank conflicts)
var<workgroup> sums: array<f32, ${2 * NV}>; // (2 batches, NV) finished logits`}

@compute @workgroup_size(${W})
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>${sg ? ', @builtin(subgroup_invocation_id) sid: u32, @builtin(subgroup_size) sgs: u32' : ''}) {
  let g = wg.y;
${is.map((i) => `  let j${i} = lid + ${i * W}u;
  let pj${i} = partnerQ(j${i});`)}
  // rows of this block: row r is (query t, head h) = ((blk·R + r) / G, g·G + (blk·R + r) % G)
  let k0 = wg.x * params.splitKeys;
  let lastT = min((wg.z * R + R - 1u) / G, params.T - 1u);
  let k1 = min(k0 + params.splitKeys, params.base + lastT + 1u); // uniform: workgroup id and params only
${rs.map((r) => `  let ri${r} = wg.z * R + ${r}u;
  let t${r} = ri${r} / G;
  let ok${r} = t${r} < params.T;
  let qa${r} = (t${r} * H + g * G + ri${r} % G) * DQ; // first quad of the row in q / out
  let lim${r} = select(0u, min(params.base + t${r} + 1u, k1), ok${r}); // keys [k0, lim) are visible
  var m${r} = NEG;
  var l${r} = 0.0;
${is.map((i) => `  var a${r}_${i} = vec4<f32>(0.0);
  var q${r}_${i} = vec4<f32>(0.0);
  if (ok${r}) { q${r}_${i} = q[qa${r} + j${i}] * params.scale; } // scale folded into q once`)}`)}
${sg ? '  let slot = lid / sgs;\n  let nsg = (W + sgs - 1u) / sgs;' : ''}
  var hb = 0u; // which half of red (and sums) this batch uses
  for (var kb = k0; kb < k1; kb += ${NK}u) {
    // loads of the whole batch first; slots past k1 are clamped to a valid one and masked below
${ks.map((kk) => `    let s${kk} = min(kb + ${kk}u, k1 - 1u);
    let p${kk} = kpos[g * params.capacity + s${kk}];
${is.map((i) => `    let x${kk}_${i} = kq(g, s${kk}, j${i});
    let y${kk}_${i} = kq(g, s${kk}, pj${i});
    let v${kk}_${i} = vq(g, s${kk}, j${i});
    let ra${kk}_${i} = ropeAt(p${kk}, j${i});
    let c${kk}_${i} = rope[ra${kk}_${i}];
    let d${kk}_${i} = rope[ra${kk}_${i} + 1u];`)}`)}
${ks.map((kk) => is.map((i) => `    let k${kk}_${i} = rotate(x${kk}_${i}, y${kk}_${i}, c${kk}_${i}, d${kk}_${i}, j${i});`).join('\n'))}
${ks.map((kk) => rs.map((r) => `    let pd${v(kk, r)} = ${is.map((i) => `dot(q${r}_${i}, k${kk}_${i})`).join(' + ')};`).join('\n'))}
${sg ? subgroupSums(NV, NS) : workgroupSums(NV)}
    // online softmax per row; masked keys get weight 0 explicitly (an all-masked batch would otherwise give exp(0))
${rs.map((r) => `    {
${ks.map((kk) => `      let e${kk} = select(NEG, z${v(kk, r)}, kb + ${kk}u < lim${r});`).join('\n')}
      let mt = max(m${r}, ${ks.reduceRight((acc, kk) => (acc === '' ? `e${kk}` : `max(e${kk}, ${acc})`), '')});
      let al = exp(m${r} - mt);
${ks.map((kk) => `      let w${kk} = select(0.0, exp(e${kk} - mt), e${kk} > -1.0e38);`).join('\n')}
      l${r} = l${r} * al + ${ks.map((kk) => `w${kk}`).join(' + ')};
${is.map((i) => `      a${r}_${i} = a${r}_${i} * al + ${ks.map((kk) => `w${kk} * v${kk}_${i}`).join(' + ')};`).join('\n')}
      m${r} = mt;
    }`)}
    hb ^= 1u;
  }
${rs.map((r) => epilogue(r, is, W, split, withLse)).join('\n')}
}`,
  }));
}

/** subgroupAdd per logit; lane 0 of each subgroup leaves its sum at slot lid / sgs; every lane adds the slots. */
function subgroupSums(NV: number, NS: number): string {
  const vs = seq(NV);
  return `    let rb = hb * ${NV * NS}u;
${vs.map((x) => `    { let sv = subgroupAdd(pd${x}); if (sid == 0u) { red[rb + ${x * NS}u + slot] = sv; } }`).join('\n')}
    workgroupBarrier();
${vs.map((x) => `    var z${x} = 0.0;`).join('\n')}
    for (var i = 0u; i < nsg; i++) {
${vs.map((x) => `      z${x} += red[rb + ${x * NS}u + i];`).join('\n')}
    }`;
}

/** Without subgroups: partials to workgroup memory, lane x < NV adds logit x over the lanes, every lane reads all. */
function workgroupSums(NV: number): string {
  const vs = seq(NV);
  return `    let rb = hb * W * ${NV + 1}u;
${vs.map((x) => `    red[rb + lid * ${NV + 1}u + ${x}u] = pd${x};`).join('\n')}
    workgroupBarrier();
    for (var x = lid; x < NV; x += W) {
      var sv = 0.0;
      for (var i = 0u; i < W; i++) { sv += red[rb + i * ${NV + 1}u + x]; }
      sums[hb * NV + x] = sv;
    }
    workgroupBarrier();
${vs.map((x) => `    let z${x} = sums[hb * NV + ${x}u];`).join('\n')}`;
}

function epilogue(r: number, is: number[], W: number, split: boolean, withLse: boolean): string {
  if (split) {
    return `  if (ok${r}) {
    let TH = params.T * H;
    let row = qa${r} / DQ; // t·H + h
${is.map((i) => `    scratch[(wg.x * TH + row) * DQ + j${i}] = a${r}_${i};`).join('\n')}
    // (max, sum) after all splits' outputs: the combine weighs split i by exp(m_i - M)
    if (lid == 0u) { scratch[params.splits * TH * DQ + wg.x * TH + row] = vec4<f32>(m${r}, l${r}, 0.0, 0.0); }
  }`;
  }
  return `  if (ok${r}) {
    let inv = 1.0 / l${r};
${is.map((i) => `    out[qa${r} + j${i}] = a${r}_${i} * inv;`).join('\n')}
${withLse ? `    if (lid == 0u) { lse[qa${r} / DQ] = m${r} + log(l${r}); }` : ''}
  }`;
}

/** Attention of T ≤ DECODE_MAX_T queries at slots [base, base+T) over the cache: 1 dispatch, 2 when keys split. */
export function attentionDecode(o: DecodeOpts, d: AttentionDims, b: AttentionBuffers): Dispatch[] {
  if (takesV2(o)) return attentionDecodeV2(v2Opts(o), d, b, v1Bound(o, d));
  const p = plan(o, d);
  const withLse = b.lse !== undefined;
  const split = p.splits > 1;
  const common = { q: b.q, kCache: b.kCache, vCache: b.vCache, kpos: b.kpos, rope: b.rope };
  const params = splitAttentionParams(o, d, p);
  const workgroups = [p.splits, o.numKvHeads, p.nBlocks] as const;
  if (!split) {
    const outs: Record<string, GPUBuffer> = withLse ? { out: b.out, lse: b.lse! } : { out: b.out };
    return [{ kernel: mainKernel(o, p, false, withLse), buffers: { ...common, ...outs }, params, workgroups }];
  }
  const need = p.splits * d.T * o.numHeads * (o.headDim + 4) * 4;
  if (!b.scratch || b.scratch.size < need) throw new Error(`decode attention: ${p.splits} key splits need a scratch buffer of ${need} bytes`);
  return [
    { kernel: mainKernel(o, p, true, false), buffers: { ...common, scratch: b.scratch }, params, workgroups },
    decodeCombine(o.headDim, { TH: d.T * o.numHeads, splits: p.splits }, { scratch: b.scratch, out: b.out, lse: b.lse }),
  ];
}

/** The call takes v2: asked for, or keys already rotated (v1 rotates every key on load). */
const takesV2 = (o: DecodeOpts) => decodeVariant(o) === 'v2' || o.keysRotated === true;

/** The plan of the kernel the call takes. */
const callPlan = (o: DecodeOpts, d: AttentionDims): DecodeV2Plan | DecodePlan => (takesV2(o) ? planV2(v2Opts(o), d, v1Bound(o, d)) : plan(o, d));

/** v2's options from v1's; kept per options object (callers reuse theirs across decode steps) */
const v2OptsOf = new WeakMap<DecodeOpts, DecodeV2Opts>();
function v2Opts(o: DecodeOpts): DecodeV2Opts {
  let v = v2OptsOf.get(o);
  if (!v) v2OptsOf.set(o, (v = { ...o, nk: o.v2?.nk, kl: o.v2?.kl, nt: o.v2?.nt, rows: o.v2?.rows, prefetch: o.v2?.prefetch, depth: o.v2?.depth, qShared: o.v2?.qShared }));
  return v;
}

/** v1's splits for this call before rounding: v2 stays within it, so decodeScratchBytes covers both variants. */
function v1Bound(o: AttentionOpts, d: AttentionDims): number {
  return plan(o, { ...d, splits: undefined }).splitsBound;
}

/**
 * What attentionDecode's dispatches depend on besides `d.base` (the main kernel's `base` parameter): the variant,
 * its plan (splits, slab, rows, kernel shape) and the token count, so a decode step may reuse an earlier step's
 * dispatches with the same signature (compiler/step-memo.ts).
 */
export function attentionDecodeSignature(o: DecodeOpts, d: AttentionDims): string {
  return `${d.T}|${o.keysRotated ? 1 : 0}|${JSON.stringify(callPlan(o, d))}`;
}

/** The kernel a call takes and its key split (benchmarks). */
export function attentionDecodeSplit(o: DecodeOpts, d: AttentionDims): { variant: 'v1' | 'v2'; splits: number; splitKeys: number } {
  const p = callPlan(o, d);
  return { variant: takesV2(o) ? 'v2' : 'v1', splits: p.splits, splitKeys: p.splitKeys };
}

/** v2's plan for the same call (tests and benchmarks). */
export function attentionDecodeV2Plan(o: DecodeOpts, d: AttentionDims): Readonly<DecodeV2Plan> {
  return planV2(v2Opts(o), d, v1Bound(o, d));
}

/** The plan's shape, for tests and benchmarks. */
export function attentionDecodePlan(o: AttentionOpts & { nk?: number }, d: AttentionDims): Readonly<DecodePlan> {
  return plan(o, d);
}
