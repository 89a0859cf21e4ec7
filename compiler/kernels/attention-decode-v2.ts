/**
 * Decode attention, variant 2 (flash-decoding inside the workgroup): per-key work is split so that no lane does
 * the same softmax or reduction work as its neighbours.
 *
 * Grid (KV × row blocks, splits): the KV heads (and row blocks) of one slab are adjacent in dispatch order, so the
 * workgroups that read the same rope rows (and, for several row blocks, the same K/V rows) run together and share
 * them through L2. A workgroup of NT threads owns one KV head, one slab of `splitKeys` slots and R ≤ 4 rows
 * (query, head) of the GQA group. Its threads form NG = NT/KL lane groups of KL lanes; a lane group owns one key at
 * a time (NK keys per round), and lane l of it reads quads l, l + KL, … of that key's row, so a group's loads are
 * contiguous and a warp's loads cover whole rows of NK·32/KL keys:
 *
 *   round:   group 0 → key kb+0   | l0 | l1 | .. | lKL-1 | l0 | l1 | .. |   (quads of one K row, then V row)
 *            group 1 → key kb+1   | l0 | l1 | .. | lKL-1 | ..
 *
 * RoPE: lane l takes frequency quads f = l, l + KL, … and reads both halves (quad f and f + rot/8) of the key and
 * the 2 rope vec4s of f itself, so every K byte and rope byte is read once per key (no partner re-reads).
 * The KL partial dots of a key are summed with log2(KL) subgroupShuffleXor steps (workgroup memory without
 * `subgroups`, or when the subgroup is narrower than KL), then every lane group keeps its OWN online softmax
 * (max, sum, output quads) over the keys it saw: no cross-group work per key, and the max is moved lazily (exp of the
 * old max only when a key beats it). The groups merge once per slab through workgroup memory.
 *
 * Rounds are software-pipelined: the K/V words (int8: and row scales) and positions of round i+1 are loaded, f16 words
 * kept packed, int8 codes unscaled (the key's scale multiplies its dot, the value's its weight), before round i's
 * arithmetic, so the loads are in flight while the shuffles and exps run. With depth 2 two register sets alternate
 * (the loop is unrolled by two rounds) and round i loads round i+2: twice the bytes in flight.
 * int8 caches on devices with packed int8 dot products take a key's dot on its raw codes (dot4I8Packed, 4 multiply-
 * adds per instruction, no widening), against q quantized once per workgroup into two int8 digits (IQ below).
 * On rotated keys (the default there) the rows' scaled q sit in workgroup memory instead of registers: every lane
 * group reads the same quads (broadcast loads), and the registers they free hold the second set without costing
 * resident workgroups (q in registers with depth 2 was slower at 16K slots; see `depth` below).
 *
 * Output contract as attention-decode.ts: unnormalized partials + (max, sum) into `scratch` when split (merged by
 * decodeCombine), else out and lse directly.
 */
import { kernel, wgsl, type KernelSource } from '../wgsl.js';
import type { Dispatch } from '../../runtime/gpu/runner.js';
import { NEG, attentionBindings, checkHeadDims, keyFns, SPLIT_ATTENTION_PARAMS, splitAttentionParams, type CacheDtype } from './attn-common.js';
import type { AttentionBuffers, AttentionDims, AttentionOpts } from './attention.js';
import { decodeCombine, MAX_SPLITS } from './attention-combine.js';
import { env, envPairs, parsedOnce } from '../../runtime/env.js';

const MAX_ROWS = 4; // q and the output quads of R rows stay in registers: R × (rot/4 + (D-rot)/4 + D/4)/KL vec4
/**
 * Caches up to this many slots take 2 rows and 1 key per round (fewer registers: more workgroups resident), longer
 * ones 4 rows and 2 keys (each K/V byte read once per GQA group). H200 sweep (bench/attn-check.ts, 32 layers, GQA 4,
 * D 128): 16K slots 1.75 ms vs 2.3–2.6 ms; 131K slots 10.2 ms vs 9.7 ms.
 */
