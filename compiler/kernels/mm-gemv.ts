/**
 * The decode matmul skeleton (T ≤ GEMV_MAX_T tokens): same contract as mm-core.ts (CoreFamily: wrow / urow /
 * brow / epi pairs, fused rmsnorm prologue, bias, two weight streams), built to stream weights at memory bandwidth.
 *
 * One workgroup computes R logical columns for all T tokens. Its WG threads stride over the K axis in chunks of
 * E elements = one 16-byte load (f32: 4, f16/f16p: 8 halves as vec4<u32>, q8: 16 int8; q4: an 8-byte load of 16
 * elements, half a group, see Q4_WORDS), so adjacent lanes read adjacent 16 (8) bytes of a row (coalesced) and
 * each loop iteration issues R·streams independent loads before any arithmetic uses them:
 *
 *   row wrow(c0+r):  | ch 0 | ch 1 | ... | ch WG-1 | ch WG | ...      thread i reads chunks i, i+WG, i+2WG, …
 *                      t0     t1           t(WG-1)   t0                of every row r < R (and stream s < S)
 *
 * Quantized chunks are dequantized in registers: the partial dot of a chunk is taken on the raw integers and
 * multiplied once by its group's scale (q4's −8 offset becomes −8·Σx, also once per chunk). Where the device has
 * integer dot products (GpuContext.intDot), x is quantized to int8 per chunk instead and the dots are integer ones
 * (mm-gemv-dot.ts).
 *
 * Each thread ends with R·T·S partial dots (+ T partial Σx² with norm); they are reduced with subgroupAdd, lane 0
 * of each subgroup leaves its sum in workgroup memory and one more pass adds those (any subgroup size 4..128).
 * Without the `subgroups` feature the reduction goes through workgroup memory only. Rows whose length is not a
 * multiple of a 16-byte chunk (f32 K % 4, f16 K % 8) take a scalar variant (E = 1): correct, not fast.
 */
import { ro, wgsl, type Binding, type KernelSource } from '../wgsl.js';
import type { Workgroups } from '../../runtime/gpu/runner.js';
import { builtins, foldGrid, isQuantized, linearWg, QGROUP, type WeightDtype } from './mm-common.js';
import { biasParts, coreParams, GEMV_MAX_T, type CoreFamily } from './mm-core.js';
import { chunkElems, chunkLayout, isIntDot, type ChunkLayout, type QuantConvert } from './mm-gemv-chunks.js';
import { dotAccumulate, dotQuantizeX } from './mm-gemv-dot.js';
import { env, envPairs, parsedOnce } from '../../runtime/env.js';

export interface GemvOpts {
  readonly wdtype: WeightDtype;
  readonly norm: boolean;
  readonly bias: boolean;
  readonly streams: 1 | 2;
  /** reduce with subgroupAdd (needs the device's `subgroups` feature) */
  readonly subgroups: boolean;
}

export interface GemvShape {
  /** elements per chunk (one load) along K */
  readonly E: number;
  /** logical columns per workgroup (even, so a pair never straddles two workgroups) */
  readonly R: number;
  /** threads per workgroup */
  readonly WG: number;
  /** how q8 / q4 integers become floats (mm-gemv-chunks.ts); unused for float weights */
  readonly dq: QuantConvert;
  /** chunks a thread loads before computing any (kLoop): 1, or 2 / 4 where a thread has few chunks per row */
  readonly U: number;
}

/** At most this many partial dots per thread, so they and the loaded chunks stay in registers. */
const MAX_ACC = 16;

/**
 * Workgroups a GEMV wants at least: below this, columns per workgroup are halved (H200, 8B decode step: qkv 6144
 * columns at R 4 took 0.93 ms per token over 32 layers vs 1.11 at R 8, o + down 4096 columns 1.48 vs 1.60).
 */
const MIN_WORKGROUPS = 1024;

