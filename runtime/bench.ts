/**
 * `locret bench`: prefill and decode speed under the Locret policy, with the device's own ceilings measured in the
 * same run (buffer copy bandwidth, best matmul rate) so every number comes with its achieved/ceiling ratio.
 */
import type { ModelConfig } from '../ir/config.js';
import { matmul } from '../compiler/kernels/matmul.js';
import { QGROUP } from '../compiler/kernels/mm-common.js';
import { fillBits, fillRandom, streamCopy } from '../compiler/kernels/random.js';
import { qkvWidth, RETAINING_HIDDEN, weightName as W } from '../ir/config.js';
import type { GpuRunner } from './gpu/runner.js';
import { envFlag } from './env.js';
import { Session } from './session.js';
import { cacheRowWords, type CacheDtype } from '../compiler/kernels/attn-common.js';
import { stepBreakdown, type StepBreakdown } from './bench-breakdown.js';
import { quantizedBytes } from './quant.js';
import { rng } from './sampling.js';
import type { SampleOpts } from '../compiler/kernels/sample.js';
import { elemBytes, partsWeight, quantDtypeFor, weightBytes, type GpuWeight, type WeightFormat } from './weights.js';
import { foldRetainingHeads, hasFoldedHeads } from './fold-heads.js';

export interface BenchOptions {
  readonly chunks: readonly number[];
  readonly budget: number;
  readonly stabilizer: number;
  /** cache length at which decode is timed */
  readonly context: number;
  readonly decodeTokens: number;
  /** KV cache storage (default: follows the weights, as in Session) */
  readonly kvDtype?: CacheDtype;
  readonly log?: (s: string) => void;
}

export interface BenchResult {
  device: string;
  /** shaders bound-check every storage access (Dawn's robustness: on in browsers, off in Node by default) */
  shader_bound_checks: boolean;
  /** decode read keys rotated once after the prompt (Session.decodeOnRotatedKeys) */
  decode_keys_rotated: boolean;
  /** q8 / q4 decode matmuls take int8 dot products (GpuContext.intDot; false for f16 / f32 weights) */
  decode_int8_dot: boolean;
  model: string;
  weight_dtype: string;
  kv_dtype: string;
  prefill_tokens_per_s: Record<string, number>;
  /** greedy steps queued back to back (generate's path) */
  decode_ms_per_token: number;
  /** one step per readback of the argmax (4 bytes): a step's latency with its token on the host */
  decode_roundtrip_ms_per_token: number;
  /**
   * sampled decoding as generate() runs it: steps queued back to back, each token drawn on the GPU
   * (SAMPLED_BENCH: Llama-3.1's generation_config, temperature 0.6 and top-p 0.9)
   */
  decode_sampled_ms_per_token: number;
  decode_cache_len: number;
  eviction_share: number;
  scoring_share: number;
  peak_gpu_bytes: number;
  copy_gb_per_s: number;
  /** best rate of one gate_up-sized matmul, f32-FMA or tensor-core tiles (bestMatmul) */
  matmul_tflops: number;
  /** (weight + cache bytes a decode step reads / copy rate) ÷ measured step time */
  decode_bandwidth_ratio: number;
  /** prefill FLOP rate (chunk of the first size) ÷ matmul_tflops */
  prefill_matmul_ratio: number;
  weight_bytes: number;
  /** per-op GPU time of one prefill chunk and one decode step at the decode cache length */
  breakdown?: { prefill: StepBreakdown; decode: StepBreakdown };
}

const done = (r: GpuRunner) => r.device.queue.onSubmittedWorkDone();

/** Scale of random quantized groups: |values| ≤ 0.02 like the f16 weights (q8 levels ±127, q4 −8..7). */
const RANDOM_QSCALE = { q8: 0.02 / 127, q4: 0.02 / 7 } as const;

/**
 * Random weights of a config's shapes, generated on the GPU, plus random retaining heads. `format` true / false is
 * f16 / f32 (older callers). q8 / q4 backbone matrices get random quants (every bit pattern a valid level) and one
 * constant small scale; norms stay f32 and the retaining heads f16, as uploadWeights stores them.
 */