const SHORT_CACHE = 65536;
/**
 * Workgroups wanted: one resident wave of 4 per SM on a 132-SM GPU (a 4090 has 128): fewer, longer slabs than two
 * waves of 1024 (H200, bench/attn-check.ts with prefetch: 1.70 vs 1.81 ms at 16K slots, 9.02 vs 9.32 at 131K).
 */
const TARGET_WG = 528;
const MIN_SPLIT_KEYS = 64;
const OB_BYTES = 16384; // workgroup memory for the end-of-slab merge of one row's output quads

export interface DecodeV2Opts extends AttentionOpts {
  subgroups: boolean;
  /** lanes per key (power of two dividing D/4); threads per workgroup; keys per lane group per round */
  kl?: number;
  nt?: number;
  nk?: number;
  /** rows (query, head) per workgroup, ≤ 4 (default: by cache length, see SHORT_CACHE) */
  rows?: number;
  /** load the next round's K/V words (int8: and row scales) and positions while this round computes (default on) */
  prefetch?: boolean;
  /**
   * Rounds loaded ahead when prefetching: 1, or 2 (two register sets, loop unrolled by two rounds). Default: 2 with
   * q in workgroup memory, whose freed registers hold the second set (H100, bench/attn-check.ts --rotated --profile,
   * 32 layers: 16K slots 1.386 vs 1.455 ms, 131K 7.00 vs 7.27; depth 2 with q in registers: 1.80 / 6.93).
   */
  depth?: 1 | 2;
  /** rotated keys only: the rows' q in workgroup memory instead of registers (default on; 16K: 1.467 vs 1.455 alone) */
  qShared?: boolean;
  /** the cached keys already carry RoPE at their positions (session.ts rotates them at the first decode step) */
  keysRotated?: boolean;
  /** the device takes packed int8 dot products (GpuContext.intDot): see DecodeV2Plan.IQ */
  intDot?: boolean;
}

export interface DecodeV2Plan {
  G: number;
  R: number;
  nBlocks: number;
  KL: number;
  NT: number;
  NG: number;
  NK: number;
  splits: number;
  splitKeys: number;
  /** next round's loads issued before this round's arithmetic */
  PF: boolean;
  /** rounds in flight with PF (1 or 2); splitKeys is a multiple of DEPTH rounds */
  DEPTH: 1 | 2;
  /** q read from workgroup memory (rotated keys only) */
  QS: boolean;
  /** int8 cache: prefetched rounds also load each row's scale */
  int8: boolean;
  /**
   * int8 cache with q in workgroup memory and prefetched rounds, on devices with packed int8 dot products: q is
   * quantized once per workgroup into two int8 digits per element (q ≈ (254·hi + lo) · amax / 32258, ~16 bits),
   * and a key's dot is dot4I8Packed on its raw codes (4 multiply-adds per instruction, no widening of the codes)
   */
  IQ: boolean;
}

interface TuningV2 { kl?: number; nt?: number; nk?: number; slab?: number; wgs?: number; rows?: number; pf?: boolean; depth?: 1 | 2; qs?: boolean; iq?: boolean }
/** `LOCRET_ATTN_DECODE="v2,kl=8,nt=128,k2=1,slab=512,wgs=1024,rows=4,pf=1"`: plan knobs for timing runs (results unchanged; pf=2 prefetches two rounds ahead, qs=1 keeps q in workgroup memory, iq=0 keeps int8 key dots in floats). */
export function tuningV2(spec = env('LOCRET_ATTN_DECODE')): TuningV2 {
  return parseTuningV2(spec); // every layer of every step plans: parsed once per value
}
const parseTuningV2 = parsedOnce((spec) => {
  const t: TuningV2 = {};
  for (const [k, v] of envPairs(spec)) {
    const n = Number(v);
    if (k === 'kl' && [1, 2, 4, 8, 16, 32].includes(n)) t.kl = n;
    if (k === 'nt' && [32, 64, 128, 256].includes(n)) t.nt = n;
    if (k === 'k2' && [1, 2, 4].includes(n)) t.nk = n;
    if (k === 'slab' && n >= 1) t.slab = n;
    if (k === 'wgs' && n >= 1) t.wgs = n;
    if (k === 'rows' && [1, 2, 3, 4].includes(n)) t.rows = n;
    if (k === 'qs' && (n === 0 || n === 1)) t.qs = n === 1;
    if (k === 'iq' && (n === 0 || n === 1)) t.iq = n === 1;
    if (k === 'pf' && [0, 1, 2].includes(n)) {
      t.pf = n > 0;
      if (n > 0) t.depth = n as 1 | 2;
    }
  }
  return t;
});

