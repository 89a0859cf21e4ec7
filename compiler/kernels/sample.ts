/**
 * Temperature / top-k / top-p sampling of one logits row on the GPU, so sampled decode steps queue back to back like
 * greedy ones (the token feeds the next step through decode-feed.ts; nothing is read back per token).
 *
 * One workgroup of WG threads; logits are loaded U at a time (vec4 where the row allows), and thread l owns the
 * chunks l, l + WG, l + 2·WG, … (coalesced loads every pass, UNROLL chunks in flight per thread). Tokens are compared
 * by an order key, the logit's bits mapped so that unsigned order is float order (NaN lowest):
 *
 *   1. max key (and the first token holding it: the answer when nothing has weight, e.g. every logit −∞)
 *   2. top-k: the largest key τk with count(key ≥ τk) ≥ k, found digit by digit (8 passes of 4 bits: 15 candidate
 *      thresholds counted per pass), so every token tied at the k-th logit is kept, as Hugging Face's top-k does
 *   3. weights w = 2^((logit − max) · log2(e) / T) of the kept tokens, and their total Z
 *   4. top-p: the largest key τp ≥ τk with Σ w(key ≥ τp) ≥ p · Z, digit by digit the same way (ties at it kept)
 *   5. the draw: r = u · (kept total); thread sums, a scan over threads, the first thread whose range passes r
 *   6. that thread's chunks, split over the workgroup in order, a second scan, and the one thread whose part passes
 *      the rest of r walks its few tokens. The walk order (chunk's thread, then token) is fixed by WG and U, not by
 *      the device, so a seed gives the same tokens on every device up to the rounding of exp2 and of the sums.
 *
 * test/ref/sample-gpu.ts is the plain form (sorts, then keeps the same sets and walks the same order).
 */
import { kernel, ro, rw, wgsl } from '../wgsl.js';
import type { Dispatch } from '../../runtime/gpu/runner.js';

/** threads of the one workgroup (fixed: the walk order depends on it) */
export const SAMPLE_WG = 256;
/** bits decided per pass of a threshold search (15 candidates counted at once) */
const DIGIT = 4;

export interface SampleOpts {
  /** > 0 */
  readonly temperature: number;
  /** keep the k most likely tokens (ties at the k-th kept); undefined or ≥ n: all */
  readonly topK?: number;
  /** keep the most likely tokens whose weight reaches p of the total (ties at the cut kept); undefined or 1: all */
  readonly topP?: number;
}

export function validateGpuSampling(o: SampleOpts): void {
  if (!(o.temperature > 0) || !Number.isFinite(o.temperature)) throw new Error(`sampleToken: temperature must be > 0 and finite, got ${o.temperature}`);
  if (o.topK !== undefined && !(Number.isInteger(o.topK) && o.topK > 0)) throw new Error(`sampleToken: top-k must be a positive integer, got ${o.topK}`);
  if (o.topP !== undefined && !(o.topP > 0 && o.topP <= 1)) throw new Error(`sampleToken: top-p must be in (0, 1], got ${o.topP}`);
}

const seq = (n: number) => Array.from({ length: n }, (_, i) => i);
const C = (1 << DIGIT) - 1; // candidates per pass
/** chunks each thread loads before using any (loads in flight per thread: a pass is bound by them, not by math) */
const UNROLL = 4;

/** Logits per load: 4 (vec4) when rows are whole vec4s, as every vocabulary in use (128256, 32000, 32064, 151936). */
export const sampleUnit = (n: number): 1 | 4 => (n % 4 === 0 ? 4 : 1);

/**
 * A loop over thread lid's chunks (lid, lid + WG, …), UNROLL chunks loaded before any is used; `body` runs per chunk
 * with `l` its logits (VF: vec4 or scalar) and `c` its index (chunks past the row read NaN, whose key 0 counts
 * nowhere).
 */
function eachChunk(body: (l: string, c: string) => string): string {
  return `  for (var c0 = lid; c0 < NC; c0 += ${UNROLL}u * WG) {
${seq(UNROLL).map((u) => `    let l${u} = ld(c0 + ${u}u * WG);`).join('\n')}
${seq(UNROLL).map((u) => `    {
${body(`l${u}`, `(c0 + ${u}u * WG)`)}
    }`).join('\n')}
  }`;
}

