/**
 * Decode attention, variant 3: for caches whose keys carry RoPE already (decode after rotateCacheKeys). Each key's
 * softmax work is done once, not once per lane that holds a piece of it (v2's lane groups each run the online
 * softmax of every key they see, and sum every dot with shuffles): a tile of TK keys goes through three phases,
 *
 *   A  logits: KL lanes per key, lane l owning QPL = D/4/KL contiguous quads of the key row, dot them with the R rows'
 *      scaled q (workgroup memory, broadcast reads), sum over the KL lanes → zs[tile][key] = (z_0 .. z_3), and the
 *      tile's max per row into an atomic (ordered-bits u32)
 *   B  the running max per row moves once per tile (uniform: every thread holds the same m), one thread per key turns
 *      its z into p = exp(z - m) (times the value row's scale for int8) and keeps its share of the sums
 *   C  values: thread (quad j, subset s) accumulates Σ p_k · V[k][j] over the keys k ≡ s (mod NS) of the tile, so a
 *      value row is read by DQ adjacent threads (one coalesced row) and each p is a broadcast read
 *
 * Two barriers per tile: zs and the max atomics alternate between two buffers, so tile i+1's phase A may run while
 * slower threads still read tile i's p in phase C. A workgroup owns one KV head, R ≤ 4 rows (query, head) of its GQA
 * group and one slab of keys; with several slabs the output contract is attention-decode.ts's (unnormalized
 * partials and (max, sum) in `scratch`, merged by decodeCombine).
 */
import { kernel, wgsl, type KernelSource } from '../wgsl.js';
import type { Dispatch } from '../../runtime/gpu/runner.js';
import { NEG, attentionBindings, checkHeadDims, SPLIT_ATTENTION_PARAMS, splitAttentionParams, type CacheDtype } from './attn-common.js';
import type { AttentionBuffers, AttentionDims, AttentionOpts } from './attention.js';
import { decodeCombine, MAX_SPLITS } from './attention-combine.js';
import { int8Fns } from './kv-int8.js';
import { env, envPairs, parsedOnce } from '../../runtime/env.js';

const MAX_ROWS = 4; // rows of a workgroup: z and p of a key are one vec4
const NT = 128;
const TARGET_WG = 528;
const MIN_SPLIT_KEYS = 64;

export interface DecodeV3Opts extends AttentionOpts {
  subgroups: boolean;
  /** keys per tile (a multiple of NT / KL); default 64 */
  tile?: number;
}

export interface DecodeV3Plan {
  G: number;
  R: number;
  nBlocks: number;
  /** lanes per key in phase A, quads per lane */
  KL: number;
  QPL: number;
  TK: number;
  /** phase C subsets: threads NS·DQ ≤ NT */
  NS: number;
  splits: number;
  splitKeys: number;
  /** lane l of a key owns quads l, l + KL, … (else QPL contiguous quads) */
  IL: boolean;
  /** every pass's key loads before the first pass's dots (else each pass loads its own) */
  AB: boolean;
}

interface TuningV3 { tile?: number; wgs?: number; kl?: number; il?: boolean; ab?: boolean }
/** `LOCRET_ATTN_DECODE="v3,tile=64,wgs=528,kl=4"`: plan knobs for timing runs. */
export const tuningV3 = parsedOnce((spec) => {
  const t: TuningV3 = {};
  for (const [k, v] of envPairs(spec)) {
    const n = Number(v);
    if (k === 'tile' && [32, 64, 128, 256].includes(n)) t.tile = n;
    if (k === 'wgs' && n >= 1) t.wgs = n;
    if (k === 'kl' && [1, 2, 4, 8].includes(n)) t.kl = n;
    if (k === 'il' && (n === 0 || n === 1)) t.il = n === 1;
    if (k === 'ab' && (n === 0 || n === 1)) t.ab = n === 1;
  }
  return t;
});

