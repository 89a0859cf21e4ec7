/**
 * Prefill attention on tensor cores: flash attention whose two products, S = Q·Kᵀ and O += P·V, run as f16×f16→f32
 * 16×16×16 subgroup-matrix multiply-accumulates (Dawn's `chromium-experimental-subgroup-matrix`). Same contract as
 * attention.ts (bindings, causal rule, lse, the split-keys scratch layout and its combine kernel).
 *
 *   workgroup = NSG subgroups × 32 lanes; 16·NSG rows = BQ queries × G heads of one KV head (GQA group,
 *   query-major); subgroup s owns rows 16s..16s+15: Q fragments (f16, scale folded in) and the O accumulators (f32)
 *   in registers. NSG is 8 where the device's workgroup storage holds it (48 KB: each staged tile of K and V then
 *   serves 128 rows, half the staging per product), else 4 (fits 32 KB); q rows are staged 64 at a time.
 *
 *   per tile of BK keys:   K (rotated beforehand into kRot, or RoPE from kpos on load in f32) and V → kv (f16)
 *                          S = Q·Kᵀ → sS (f32)          one fragment row per subgroup
 *                          softmax, 2 lanes per row    → pS (f16), running (m, l) in registers
 *                          O += P·V                    fragments straight into the accumulators
 *
 * Lazy rescaling: a row keeps a reference max m and only moves it when a tile's max exceeds m + TAU, so P = e^(s-m)
 * stays below e^TAU (fits f16 comfortably) and the O accumulators, which live in registers and cannot be scaled
 * per row in place, need a store → scale → reload pass only on the rare tiles where some row moved (the first tile
 * of a row never does: its O is still zero). lse = m + log l holds for any reference m.
 *
 * Every workgroup variable is a multiple of 16 bytes (the tile counter `resc` is a vec4 for that alone): fragment
 * loads read 16-byte vectors, and drivers place a lone u32 where it shifts the f16 arrays off that boundary
 * (wgsl-workgroup.ts; kernel() refuses such a layout).
 *
 * Subgroups narrower than 32 lanes (more than 4 subgroups) repeat subgroup 3's work with identical values; wider
 * ones are not supported (GpuContext.tensorCores requires subgroupMaxSize <= 32).
 */
import { f32, kernel, wgsl } from '../wgsl.js';
import type { Dispatch } from '../../runtime/gpu/runner.js';
import { combineKernel, type AttentionBuffers, type AttentionDims, type AttentionOpts } from './attention.js';
import { NEG, attentionBindings, checkHeadDims, keyFns, ropeParts, rotatedKeyFns, SPLIT_ATTENTION_PARAMS, splitAttentionParams } from './attn-common.js';
import { attentionKeyInputs } from './rotate-keys.js';
import { sgOps } from './sgmat-emu.js';
import { env } from '../../runtime/env.js';

export interface SgmatAttentionOpts extends AttentionOpts {
  /** plain-WGSL stand-ins for the subgroup-matrix builtins (checks on devices without them; slow) */
  readonly emulate?: boolean;
  /** lazy-rescale slack, default TAU (checks: 0 rescales the accumulators whenever a row's max rises) */
  readonly tau?: number;
  /** the device's workgroup storage limit (default 32768): 8-subgroup workgroups where it holds them */
  readonly workgroupBytes?: number;
  /** rows per workgroup wanted, 64 or 128 (default 128 where storage allows; LOCRET_TC_ATTN_ROWS=64 for A/B timing) */
  readonly rows?: 64 | 128;
}

const NSG_MIN = 4; // subgroups that compute: 4, or 8 where workgroup storage allows (SgmatPlan.NSG)
const NSG_WIDE = 8;
const Q_PASS = 64; // q rows staged per pass through kv
const BK = 32; // keys per tile
const TAU = 8; // lazy-rescale slack (natural log): P <= e^8 ≈ 2981
const WG_BYTES = 32768; // workgroup memory the 4-subgroup kernel must fit (GpuContext.tensorCores guarantees it)
const TARGET_SUBGROUPS = 4096; // subgroups wanted in flight before splitting keys (1024 workgroups of 4)
const MIN_SPLIT_KEYS = 512;
const MAX_SPLITS = 1024; // the combine kernel's limit

/**
 * Strides: kv rows in halves, sS rows in f32, pS rows in halves, padded to 16-byte multiples off the bank period
 * (unpadded strides measured 1.5× slower on the H200; so were 16-key tiles, 1.06×, and values staged transposed,
 * 1.2×).
 */
const strides = (D: number) => ({ KS: D + 8, SS: BK + 4, PS: BK + 8 });