/**
 * Threads by matmul kind for f16 and q8 weights with rows of at least LONG_ROW elements (H200, 8B decode step,
 * kernel time by op from the step's GPU profile, 128 threads before): two streams (gate_up) take 64 threads, f16
 * 2.24 vs 2.35 ms per token, q8 1.96 vs 2.08; f16 with few columns (o, down: NC ≤ F16_WIDE_NC) 256 threads, 1.90
 * vs 1.97 ms (q8 there: 1.63 with 256, 1.89 with 64 vs 1.57 with 128). qkv and lm_head keep 128 (f16 0.79 vs 0.82 /
 * 0.83 ms with 64 / 256). Phi-3-mini's shorter rows (3,072) lost with the same rule (f16 gate_up 1.23 vs 1.17 ms),
 * hence the floor on the row length; q4 (rows of 128 chunks) already takes 64 threads for those shapes.
 */
const F16_WIDE_NC = 4096;
const LONG_ROW = 4096;
/**
 * Words per q4 chunk: 2 (8-byte loads, 16 elements) rather than a whole 16-byte group, whose 32 elements need 8 x
 * vec4 (and 8 rmsnorm vec4) per chunk in registers for every row and stream of the thread. H100, 8B shapes at
 * T = 1 (bench/gemv-bandwidth.ts, workgroup reductions): gate_up 34.6–38.2 µs vs 58.1–60.2, down 21.1–22.3 vs
 * 25.6–27.0; q8 (4 x vec4 per chunk already) was not faster with 2 words (gate_up 58.0 vs 51.8–52.7).
 */
const Q4_WORDS = 2;
/**
 * q4 with rows of at least LONG_ROW elements (H100, 8B decode step, kernel time by op from the step's GPU profile,
 * with Q4_WORDS): two streams (gate_up) take 4 columns per workgroup, 1.731 vs 1.788 ms per token at 8; one stream
 * with few columns (o) 128 threads, o + down 1.638 vs 1.747 ms at 64 (qkv and gate_up lost with 128: 0.830 vs
 * 0.769, 1.916 vs 1.788).
 */
const Q4_SWIGLU_R = 4;

/**
 * Integer → float conversion of q8 / q4 quants by matmul kind, for devices without the int8 dot form
 * (mm-gemv-chunks.ts; H100, 8B decode step profile by op, 'half' vs 'float'): two streams (gate_up) keep the f16
 * form (q4 1.73 vs 2.12 ms, q8 2.05 vs 2.13); one stream takes the f32 form for q4 (o + down 1.534–1.539 vs 1.636)
 * and for q8 with many columns (qkv 0.913 vs 0.953, lm_head 0.220–0.221 vs 0.227), not for q8 o and down (1.798 vs
 * 1.770). With `intDot` every quantized kind takes an int8 dot form (mm-gemv-dot.ts), x in as many int8 digits as
 * the weights need: q4 one ('dot1'; x's rounding is ~1/15 of q4's, logits of tiny-llama move by rel L2 0.013 against
 * q4's own 0.18), q8 two ('dot2'; with one, x's rounding would move the logits as much as q8's weights do: 0.012).
 * H100, same profile, float forms → dot forms: q4 span 6.29 → 5.61 ms (gate_up 1.73 → 1.37, o + down 1.54 → 1.34,
 * qkv 0.77 → 0.67), q8 span 7.00 → 6.80 (one digit would give 6.48).
 */
function quantConvert(wdtype: WeightDtype, streams: number, NC: number | undefined, intDot: boolean): QuantConvert {
  if (intDot) return wdtype === 'q4' ? 'dot1' : 'dot2';
  if (streams === 2 || NC === undefined) return 'half';
  return wdtype === 'q4' || NC > F16_WIDE_NC ? 'float' : 'half';
}