export function planV3(o: DecodeV3Opts, d: AttentionDims, splitsBound: number): DecodeV3Plan {
  checkHeadDims(o.headDim, o.rotaryDim);
  if (o.numHeads % o.numKvHeads !== 0) throw new Error(`numHeads ${o.numHeads} not a multiple of numKvHeads ${o.numKvHeads}`);
  const G = o.numHeads / o.numKvHeads;
  const rows = d.T * G;
  const R = Math.min(rows, MAX_ROWS);
  const nBlocks = Math.ceil(rows / R);
  const DQ = o.headDim / 4;
  if (DQ > NT) throw new Error(`decode attention v3: head dim ${o.headDim} over ${4 * NT}`);
  const tune = tuningV3(env('LOCRET_ATTN_DECODE'));
  let KL = tune.kl ?? 4;
  while (DQ % KL !== 0) KL /= 2;
  const keysPerPass = NT / KL;
  const TK = Math.max(keysPerPass, Math.ceil((o.tile ?? tune.tile ?? 64) / keysPerPass) * keysPerPass);
  const kvEnd = d.base + d.T;
  let splits = d.splits ?? Math.min(Math.ceil((tune.wgs ?? TARGET_WG) / (nBlocks * o.numKvHeads)), Math.ceil(kvEnd / MIN_SPLIT_KEYS));
  if (d.splits === undefined) splits = Math.min(splits, splitsBound);
  splits = Math.max(1, Math.min(splits, MAX_SPLITS));
  const splitKeys = Math.ceil(Math.ceil(kvEnd / splits) / TK) * TK;
  return { G, R, nBlocks, KL, QPL: DQ / KL, TK, NS: Math.floor(NT / DQ), splits: Math.ceil(kvEnd / splitKeys), splitKeys, IL: tune.il ?? true, AB: tune.ab ?? true };
}

const seq = (n: number) => Array.from({ length: n }, (_, i) => i);

/** WGSL reading quad j of slot s (KV head g) of a cache as vec4<f32>; int8: raw codes (the row scale apart). */
function quadFns(dtype: CacheDtype): string {
  if (dtype === 'int8') {
    return `${int8Fns}
fn row8(g: u32, s: u32) -> u32 { return (g * params.capacity + s) * (DQ + 1u); }
fn kq(g: u32, s: u32, j: u32) -> vec4<f32> { return unpack8(kCache[row8(g, s) + j]); }
fn vq(g: u32, s: u32, j: u32) -> vec4<f32> { return unpack8(vCache[row8(g, s) + j]); }
fn kscale(g: u32, s: u32) -> f32 { return bitcast<f32>(kCache[row8(g, s) + DQ]); }
fn vscale(g: u32, s: u32) -> f32 { return bitcast<f32>(vCache[row8(g, s) + DQ]); }`;
  }
  const read = (buf: string) => (dtype === 'f32'
    ? `return ${buf}[(g * params.capacity + s) * DQ + j];`
    : `let w = ${buf}[(g * params.capacity + s) * DQ + j];\n  return vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y));`);
  return `fn kq(g: u32, s: u32, j: u32) -> vec4<f32> {\n  ${read('kCache')}\n}\nfn vq(g: u32, s: u32, j: u32) -> vec4<f32> {\n  ${read('vCache')}\n}`;
}

function mainKernel(o: DecodeV3Opts, p: DecodeV3Plan, split: boolean, withLse: boolean) {
  const key = { op: 'attention_decode3', cache: o.cacheDtype, H: o.numHeads, KV: o.numKvHeads, G: p.G, D: o.headDim, R: p.R, KL: p.KL, TK: p.TK, IL: p.IL, AB: p.AB, sg: o.subgroups, split, lse: withLse };
  return kernel(key, () => mainSource(o, p, split, withLse));
}