export function randomWeights(r: GpuRunner, c: ModelConfig, format: boolean | WeightFormat): Map<string, GpuWeight> {
  const fmt: WeightFormat = format === true ? 'f16' : format === false ? 'f32' : format;
  const m = new Map<string, GpuWeight>();
  const qkv = qkvWidth(c);
  const halfDtype = r.gpu.f16 ? 'f16' : 'f16p';
  const names = c.tieWordEmbeddings ? [] : [W.lmHead]; // what quantDtypeFor needs to know: is the output tied
  const add = (name: string, shape: number[], scale: number, offset = 0) => {
    const matrix = shape.length === 2;
    const cols = matrix ? shape[1]! : shape.reduce((a, b) => a * b, 1);
    const seed = m.size * 7919 + 1;
    const q = quantDtypeFor(name, fmt, names);
    if (matrix && q && cols % QGROUP === 0) {
      const make = (row0: number, rows: number, label: string) => {
        const words = (rows * cols) / (q === 'q8' ? 4 : 8);
        const { scales: sBytes } = quantizedBytes(q, rows, cols);
        const buf = r.createBuffer(words * 4, label);
        const scales = r.createBuffer(sBytes, `${label}.scales`);
        // scales: a constant (scale 0 leaves just the offset), two f16 per word
        r.run([fillBits({ words, seed: seed + row0 }, { buf }), fillRandom({ half: true }, { words: sBytes / 4, seed: 0, scale: 0, offset: RANDOM_QSCALE[q] }, { buf: scales })]);
        return { buf, scales };
      };
      m.set(name, partsWeight(name, q, shape, elemBytes(q), r.gpu.maxBinding, make));
      return;
    }
    const h = fmt !== 'f32' && matrix;
    // split like uploaded weights when over the binding limit; each part gets its own seed
    const make = (row0: number, rows: number, label: string) => {
      const n = rows * cols;
      const buf = r.createBuffer(n * (h ? 2 : 4), label);
      r.run([fillRandom({ half: h }, { words: h ? n / 2 : n, seed: seed + row0, scale, offset }, { buf })]);
      return { buf };
    };
    m.set(name, partsWeight(name, h ? halfDtype : 'f32', shape, h ? 2 : 4, r.gpu.maxBinding, make));
  };
  const hd = c.hiddenSize;
  add(W.embed, [c.vocabSize, hd], 0.02);
  for (let l = 0; l < c.numLayers; l++) {
    add(W.attnNorm(l), [hd], 0.05, 1);
    add(W.qkv(l), [qkv, hd], 0.02);
    if (c.qkvBias) add(W.qkvBias(l), [qkv], 0.02);
    add(W.o(l), [hd, c.numHeads * c.headDim], 0.02);
    add(W.mlpNorm(l), [hd], 0.05, 1);
    add(W.gateUp(l), [2 * c.intermediateSize, hd], 0.02);
    add(W.down(l), [hd, c.intermediateSize], 0.02);
    add(W.fc1(l), [RETAINING_HIDDEN, qkv], 0.02);
    add(W.fc2(l), [c.numKvHeads, RETAINING_HIDDEN], 0.02);
  }
  add(W.finalNorm, [hd], 0.05, 1);
  if (!c.tieWordEmbeddings) add(W.lmHead, [c.vocabSize, hd], 0.02);
  foldRetainingHeads(r, c, m); // as uploadWeights does
  return m;
}

async function timeIt(r: GpuRunner, reps: number, f: () => void): Promise<number> {
  f();
  await done(r); // warm-up: pipelines compiled, caches touched
  const t0 = performance.now();
  for (let i = 0; i < reps; i++) f();
  await done(r);
  return (performance.now() - t0) / reps;
}

/**
 * Best time per run of `f` over 3 batches of ~50 ms, after running it for `settleMs` first, so that a ceiling is not
 * lowered by a cold start or a one-off stall.
 */
async function settledTime(r: GpuRunner, f: () => void, settleMs = 300): Promise<number> {
  f();
  await done(r); // pipelines compiled
  const t0 = performance.now();
  let n = 0;
  do {
    f();
    await done(r);
    n++;
  } while (performance.now() - t0 < settleMs && n < 1000);
  const reps = Math.max(1, Math.min(100, Math.round(50 / ((performance.now() - t0) / n))));
  let best = Infinity;
  for (let b = 0; b < 3; b++) {
    const t = performance.now();
    for (let i = 0; i < reps; i++) f();
    await done(r);
    best = Math.min(best, (performance.now() - t) / reps);
  }
  return best;
}

async function copyBandwidth(r: GpuRunner): Promise<number> {
  const bytes = Math.min(1 << 30, r.gpu.maxBinding, r.gpu.limits.maxBufferSize / 2) & ~255;
  const a = r.createBuffer(bytes, 'bw-a');
  const b = r.createBuffer(bytes, 'bw-b');
  const copyMs = await timeIt(r, 10, () => {
    const e = r.device.createCommandEncoder();
    e.copyBufferToBuffer(a, 0, b, 0, bytes);
    r.device.queue.submit([e.finish()]);
  });
  // a shader copy as well: some drivers serve copyBufferToBuffer from a slower engine; the better one is the ceiling
  const d = streamCopy({ vec4s: bytes / 16 }, { src: a, dst: b });
  const kernelMs = await timeIt(r, 10, () => r.run([d, d, d, d]));
  r.destroy(a);
  r.destroy(b);
  return (2 * bytes) / (Math.min(copyMs, kernelMs / 4) / 1000) / 1e9; // read + write
}

