/**
 * Decode attention on tensor cores: the G query heads of a GQA group (and up to 16/G tokens) form one 16-row
 * fragment, so a 16×16×16 multiply-accumulate does the work of 16 keys for all of them at once, where the FMA
 * kernels (attention-decode-v2.ts) spend ~80 instructions per key and row group on unpacking, dots, shuffles and
 * exps. The tile's K and V rows (f16, keys rotated once, see rotateCacheKeys) are staged in workgroup memory with
 * 16-byte loads (fragments loaded straight from the cache read it 2 bytes per lane: 2.2 ms for 32 layers at 16K
 * entries on an H200, against 1.3 for the FMA kernel):
 *
 *   workgroup = one subgroup of 32 lanes = one key split of one KV head and one block of ≤ 16 rows
 *   per tile of 16 keys (slots ts..ts+15):
 *     K, V rows → kvS (f16)
 *     S (16 rows × 16 keys, f32) = Σ_i Q_i (rows × 16 dims, f16, scale folded in) · K_iᵀ (16 dims × keys, the key
 *                                  rows read column-major)                            → sS
 *     softmax, 2 lanes per row, lazily moved reference max (as attention-sgmat.ts) → pS (f16)
 *     O_j += P · V_j (16 keys × 16 dims, value rows read row-major)                    8 accumulators for D = 128
 *
 * Tiles never read a slot at or past the block's last visible key (slots there may hold anything, NaN in tests, and
 * 0 · NaN would reach O): the last tile of a cache moves back to end there and its keys that an earlier tile (or an
 * earlier split) already covered are masked. That needs 16 visible keys for the first query block
 * (decodeTcUsable); shorter caches take the FMA kernel.
 *
 * Output contract as attention-decode-v2.ts: unnormalized partials + (max, sum) into `scratch` when split (merged
 * by decodeCombine), else out and lse directly.
 */
import { f32, kernel, ro, rw, wgsl, type Binding } from '../wgsl.js';
import type { Dispatch } from '../../runtime/gpu/runner.js';
import { NEG, SPLIT_ATTENTION_PARAMS, splitAttentionParams } from './attn-common.js';
import type { AttentionBuffers, AttentionDims, AttentionOpts } from './attention.js';
import { decodeCombine, MAX_SPLITS } from './attention-combine.js';
import { tuningV2 } from './attention-decode-v2.js';
import { sgOps } from './sgmat-emu.js';

const TILE = 16; // keys per tile: one fragment's width
const TAU = 8; // lazy-rescale slack (natural log), as attention-sgmat.ts
/** Workgroups (one subgroup each) wanted in flight: ~16 per SM on a 132-SM GPU, before the split floor below */
const TARGET_WG = 2048;
const MIN_SPLIT_KEYS = 64;

export interface DecodeTcOpts extends AttentionOpts {
  /** plain-WGSL stand-ins for the subgroup-matrix builtins (checks on devices without them; slow) */
  readonly emulate?: boolean;
  /** lazy-rescale slack (checks: 0 rescales whenever a row's max rises) */
  readonly tau?: number;
}

export interface DecodeTcPlan {
  G: number;
  /** queries per 16-row block, blocks */
  BQ: number;
  nQB: number;
  splits: number;
  splitKeys: number;
}

/** Whether the tensor-core decode kernel can take a call (the device must also have GpuContext.tensorCores). */
export function decodeTcUsable(o: AttentionOpts & { keysRotated?: boolean }, d: AttentionDims): boolean {
  const G = o.numHeads / o.numKvHeads;
  if (o.cacheDtype !== 'f16' || !o.keysRotated || !Number.isInteger(G) || G > TILE || o.headDim % 16 !== 0) return false;
  const BQ = Math.floor(TILE / G);
  return d.base + Math.min(BQ, d.T) >= TILE; // the first block's tiles stay below its last visible key
}

/** Splits from the workgroups wanted (or LOCRET_ATTN_DECODE's `slab` / `wgs`), within `splitsBound` (scratch). */
export function planTc(o: AttentionOpts, d: AttentionDims, splitsBound: number): DecodeTcPlan {
  const G = o.numHeads / o.numKvHeads;
  const BQ = Math.floor(TILE / G);
  const nQB = Math.ceil(d.T / BQ);
  const kvEnd = d.base + d.T;
  const tune = tuningV2();
  let splits = d.splits ?? (tune.slab ? Math.ceil(kvEnd / tune.slab)
    : Math.min(Math.ceil((tune.wgs ?? TARGET_WG) / (nQB * o.numKvHeads)), Math.ceil(kvEnd / MIN_SPLIT_KEYS)));
  if (d.splits === undefined) splits = Math.min(splits, splitsBound);
  splits = Math.max(1, Math.min(splits, MAX_SPLITS, Math.ceil(kvEnd / TILE)));
  const splitKeys = Math.ceil(Math.ceil(kvEnd / splits) / TILE) * TILE;
  return { G, BQ, nQB, splits: Math.ceil(kvEnd / splitKeys), splitKeys };
}