/**
 * Shapes of the int8 dot form by kind, rows of at least LONG_ROW (H100, 8B decode step profile by op, each knob set
 * for every kind at once, `LOCRET_GEMV=dq=dot1,…`): q4 gate_up keeps 8 columns per workgroup (1.379 ms vs 1.523 at
 * 4; its float forms wanted 4, Q4_SWIGLU_R), q4 qkv 128 threads (0.680 vs 0.727 at 64, 0.699–0.702 at 256), q4 o
 * and down (few columns) 256 (o + down 1.297 / 1.302 vs 1.310 / 1.354 at 128, two runs); q8 qkv (columns in
 * (F16_WIDE_NC, Q8_NARROW_NC]) 8-byte chunks (0.716 vs 0.776; o + down and gate_up lost with them: 1.879 vs 1.650,
 * 1.979 vs 1.836; lm_head 0.207 vs 0.197).
 */
const Q8_NARROW_NC = 8192;

/**
 * `NC`: logical output columns (per stream), when known: few columns get fewer per workgroup (MIN_WORKGROUPS).
 * `intDot`: the device takes q8 / q4 dot products on int8 (GpuContext.intDot).
 */
export function gemvShape(wdtype: WeightDtype, T: number, streams: number, K: number, NC?: number, intDot = false): GemvShape {
  if (T < 1 || T > GEMV_MAX_T) throw new Error(`gemv: T=${T} outside 1..${GEMV_MAX_T}`);
  const E = chunkElems(wdtype, K);
  let R = Math.floor(MAX_ACC / (T * streams));
  R = Math.max(2, Math.min(8, R - (R % 2)));
  while (NC !== undefined && R >= 4 && R % 4 === 0 && NC / R < MIN_WORKGROUPS) R /= 2;
  // enough threads that the loads of a row are spread wide, few enough that each thread still loops a few times
  const KC = K / E;
  let WG = KC >= 2048 ? 256 : KC >= 256 ? 128 : 64;
  const tune = gemvTuning();
  const dq = tune.dq ?? quantConvert(wdtype, streams, NC, intDot && isQuantized(wdtype));
  const intForm = isIntDot(dq);
  let words = wdtype === 'q4' ? Q4_WORDS : 4; // quantized chunks: q4 8-byte loads, q8 16-byte
  if (NC !== undefined && K >= LONG_ROW && (wdtype === 'f16' || wdtype === 'q8')) {
    if (streams === 2) WG = 64;
    else if (wdtype === 'f16' && NC <= F16_WIDE_NC) WG = 256;
    if (wdtype === 'q8' && intForm && streams === 1 && NC > F16_WIDE_NC && NC <= Q8_NARROW_NC) words = 2;
  }
  if (NC !== undefined && K >= LONG_ROW && wdtype === 'q4') {
    if (streams === 2 && !intForm) R = Math.min(R, Q4_SWIGLU_R);
    else if (streams === 1 && intForm && NC <= F16_WIDE_NC) WG = Math.max(WG, 256);
    else if (streams === 1 && (NC <= F16_WIDE_NC || intForm)) WG = Math.max(WG, 128);
  }
  // threads are chosen by 16-byte chunks; quantized rows then load `words` 4-byte words at a time
  if (isQuantized(wdtype)) words = tune.qw ?? words;
  else words = 4;
  return { E: (E * words) / 4, R: tune.r ?? R, WG: tune.wg ?? WG, dq, U: tune.u ?? 1 };
}

interface GemvTuning { wg?: number; r?: number; dq?: QuantConvert; qw?: 2 | 4; u?: number; sg?: boolean }
/**
 * Tuning hook for timing runs on real GPUs (`LOCRET_GEMV="wg=256,r=4,dq=int"`): it changes the variant key, not
 * results (dq=half|float|int|dot1|dot2: every q8 / q4 GEMV converts its quants that way, see quantConvert; qw=2: q8 / q4
 * chunks of 2 words, 8-byte loads, instead of 4; u=2|4: chunks loaded together per thread, see kLoop; sg=1: reduce
 * with subgroup operations on a device that has them, see gemvSubgroups).
 * Every GEMV of every decode step asks for its shape, so the spec is parsed once per distinct value.
 */