/** The plan; `splitsBound` caps the splits so the scratch sized for the v1 kernel (decodeScratchBytes) suffices. */
export function planV2(o: DecodeV2Opts, d: AttentionDims, splitsBound: number): DecodeV2Plan {
  checkHeadDims(o.headDim, o.rotaryDim);
  if (o.numHeads % o.numKvHeads !== 0) throw new Error(`numHeads ${o.numHeads} not a multiple of numKvHeads ${o.numKvHeads}`);
  const G = o.numHeads / o.numKvHeads;
  const rows = d.T * G;
  const tune = tuningV2();
  const kvEnd = d.base + d.T;
  const short = kvEnd <= SHORT_CACHE;
  const R = Math.min(rows, o.rows ?? tune.rows ?? (short ? 2 : MAX_ROWS), MAX_ROWS);
  const nBlocks = Math.ceil(rows / R);
  const DQ = o.headDim / 4;
  let KL = o.kl ?? tune.kl ?? 8;
  while (DQ % KL !== 0) KL /= 2;
  let NT = Math.max(KL, o.nt ?? tune.nt ?? 128);
  while (NT > KL && (NT / KL) * DQ * 16 > OB_BYTES) NT /= 2;
  const NG = NT / KL;
  const NK = o.nk ?? tune.nk ?? (short ? 1 : 2);
  let splits = d.splits ?? (tune.slab ? Math.ceil(kvEnd / tune.slab)
    : Math.min(Math.ceil((tune.wgs ?? TARGET_WG) / (nBlocks * o.numKvHeads)), Math.ceil(kvEnd / MIN_SPLIT_KEYS)));
  if (d.splits === undefined) splits = Math.min(splits, splitsBound);
  splits = Math.max(1, Math.min(splits, MAX_SPLITS));
  const PF = o.prefetch ?? tune.pf ?? true;
  const QS = o.keysRotated === true && (o.qShared ?? tune.qs ?? true);
  const DEPTH = PF ? (o.depth ?? tune.depth ?? (QS ? 2 : 1)) : 1;
  const round = NG * NK * DEPTH;
  const splitKeys = Math.ceil(Math.ceil(kvEnd / splits) / round) * round;
  const int8 = o.cacheDtype === 'int8';
  const IQ = int8 && QS && PF && o.intDot === true && (tune.iq ?? true);
  return { G, R, nBlocks, KL, NT, NG, NK, splits: Math.ceil(kvEnd / splitKeys), splitKeys, PF, DEPTH, QS, int8, IQ };
}

const seq = (n: number) => Array.from({ length: n }, (_, i) => i);

function mainKernel(o: DecodeV2Opts, p: DecodeV2Plan, split: boolean, withLse: boolean) {
  const { G, R, KL, NT, NK } = p;
  const key = { op: 'attention_decode2', cache: o.cacheDtype, H: o.numHeads, G, D: o.headDim, rot: ropeDims(o), R, KL, NT, NK, sg: o.subgroups, split, lse: withLse, pf: p.PF ? p.DEPTH : 0, qs: p.QS, ...(p.IQ ? { iq: true } : {}) };
  // the WGSL is generated once per variant key (kernel() calls this only on a cache miss), not per step
  return kernel(key, () => mainSource(o, p, split, withLse));
}

/** Dims the kernel rotates on load: none when the cached keys already carry RoPE (positions are not needed then). */
const ropeDims = (o: DecodeV2Opts) => (o.keysRotated ? 0 : o.rotaryDim);