/**
 * One threshold search, inlined: finds the largest t ≥ `floor` with Σ (1, or the weight when `weighted`) over the
 * tokens with key ≥ max(t, floor) reaching `target`, into `tvar`.
 */
function search(tvar: string, floor: string, target: string, weighted: boolean): string {
  return `  ${tvar} = 0u;
  for (var shift = ${32 - DIGIT}i; shift >= 0i; shift -= ${DIGIT}i) {
${seq(C).map((j) => `    var a${j + 1} = VF(0.0);`).join('\n')}
${eachChunk((l) => `      let k = orderKeyV(${l});
      let c = select(VF(0.0), ${weighted ? 'weightV(k, m)' : 'VF(1.0)'}, k >= VU(${floor}));
${seq(C).map((j) => `      a${j + 1} += select(VF(0.0), c, k >= VU(${tvar} | (${j + 1}u << u32(shift))));`).join('\n')}`)}
${seq(C).map((j) => `    red[${j}u * WG + lid] = hsum(a${j + 1});`).join('\n')}
    workgroupBarrier();
    for (var h = WG / 2u; h > 0u; h >>= 1u) {
      if (lid < h) {
${seq(C).map((j) => `        red[${j}u * WG + lid] += red[${j}u * WG + lid + h];`).join('\n')}
      }
      workgroupBarrier();
    }
    // the largest candidate digit still reaching the target (digit 0, the current prefix, always does)
    var d = 0u;
${seq(C).map((j) => `    if (red[${j}u * WG] >= ${target}) { d = ${j + 1}u; }`).join('\n')}
    ${tvar} = ${tvar} | (d << u32(shift));
    workgroupBarrier(); // everyone has read red before the next pass overwrites it
  }
  ${tvar} = max(${tvar}, ${floor});`;
}

/** Hillis–Steele inclusive scan of `arr` (WG values) in place; every thread must reach it. */
const scan = (arr: string) => `  for (var h = 1u; h < WG; h <<= 1u) {
    var v = 0.0;
    if (lid >= h) { v = ${arr}[lid - h]; }
    workgroupBarrier();
    ${arr}[lid] += v;
    workgroupBarrier();
  }`;