export function gemvTuning(spec = env('LOCRET_GEMV')): GemvTuning {
  return parseGemvTuning(spec);
}
const parseGemvTuning = parsedOnce((spec) => {
  const t: GemvTuning = {};
  for (const [k, v] of envPairs(spec)) {
    const n = Number(v);
    if (k === 'wg' && [32, 64, 128, 256].includes(n)) t.wg = n;
    if (k === 'r' && n >= 2 && n % 2 === 0 && n <= 16) t.r = n;
    if (k === 'dq' && (v === 'int' || v === 'half' || v === 'float' || v === 'dot1' || v === 'dot2')) t.dq = v;
    if (k === 'qw' && (n === 2 || n === 4)) t.qw = n;
    if (k === 'u' && [1, 2, 4].includes(n)) t.u = n;
    if (k === 'sg' && (v === '0' || v === '1')) t.sg = v === '1';
  }
  return t;
});

/**
 * Whether the plan's GEMVs reduce with subgroup operations: only when asked (`LOCRET_GEMV=sg=1`) on a device that
 * has them. Through workgroup memory the Llama-3.1-8B decode step was faster on an H100 (bench, f16 16K cache:
 * median 7.20 ms/token over 11 runs vs 7.35 over 7, GPU span 8.54–8.56 vs 8.65–8.69 ms; q4 3.87–3.97 vs 3.98–4.05;
 * q8 5.21–5.28 vs 5.29–5.31; bench/gemv-bandwidth.ts, two runs: f16 qkv 22–23 vs 28 µs, q4 down 16–17 vs 21–25 µs):
 * each thread ends with few partial sums, and their shuffles cost more than one trip through workgroup memory.
 */
export function gemvSubgroups(deviceHas: boolean): boolean {
  return deviceHas && gemvTuning().sg === true;
}

export function gemvGrid(NC: number, R: number): Workgroups {
  return foldGrid(Math.ceil(NC / R));
}

/** The variant-key entries of a gemv kernel (add them to the family's own key). */
export function gemvKey(o: GemvOpts, T: number, s: GemvShape): Record<string, string | number | boolean> {
  return { path: 'gemv', t: T, r: s.R, wg: s.WG, e: s.E, sg: o.subgroups, ...(isQuantized(o.wdtype) ? { dq: s.dq } : {}), ...(s.U > 1 ? { u: s.U } : {}) };
}

function gemvBindings(o: GemvOpts, L: ChunkLayout, f: CoreFamily): { bindings: Binding[]; fns: string[] } {
  const xType = L.E === 1 ? 'array<f32>' : 'array<vec4<f32>>';
  const bindings: Binding[] = [ro('x', xType)]; // (xRow0 + T, K) f32 activations; rows xRow0.. are read
  const fns: string[] = [];
  const weight = (name: string) => {
    bindings.push(ro(name, L.wType)); // (rows, K/E) chunks, see the chunk layout
    if (isQuantized(o.wdtype)) {
      bindings.push(ro(`${name}_s`, 'array<u32>')); // (rows, K/32) f16 group scales, two per u32
      fns.push(wgsl`fn ${name}_sc(g: u32) -> f32 {
  let p = unpack2x16float(${name}_s[g >> 1u]);
  return select(p.x, p.y, (g & 1u) == 1u);
}`);
    }
  };
  weight('w');
  if (o.streams === 2) weight('wu'); // up rows (may be the same buffer as w)
  if (o.norm) bindings.push(ro('normW', xType)); // (K) f32 rmsnorm weight
  if (o.bias) {
    const b = biasParts(f);
    bindings.push(b.binding);
    fns.push(...b.fns);
  }
  return { bindings: [...bindings, ...f.bindings], fns };
}

