/**
 * Decode attention on tensor cores: the one query's G heads of a KV head (its GQA group) as the rows of 16×16
 * f16 fragments, S = Q·Kᵀ and O += P·V as subgroup-matrix multiply-accumulates whose K and V fragments are loaded
 * straight from the f16 cache (no staging through workgroup memory, so no barrier waits on loads).
 *
 * Why: the FMA kernels (attention-decode*.ts) spend more per key on instructions (dot, lane sums, online softmax,
 * value update) than on the key's bytes; here a round of BK keys costs 2·ND·NS fragment products and one softmax
 * over a (16, BK) tile, two lanes per row.
 *
 *   grid (splits, KV): workgroup = one subgroup (32 lanes); slab [k0, k1) of splitKeys slots of KV head g
 *   cache (KV, capacity, D) f16, keys rotated (session.ts rotates them at the first decode step)
 *
 *   q rows:  r < G → head g·G + r, scaled by params.scale;  r ≥ G → zero (padding of the 16-row fragment)
 *   per round of BK = 16·NS keys kb .. kb+BK:
 *     S_j = Σ_i Q_i · K(kb+16j .., 16i ..)ᵀ     column-major loads of key rows (stride D)   → sS (16, SS) f32
 *     softmax, lanes 2r and 2r+1 on row r (keys ≥ k1 get p = 0)                            → pS (16, PS) f16
 *     O_i += Σ_j P_j · V(kb+16j .., 16i ..)       row-major loads of value rows (stride D)
 *
 * Fragment loads cannot mask, and a slot past k1 may hold anything (NaN included: 0 · NaN would poison P·V), so
 * a round's fragments past k1 are skipped and the one fragment that straddles k1 (the last round of the last
 * split only) is staged through `tail` with zeros past k1, keys then values; nothing past k1 is ever read.
 *
 * Lazy rescaling as in attention-sgmat.ts: a row's reference max moves only when a round's max exceeds it by TAU,
 * so P ≤ e^TAU fits f16, and the accumulators (opaque fragments) go through workgroup memory to be rescaled only on
 * such rounds. Output contract as attention-sgmat.ts: unnormalized partials and (m, l) in `scratch` when split
 * (merged by attention.ts's combineKernel), else out and lse.
 */
import { f32, kernel, ro, rw, wgsl, type KernelSpec } from '../wgsl.js';
import type { Dispatch } from '../../runtime/gpu/runner.js';
import { NEG, SPLIT_ATTENTION_PARAMS, splitAttentionParams } from './attn-common.js';
import { combineKernel, type AttentionBuffers, type AttentionDims, type AttentionOpts } from './attention.js';
import { MAX_SPLITS } from './attention-combine.js';
import { sgOps } from './sgmat-emu.js';

export interface DecodeTcOpts extends AttentionOpts {
  /** plain-WGSL stand-ins for the fragment builtins (checks on devices without them) */
  readonly emulate?: boolean;
  /** key fragments per round (BK = 16·NS keys), default 4 */
  readonly ns?: number;
  /** workgroups wanted over all KV heads (default TARGET_WG); `d.splits` overrides */
  readonly targetWorkgroups?: number;
  /** load the next round's key fragments and this round's value fragments ahead of their products (default off) */
  readonly prefetch?: boolean;
  /** most key splits (the caller's scratch bound) */
  readonly maxSplits?: number;
  /** lazy-rescale slack, default TAU (checks: 0 rescales the accumulators whenever a row's max rises) */
  readonly tau?: number;
}

const TAU = 8; // lazy-rescale slack (natural log): P ≤ e^8 ≈ 2981
const TARGET_WG = 1024; // one-subgroup workgroups in flight: ~8 per SM on a 132-SM GPU
const MIN_SPLIT_KEYS = 128;

/** Whether this kernel can run a call (the device must also have GpuContext.tensorCores). */
export function decodeTcUsable(o: AttentionOpts, d: Pick<AttentionDims, 'T'>): boolean {
  const G = o.numHeads / o.numKvHeads;
  return d.T === 1 && o.cacheDtype === 'f16' && o.headDim % 16 === 0 && Number.isInteger(G) && G <= 16;
}

export interface DecodeTcPlan {
  NS: number;
  splits: number;
  splitKeys: number;
}

