/**
 * `locret bench`: prefill and decode speed under the Locret policy, with the device's own ceilings measured in the
 * same run (buffer copy bandwidth, best matmul rate) so every number comes with its achieved/ceiling ratio.
 */
import type { ModelConfig } from '../ir/config.js';
import { matmul } from '../compiler/kernels/matmul.js';
import { fillRandom, streamCopy } from '../compiler/kernels/random.js';
import { qkvWidth, RETAINING_HIDDEN, weightName as W } from '../ir/config.js';
import type { GpuRunner } from './gpu/runner.js';
import { Session } from './session.js';
import { stepBreakdown, type StepBreakdown } from './bench-breakdown.js';
import { partsWeight, type GpuWeight } from './weights.js';

export interface BenchOptions {
  readonly chunks: readonly number[];
  readonly budget: number;
  readonly stabilizer: number;
  /** cache length at which decode is timed */
  readonly context: number;
  readonly decodeTokens: number;
  readonly log?: (s: string) => void;
}

export interface BenchResult {
  device: string;
  model: string;
  weight_dtype: string;
  prefill_tokens_per_s: Record<string, number>;
  decode_ms_per_token: number;
  decode_cache_len: number;
  eviction_share: number;
  scoring_share: number;
  peak_gpu_bytes: number;
  copy_gb_per_s: number;
  matmul_tflops: number;
  decode_bandwidth_ratio: number;
  prefill_matmul_ratio: number;
  weight_bytes: number;
  /** per-op GPU time of one prefill chunk and one decode step at the decode cache length */
  breakdown?: { prefill: StepBreakdown; decode: StepBreakdown };
}

const done = (r: GpuRunner) => r.device.queue.onSubmittedWorkDone();

/** Random weights of a config's shapes, generated on the GPU (f16 packed pairs or f32), plus random retaining heads. */
export function randomWeights(r: GpuRunner, c: ModelConfig, half: boolean): Map<string, GpuWeight> {
  const m = new Map<string, GpuWeight>();
  const qkv = qkvWidth(c);
  const add = (name: string, shape: number[], scale: number, offset = 0) => {
    const h = half && shape.length === 2;
    const cols = shape.length === 2 ? shape[1]! : shape.reduce((a, b) => a * b, 1);
    const seed = m.size * 7919 + 1;
    // split like uploaded weights when over the binding limit; each part gets its own seed
    const make = (row0: number, rows: number, label: string) => {
      const n = rows * cols;
      const buf = r.createBuffer(n * (h ? 2 : 4), label);
      r.run([fillRandom({ half: h }, { words: h ? n / 2 : n, seed: seed + row0, scale, offset }, { buf })]);
      return buf;
    };
    m.set(name, partsWeight(name, h ? (r.gpu.f16 ? 'f16' : 'f16p') : 'f32', shape, h ? 2 : 4, r.gpu.maxBinding, make));
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

async function bestMatmul(r: GpuRunner, c: ModelConfig, T: number, half: boolean): Promise<number> {
  const K = c.hiddenSize;
  // the gate_up shape, capped so the weight fits one storage binding (the rate does not depend on N at this size)
  const fit = Math.floor(r.gpu.maxBinding / (K * (half ? 2 : 4)) / 64) * 64;
  const N = Math.max(64, Math.min(2 * c.intermediateSize, fit));
  const x = r.createBuffer(T * K * 4, 'mm-x');
  const w = r.createBuffer(N * K * (half ? 2 : 4), 'mm-w');
  const y = r.createBuffer(T * N * 4, 'mm-y');
  r.run([fillRandom({ half: false }, { words: T * K, seed: 3, scale: 1 }, { buf: x }), fillRandom({ half }, { words: (N * K) / (half ? 2 : 1), seed: 5, scale: 0.02 }, { buf: w })]);
  const d = matmul({ wdtype: half ? (r.gpu.f16 ? 'f16' : 'f16p') : 'f32', norm: false, bias: false, epilogue: 'store' }, { T, N, K }, { x, w, y });
  const ms = await timeIt(r, 5, () => r.run([d]));
  [x, w, y].forEach((b) => r.destroy(b));
  return (2 * T * N * K) / (ms / 1000) / 1e12;
}

export async function runBench(r: GpuRunner, c: ModelConfig, weights: Map<string, GpuWeight>, name: string, o: BenchOptions): Promise<BenchResult> {
  const log = o.log ?? (() => {});
  const half = weights.get(W.qkv(0))!.dtype !== 'f32';
  const weightBytes = [...weights.values()].reduce((a, w) => a + w.shape.reduce((x, y) => x * y, 1) * (w.dtype === 'f32' ? 4 : 2), 0);
  log('measuring copy bandwidth');
  const copy = await copyBandwidth(r);
  log('measuring the best matmul rate');
  const mmT = Math.max(...o.chunks);
  const tflops = await bestMatmul(r, c, mmT, half);
  const ids = (n: number) => Array.from({ length: n }, (_, i) => (i * 2654435761) % c.vocabSize);
  const prefill: Record<string, number> = {};
  let decodeMs = 0;
  let decodeLen = 0;
  let evictShare = 0;
  let scoreShare = 0;
  let breakdown: BenchResult['breakdown'];
  r.resetPeak();
  for (const chunk of o.chunks) {
    const s = new Session(r, c, weights, { policy: 'locret', budget: o.budget, chunk, stabilizer: o.stabilizer, positions: 'compact', maxNew: o.decodeTokens + 1 });
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
      tok = await s.decodeGreedy(tok);
      const t1 = performance.now();
      for (let i = 0; i < o.decodeTokens - 1; i++) tok = await s.decodeGreedy(tok);
      decodeMs = (performance.now() - t1) / (o.decodeTokens - 1);
      const perChunk = ms / chunks;
      evictShare = (await timeIt(r, 3, () => r.run(s.evictionProbe()))) / perChunk;
      scoreShare = (await timeIt(r, 3, () => r.run(s.scoringProbe(chunk)))) / perChunk;
      log('per-op breakdown of a chunk and a decode step');
      breakdown = { prefill: await stepBreakdown(r, s, chunk, false, 3), decode: await stepBreakdown(r, s, 1, true, 10) };
    }
    s.release();
  }
  const weightStream = weightBytes - (c.tieWordEmbeddings ? 0 : c.vocabSize * c.hiddenSize * (half ? 2 : 4)); // decode skips the embedding table
  const cacheRead = c.numLayers * 2 * c.numKvHeads * decodeLen * c.headDim * (half ? 2 : 4);
  // the memory system's total rate (a copy's read + write traffic) is what a read-only decode stream can use
  const floorMs = ((weightStream + cacheRead) / (copy * 1e9)) * 1000;
  const firstChunk = o.chunks[0]!;
  const flopsPerToken = 2 * (weightStream / (half ? 2 : 4));
  return {
    device: r.gpu.adapterName,
    model: name,
    weight_dtype: half ? 'f16' : 'f32',
    prefill_tokens_per_s: prefill,
    decode_ms_per_token: decodeMs,
    decode_cache_len: decodeLen,
    eviction_share: evictShare,
    scoring_share: scoreShare,
    peak_gpu_bytes: r.peakBytes,
    copy_gb_per_s: copy,
    matmul_tflops: tflops,
    decode_bandwidth_ratio: decodeMs > 0 ? floorMs / decodeMs : 0,
    prefill_matmul_ratio: (prefill[`chunk_${firstChunk}`]! * flopsPerToken) / (tflops * 1e12),
    weight_bytes: weightBytes,
    breakdown,
  };
}