function source(U: 1 | 4) {
  const VT = U === 4 ? 'vec4<f32>' : 'f32';
  const lanes = U === 4 ? ['x', 'y', 'z', 'w'] : [''];
  return {
    bindings: [
      ro('x', `array<${VT}>`), // (rows, n) logits
      ro('uniforms', 'array<f32>'), // (draws) uniform draws in [0, 1), one per sampled token
      rw('out', 'array<u32>'), // (slot + 1) the token at [slot]
    ],
    params: [['n', 'u32'], ['row', 'u32'], ['draw', 'u32'], ['slot', 'u32'], ['topK', 'u32'], ['c', 'f32'], ['topP', 'f32']] as const,
    workgroupSize: [SAMPLE_WG, 1, 1] as const,
    body: wgsl`const WG = ${SAMPLE_WG}u;
const U = ${U}u; // logits per load
alias VF = ${VT}; // a chunk of logits
alias VU = ${U === 4 ? 'vec4<u32>' : 'u32'}; // its order keys
const NONE = 0xffffffffu;
var<workgroup> red: array<f32, ${C * SAMPLE_WG}>; // (candidates, WG) partial counts or weights, reduced in place
var<workgroup> bk: array<u32, ${SAMPLE_WG}>; // (WG) max key per thread, then reduced
var<workgroup> bi: array<u32, ${SAMPLE_WG}>; // (WG) first token with it
var<workgroup> pre: array<f32, ${SAMPLE_WG}>; // (WG) inclusive scan of the threads' kept weights
var<workgroup> pick: array<atomic<u32>, 2>; // (steps 5, 6) the first thread whose range passes the draw
var<workgroup> lastKept: array<atomic<u32>, 2>; // (steps 5, 6) the last thread with any kept weight (rounding fallback)
var<workgroup> rest: f32; // the draw's remainder inside the picked thread's range
var<private> nanBits: u32 = 0x7fc00000u; // a quiet NaN made at run time (WGSL constants cannot hold one)

// chunk c of the row (NaN past it)
fn ld(c: u32) -> ${VT} {
  let nc = params.n / U;
  if (c < nc) { return x[params.row * nc + c]; }
  return ${VT}(bitcast<f32>(nanBits));
}
// order keys of a chunk: unsigned order = float order; NaN lowest (0), below −∞; −0 is +0
fn orderKeyV(v: VF) -> VU {
  let b = select(bitcast<VU>(v), VU(0u), bitcast<VU>(v) == VU(0x80000000u));
  let k = select(b | VU(0x80000000u), ~b, (b & VU(0x80000000u)) != VU(0u));
  return select(k, VU(0u), (b & VU(0x7fffffffu)) > VU(0x7f800000u));
}
fn keyValueV(k: VU) -> VF {
  return bitcast<VF>(select(~k, k & VU(0x7fffffffu), (k & VU(0x80000000u)) != VU(0u)));
}
fn keyValue(k: u32) -> f32 {
  return bitcast<f32>(select(~k, k & 0x7fffffffu, (k & 0x80000000u) != 0u));
}
// exp((logit − max) / T) as 2^((logit − max) · log2(e) / T); 1 for the top token
fn weightV(k: VU, m: f32) -> VF {
  return exp2((keyValueV(k) - VF(m)) * params.c);
}
// the weights of a chunk's tokens with key ≥ floor (0 for the others)
fn keptWeights(l: VF, floor: u32, m: f32) -> VF {
  let k = orderKeyV(l);
  return select(VF(0.0), weightV(k, m), k >= VU(floor));
}
fn hsum(a: VF) -> f32 { return ${U === 4 ? 'dot(a, VF(1.0))' : 'a'}; }

@compute @workgroup_size(${SAMPLE_WG})
fn main(@builtin(local_invocation_index) lid: u32) {
  let NC = params.n / U;
  // 1. max key and its first token
  var mk = 0u;
  var mi = NONE;
${eachChunk((l, c) => `      let kv = orderKeyV(${l});
${lanes.map((lane, e) => `      if (mi == NONE || kv${lane ? `.${lane}` : ''} > mk) { mk = kv${lane ? `.${lane}` : ''}; mi = ${c} * U + ${e}u; }`).join('\n')}`)}
  bk[lid] = mk;
  bi[lid] = mi;
  if (lid < 2u) { atomicStore(&pick[lid], NONE); atomicStore(&lastKept[lid], NONE); }
  workgroupBarrier();
  for (var h = WG / 2u; h > 0u; h >>= 1u) {
    if (lid < h && bi[lid + h] != NONE && (bi[lid] == NONE || bk[lid + h] > bk[lid] || (bk[lid + h] == bk[lid] && bi[lid + h] < bi[lid]))) {
      bk[lid] = bk[lid + h];
      bi[lid] = bi[lid + h];
    }
    workgroupBarrier();
  }
  mk = bk[0];
  let top = select(bi[0], 0u, bi[0] == NONE);
  let m = keyValue(mk);
  // 2. top-k threshold (1: every token but NaN)
  var tk = 1u;
  if (params.topK < params.n) {
${search('tk', '1u', 'f32(params.topK)', false)}
  }
  // 3. the kept tokens' total weight
  var z = VF(0.0);
${eachChunk((l) => `      z += keptWeights(${l}, tk, m);`)}
  pre[lid] = hsum(z);
  workgroupBarrier();
  for (var h = WG / 2u; h > 0u; h >>= 1u) {
    if (lid < h) { pre[lid] += pre[lid + h]; }
    workgroupBarrier();
  }
  let total = pre[0];
  workgroupBarrier();
  // 4. top-p threshold, at or above the top-k one
  var tp = tk;
  if (params.topP < 1.0) {
    let need = params.topP * total;
${search('tp', 'tk', 'need', true)}
  }
  // 5. the draw: each thread's kept weight, a scan over threads, the first thread whose range passes r
  var sv = VF(0.0);
${eachChunk((l) => `      sv += keptWeights(${l}, tp, m);`)}
  let s = hsum(sv);
  pre[lid] = s;
  workgroupBarrier();
${scan('pre')}
  let kept = pre[WG - 1u];
  let r = uniforms[params.draw] * kept;
  if (s > 0.0 && pre[lid] > r) { atomicMin(&pick[0], lid); }
  if (s > 0.0) { atomicMax(&lastKept[0], lid); }
  workgroupBarrier();
  var chosen = atomicLoad(&pick[0]);
  if (chosen == NONE) { chosen = atomicLoad(&lastKept[0]); } // rounding left r past the last range
  if (lid == chosen) { rest = r - (pre[lid] - s); }
  workgroupBarrier();
  // 6. the picked thread's chunks (c = chosen + k·WG, k < K), walked by the whole workgroup: thread j takes the
  // consecutive k in [j·q, j·q + q), a scan over threads, then the thread whose range passes the rest walks its tokens
  let rr = rest;
  let K = select(0u, (NC - chosen + WG - 1u) / WG, chosen < NC);
  let q = (K + WG - 1u) / WG;
  var s2 = 0.0;
  for (var k = lid * q; k < min(lid * q + q, K); k++) { s2 += hsum(keptWeights(ld(chosen + k * WG), tp, m)); }
  pre[lid] = s2;
  workgroupBarrier();
${scan('pre')}
  if (s2 > 0.0 && pre[lid] > rr) { atomicMin(&pick[1], lid); }
  if (s2 > 0.0) { atomicMax(&lastKept[1], lid); }
  workgroupBarrier();
  var walker = atomicLoad(&pick[1]);
  let exact = walker != NONE;
  if (!exact) { walker = atomicLoad(&lastKept[1]); }
  // nothing has weight (every logit −∞ or NaN, or the weights overflowed): the first max, as greedy
  let valid = kept > 0.0 && kept < 3.0e38;
  if (!valid && lid == 0u) { out[params.slot] = top; }
  if (valid && lid == walker) {
    var acc = pre[lid] - s2;
    var hit = NONE;
    var last = NONE;
    for (var k = lid * q; k < min(lid * q + q, K) && hit == NONE; k++) {
      let c = chosen + k * WG;
      let wc = keptWeights(ld(c), tp, m); // the very weights the scans summed
${lanes.map((lane, e) => `      if (hit == NONE) {
        let w = wc${lane ? `.${lane}` : ''};
        if (w > 0.0) {
          last = c * U + ${e}u;
          acc += w;
          if (exact && acc > rr) { hit = last; }
        }
      }`).join('\n')}
    }
    out[params.slot] = select(last, hit, hit != NONE);
  }
}`,
  };
}