/** Workgroup bytes; `qs` keeps the q rows in an array of their own (the emulated form reads fragments at use). */
function wgBytes(D: number, qs = false, NSG = NSG_MIN): number {
  const { KS, SS, PS } = strides(D);
  const BR = 16 * NSG;
  const kvRows = Math.max(2 * BK, qs ? 0 : Q_PASS); // the keys and values of a tile, first q rows 64 at a time (unless qs)
  return 2 * kvRows * KS + (qs ? 2 * BR * KS : 0) + 4 * Math.max(BR * SS, NSG * 512) + 2 * BR * PS + 4 * BR + 16;
}

/** Whether this kernel can run a call (the device must also have GpuContext.tensorCores). */
export function sgmatAttentionUsable(o: AttentionOpts, d: Pick<AttentionDims, 'T'>): boolean {
  const G = o.numHeads / o.numKvHeads;
  return d.T > 8 && o.headDim % 16 === 0 && Number.isInteger(G) && G <= 16 * NSG_MIN && o.rotaryDim % 8 === 0 &&
    o.rotaryDim <= o.headDim && wgBytes(o.headDim) <= WG_BYTES;
}

export interface SgmatPlan {
  /** subgroups per workgroup (rows 16·NSG) */
  NSG: number;
  G: number;
  BQ: number;
  nQB: number;
  splits: number;
  splitKeys: number;
}

/** Rows, query blocks and key splits; splits only as far as `scratchBytes` holds their partials. */
export function sgmatAttentionPlan(o: SgmatAttentionOpts, d: AttentionDims, scratchBytes: number): SgmatPlan {
  checkHeadDims(o.headDim, o.rotaryDim);
  if (!sgmatAttentionUsable(o, d)) throw new Error(`tensor-core attention cannot run H=${o.numHeads}/${o.numKvHeads} D=${o.headDim} T=${d.T}`);
  const G = o.numHeads / o.numKvHeads;
  const rows = o.rows ?? (env('LOCRET_TC_ATTN_ROWS') === '64' ? 64 : 128);
  const NSG = rows === 128 && wgBytes(o.headDim, o.emulate === true, NSG_WIDE) <= (o.workgroupBytes ?? WG_BYTES) ? NSG_WIDE : NSG_MIN;
  const BQ = Math.floor((16 * NSG) / G);
  const nQB = Math.ceil(d.T / BQ);
  const kvEnd = d.base + d.T;
  const per = d.T * o.numHeads * (o.headDim + 4) * 4; // scratch bytes per split
  let splits = d.splits ?? Math.min(Math.ceil(TARGET_SUBGROUPS / NSG / (nQB * o.numKvHeads)), Math.ceil(kvEnd / MIN_SPLIT_KEYS), Math.floor(scratchBytes / per));
  splits = Math.max(1, Math.min(splits, Math.ceil(kvEnd / BK), MAX_SPLITS));
  const splitKeys = Math.ceil(Math.ceil(kvEnd / splits) / BK) * BK;
  splits = Math.ceil(kvEnd / splitKeys);
  if (splits > 1 && per * splits > scratchBytes) throw new Error(`tensor-core attention: ${splits} key splits need a scratch buffer of ${per * splits} bytes`);
  return { NSG, G, BQ, nQB, splits, splitKeys };
}