/**
 * The best rate of one large matmul (the gate_up shape) over the paths this device runs: the f32-FMA tiles, and the
 * tensor-core tiles where the device has them (as the prefill matmuls, unless LOCRET_NO_TENSOR_CORES=1).
 */
async function bestMatmul(r: GpuRunner, c: ModelConfig, T: number, half: boolean): Promise<number> {
  const K = c.hiddenSize;
  // the gate_up shape, capped so the weight fits one storage binding (the rate does not depend on N at this size)
  const fit = Math.floor(r.gpu.maxBinding / (K * (half ? 2 : 4)) / 64) * 64;
  const N = Math.max(64, Math.min(2 * c.intermediateSize, fit));
  const x = r.createBuffer(T * K * 4, 'mm-x');
  const w = r.createBuffer(N * K * (half ? 2 : 4), 'mm-w');
  const y = r.createBuffer(T * N * 4, 'mm-y');
  r.run([fillRandom({ half: false }, { words: T * K, seed: 3, scale: 1 }, { buf: x }), fillRandom({ half }, { words: (N * K) / (half ? 2 : 1), seed: 5, scale: 0.02 }, { buf: w })]);
  const wdtype = half ? (r.gpu.f16 ? 'f16' : 'f16p') : 'f32';
  const paths = [false, ...(half && r.gpu.tensorCores && !envFlag('LOCRET_NO_TENSOR_CORES') ? [true] : [])];
  let best = 0;
  for (const tensorCores of paths) {
    const d = matmul({ wdtype, norm: false, bias: false, epilogue: 'store', tensorCores, subgroups: r.gpu.subgroups }, { T, N, K }, { x, w, y });
    const ms = await settledTime(r, () => r.run([d]));
    best = Math.max(best, (2 * T * N * K) / (ms / 1000) / 1e12);
  }
  [x, w, y].forEach((b) => r.destroy(b));
  return best;
}

/** The sampling of the bench's sampled decode: Llama-3.1-8B-Instruct's generation_config */
const SAMPLED_BENCH: SampleOpts = { temperature: 0.6, topP: 0.9 };