/**
 * Samples row `row` of the (rows, n) logits `x` with uniform draw `uniforms[draw]`, writing the token to `out[slot]`.
 * `uniforms` holds one draw per sampled token of a run (the host's seeded generator fills it), so a run of steps
 * needs one upload.
 */
export function sampleToken(o: SampleOpts, d: { n: number; row?: number; draw?: number; slot?: number }, b: { x: GPUBuffer; uniforms: GPUBuffer; out: GPUBuffer }): Dispatch {
  validateGpuSampling(o);
  const row = d.row ?? 0;
  const draw = d.draw ?? 0;
  const slot = d.slot ?? 0;
  if (!Number.isInteger(d.n) || d.n < 1) throw new Error(`sampleToken: n must be a positive integer, got ${d.n}`);
  for (const [k, v] of Object.entries({ row, draw, slot })) if (!Number.isInteger(v) || v < 0) throw new Error(`sampleToken: ${k} must be a non-negative integer, got ${v}`);
  const U = sampleUnit(d.n);
  const spec = kernel({ op: 'sample_token', wg: SAMPLE_WG, digit: DIGIT, u: U, unroll: UNROLL }, () => source(U));
  const topK = o.topK === undefined ? d.n : Math.min(o.topK, d.n);
  return {
    kernel: spec,
    buffers: b,
    params: { n: d.n, row, draw, slot, topK, c: Math.LOG2E / o.temperature, topP: o.topP ?? 1 },
    workgroups: [1],
  };
}