/** rk: keys come rotated from kRot (rotate-keys.ts) instead of being rotated from the cache while staged */
function mainKernel(o: SgmatAttentionOpts, p: SgmatPlan, split: boolean, withLse: boolean, rk: boolean) {
  const { G, BQ, NSG } = p;
  const WG = NSG * 32;
  const BR = NSG * 16; // rows per workgroup
  const H = o.numHeads;
  const D = o.headDim;
  const DQ = D / 4;
  const emu = o.emulate === true;
  // emulated fragments are handles read at use, so the q rows need an array the tiles do not overwrite
  const qs = emu;
  const ND = D / 16; // fragments along head_dim
  const NS = BK / 16; // fragments along the tile's keys
  const { KS, SS, PS } = strides(D);
  const kvRows = Math.max(2 * BK, qs ? 0 : Q_PASS);
  const bytes = wgBytes(D, qs, NSG);
  const limit = o.workgroupBytes ?? WG_BYTES;
  if (bytes > limit) throw new Error(`tensor-core attention: ${bytes} bytes of workgroup memory exceed ${limit}`);
  const LPT = Math.ceil((BK * DQ) / WG); // K and V quads each thread loads per tile
  const full = (BK * DQ) % WG === 0;
  const R = (n: number) => Array.from({ length: n }, (_, i) => i);
  const batches = R(Math.ceil(LPT / 4)).map((b) => R(Math.min(4, LPT - b * 4)).map((i) => b * 4 + i));
  const load = (i: number) => `    let e${i} = lid + ${i * WG}u;
    let j${i} = e${i} % DQ;
    let kk${i} = e${i} / DQ;
    let s${i} = min(kb + kk${i}, k1 - 1u);
${rk ? `    let x${i} = krq(g, s${i}, j${i});` : `    let p${i} = kpos[g * params.capacity + s${i}];
    let y${i} = kq(g, s${i}, partnerQ(j${i}));
    let x${i} = kq(g, s${i}, j${i});`}
    let v${i} = vq(g, s${i}, j${i});`;
  const put = (i: number) => `    ${full ? '' : `if (e${i} < BK * DQ) `}{
      let live = kb + kk${i} < k1;
${rk ? `      let kr = vec4<f16>(select(vec4<f32>(0.0), x${i}, live));` : `      let r = ropeAt(p${i}, j${i});
      let kr = vec4<f16>(select(vec4<f32>(0.0), rotate(x${i}, y${i}, rope[r], rope[r + 1u], j${i}), live));`}
      let vr = vec4<f16>(select(vec4<f32>(0.0), v${i}, live));
      let a = kk${i} * KS + j${i} * 4u;
      kv[a] = kr.x; kv[a + 1u] = kr.y; kv[a + 2u] = kr.z; kv[a + 3u] = kr.w;
      let b = a + BK * KS; // values: the rows after the keys
      kv[b] = vr.x; kv[b + 1u] = vr.y; kv[b + 2u] = vr.z; kv[b + 3u] = vr.w;
    }`;
  const ops = sgOps(emu, [
    { name: 'kv', loads: qs ? ['R'] : ['L', 'R'], store: false },
    ...(qs ? [{ name: 'qS', loads: ['L'] as const, store: false }] : []),
    { name: 'pS', loads: ['L'], store: false },
    { name: 'sS', loads: ['A'], store: true },
  ]);
  const tau = o.tau ?? TAU;
  const key = { op: 'attention_sgmat', cache: o.cacheDtype, H, G, D, BK, NSG, split, lse: withLse, emu, tau, rk };
  const qf = (i: number) => (qs ? ops.load('L', 'qS', `sr * KS + ${i * 16}u`, false, 'KS') : `q${i}`);
  const vf = (kk: number, j: number) => ops.load('R', 'kv', `${BK + kk * 16}u * KS + ${j * 16}u`, false, 'KS');
  // the other lane of a row's pair (lanes 2r, 2r+1)
  const pair = (x: string) => `subgroupShuffleXor(${x}, 1u)`;
  // one fragment column j of the accumulators through the staging slot j % 2 of this subgroup (16×16, stride 16)
  const stage = (j: number) => ops.store('sS', `stg + ${(j % 2) * 256}u`, `o${j}`, false, '16u');
  const staged = (j: number) => `sS[(e / 256u) * 512u + ${(j % 2) * 256}u + e % 256u]`;
  const rescale = (j: number) => `      ${stage(j)}
      workgroupBarrier();
      for (var e = lid; e < ${NSG * 256}u; e += WG) { ${staged(j)} *= rowA[(e / 256u) * 16u + (e % 256u) / 16u]; }
      workgroupBarrier();
      o${j} = ${ops.load('A', 'sS', `stg + ${(j % 2) * 256}u`, false, '16u')};`;
  const emit = (j: number) => `  ${stage(j)}
  workgroupBarrier();
  for (var e = lid; e < ${NSG * 256}u; e += WG) {
    let r = (e / 256u) * 16u + (e % 256u) / 16u;
    let t = wg.x * BQ + r / G;
    if (r < R && t < params.T) {
      let d = ${j * 16}u + e % 16u;
      let th = t * H + g * G + r % G;
      ${split ? `scratch[(wg.z * params.T * H + th) * D + d] = ${staged(j)};` : `out[th * D + d] = ${staged(j)} / rowA[r];`}
    }
  }`;
  // the block's q rows as f16 with the logit scale folded in (padding rows zero): all of them into qS when emulated,
  // else through kv 64 rows at a time, each pass's 4 subgroups loading their fragments before the next overwrites it
  const qRows = (first: number, n: number, arr: string) => `  for (var e = lid; e < ${n}u * DQ; e += WG) {
    let r = ${first}u + e / DQ;
    let t = wg.x * BQ + r / G;
    var x = vec4<f32>(0.0);
    if (r < R && t < params.T) { x = q[(t * H + g * G + r % G) * DQ + e % DQ] * params.scale; }
    let hx = vec4<f16>(x);
    let a = (r - ${first}u) * KS + (e % DQ) * 4u;
    ${arr}[a] = hx.x; ${arr}[a + 1u] = hx.y; ${arr}[a + 2u] = hx.z; ${arr}[a + 3u] = hx.w;
  }
  workgroupBarrier();`;
  const passes = BR / Q_PASS;
  const qLoad = (pass: number) => R(ND).map((i) => ops.load('L', 'kv', `(sr - ${pass * Q_PASS}u) * KS + ${i * 16}u`, false, 'KS'));
  const qStaging = qs
    ? qRows(0, BR, 'qS')
    : passes === 1
      ? `${qRows(0, Q_PASS, 'kv')}
${qLoad(0).map((x, i) => `  let q${i} = ${x};`).join('\n')}`
      : `${R(ND).map((i) => `  var q${i} = LeftM();`).join('\n')}
${R(passes).map((pass) => `${qRows(pass * Q_PASS, Q_PASS, 'kv')}
  if (sgc / ${Q_PASS / 16}u == ${pass}u) {
${qLoad(pass).map((x, i) => `    q${i} = ${x};`).join('\n')}
  }${pass < passes - 1 ? '\n  workgroupBarrier();' : ''}`).join('\n')}`;
  return kernel(key, () => ({
    bindings: attentionBindings(o.cacheDtype, split, withLse, 'f32', rk), // the attention.ts buffers, outputs as scalars
    params: SPLIT_ATTENTION_PARAMS,
    workgroupSize: [WG, 1, 1],
    enables: emu ? ['f16', 'subgroups'] : ['f16', 'subgroups', 'chromium_experimental_subgroup_matrix'],
    // the fragment calls take subgroup-uniform operands that Tint can only prove workgroup-uniform
    directives: emu ? [] : ['diagnostic(off, chromium.subgroup_matrix_uniformity)'],
    body: wgsl`
const WG = ${WG}u;
const DQ = ${DQ}u;
const D = ${D}u;
const H = ${H}u;
const G = ${G}u;
const BQ = ${BQ}u; // queries per workgroup
const R = ${BQ * G}u; // live rows (the rest of the 64 are padding)
const BK = ${BK}u;
const KS = ${KS}u;
const SS = ${SS}u;
const PS = ${PS}u;
const NEG = ${NEG};
const TAU = ${f32(tau)};
${rk ? rotatedKeyFns(o.cacheDtype) : `${keyFns(o.cacheDtype, true)}
${ropeParts}`}
${ops.prelude}

var<workgroup> kv: array<f16, ${kvRows * KS}>; // (${kvRows}, KS): rows 0..BK-1 rotated keys, BK..2BK-1 values${qs ? '' : ' (first: the q rows, 64 at a time)'}
${qs && `var<workgroup> qS: array<f16, ${BR * KS}>; // (${BR}, KS) the q rows`}
var<workgroup> sS: array<f32, ${Math.max(BR * SS, NSG * 512)}>; // (${BR}, SS) logits of the tile; or (${NSG}, 2, 16, 16) fragment staging
var<workgroup> pS: array<f16, ${BR * PS}>; // (${BR}, PS) probabilities of the tile
var<workgroup> rowA: array<f32, ${BR}>; // per row: the tile's rescale factor; at the end the sum l
var<workgroup> resc: vec4<u32>; // .x: number (from 1) of the latest tile whose softmax moved some row's reference max

@compute @workgroup_size(${WG})
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>${emu ? '' : ', @builtin(subgroup_id) sgid: u32'}) {
  ${ops.init('lid')}
  let g = wg.y;
  let sgc = min(${emu ? 'lid / 32u' : 'sgid'}, ${NSG - 1}u);
  let sr = sgc * 16u; // this subgroup's rows
  let stg = sgc * 512u; // its two staging slots in sS
  if (lid == 0u) { resc.x = 0u; }
${qStaging}
${R(ND).map((i) => `  var o${i} = AccM();`)}
  // softmax lanes: two per row, keys interleaved
  let row = lid / 2u;
  let half = lid % 2u;
  let tRow = wg.x * BQ + row / G;
  let rowOk = row < R && tRow < params.T;
  var m = NEG; // reference max
  var l = 0.0; // Σ e^(s - m)
  // keys of this split that the block's last query sees (uniform); the row sees [.., vis)
  let blockEnd = params.base + min(wg.x * BQ + BQ, params.T);
  let k0 = wg.z * params.splitKeys;
  let k1 = min(k0 + params.splitKeys, blockEnd);
  let vis = select(0u, min(params.base + tRow + 1u, k1), rowOk);
  var kt = 0u;
  workgroupBarrier(); // every q fragment is loaded before the first tile overwrites kv
  for (var kb = k0; kb < k1; kb += BK) {
    kt += 1u;
    // K and V quads in batches of 4 per thread (loads of a batch issued before any is used, registers bounded);
    // keys past k1 are zero, so no NaN reaches P·V
${batches.map((bt) => [...bt.map(load), ...bt.map(put)].join('\n'))}
    workgroupBarrier();
    // S = Q·Kᵀ: Kᵀ fragments are the key rows read column-major
${R(NS).map((j) => `    {
      var s = AccM();
${R(ND).map((i) => `      s = ${ops.mma(qf(i), ops.load('R', 'kv', `${j * 16}u * KS + ${i * 16}u`, true, 'KS'), 's')};`).join('\n')}
      ${ops.store('sS', `sr * SS + ${j * 16}u`, 's', false, 'SS')}
    }`)}
    workgroupBarrier();
    // online softmax with a lazily moved reference max; masked keys get p = 0 explicitly
    var mx = NEG;
    for (var kk = half; kk < BK; kk += 2u) { mx = max(mx, select(NEG, sS[row * SS + kk], kb + kk < vis)); }
    let mt = max(mx, ${pair('mx')});
    var a = 1.0;
    if (mt > m + TAU) {
      // racing writers all store the same tile number
      if (m > NEG) { a = exp(m - mt); resc.x = kt; }
      m = mt;
    }
    var ps = 0.0;
    for (var kk = half; kk < BK; kk += 2u) {
      let pv = f16(select(0.0, exp(sS[row * SS + kk] - m), kb + kk < vis));
      pS[row * PS + kk] = pv;
      ps += f32(pv); // the sum of exactly what P·V multiplies
    }
    l = l * a + ps + ${pair('ps')};
    if (half == 0u) { rowA[row] = a; }
    if (workgroupUniformLoad(&resc).x == kt) {
${R(ND).map(rescale)}
    }
    // O += P·V
${R(NS).map((kk) => `    {
      let pf = ${ops.load('L', 'pS', `sr * PS + ${kk * 16}u`, false, 'PS')};
${R(ND).map((j) => `      o${j} = ${ops.mma('pf', vf(kk, j), `o${j}`)};`).join('\n')}
    }`)}
    workgroupBarrier();
  }
  if (half == 0u) { rowA[row] = l; }
  // outputs, one fragment column at a time through the staging (slots alternate, so one barrier each)
${R(ND).map(emit)}
  if (half == 0u && rowOk) {
    let th = tRow * H + g * G + row % G;
${split ? `    let at = params.splits * params.T * H * D + (wg.z * params.T * H + th) * 4u;
    scratch[at] = m;
    scratch[at + 1u] = l;` : withLse ? '    lse[th] = m + log(l);' : ''}
  }
}`,
  }));
}

/**
 * Tensor-core attention of a chunk (T > 8 queries at slots [base, base+T)): 1 dispatch, 2 when keys are split, and
 * one more first when `b.kRot` is given: the keys the chunk sees rotated once into it (rotate-keys.ts), so the tiles
 * stage keys with plain loads (the faster form; without kRot every query block rotates every key it loads).
 */
export function attentionSgmat(o: SgmatAttentionOpts, d: AttentionDims, b: AttentionBuffers): Dispatch[] {
  const p = sgmatAttentionPlan(o, d, b.scratch?.size ?? 0);
  const withLse = b.lse !== undefined;
  const split = p.splits > 1;
  const rk = b.kRot !== undefined;
  const { buffers: common, pre } = attentionKeyInputs(o, d, b);
  const params = splitAttentionParams(o, d, p);
  const workgroups = [p.nQB, o.numKvHeads, p.splits] as const;
  if (!split) {
    const outs: Record<string, GPUBuffer> = withLse ? { out: b.out, lse: b.lse! } : { out: b.out };
    return [...pre, { kernel: mainKernel(o, p, false, withLse, rk), buffers: { ...common, ...outs }, params, workgroups }];
  }
  const TH = d.T * o.numHeads;
  const outs: Record<string, GPUBuffer> = withLse ? { scratch: b.scratch!, out: b.out, lse: b.lse! } : { scratch: b.scratch!, out: b.out };
  return [
    ...pre,
    { kernel: mainKernel(o, p, true, false, rk), buffers: { ...common, scratch: b.scratch! }, params, workgroups },
    { kernel: combineKernel(o, withLse), buffers: outs, params: { TH, splits: p.splits }, workgroups: [Math.min(TH, 65535), Math.ceil(TH / 65535)] },
  ];
}