export async function runBench(r: GpuRunner, c: ModelConfig, weights: Map<string, GpuWeight>, name: string, o: BenchOptions): Promise<BenchResult> {
  const log = o.log ?? (() => {});
  const qkvDtype = weights.get(W.qkv(0))!.dtype;
  const half = qkvDtype !== 'f32';
  const numel = (w: GpuWeight) => w.shape.reduce((x, y) => x * y, 1);
  // storage sizes as uploaded: q8 / q4 count their quants and scales
  const totalBytes = [...weights.values()].reduce((a, w) => a + weightBytes(w), 0);
  const totalParams = [...weights.values()].reduce((a, w) => a + numel(w), 0);
  const embed = weights.get(W.embed)!;
  log('measuring copy bandwidth');
  const copy = await copyBandwidth(r);
  log('measuring the best matmul rate');
  const mmT = Math.max(...o.chunks);
  const tflops = await bestMatmul(r, c, mmT, half);
  const ids = (n: number) => Array.from({ length: n }, (_, i) => (i * 2654435761) % c.vocabSize);
  const prefill: Record<string, number> = {};
  let decodeMs = 0;
  let roundTripMs = 0;
  let sampledMs = 0;
  let decodeLen = 0;
  let evictShare = 0;
  let scoreShare = 0;
  let breakdown: BenchResult['breakdown'];
  let kvDtype: CacheDtype = o.kvDtype ?? 'f32'; // the sessions' actual cache dtype, set below
  let keysRotated = false;
  r.resetPeak();
  for (const chunk of o.chunks) {
    const s = new Session(r, c, weights, { policy: 'locret', budget: o.budget, chunk, stabilizer: o.stabilizer, positions: 'compact', maxNew: 3 * o.decodeTokens + 4, kvDtype: o.kvDtype });
    kvDtype = s.cacheDtype;
    const prompt = ids(Math.max(o.context, o.budget + 2 * chunk));
    log(`prefill ${prompt.length} tokens in chunks of ${chunk}`);
    await s.prefill(prompt.slice(0, chunk), 0); // warm-up: pipelines
    const t0 = performance.now();
    const pre = await s.prefill(prompt, 0);
    const ms = performance.now() - t0;
    prefill[`chunk_${chunk}`] = pre.promptTokens / (ms / 1000);
    const chunks = Math.ceil(prompt.length / chunk);
    if (chunk === o.chunks[0]) {
      log(`decode ${o.decodeTokens} tokens at cache length ${s.cacheLength}`);
      decodeLen = s.cacheLength;
      let tok = 1;
      // warm-up, 1 + 2 + n + n + 1 + n decode tokens in all (maxNew above): one step with a readback, then a queued
      // run of two (its token feed, built on first use, would otherwise be timed)
      tok = await s.decodeGreedy(tok);
      tok = (await s.decodeGreedyRun(tok, 2))[1]!;
      keysRotated = s.decodeOnRotatedKeys;
      // as generate() runs greedy decoding: steps queued back to back, tokens read once at the end
      const t1 = performance.now();
      const run = await s.decodeGreedyRun(tok, o.decodeTokens);
      decodeMs = (performance.now() - t1) / o.decodeTokens;
      // one step at a time with a readback each (sampling needs the logits on the host)
      tok = run[run.length - 1]!;
      const t2 = performance.now();
      for (let i = 0; i < o.decodeTokens; i++) tok = await s.decodeGreedy(tok);
      roundTripMs = (performance.now() - t2) / o.decodeTokens;
      const uniforms = Float32Array.from({ length: o.decodeTokens }, rng(1));
      // warm-up: the sampler's pipelines, built on first use, would otherwise be timed as decode steps
      tok = (await s.decodeRun(tok, 1, { sampling: SAMPLED_BENCH, uniforms: uniforms.subarray(0, 1) }))[0]!;
      const t3 = performance.now();
      await s.decodeRun(tok, o.decodeTokens, { sampling: SAMPLED_BENCH, uniforms });
      sampledMs = (performance.now() - t3) / o.decodeTokens;
      const perChunk = ms / chunks;
      // 10 back-to-back submissions each, so the one wait for the queue at the end weighs little on a few-ms probe
      evictShare = (await timeIt(r, 10, () => r.run(s.evictionProbe()))) / perChunk;
      scoreShare = (await timeIt(r, 10, () => r.run(s.scoringProbe(chunk)))) / perChunk;
      log('per-op breakdown of a chunk and a decode step');
      breakdown = { prefill: await stepBreakdown(r, s, chunk, false, 3), decode: await stepBreakdown(r, s, 1, true, 10) };
    }
    s.release();
  }
  // what one decode step reads: every weight but the embedding table (untied: one row is gathered) and the
  // retaining heads (they score prompt chunks only)
  const heads = [...weights.entries()].filter(([k]) => /\.fc(1|2|1_folded|1_folded_bias)$/.test(k)).reduce((a, [, w]) => a + weightBytes(w), 0);
  const weightStream = totalBytes - heads - (c.tieWordEmbeddings ? 0 : weightBytes(embed));
  const cacheRead = c.numLayers * 2 * c.numKvHeads * decodeLen * cacheRowWords(kvDtype, c.headDim) * 4;
  // the memory system's total rate (a copy's read + write traffic) is what a read-only decode stream can use
  const floorMs = ((weightStream + cacheRead) / (copy * 1e9)) * 1000;
  const firstChunk = o.chunks[0]!;
  // a prefill token multiplies by every matrix but the embedding, and by the heads it runs: the folded fc1 where the
  // weights hold one (runtime/fold-heads.ts), else the loaded fc1
  const unusedHead = new RegExp(`\\.${hasFoldedHeads(weights) ? 'fc1' : 'fc1_folded(_bias)?'}$`);
  const unusedParams = [...weights.entries()].filter(([k]) => unusedHead.test(k)).reduce((a, [, w]) => a + numel(w), 0);
  const flopsPerToken = 2 * (totalParams - unusedParams - (c.tieWordEmbeddings ? 0 : numel(embed)));
  return {
    device: r.gpu.adapterName,
    shader_bound_checks: r.gpu.robustness,
    decode_keys_rotated: keysRotated,
    decode_int8_dot: r.gpu.intDot && (qkvDtype === 'q8' || qkvDtype === 'q4'),
    model: name,
    weight_dtype: qkvDtype === 'f16p' ? 'f16' : qkvDtype,
    kv_dtype: kvDtype,
    prefill_tokens_per_s: prefill,
    decode_ms_per_token: decodeMs,
    decode_roundtrip_ms_per_token: roundTripMs,
    decode_sampled_ms_per_token: sampledMs,
    decode_cache_len: decodeLen,
    eviction_share: evictShare,
    scoring_share: scoreShare,
    peak_gpu_bytes: r.peakBytes,
    copy_gb_per_s: copy,
    matmul_tflops: tflops,
    decode_bandwidth_ratio: decodeMs > 0 ? floorMs / decodeMs : 0,
    prefill_matmul_ratio: (prefill[`chunk_${firstChunk}`]! * flopsPerToken) / (tflops * 1e12),
    weight_bytes: totalBytes,
    breakdown,
  };
}