export function gemvSource(o: GemvOpts, T: number, s: GemvShape, f: CoreFamily): KernelSource {
  const L = chunkLayout(o.wdtype, s.E, s.dq);
  const { R, WG, E } = s;
  const S = o.streams;
  const { bindings, fns } = gemvBindings(o, L, f);
  const q = isQuantized(o.wdtype);
  const XV = Math.max(1, E / 4); // x pieces (vec4, or one f32 when E = 1) per chunk
  const acc = (st: number, r: number, t: number) => `a${st}_${r}_${t}`;
  const vals: string[] = []; // reduction order: [stream][column][token], then Σx² per token
  for (let st = 0; st < S; st++) for (let r = 0; r < R; r++) for (let t = 0; t < T; t++) vals.push(acc(st, r, t));
  const NACC = vals.length;
  if (o.norm) for (let t = 0; t < T; t++) vals.push(`ssq${t}`);
  const NV = vals.length;
  const streamName = (st: number) => (st === 0 ? 'w' : 'wu');
  const rowFn = (st: number) => (st === 0 ? 'wrow' : 'urow');

  // before the K loop: each (stream, column)'s first chunk (and first scale group); tail columns clamp to the last
  // real one and are discarded at the end
  const setup: string[] = [];
  for (let st = 0; st < S; st++)
    for (let r = 0; r < R; r++) {
      setup.push(`let row${st}_${r} = ${rowFn(st)}(min(c0 + ${r}u, params.NC - 1u));`);
      setup.push(`let rb${st}_${r} = row${st}_${r} * KC;`);
      if (q) setup.push(`let gb${st}_${r} = row${st}_${r} * (params.K / ${QGROUP}u);`);
    }

  // the loop body: all loads first (independent, in flight together), then the arithmetic; the loads of the chunk
  // at index expression kx, as (name the body reads, expression) pairs
  const loads = (kx: string): [string, string][] => {
    const out: [string, string][] = [];
    for (let st = 0; st < S; st++)
      for (let r = 0; r < R; r++) {
        out.push([`w${st}_${r}`, L.load(streamName(st), `rb${st}_${r} + ${kx}`)]);
        if (q) out.push([`s${st}_${r}`, `${streamName(st)}_sc(gb${st}_${r} + ${L.E === QGROUP ? kx : `${kx} / ${QGROUP / L.E}u`})`]);
      }
    return out;
  };
  const body: string[] = [];
  if (o.norm) for (let j = 0; j < XV; j++) body.push(`let n${j} = normW[k * ${XV}u + ${j}u];`);
  const dot = q && isIntDot(s.dq);
  const digits = s.dq === 'dot1' ? 1 : 2;
  for (let st = 0; st < S; st++)
    for (let r = 0; r < R; r++) L.decode(`w${st}_${r}`).forEach((e, p) => body.push(`let d${st}_${r}_${p} = ${e};`));
  for (let t = 0; t < T; t++) {
    body.push(`let xb${t} = (params.xRow0 + ${t}u) * XR + k * ${XV}u;`);
    for (let j = 0; j < XV; j++) {
      body.push(`let xr${t}_${j} = x[xb${t} + ${j}u];`);
      if (o.norm) body.push(`ssq${t} += ${E === 1 ? `xr${t}_${j} * xr${t}_${j}` : `dot(xr${t}_${j}, xr${t}_${j})`};`);
      body.push(`let x${t}_${j} = xr${t}_${j}${o.norm ? ` * n${j}` : ''};`);
    }
    const xs = Array.from({ length: XV }, (_, j) => `x${t}_${j}`);
    if (dot) {
      body.push(...dotQuantizeX(o.wdtype, t, xs, digits));
      for (let st = 0; st < S; st++) for (let r = 0; r < R; r++) body.push(`${acc(st, r, t)} += ${dotAccumulate(o.wdtype, XV, st, r, t, digits)};`);
      continue;
    }
    const pieces = L.xPieces(xs);
    pieces.forEach((e, i) => body.push(`let xp${t}_${i} = ${e};`));
    if (L.xOffset) body.push(`let xo${t} = ${L.xOffset(xs)};`);
    for (let st = 0; st < S; st++)
      for (let r = 0; r < R; r++) {
        const terms = pieces.map((_, p) => (E === 1 ? `xp${t}_${p} * d${st}_${r}_${p}` : `dot(xp${t}_${p}, d${st}_${r}_${p})`));
        if (L.xOffset) terms.push(`xo${t}`);
        const sum = terms.join(' + ');
        body.push(`${acc(st, r, t)} += ${q ? `s${st}_${r} * (${sum})` : sum};`);
      }
  }

  const bi = o.subgroups ? `${builtins}, @builtin(subgroup_invocation_id) sid: u32, @builtin(subgroup_size) sgs: u32` : builtins;
  const code = wgsl`
${fns}
${f.helpers}

const WG = ${WG}u;
const R = ${R}u;      // logical columns per workgroup (even)
const TT = ${T}u;     // tokens (compile-time: T ≤ ${GEMV_MAX_T})
const NACC = ${NACC}u; // partial dots: [stream][column][token]
const NV = ${NV}u;    // NACC + (norm ? per-token Σx² : 0)
${reduceDecls(o.subgroups, NV, WG)}
var<workgroup> res: array<f32, ${NV}>; // reduced values

@compute @workgroup_size(${WG})
fn main(${bi}) {
  let c0 = ${linearWg} * R;
  if (c0 >= params.NC) { return; }
  let KC = params.K / ${E}u;  // chunks per weight row
  let XR = params.K / ${E === 1 ? 1 : 4}u;  // x elements (E = 1) or vec4s per row
  ${setup.join('\n  ')}
  ${vals.map((v) => `var ${v} = 0.0;`).join('\n  ')}
  ${kLoop(s.U, loads, body)}
${o.subgroups ? subgroupReduce(vals) : workgroupReduce(vals, WG)}
  for (var p = lid; p < TT * (R / 2u); p += WG) {
    let t = p / (R / 2u);
    let r = (p % (R / 2u)) * 2u;
    let c = c0 + r;
    if (c < params.NC) {
      ${o.norm ? 'let sc = inverseSqrt(res[NACC + t] / f32(params.K) + params.eps);' : 'let sc = 1.0;'}
      let a = vec2<f32>(res[r * TT + t], res[(r + 1u) * TT + t]) * sc${o.bias ? ' + bias2(c, 0u)' : ''};
      ${S === 2 && `let u = vec2<f32>(res[R * TT + r * TT + t], res[R * TT + (r + 1u) * TT + t]) * sc${o.bias ? ' + bias2(c, 1u)' : ''};`}
      epi(t, c, a${S === 2 ? ', u' : ''});
    }
  }
}`;
  const enables = [...f.enables, ...(o.subgroups ? ['subgroups'] : [])];
  return { bindings, params: [...coreParams, ...f.params], workgroupSize: [WG, 1, 1], enables, body: code };
}