function mainSource(o: DecodeV3Opts, p: DecodeV3Plan, split: boolean, withLse: boolean): KernelSource {
  const { G, R, KL, QPL, TK, NS } = p;
  const qi = (i: number) => (p.IL ? `ln + ${i * KL}u` : `q0 + ${i}u`); // the lane's quad i
  const H = o.numHeads;
  const DQ = o.headDim / 4;
  const i8 = o.cacheDtype === 'int8';
  const KP = NT / KL; // keys per pass of phase A
  const [rs, is, passes, cs] = [seq(R), seq(QPL), seq(TK / KP), seq(Math.ceil(TK / NS))];
  const comp = ['x', 'y', 'z', 'w'];
  const shuffle = rs.map((r) => seq(Math.log2(KL)).map((b) => `      z${r} += subgroupShuffleXor(z${r}, ${1 << b}u);`).join('\n')).join('\n');
  const viaMemory = `      ${rs.map((r) => `red[${r * NT}u + lid] = z${r};`).join(' ')}
      workgroupBarrier();
${rs.map((r) => `      z${r} = 0.0;\n      for (var i = 0u; i < ${KL}u; i++) { z${r} += red[${r * NT}u + kg * ${KL}u + i]; }`).join('\n')}
      workgroupBarrier();`;
  const reduce = KL === 1 ? '' : o.subgroups ? `    if (sgs >= ${KL}u) {\n${shuffle}\n    } else {\n${viaMemory}\n    }` : `    {\n${viaMemory}\n    }`;
  // a pass's key loads; with AB every pass's loads come first, so they are all in flight before the first dot
  const passLoads = passes.map((ps) => `    let key${ps} = kb + ${ps * KP}u + kg;
    let s${ps} = min(key${ps}, k1 - 1u);
${is.map((i) => `    let k${ps}_${i} = kq(g, s${ps}, ${qi(i)});`).join('\n')}${i8 ? `\n    let ks${ps} = kscale(g, s${ps});` : ''}`);
  const phaseA = (p.AB ? passLoads.join('\n') + '\n' : '') + passes.map((ps) => `${p.AB ? '' : passLoads[ps] + '\n'}  {
    let key = key${ps};
${rs.map((r) => `    var z${r} = (${is.map((i) => `dot(qsh[${r * DQ}u + ${qi(i)}], k${ps}_${i})`).join(' + ')})${i8 ? ` * ks${ps}` : ''};`).join('\n')}
${reduce}
    if (ln == 0u) {
      var z = vec4<f32>(NEG);
${rs.map((r) => `      z.${comp[r]} = select(NEG, z${r}, key < lim${r});
      atomicMax(&tmax[par * 4u + ${r}u], ord(z.${comp[r]}));`).join('\n')}
      zs[par * ${TK}u + ${ps * KP}u + kg] = z;
    }
  }`).join('\n');
  const phaseC = `  if (sub < ${NS}u) {
${rs.map((r) => `    a${r} *= al.${comp[r]};`).join('\n')}
${cs.map((c) => `    let c${c} = min(sub + ${c * NS}u, ${TK - 1}u);
    let v${c} = vq(g, min(kb + c${c}, k1 - 1u), qj);`).join('\n')}
${cs.map((c) => `    {
      let pk = select(vec4<f32>(0.0), zs[par * ${TK}u + c${c}], sub + ${c * NS}u < ${TK}u);
${rs.map((r) => `      a${r} += pk.${comp[r]} * v${c};`).join('\n')}
    }`).join('\n')}
  }`;
  const write = split
    ? `scratch[(wg.y * params.T * H + row) * DQ + j] = a;`
    : `out[row * DQ + j] = a / L;`;
  const stats = split
    ? 'if (j == 0u) { scratch[params.splits * params.T * H * DQ + wg.y * params.T * H + row] = vec4<f32>(mr, L, 0.0, 0.0); }'
    : withLse ? 'if (j == 0u) { lse[row] = mr + log(L); }' : '';
  return {
    bindings: attentionBindings(o.cacheDtype, split, withLse),
    params: SPLIT_ATTENTION_PARAMS,
    workgroupSize: [NT, 1, 1],
    enables: o.subgroups ? ['subgroups'] : [],
    body: wgsl`
const DQ = ${DQ}u;
const H = ${H}u;
const G = ${G}u;
const R = ${R}u;
const NEG = ${NEG};
${quadFns(o.cacheDtype)}

var<workgroup> qsh: array<vec4<f32>, ${R * DQ}>; // (R, DQ) the rows' scaled q
var<workgroup> zs: array<vec4<f32>, ${2 * TK}>; // (2 tiles, TK keys) logits of the R rows, then their weights
var<workgroup> tmax: array<atomic<u32>, 8>; // (2 tiles, 4 rows) max logit as ordered bits
var<workgroup> red: array<f32, ${R * NT}>; // (R, NT) partial dots, no-shuffle path
var<workgroup> ls: array<vec4<f32>, ${NT}>; // (NT) per-thread weight sums, end of slab
var<workgroup> ob: array<vec4<f32>, ${NS * R * DQ}>; // (NS, R, DQ) per-subset outputs, end of slab

// f32 bits ordered as u32 (atomicMax on floats); ORD_NEG = ord(NEG)
fn ord(x: f32) -> u32 {
  let b = bitcast<u32>(x);
  return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}
fn unord(u: u32) -> f32 { return bitcast<f32>(select(~u, u & 0x7fffffffu, (u & 0x80000000u) != 0u)); }

@compute @workgroup_size(${NT})
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>${o.subgroups ? ', @builtin(subgroup_size) sgs: u32' : ''}) {
  let g = wg.x % ${o.numKvHeads}u;
  let blk = wg.x / ${o.numKvHeads}u;
  let k0 = wg.y * params.splitKeys;
  let lastT = min((blk * R + R - 1u) / G, params.T - 1u);
  let k1 = min(k0 + params.splitKeys, params.base + lastT + 1u); // uniform
${rs.map((r) => `  let t${r} = (blk * R + ${r}u) / G;
  let lim${r} = select(0u, min(params.base + t${r} + 1u, k1), t${r} < params.T); // keys [k0, lim) visible to row ${r}`).join('\n')}
  for (var e = lid; e < R * DQ; e += ${NT}u) {
    let ri = blk * R + e / DQ;
    let t = ri / G;
    qsh[e] = select(vec4<f32>(0.0), q[(min(t, params.T - 1u) * H + g * G + ri % G) * DQ + e % DQ] * params.scale, t < params.T);
  }
  if (lid < 8u) { atomicStore(&tmax[lid], ord(NEG)); }
  workgroupBarrier();
  let ln = lid % ${KL}u; // phase A: lane of key group kg, owning quads q0 .. q0 + ${QPL - 1}
  let kg = lid / ${KL}u;
  let q0 = ln * ${QPL}u;
  let qj = lid % DQ; // phase C: quad qj of subset sub
  let sub = lid / DQ;
  var m = vec4<f32>(NEG);
  var lsum = vec4<f32>(0.0);
${rs.map((r) => `  var a${r} = vec4<f32>(0.0);`).join('\n')}
  var par = 0u;
  for (var kb = k0; kb < k1; kb += ${TK}u) {
${phaseA}
    workgroupBarrier();
    // B: the rows' max moves once per tile; keys no row sees (NEG) weigh 0
    let tm = vec4<f32>(${seq(4).map((r) => `unord(atomicLoad(&tmax[par * 4u + ${r}u]))`).join(', ')});
    let mn = max(m, tm);
    let al = exp(m - mn);
    m = mn;
    lsum *= al;
    for (var k = lid; k < ${TK}u; k += ${NT}u) {
      let z = zs[par * ${TK}u + k];
      let w = select(vec4<f32>(0.0), exp(z - m), z > vec4<f32>(-1.0e38));
      lsum += w;
      zs[par * ${TK}u + k] = w${i8 ? ' * vscale(g, min(kb + k, k1 - 1u))' : ''};
    }
    if (lid < 4u) { atomicStore(&tmax[(par ^ 1u) * 4u + lid], ord(NEG)); }
    workgroupBarrier();
${phaseC}
    par ^= 1u;
  }
  // merge: sums over threads, outputs over subsets
  ls[lid] = lsum;
  if (sub < ${NS}u) {
${rs.map((r) => `    ob[(sub * R + ${r}u) * DQ + qj] = a${r};`).join('\n')}
  }
  workgroupBarrier();
  for (var e = lid; e < R * DQ; e += ${NT}u) {
    let r = e / DQ;
    let j = e % DQ;
    let ri = blk * R + r;
    let t = ri / G;
    if (t < params.T) {
      var a = vec4<f32>(0.0);
      for (var s = 0u; s < ${NS}u; s++) { a += ob[(s * R + r) * DQ + j]; }
      var L = 0.0;
      for (var i = 0u; i < ${NT}u; i++) { L += ls[i][r]; }
      let mr = m[r];
      let row = t * H + g * G + ri % G;
      ${write}
      ${stats}
    }
  }
}`,
  };
}

/** v3 attention of T ≤ 8 queries over rotated keys: 1 dispatch, 2 when keys split. `splitsBound`: see planV2. */
export function attentionDecodeV3(o: DecodeV3Opts, d: AttentionDims, b: AttentionBuffers, splitsBound: number): Dispatch[] {
  const p = planV3(o, d, splitsBound);
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