export function decodeTcPlan(o: DecodeTcOpts, d: AttentionDims): DecodeTcPlan {
  if (!decodeTcUsable(o, d)) throw new Error(`tensor-core decode attention cannot run H=${o.numHeads}/${o.numKvHeads} D=${o.headDim} T=${d.T} cache ${o.cacheDtype}`);
  const NS = o.ns ?? 4;
  if (!Number.isInteger(NS) || NS < 1 || NS > 8) throw new Error(`tensor-core decode attention: ns must be 1..8, got ${NS}`);
  const BK = 16 * NS;
  const kvEnd = d.base + 1;
  let splits = d.splits ?? Math.min(Math.ceil((o.targetWorkgroups ?? TARGET_WG) / o.numKvHeads), Math.ceil(kvEnd / MIN_SPLIT_KEYS));
  splits = Math.max(1, Math.min(splits, Math.ceil(kvEnd / BK), MAX_SPLITS, o.maxSplits ?? MAX_SPLITS));
  const splitKeys = Math.ceil(Math.ceil(kvEnd / splits) / BK) * BK;
  return { NS, splits: Math.ceil(kvEnd / splitKeys), splitKeys };
}

/** Scratch bytes the split form needs: partial outputs and (m, l) per split and head. */
export function decodeTcScratchBytes(o: DecodeTcOpts, d: AttentionDims): number {
  const p = decodeTcPlan(o, d);
  return p.splits > 1 ? p.splits * o.numHeads * (o.headDim + 4) * 4 : 0;
}

