/**
 * Temperature / top-k / top-p sampling of one logits row on the GPU, so sampled decode steps queue back to back like
 * greedy ones (the token feeds the next step through decode-feed.ts; nothing is read back per token).
 *
 * One workgroup of WG threads; thread l owns the tokens l, l + WG, l + 2·WG, … (coalesced loads every pass). Tokens
 * are compared by an order key, the logit's bits mapped so that unsigned order is float order (NaN lowest):
 *
 *   1. max key (and the first token holding it: the answer when nothing has weight, e.g. every logit −∞)
 *   2. top-k: the largest key τk with count(key ≥ τk) ≥ k, found digit by digit (8 passes of 4 bits: 15 candidate
 *      thresholds counted per pass), so every token tied at the k-th logit is kept, as Hugging Face's top-k does
 *   3. weights w = 2^((logit − max) · log2(e) / T) of the kept tokens, and their total Z
 *   4. top-p: the largest key τp ≥ τk with Σ w(key ≥ τp) ≥ p · Z, digit by digit the same way (ties at it kept)
 *   5. the draw: r = u · (kept total); thread sums, a scan over threads, and the one thread whose range holds r walks
 *      its tokens. The walk order (thread, then token) is fixed by WG, not by the device, so a seed gives the same
 *      tokens on every device up to the rounding of exp2 and of the sums.
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

/**
 * One threshold search, inlined: `contrib` is the WGSL expression a token with key `k` (and weight `w`, when
 * `weighted`) adds; finds the largest t ≥ `floor` with Σ contrib(key ≥ t) ≥ `target` into `tvar`.
 */
function search(tvar: string, floor: string, target: string, weighted: boolean): string {
  return `  ${tvar} = 0u;
  for (var shift = ${32 - DIGIT}i; shift >= 0i; shift -= ${DIGIT}i) {
${seq(C).map((j) => `    var a${j + 1} = 0.0;`).join('\n')}
    for (var i = lid; i < params.n; i += WG) {
      let k = orderKey(x[params.row * params.n + i]);
      let c = select(0.0, ${weighted ? 'weight(k, m, params.c)' : '1.0'}, k >= ${floor});
${seq(C).map((j) => `      a${j + 1} += select(0.0, c, k >= (${tvar} | (${j + 1}u << u32(shift))));`).join('\n')}
    }
${seq(C).map((j) => `    red[${j}u * WG + lid] = a${j + 1};`).join('\n')}
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

function source() {
  return {
    bindings: [
      ro('x', 'array<f32>'), // (rows, n) logits
      ro('uniforms', 'array<f32>'), // (draws) uniform draws in [0, 1), one per sampled token
      rw('out', 'array<u32>'), // (slot + 1) the token at [slot]
    ],
    params: [['n', 'u32'], ['row', 'u32'], ['draw', 'u32'], ['slot', 'u32'], ['topK', 'u32'], ['c', 'f32'], ['topP', 'f32']] as const,
    workgroupSize: [SAMPLE_WG, 1, 1] as const,
    body: wgsl`const WG = ${SAMPLE_WG}u;
const NONE = 0xffffffffu;
var<workgroup> red: array<f32, ${C * SAMPLE_WG}>; // (candidates, WG) partial counts or weights, reduced in place
var<workgroup> bk: array<u32, ${SAMPLE_WG}>; // (WG) max key per thread, then reduced
var<workgroup> bi: array<u32, ${SAMPLE_WG}>; // (WG) first token with it
var<workgroup> pre: array<f32, ${SAMPLE_WG}>; // (WG) inclusive scan of the threads' kept weights
var<workgroup> pick: atomic<u32>; // the thread whose range holds the draw
var<workgroup> lastKept: atomic<u32>; // the last thread with any kept weight (rounding fallback)

// unsigned order = float order; NaN lowest (0), below −∞; −0 is +0
fn orderKey(v: f32) -> u32 {
  let b = select(bitcast<u32>(v), 0u, bitcast<u32>(v) == 0x80000000u);
  if ((b & 0x7fffffffu) > 0x7f800000u) { return 0u; }
  return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}
fn keyValue(k: u32) -> f32 {
  return bitcast<f32>(select(~k, k & 0x7fffffffu, (k & 0x80000000u) != 0u));
}
// exp((logit − max) / T) as 2^((logit − max) · log2(e) / T); 1 for the top token
fn weight(k: u32, m: f32, c: f32) -> f32 {
  return exp2((keyValue(k) - m) * c);
}

// the weight of thread lid's tokens with key ≥ floor
fn threadWeight(lid: u32, floor: u32, m: f32) -> f32 {
  var s = 0.0;
  for (var i = lid; i < params.n; i += WG) {
    let k = orderKey(x[params.row * params.n + i]);
    s += select(0.0, weight(k, m, params.c), k >= floor);
  }
  return s;
}

@compute @workgroup_size(${SAMPLE_WG})
fn main(@builtin(local_invocation_index) lid: u32) {
  let base = params.row * params.n;
  // 1. max key and its first token
  var mk = 0u;
  var mi = NONE;
  for (var i = lid; i < params.n; i += WG) {
    let k = orderKey(x[base + i]);
    if (mi == NONE || k > mk) { mk = k; mi = i; }
  }
  bk[lid] = mk;
  bi[lid] = mi;
  if (lid == 0u) { atomicStore(&pick, NONE); atomicStore(&lastKept, NONE); }
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
  pre[lid] = threadWeight(lid, tk, m);
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
  // 5. the draw: this thread's kept weight, a scan over threads, the thread holding r walks its tokens
  let s = threadWeight(lid, tp, m);
  pre[lid] = s;
  workgroupBarrier();
  for (var h = 1u; h < WG; h <<= 1u) { // Hillis–Steele inclusive scan
    var v = 0.0;
    if (lid >= h) { v = pre[lid - h]; }
    workgroupBarrier();
    pre[lid] += v;
    workgroupBarrier();
  }
  let kept = pre[WG - 1u];
  let r = uniforms[params.draw] * kept;
  let before = pre[lid] - s;
  if (s > 0.0 && pre[lid] > r) { atomicMin(&pick, lid); }
  if (s > 0.0) { atomicMax(&lastKept, lid); }
  workgroupBarrier();
  var chosen = atomicLoad(&pick);
  let exact = chosen != NONE;
  if (!exact) { chosen = atomicLoad(&lastKept); }
  // nothing has weight (every logit −∞ or NaN, or the weights overflowed): the first max, as greedy
  let valid = kept > 0.0 && kept < 3.0e38;
  if (!valid && lid == 0u) { out[params.slot] = top; }
  if (valid && lid == chosen) {
    var acc = before;
    var hit = NONE;
    var last = NONE;
    for (var i = lid; i < params.n; i += WG) {
      let k = orderKey(x[base + i]);
      if (k < tp) { continue; }
      let w = weight(k, m, params.c);
      if (!(w > 0.0)) { continue; }
      last = i;
      acc += w;
      if (exact && acc > r) { hit = i; break; }
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
  const spec = kernel({ op: 'sample_token', wg: SAMPLE_WG, digit: DIGIT }, source);
  const topK = o.topK === undefined ? d.n : Math.min(o.topK, d.n);
  return {
    kernel: spec,
    buffers: b,
    params: { n: d.n, row, draw, slot, topK, c: Math.LOG2E / o.temperature, topP: o.topP ?? 1 },
    workgroups: [1],
  };
}