function mainSource(o: DecodeV2Opts, p: DecodeV2Plan, split: boolean, withLse: boolean): KernelSource {
  const { G, R, KL, NT, NG, NK } = p;
  const H = o.numHeads;
  const DQ = o.headDim / 4;
  const rot = ropeDims(o);
  const HQ = rot / 8; // frequency quads (quads per rotary half)
  const PQ = (o.headDim - rot) / 4; // pass-through quads
  const nf = Math.ceil(HQ / KL); // per lane
  const np = Math.ceil(PQ / KL);
  const nv = DQ / KL;
  const sg = o.subgroups;
  const [rs, fs, ps, vs, ks] = [seq(R), seq(nf), seq(np), seq(nv), seq(NK)];
  const rk = (kk: number, r: number) => `${kk}_${r}`;
  const redLen = 2 * NK * R * NT;
  // prefetched int8 rounds hold raw codes: a key's scale multiplies its dot, a value's scale its softmax weight
  const rowScales = p.PF && p.int8;
  // partial dots of (key kk, row r) summed over the KL lanes of each group into z_kk_r
  const shuffleSum = ks.map((kk) => rs.map((r) => seq(Math.log2(KL)).map((b) => `        z${rk(kk, r)} += subgroupShuffleXor(z${rk(kk, r)}, ${1 << b}u);`).join('\n')).join('\n')).join('\n');
  const ldsSum = `        let rb = hb * ${NK * R * NT}u;
${ks.map((kk) => rs.map((r) => `        red[rb + ${(kk * R + r) * NT}u + lid] = z${rk(kk, r)};`).join('\n')).join('\n')}
        workgroupBarrier();
${ks.map((kk) => rs.map((r) => `        z${rk(kk, r)} = 0.0;
        for (var i = 0u; i < KL; i++) { z${rk(kk, r)} += red[rb + ${(kk * R + r) * NT}u + grp * KL + i]; }`).join('\n')).join('\n')}`;
  // IQ: the key's raw code words against q's two digits; (254·Σhi + Σlo) is exact in i32 (|·| < 2^31)
  const intDot = (kk: number, r: number) => {
    const sum = (arr: string) => ps.map((i) => `dot4I8Packed(xk${kk}_${i}, ${arr}[${r * DQ}u + pp${i}])`).join(' + ');
    return `f32((${sum('qhi')}) * 254 + ${sum('qlo')}) * qs${r} * ksc${kk}`;
  };
  if (p.IQ && fs.length) throw new Error('attention_decode2: integer key dots need rotated keys (every quad pass-through)');
  // one round's arithmetic on the keys key<kk> (values x*, v*): rotation, dots, lane-group sums, online softmax
  const compute = `${ks.map((kk) => fs.map((i) => `    let c${kk}_${i} = vec4<f32>(ra${kk}_${i}.x, ra${kk}_${i}.z, rb${kk}_${i}.x, rb${kk}_${i}.z);
    let sn${kk}_${i} = vec4<f32>(ra${kk}_${i}.y, ra${kk}_${i}.w, rb${kk}_${i}.y, rb${kk}_${i}.w);
    let ka${kk}_${i} = xa${kk}_${i} * c${kk}_${i} - xb${kk}_${i} * sn${kk}_${i}; // HF rotate_half, low half
    let kb${kk}_${i} = xb${kk}_${i} * c${kk}_${i} + xa${kk}_${i} * sn${kk}_${i};`).join('\n')).join('\n')}
${ks.map((kk) => rs.map((r) => `    var z${rk(kk, r)} = ${p.IQ ? intDot(kk, r) : `(${[...fs.map((i) => `dot(qa${r}_${i}, ka${kk}_${i}) + dot(qb${r}_${i}, kb${kk}_${i})`), ...ps.map((i) => `dot(${p.QS ? `qsh[${r * DQ}u + pp${i}]` : `qp${r}_${i}`}, xp${kk}_${i})`)].join(' + ')})${rowScales ? ` * ksc${kk}` : ''}`};`).join('\n')).join('\n')}
${sg ? `    if (sgs >= KL) { // lane groups are aligned runs of KL lanes inside one subgroup
${shuffleSum}
    } else {
${ldsSum}
    }` : `    {
${ldsSum}
    }`}
    // this group's online softmax; masked keys get weight 0 explicitly (exp(NEG - NEG) would be 1)
${ks.map((kk) => rs.map((r) => `    {
      let e = select(NEG, z${rk(kk, r)}, key${kk} < lim${r});
      if (e > m${r}) {
        let al = exp(m${r} - e);
        l${r} *= al;
${vs.map((i) => `        a${r}_${i} *= al;`).join('\n')}
        m${r} = e;
      }
      let w = select(0.0, exp(e - m${r}), e > -1.0e38);
      l${r} += w;${rowScales ? `\n      let wv = w * vsc${kk};` : ''}
${vs.map((i) => `      a${r}_${i} += ${rowScales ? 'wv' : 'w'} * v${kk}_${i};`).join('\n')}
    }`).join('\n')).join('\n')}
    hb ^= 1u;
`;
  // every load of a round first; keys past k1 read slot k1 - 1 and are masked in compute
  const plainLoads = ks.map((kk) => `    let key${kk} = kb + ${kk * NG}u + grp;
    let s${kk} = min(key${kk}, k1 - 1u);${nf ? `
    let p${kk} = kpos[g * params.capacity + s${kk}];` : ''}
${fs.map((i) => `    let xa${kk}_${i} = kq(g, s${kk}, fq${i});
    let xb${kk}_${i} = kq(g, s${kk}, fq${i} + HQ);
${ropeLoads(kk, i)}`).join('\n')}
${ps.map((i) => `    let xp${kk}_${i} = kq(g, s${kk}, pq${i});`).join('\n')}
${vs.map((i) => `    let v${kk}_${i} = vq(g, s${kk}, ln + ${i * KL}u);`).join('\n')}`).join('\n');
  const RK = NG * NK; // keys per round
  const loop = !p.PF
    ? `  for (var kb = k0; kb < k1; kb += ${RK}u) {\n${plainLoads}\n${compute}  }`
    : p.DEPTH === 1
      ? `  for (var kb = k0; kb < k1; kb += ${RK}u) {\n${prefetchedRound(p, fs, ps, vs, ks, 'kb', 'w', `(kb + ${RK}u)`)}\n${compute}  }`
      : `  for (var kb = k0; kb < k1; kb += ${2 * RK}u) { // two rounds, one per register set
    {
${prefetchedRound(p, fs, ps, vs, ks, 'kb', 'w', `(kb + ${2 * RK}u)`)}
${compute}    }
    {
${prefetchedRound(p, fs, ps, vs, ks, `(kb + ${RK}u)`, 'u', `(kb + ${3 * RK}u)`)}
${compute}    }
  }`;
  return {
    bindings: attentionBindings(o.cacheDtype, split, withLse),
    params: SPLIT_ATTENTION_PARAMS,
    workgroupSize: [NT, 1, 1],
    enables: sg ? ['subgroups'] : [],
    body: wgsl`
const DQ = ${DQ}u;
const HQ = ${HQ}u;
const H = ${H}u;
const G = ${G}u;
const R = ${R}u;
const KL = ${KL}u;
const NG = ${NG}u;
const NEG = ${NEG};
${keyFns(o.cacheDtype, true)}
${p.PF ? rawFns(o.cacheDtype) : ''}

var<workgroup> red: array<f32, ${redLen}>; // (2 rounds, NK keys, R rows, NT lanes) partial dots, no-shuffle path
var<workgroup> gm: array<f32, ${R * NG}>; // (R, NG) per-group max
var<workgroup> gl: array<f32, ${R * NG}>; // (R, NG) per-group sum
var<workgroup> ob: array<vec4<f32>, ${NG * DQ}>; // (NG, DQ) one row's per-group output quads, rescaled${p.QS ? `
var<workgroup> qsh: array<vec4<f32>, ${R * DQ}>; // (R, DQ) the rows' scaled q (rotated keys: every quad is pass-through)` : ''}${p.IQ ? `
var<workgroup> qhi: array<u32, ${R * DQ}>; // (R, DQ) q's first int8 digit, 4 per word
var<workgroup> qlo: array<u32, ${R * DQ}>; // (R, DQ) q's second digit (the first's rounding error in 1/254 steps)
var<workgroup> qam: array<f32, ${R}>; // (R) max |q| of each row` : ''}

@compute @workgroup_size(${NT})
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>${sg ? ', @builtin(subgroup_size) sgs: u32' : ''}) {
  let g = wg.x % ${o.numKvHeads}u;
  let blk = wg.x / ${o.numKvHeads}u;
  let ln = lid % KL;
  let grp = lid / KL;
  let k0 = wg.y * params.splitKeys;
  let lastT = min((blk * R + R - 1u) / G, params.T - 1u);
  let k1 = min(k0 + params.splitKeys, params.base + lastT + 1u); // uniform: workgroup id and params only
  // this lane's quads: frequency quads f (and f + HQ), pass-through quads, value quads; out-of-range ones read a
  // valid quad and meet a zero q
${fs.map((i) => `  let f${i} = ln + ${i * KL}u;
  let fq${i} = min(f${i}, HQ - 1u);`)}
${ps.map((i) => `  let pp${i} = ln + ${i * KL}u;
  let pq${i} = ${2 * HQ}u + min(pp${i}, ${Math.max(PQ, 1) - 1}u);`)}
${rs.map((r) => `  let ri${r} = blk * R + ${r}u;
  let t${r} = ri${r} / G;
  let ok${r} = t${r} < params.T;
  let qa${r} = (t${r} * H + g * G + ri${r} % G) * DQ; // first quad of the row in q / out
  let lim${r} = select(0u, min(params.base + t${r} + 1u, k1), ok${r}); // keys [k0, lim) are visible
  var m${r} = NEG;
  var l${r} = 0.0;
${fs.map((i) => `  var qa${r}_${i} = vec4<f32>(0.0);
  var qb${r}_${i} = vec4<f32>(0.0);
  if (ok${r} && f${i} < HQ) { qa${r}_${i} = q[qa${r} + fq${i}] * params.scale; qb${r}_${i} = q[qa${r} + fq${i} + HQ] * params.scale; }`).join('\n')}
${p.QS ? '' : ps.map((i) => `  var qp${r}_${i} = vec4<f32>(0.0);
  if (ok${r} && pp${i} < ${PQ}u) { qp${r}_${i} = q[qa${r} + pq${i}] * params.scale; }`).join('\n')}
${vs.map((i) => `  var a${r}_${i} = vec4<f32>(0.0);`).join('\n')}`)}
${p.PF ? prefetchPrologue(p, fs, ps, vs, ks) : ''}
${p.QS ? `  for (var j = lid; j < ${R * DQ}u; j += ${NT}u) {
    let ri = blk * R + j / DQ;
    let t = ri / G;
    qsh[j] = select(vec4<f32>(0.0), q[(min(t, params.T - 1u) * H + g * G + ri % G) * DQ + j % DQ] * params.scale, t < params.T);
  }
  workgroupBarrier();` : ''}${p.IQ ? `
  // q in two int8 digits per element, against each row's max: v = q · 127 / amax = hi + lo / 254
  if (lid < R) {
    var am = 0.0;
    for (var j = 0u; j < DQ; j++) { let v = abs(qsh[lid * DQ + j]); am = max(am, max(max(v.x, v.y), max(v.z, v.w))); }
    qam[lid] = am;
  }
  workgroupBarrier();
  for (var j = lid; j < ${R * DQ}u; j += ${NT}u) {
    let am = qam[j / DQ];
    let v = qsh[j] * select(0.0, 127.0 / am, am > 0.0);
    let hi = round(v);
    qhi[j] = pack4xI8(vec4<i32>(hi));
    qlo[j] = pack4xI8(vec4<i32>(round((v - hi) * 254.0)));
  }
  workgroupBarrier();
${rs.map((r) => `  let qs${r} = qam[${r}u] * ${1 / (127 * 254)};`).join('\n')}` : ''}
  var hb = 0u;
${loop}
  // merge the lane groups: M = max of the group maxima, each group's output and sum weighed by exp(m - M)
  if (ln == 0u) {
${rs.map((r) => `    gm[${r * NG}u + grp] = m${r};
    gl[${r * NG}u + grp] = l${r};`).join('\n')}
  }
  workgroupBarrier();
${rs.map((r) => merge(r, vs, KL, NG, NT, split, withLse)).join('\n')}
}`,
  };
}

const ropeLoads = (kk: number, i: number) => `    let ra${kk}_${i} = rope[p${kk} * HQ * 2u + fq${i} * 2u];
    let rb${kk}_${i} = rope[p${kk} * HQ * 2u + fq${i} * 2u + 1u];`;

/**
 * Raw cache words and their widening, for loads held across a round: f16 quads stay packed (2 registers, not 4),
 * int8 quads are one word of codes, widened unscaled; `ksw` / `vsw` load an int8 row's scale.
 */
function rawFns(dtype: CacheDtype): string {
  if (dtype === 'int8') {
    return `fn row8(g: u32, s: u32) -> u32 { return (g * params.capacity + s) * (DQ + 1u); } // first word of a row
fn kw(g: u32, s: u32, j: u32) -> u32 { return kCache[row8(g, s) + j]; }
fn vw(g: u32, s: u32, j: u32) -> u32 { return vCache[row8(g, s) + j]; }
fn ksw(g: u32, s: u32) -> f32 { return bitcast<f32>(kCache[row8(g, s) + DQ]); }
fn vsw(g: u32, s: u32) -> f32 { return bitcast<f32>(vCache[row8(g, s) + DQ]); }
fn wx(w: u32) -> vec4<f32> { return unpack8(w); }`;
  }
  const W = dtype === 'f16' ? 'vec2<u32>' : 'vec4<f32>';
  return `fn kw(g: u32, s: u32, j: u32) -> ${W} { return kCache[(g * params.capacity + s) * DQ + j]; }
fn vw(g: u32, s: u32, j: u32) -> ${W} { return vCache[(g * params.capacity + s) * DQ + j]; }
fn wx(w: ${W}) -> vec4<f32> { return ${dtype === 'f16' ? 'vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y))' : 'w'}; }`;
}

/**
 * Loads of the round starting at key `first` into the w* registers: declared (`var`) before the loop, assigned in
 * it (each at its own indentation).
 */
function roundLoads(p: DecodeV2Plan, fs: number[], ps: number[], vs: number[], ks: number[], first: string, declare: boolean, W = 'w'): string {
  const at = declare ? '  var ' : '    ';
  return ks.map((kk) => `${at}${W}s${kk} = min(${first} + ${kk * p.NG}u + grp, k1 - 1u);
${fs.length ? `${at}${W}p${kk} = kpos[g * params.capacity + ${W}s${kk}];\n` : ''}${fs.map((i) => `${at}${W}a${kk}_${i} = kw(g, ${W}s${kk}, fq${i});
${at}${W}b${kk}_${i} = kw(g, ${W}s${kk}, fq${i} + HQ);`).join('\n')}
${ps.map((i) => `${at}${W}q${kk}_${i} = kw(g, ${W}s${kk}, pq${i});`).join('\n')}
${vs.map((i) => `${at}${W}v${kk}_${i} = vw(g, ${W}s${kk}, ln + ${i * p.KL}u);`).join('\n')}${p.int8 ? `
${at}${W}ks${kk} = ksw(g, ${W}s${kk});
${at}${W}vs${kk} = vsw(g, ${W}s${kk});` : ''}`).join('\n');
}

/** Software pipelining: the first DEPTH rounds' loads (register sets w, then u), before the loop. */
function prefetchPrologue(p: DecodeV2Plan, fs: number[], ps: number[], vs: number[], ks: number[]): string {
  return `  // the first rounds' K/V words and positions; each round then loads the one DEPTH rounds later before computing
${roundLoads(p, fs, ps, vs, ks, 'k0', true)}${p.DEPTH === 2 ? `\n${roundLoads(p, fs, ps, vs, ks, `(k0 + ${p.NG * p.NK}u)`, true, 'u')}` : ''}`;
}

/**
 * A round (keys from `kb`) with its values from register set W, then the loads of the round at `next` into W, then
 * this round's rope rows.
 */
function prefetchedRound(p: DecodeV2Plan, fs: number[], ps: number[], vs: number[], ks: number[], kb: string, W: string, next: string): string {
  return `${ks.map((kk) => `    let key${kk} = ${kb} + ${kk * p.NG}u + grp;
${fs.length ? `    let p${kk} = ${W}p${kk};\n` : ''}${fs.map((i) => `    let xa${kk}_${i} = wx(${W}a${kk}_${i});
    let xb${kk}_${i} = wx(${W}b${kk}_${i});`).join('\n')}
${ps.map((i) => (p.IQ ? `    let xk${kk}_${i} = ${W}q${kk}_${i};` : `    let xp${kk}_${i} = wx(${W}q${kk}_${i});`)).join('\n')}
${vs.map((i) => `    let v${kk}_${i} = wx(${W}v${kk}_${i});`).join('\n')}${p.int8 ? `
    let ksc${kk} = ${W}ks${kk};
    let vsc${kk} = ${W}vs${kk};` : ''}`).join('\n')}
${roundLoads(p, fs, ps, vs, ks, next, false, W)}
${ks.map((kk) => fs.map((i) => ropeLoads(kk, i)).join('\n')).join('\n')}`;
}

function merge(r: number, vs: number[], KL: number, NG: number, NT: number, split: boolean, withLse: boolean): string {
  const write = split
    ? `scratch[(wg.y * params.T * H + qa${r} / DQ) * DQ + j] = a;`
    : `out[qa${r} + j] = a / L;`;
  // (max, sum) after all splits' outputs: the combine weighs split i by exp(m_i - M)
  const stats = split
    ? `if (ok${r} && lid == 0u) { scratch[params.splits * params.T * H * DQ + wg.y * params.T * H + qa${r} / DQ] = vec4<f32>(M, L, 0.0, 0.0); }`
    : withLse ? `if (ok${r} && lid == 0u) { lse[qa${r} / DQ] = M + log(L); }` : '';
  return `  {
    var M = NEG;
    for (var i = 0u; i < NG; i++) { M = max(M, gm[${r * NG}u + i]); }
    var L = 0.0;
    for (var i = 0u; i < NG; i++) { L += gl[${r * NG}u + i] * exp(gm[${r * NG}u + i] - M); } // empty group: 0 · 1
    let sc = exp(m${r} - M);
${vs.map((i) => `    ob[grp * DQ + ln + ${i * KL}u] = a${r}_${i} * sc;`).join('\n')}
    workgroupBarrier();
    if (ok${r}) {
      for (var j = lid; j < DQ; j += ${NT}u) {
        var a = vec4<f32>(0.0);
        for (var i = 0u; i < ${NG}u; i++) { a += ob[i * DQ + j]; }
        ${write}
      }
    }
    ${stats}
    workgroupBarrier();
  }`;
}

/** v2 attention of T ≤ 8 queries: 1 dispatch, 2 when keys split. `splitsBound`: see planV2. */
export function attentionDecodeV2(o: DecodeV2Opts, d: AttentionDims, b: AttentionBuffers, splitsBound: number): Dispatch[] {
  const p = planV2(o, d, splitsBound);
  const withLse = b.lse !== undefined;
  const split = p.splits > 1;
  const common = { q: b.q, kCache: b.kCache, vCache: b.vCache, kpos: b.kpos, rope: b.rope };
  const params = splitAttentionParams(o, d, p);
  const workgroups = [o.numKvHeads * p.nBlocks, p.splits, 1] as const;
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