function mainKernel(o: DecodeTcOpts, NS: number, split: boolean, withLse: boolean): KernelSpec {
  const pf = o.prefetch === true;
  const G = o.numHeads / o.numKvHeads;
  const H = o.numHeads;
  const D = o.headDim;
  const ND = D / 16;
  const BK = 16 * NS;
  const QS = D + 8; // q row stride (halves), off the bank period
  const SS = BK + 4; // logit row stride (f32)
  const PS = BK + 8; // probability row stride (halves)
  const emu = o.emulate === true;
  const R = (n: number) => Array.from({ length: n }, (_, i) => i);
  const ops = sgOps(emu, [
    { name: 'qS', loads: ['L'], store: false },
    { name: 'pS', loads: ['L'], store: false },
    { name: 'kc', loads: ['R'], store: false },
    { name: 'vc', loads: ['R'], store: false },
    { name: 'tail', loads: ['R'], store: false },
    { name: 'sS', loads: ['A'], store: true },
  ]);
  const tau = o.tau ?? TAU;
  const key = { op: 'attention_decode_tc', H, G, D, NS, split, lse: withLse, emu, tau, pf };
  const JI = R(NS).flatMap((j) => R(ND).map((i) => [j, i] as const));
  const full = (j: number, ahead = '') => `kb${ahead} + ${16 * j + 16}u <= k1`;
  const kLoad = (j: number, i: number, base: string) => ops.load('R', 'kc', `${base} + ${j * 16 * D + i * 16}u`, true, 'D');
  const vLoad = (j: number, i: number, base: string) => ops.load('R', 'vc', `${base} + ${j * 16 * D + i * 16}u`, false, 'D');
  const pair = (x: string) => `subgroupShuffleXor(${x}, 1u)`;
  // the 16 rows of fragment j of this round into tail, zeros from k1 on (the barrier before also orders it after
  // the previous reads of tail)
  const stageTail = (buf: string, j: number) => `      workgroupBarrier();
      for (var e = lid; e < 16u * D; e += 32u) {
        let slot = kb + ${16 * j}u + e / D;
        tail[(e / D) * TS + e % D] = select(f16(0.0), ${buf}[at + ${16 * j}u * D + e], slot < k1);
      }
      workgroupBarrier();`;
  // one accumulator fragment through sS (16×16, stride 16), then `body` over its 256 entries e (row e / 16)
  const through = (i: number, body: string) => `  ${ops.store('sS', '0u', `o${i}`, false, '16u')}
  workgroupBarrier();
  for (var e = lid; e < 256u; e += 32u) { ${body} }
  workgroupBarrier();`;
  return kernel(key, () => ({
    bindings: [
      ro('q', 'array<vec4<f32>>'), // (1, H, D) rotated
      ro('kc', 'array<f16>'), // (KV, capacity, D) rotated keys
      ro('vc', 'array<f16>'), // (KV, capacity, D)
      ...(split ? [rw('scratch', 'array<f32>')] : [rw('out', 'array<f32>'), ...(withLse ? [rw('lse', 'array<f32>')] : [])]),
    ],
    params: SPLIT_ATTENTION_PARAMS,
    workgroupSize: [32, 1, 1],
    enables: emu ? ['f16', 'subgroups'] : ['f16', 'subgroups', 'chromium_experimental_subgroup_matrix'],
    directives: emu ? [] : ['diagnostic(off, chromium.subgroup_matrix_uniformity)'],
    body: wgsl`
const D = ${D}u;
const DQ = ${D / 4}u;
const H = ${H}u;
const G = ${G}u;
const BK = ${BK}u;
const QS = ${QS}u;
const SS = ${SS}u;
const PS = ${PS}u;
const TS = ${QS}u;
const NEG = ${NEG};
const TAU = ${f32(tau)};
${ops.prelude}

var<workgroup> qS: array<f16, ${16 * QS}>; // (16, QS) q rows, logit scale folded in, padding rows zero
var<workgroup> sS: array<f32, ${Math.max(16 * SS, 256)}>; // (16, SS) logits of a round; or one accumulator fragment
var<workgroup> pS: array<f16, ${16 * PS}>; // (16, PS) probabilities of a round
var<workgroup> tail: array<f16, ${16 * QS}>; // (16, TS) key or value rows of the fragment that straddles k1
var<workgroup> rowA: array<f32, 16>; // per row: the round's rescale factor; at the end the sum l
var<workgroup> resc: vec4<u32>; // .x: number (from 1) of the latest round that moved some row's reference max

@compute @workgroup_size(32)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>) {
  ${ops.init('lid')}
  let g = wg.y;
  if (lid == 0u) { resc.x = 0u; }
  for (var e = lid; e < 16u * DQ; e += 32u) {
    let r = e / DQ;
    var x = vec4<f32>(0.0);
    if (r < G) { x = q[(g * G + r) * DQ + e % DQ] * params.scale; }
    let hx = vec4<f16>(x);
    let a = r * QS + (e % DQ) * 4u;
    qS[a] = hx.x; qS[a + 1u] = hx.y; qS[a + 2u] = hx.z; qS[a + 3u] = hx.w;
  }
  workgroupBarrier();
${R(ND).map((i) => `  let q${i} = ${ops.load('L', 'qS', `${i * 16}u`, false, 'QS')};`).join('\n')}
${R(ND).map((i) => `  var o${i} = AccM();`).join('\n')}
  let row = lid / 2u;
  let half = lid % 2u;
  let rowOk = row < G;
  var m = NEG; // reference max
  var l = 0.0; // Σ e^(s - m)
  let k0 = wg.x * params.splitKeys;
  let k1 = min(k0 + params.splitKeys, params.base + 1u);
  let head = g * params.capacity * D; // first element of this KV head's rows
  var kt = 0u;
${pf ? `${JI.map(([j, i]) => `  var kf${j}_${i} = RightM();
  var vf${j}_${i} = RightM();`).join('\n')}
  { let kb = k0; // the first round's keys
${R(NS).map((j) => `    if (${full(j)}) {
${R(ND).map((i) => `      kf${j}_${i} = ${kLoad(j, i, 'head + kb * D')};`).join('\n')}
    }`).join('\n')}
  }` : ''}
  for (var kb = k0; kb < k1; kb += BK) {
    kt += 1u;
    let at = head + kb * D;
${pf ? R(NS).map((j) => `    if (${full(j)}) {
${R(ND).map((i) => `      vf${j}_${i} = ${vLoad(j, i, 'at')};`).join('\n')}
    }`).join('\n') : ''}
${R(NS).map((j) => `    if (kb + ${16 * j + 16}u <= k1) {
      var s = AccM();
${R(ND).map((i) => `      s = ${ops.mma(`q${i}`, pf ? `kf${j}_${i}` : kLoad(j, i, 'at'), 's')};`).join('\n')}
      ${ops.store('sS', `${j * 16}u`, 's', false, 'SS')}
    } else if (kb + ${16 * j}u < k1) {
${stageTail('kc', j)}
      var s = AccM();
${R(ND).map((i) => `      s = ${ops.mma(`q${i}`, ops.load('R', 'tail', `${i * 16}u`, true, 'TS'), 's')};`).join('\n')}
      ${ops.store('sS', `${j * 16}u`, 's', false, 'SS')}
    }`).join('\n')}
${pf ? R(NS).map((j) => `    if (${full(j, ' + BK')}) {
${R(ND).map((i) => `      kf${j}_${i} = ${kLoad(j, i, 'at + BK * D')};`).join('\n')}
    }`).join('\n') : ''}
    workgroupBarrier();
    var mx = NEG;
    for (var kk = half; kk < BK; kk += 2u) { mx = max(mx, select(NEG, sS[row * SS + kk], rowOk && kb + kk < k1)); }
    let mt = max(mx, ${pair('mx')});
    var a = 1.0;
    if (mt > m + TAU) {
      if (m > NEG) { a = exp(m - mt); resc.x = kt; }
      m = mt;
    }
    var ps = 0.0;
    for (var kk = half; kk < BK; kk += 2u) {
      let pv = f16(select(0.0, exp(sS[row * SS + kk] - m), rowOk && kb + kk < k1));
      pS[row * PS + kk] = pv;
      ps += f32(pv); // the sum of exactly what P·V multiplies
    }
    l = l * a + ps + ${pair('ps')};
    if (half == 0u) { rowA[row] = a; }
    if (workgroupUniformLoad(&resc).x == kt) {
${R(ND).map((i) => `      ${ops.store('sS', '0u', `o${i}`, false, '16u')}
      workgroupBarrier();
      for (var e = lid; e < 256u; e += 32u) { sS[e] *= rowA[e / 16u]; }
      workgroupBarrier();
      o${i} = ${ops.load('A', 'sS', '0u', false, '16u')};`).join('\n')}
    }
${R(NS).map((j) => `    if (kb + ${16 * j + 16}u <= k1) {
      let pf = ${ops.load('L', 'pS', `${j * 16}u`, false, 'PS')};
${R(ND).map((i) => `      o${i} = ${ops.mma('pf', pf ? `vf${j}_${i}` : vLoad(j, i, 'at'), `o${i}`)};`).join('\n')}
    } else if (kb + ${16 * j}u < k1) {
${stageTail('vc', j)}
      let pf = ${ops.load('L', 'pS', `${j * 16}u`, false, 'PS')};
${R(ND).map((i) => `      o${i} = ${ops.mma('pf', ops.load('R', 'tail', `${i * 16}u`, false, 'TS'), `o${i}`)};`).join('\n')}
    }`).join('\n')}
    workgroupBarrier();
  }
  if (half == 0u) { rowA[row] = l; }
${R(ND).map((i) => through(i, `let r = e / 16u;
    if (r < G) {
      let th = g * G + r;
      ${split ? `scratch[(wg.x * H + th) * D + ${i * 16}u + e % 16u] = sS[e];` : `out[th * D + ${i * 16}u + e % 16u] = sS[e] / rowA[r];`}
    }`)).join('\n')}
  if (half == 0u && rowOk) {
    let th = g * G + row;
${split ? `    let at = params.splits * H * D + (wg.x * H + th) * 4u;
    scratch[at] = m;
    scratch[at + 1u] = l;` : withLse ? '    lse[th] = m + log(l);' : ''}
  }
}`,
  }));
}