/**
 * The K loop. U = 1: a chunk per iteration, its loads first. U > 1: a thread loads its next U chunks (k, k + WG,
 * …; indices past the row clamp to its last chunk) before the arithmetic of any, so U times the bytes are in flight
 * where rows give each thread only a few chunks; each chunk's arithmetic runs in a block of its own (the loads are
 * renamed to the names the body reads), chunks past the row skipped.
 */
function kLoop(U: number, loads: (kx: string) => [string, string][], body: readonly string[]): string {
  if (U === 1) return `for (var k = lid; k < KC; k += WG) {\n    ${[...loads('k').map(([n, e]) => `let ${n} = ${e};`), ...body].join('\n    ')}\n  }`;
  const us = Array.from({ length: U }, (_, u) => u);
  const chunks = us.map((u) => loads(`k_${u}`));
  const lines = us.flatMap((u) => [`let k_${u} = min(k0 + ${u}u * WG, KC - 1u);`, ...chunks[u]!.map(([n, e]) => `let ${n}_${u} = ${e};`)]);
  const blocks = us.map((u) => {
    const inner = [`let k = k_${u};`, ...chunks[u]!.map(([n]) => `let ${n} = ${n}_${u};`), ...body].join('\n      ');
    return u === 0 ? `{\n      ${inner}\n    }` : `if (k0 + ${u}u * WG < KC) {\n      ${inner}\n    }`;
  });
  return `for (var k0 = lid; k0 < KC; k0 += ${U}u * WG) {\n    ${[...lines, ...blocks].join('\n    ')}\n  }`;
}