function bindings(split: boolean, withLse: boolean): Binding[] {
  return [
    ro('q', 'array<vec4<f32>>'), // (T, H, D) as quads, rotated
    ro('kCache', 'array<vec4<u32>>'), // (KV, capacity, D/8) keys rotated at their positions, 8 halves per word
    ro('vCache', 'array<vec4<u32>>'), // (KV, capacity, D/8)
    ...(split
      ? [rw('scratch', 'array<f32>')] // (splits, T·H, D) partial outputs, then (splits, T·H, 4) (max, sum, -, -)
      : [rw('out', 'array<f32>'), ...(withLse ? [rw('lse', 'array<f32>')] : [])]), // (T, H·D); (T, H)
  ];
}

const seq = (n: number) => Array.from({ length: n }, (_, i) => i);

function mainKernel(o: DecodeTcOpts, p: DecodeTcPlan, split: boolean, withLse: boolean) {
  const { G, BQ } = p;
  const H = o.numHeads;
  const D = o.headDim;
  const DQ = D / 4;
  const ND = D / 16; // fragments along head_dim
  const KS = D + 8; // qS and kvS row stride (halves), off the bank period
  const D8 = D / 8; // 16-byte words per row
  const LP = (16 * D8) / 32; // words of K (and of V) each lane stages per tile
  const SS = TILE + 4; // sS row stride (f32)
  const PS = TILE + 8; // pS row stride (halves)
  const emu = o.emulate === true;
  const tau = o.tau ?? TAU;
  const ops = sgOps(emu, [
    { name: 'qS', loads: ['L'], store: false },
    { name: 'pS', loads: ['L'], store: false },
    { name: 'kvS', loads: ['R'], store: false },
    { name: 'sS', loads: ['A'], store: true },
  ]);
  const key = { op: 'attention_decode_tc', H, G, D, split, lse: withLse, emu, tau };
  // one fragment column j of the accumulators through the staging (16×16, stride 16) at the start of sS
  const stage = (j: number) => ops.store('sS', '0u', `o${j}`, false, '16u');
  const rescale = (j: number) => `      ${stage(j)}
      workgroupBarrier();
      for (var e = lid; e < 256u; e += 32u) { sS[e] *= rowA[e / 16u]; }
      workgroupBarrier();
      o${j} = ${ops.load('A', 'sS', '0u', false, '16u')};`;
  const emit = (j: number) => `  ${stage(j)}
  workgroupBarrier();
  for (var e = lid; e < 256u; e += 32u) {
    let r = e / 16u;
    let t = wg.x * BQ + r / G;
    if (r < R && t < params.T) {
      let d = ${j * 16}u + e % 16u;
      let th = t * H + g * G + r % G;
      ${split ? 'scratch[(wg.z * params.T * H + th) * D + d] = sS[e];' : 'out[th * D + d] = sS[e] / rowA[r];'}
    }
  }
  workgroupBarrier();`;
  return kernel(key, () => ({
    bindings: bindings(split, withLse),
    params: SPLIT_ATTENTION_PARAMS,
    workgroupSize: [32, 1, 1],
    enables: emu ? ['f16', 'subgroups'] : ['f16', 'subgroups', 'chromium_experimental_subgroup_matrix'],
    directives: emu ? [] : ['diagnostic(off, chromium.subgroup_matrix_uniformity)'],
    body: wgsl`
const DQ = ${DQ}u;
const D = ${D}u;
const H = ${H}u;
const G = ${G}u;
const BQ = ${BQ}u; // queries per block
const R = ${BQ * G}u; // live rows of the 16
const KS = ${KS}u;
const SS = ${SS}u;
const PS = ${PS}u;
const NEG = ${NEG};
const TAU = ${f32(tau)};
${ops.prelude}

// 8 halves of a cache word into kvS at a
fn put8(a: u32, w: vec4<u32>) {
  let h0 = bitcast<vec2<f16>>(w.x);
  let h1 = bitcast<vec2<f16>>(w.y);
  let h2 = bitcast<vec2<f16>>(w.z);
  let h3 = bitcast<vec2<f16>>(w.w);
  kvS[a] = h0.x; kvS[a + 1u] = h0.y; kvS[a + 2u] = h1.x; kvS[a + 3u] = h1.y;
  kvS[a + 4u] = h2.x; kvS[a + 5u] = h2.y; kvS[a + 6u] = h3.x; kvS[a + 7u] = h3.y;
}

var<workgroup> qS: array<f16, ${16 * KS}>; // (16, KS) the block's q rows, scaled; padding rows zero
var<workgroup> kvS: array<f16, ${32 * KS}>; // (32, KS) the tile's 16 key rows, then its 16 value rows
var<workgroup> sS: array<f32, ${16 * SS}>; // (16, SS) logits of the tile; or (16, 16) fragment staging
var<workgroup> pS: array<f16, ${16 * PS}>; // (16, PS) probabilities of the tile
var<workgroup> rowA: array<f32, 16>; // per row: the tile's rescale factor; at the end the sum l
var<workgroup> resc: vec4<u32>; // .x: number (from 1) of the latest tile whose softmax moved some row's reference max

@compute @workgroup_size(32)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>) {
  ${ops.init('lid')}
  let g = wg.y;
  if (lid == 0u) { resc.x = 0u; }
  for (var e = lid; e < 16u * DQ; e += 32u) {
    let r = e / DQ;
    let t = wg.x * BQ + r / G;
    var x = vec4<f32>(0.0);
    if (r < R && t < params.T) { x = q[(t * H + g * G + r % G) * DQ + e % DQ] * params.scale; }
    let hx = vec4<f16>(x);
    let a = r * KS + (e % DQ) * 4u;
    qS[a] = hx.x; qS[a + 1u] = hx.y; qS[a + 2u] = hx.z; qS[a + 3u] = hx.w;
  }
  workgroupBarrier();
${seq(ND).map((i) => `  let q${i} = ${ops.load('L', 'qS', `${i * 16}u`, false, 'KS')};`).join('\n')}
${seq(ND).map((j) => `  var o${j} = AccM();`).join('\n')}
  // softmax lanes: two per row, keys interleaved
  let row = lid / 2u;
  let half = lid % 2u;
  let tRow = wg.x * BQ + row / G;
  let rowOk = row < R && tRow < params.T;
  var m = NEG; // reference max
  var l = 0.0; // Σ e^(s - m)
  // keys the block's last query sees (uniform); the row sees [.., vis); tiles read slots below blockEnd only
  let blockEnd = params.base + min(wg.x * BQ + BQ, params.T);
  let k0 = wg.z * params.splitKeys;
  let k1 = min(k0 + params.splitKeys, blockEnd);
  let vis = select(0u, min(params.base + tRow + 1u, k1), rowOk);
  var kt = 0u;
  for (var kb = k0; kb < k1; kb += 16u) {
    kt += 1u;
    let ts = min(kb, blockEnd - 16u); // keys [ts, kb) were seen already: masked below
    let at = (g * params.capacity + ts) * ${D8}u;
    // every load of the tile first, then the stores
${seq(LP).map((i) => `    let wk${i} = kCache[at + lid + ${i * 32}u];
    let wv${i} = vCache[at + lid + ${i * 32}u];`).join('\n')}
${seq(LP).map((i) => `    let ka${i} = ((lid + ${i * 32}u) / ${D8}u) * KS + ((lid + ${i * 32}u) % ${D8}u) * 8u;
    put8(ka${i}, wk${i});
    put8(ka${i} + ${16 * KS}u, wv${i});`).join('\n')}
    workgroupBarrier();
    var s = AccM();
${seq(ND).map((i) => `    s = ${ops.mma(`q${i}`, ops.load('R', 'kvS', `${i * 16}u`, true, 'KS'), 's')};`).join('\n')}
    ${ops.store('sS', '0u', 's', false, 'SS')}
    workgroupBarrier();
    var mx = NEG;
    for (var kk = half; kk < 16u; kk += 2u) { mx = max(mx, select(NEG, sS[row * SS + kk], ts + kk >= kb && ts + kk < vis)); }
    let mt = max(mx, subgroupShuffleXor(mx, 1u));
    var a = 1.0;
    if (mt > m + TAU) {
      if (m > NEG) { a = exp(m - mt); resc.x = kt; }
      m = mt;
    }
    var ps = 0.0;
    for (var kk = half; kk < 16u; kk += 2u) {
      let pv = f16(select(0.0, exp(sS[row * SS + kk] - m), ts + kk >= kb && ts + kk < vis));
      pS[row * PS + kk] = pv;
      ps += f32(pv); // the sum of exactly what P·V multiplies
    }
    l = l * a + ps + subgroupShuffleXor(ps, 1u);
    if (half == 0u) { rowA[row] = a; }
    if (workgroupUniformLoad(&resc).x == kt) {
${seq(ND).map(rescale).join('\n')}
    }
    let pf = ${ops.load('L', 'pS', '0u', false, 'PS')};
${seq(ND).map((j) => `    o${j} = ${ops.mma('pf', ops.load('R', 'kvS', `${16 * KS + j * 16}u`, false, 'KS'), `o${j}`)};`).join('\n')}
    workgroupBarrier();
  }
  if (half == 0u) { rowA[row] = l; }
${seq(ND).map(emit).join('\n')}
  if (half == 0u && rowOk) {
    let th = tRow * H + g * G + row % G;
${split ? `    let st = params.splits * params.T * H * D + (wg.z * params.T * H + th) * 4u;
    scratch[st] = m;
    scratch[st + 1u] = l;` : withLse ? '    lse[th] = m + log(l);' : ''}
  }
}`,
  }));
}

/** Tensor-core decode attention of T ≤ 8 queries (decodeTcUsable): 1 dispatch, 2 when keys split. */
export function attentionDecodeTc(o: DecodeTcOpts, d: AttentionDims, b: AttentionBuffers, splitsBound: number): Dispatch[] {
  const p = planTc(o, d, splitsBound);
  const withLse = b.lse !== undefined;
  const split = p.splits > 1;
  const common = { q: b.q, kCache: b.kCache, vCache: b.vCache };
  const params = splitAttentionParams(o, d, p);
  const workgroups = [p.nQB, o.numKvHeads, p.splits] as const;
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