/**
 * Tensor-core attention of one decode query over rotated f16 keys: 1 dispatch, 2 when keys are split (the second
 * merges the splits: attention.ts's combineKernel).
 */
export function attentionDecodeTc(o: DecodeTcOpts, d: AttentionDims, b: AttentionBuffers): Dispatch[] {
  const p = decodeTcPlan(o, d);
  const withLse = b.lse !== undefined;
  const split = p.splits > 1;
  const params = splitAttentionParams(o, d, p);
  const workgroups = [p.splits, o.numKvHeads] as const;
  const kv = { q: b.q, kc: b.kCache, vc: b.vCache };
  if (!split) {
    const outs: Record<string, GPUBuffer> = withLse ? { out: b.out, lse: b.lse! } : { out: b.out };
    return [{ kernel: mainKernel(o, p.NS, false, withLse), buffers: { ...kv, ...outs }, params, workgroups }];
  }
  const need = p.splits * o.numHeads * (o.headDim + 4) * 4;
  if (!b.scratch || b.scratch.size < need) throw new Error(`tensor-core decode attention: ${p.splits} key splits need a scratch buffer of ${need} bytes`);
  const TH = o.numHeads;
  const outs: Record<string, GPUBuffer> = withLse ? { scratch: b.scratch, out: b.out, lse: b.lse! } : { scratch: b.scratch, out: b.out };
  return [
    { kernel: mainKernel(o, p.NS, true, false), buffers: { ...kv, scratch: b.scratch }, params, workgroups },
    { kernel: combineKernel(o, withLse), buffers: outs, params: { TH, splits: p.splits }, workgroups: [TH] },
  ];
}