/** Subgroup slots: at most WG / 4 subgroups (the smallest subgroup size WebGPU allows). */
const slots = (WG: number) => WG / 4;

function reduceDecls(subgroups: boolean, NV: number, WG: number): string {
  if (subgroups) return `var<workgroup> red: array<f32, ${NV * slots(WG)}>; // (NV, subgroups) per-subgroup sums`;
  const G = Math.min(NV, Math.floor(4096 / WG));
  return `var<workgroup> red: array<f32, ${G * WG}>; // (${G} values, WG threads) reduction scratch
var<workgroup> part: array<f32, ${G * (WG / 16)}>; // (${G} values, WG/16) partial sums`;
}

/**
 * subgroupAdd per value; lane 0 of each subgroup stores it at slot lid / sgs (subgroups are runs of consecutive
 * invocation indices, which Vulkan, D3D12 and Metal all use for 1D workgroups); then one thread per value adds
 * the ceil(WG / sgs) slots. Called in uniform control flow: the early return above is per workgroup.
 */
function subgroupReduce(vals: readonly string[]): string {
  const NS = 'SLOTS';
  return wgsl`  const ${NS} = WG / 4u;
  let slot = lid / sgs;
${vals.map((v, i) => `  { let s = subgroupAdd(${v}); if (sid == 0u) { red[${i}u * ${NS} + slot] = s; } }`)}
  workgroupBarrier();
  let nsg = (WG + sgs - 1u) / sgs;
  for (var p = lid; p < NV; p += WG) {
    var s = 0.0;
    for (var i = 0u; i < nsg; i++) { s += red[p * ${NS} + i]; }
    res[p] = s;
  }
  workgroupBarrier();`;
}

/**
 * Workgroup memory only: per round of G values, SEG partial sums of WG/SEG each, then one sum of SEG (two
 * barriers per round rather than log2(WG), which also keeps shader compilation cheap on CPU drivers).
 */
function workgroupReduce(vals: readonly string[], WG: number): string {
  const G = Math.min(vals.length, Math.floor(4096 / WG));
  const SEG = WG / 16;
  const out: string[] = [];
  for (let g0 = 0; g0 < vals.length; g0 += G) {
    const n = Math.min(G, vals.length - g0);
    out.push(wgsl`${vals.slice(g0, g0 + n).map((v, j) => `  red[${j}u * WG + lid] = ${v};`)}
  workgroupBarrier();
  for (var i = lid; i < ${n * SEG}u; i += WG) {
    let b = (i / ${SEG}u) * WG + (i % ${SEG}u) * ${WG / SEG}u;
    var s = 0.0;
    for (var e = 0u; e < ${WG / SEG}u; e++) { s += red[b + e]; }
    part[i] = s;
  }
  workgroupBarrier();
  if (lid < ${n}u) {
    var s = 0.0;
    for (var e = 0u; e < ${SEG}u; e++) { s += part[lid * ${SEG}u + e]; }
    res[${g0}u + lid] = s;
  }`);
  }
  out.push('  workgroupBarrier();');
  return out.join('\n');
}
