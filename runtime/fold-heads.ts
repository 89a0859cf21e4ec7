/**
 * Folded retaining heads: per layer, `L{i}.fc1_folded` (1024, hidden) = fc1 · Wqkv and, when the qkv projection has
 * a bias, `L{i}.fc1_folded_bias` (1024) = fc1 · b (compiler/kernels/fold-head.ts says why this is the same head).
 * Computed on the GPU once per uploaded model and added to its weight map, so every session over those weights
 * shares them; a session then scores the normalized hidden rows directly (ir/models/decoder.ts `foldedHeads`).
 *
 * Skipped (sessions keep the unfolded heads) where a qkv weight or fc1 is split over several bindings, or where
 * LOCRET_UNFOLDED_HEADS=1. The loaded fc1 then leaves the map and its buffers are freed (403 MB at Llama-3.1-8B's
 * shape), unless `keepLoaded`: only sessions that ask for unfolded heads (`CacheOptions.unfoldedHeads`) read it
 * once the folds exist; the head trainer brings its own fc1.
 */
import { foldHead } from '../compiler/kernels/fold-head.js';
import { weightName as W, type ModelConfig } from '../ir/config.js';
import { envFlag } from './env.js';
import type { GpuRunner } from './gpu/runner.js';
import type { GpuWeight, WholeWeight } from './weights.js';

const whole = (w: GpuWeight | undefined): w is WholeWeight => w !== undefined && w.parts === undefined;

/** Whether the map holds folded heads (what a session checks before building the folded graph). */
export function hasFoldedHeads(weights: ReadonlyMap<string, GpuWeight>): boolean {
  return weights.has(W.fc1Folded(0));
}

/**
 * Adds the folded heads of every layer to `weights` (nothing when it has no retaining heads, already has folded
 * ones, or a weight is split); returns whether they are there afterwards.
 */
export function foldRetainingHeads(runner: GpuRunner, c: ModelConfig, weights: Map<string, GpuWeight>, o: { keepLoaded?: boolean } = {}): boolean {
  if (!weights.has(W.fc1(0)) || envFlag('LOCRET_UNFOLDED_HEADS')) return false;
  if (hasFoldedHeads(weights)) return true;
  const layers = Array.from({ length: c.numLayers }, (_, l) => ({ fc1: weights.get(W.fc1(l)), qkv: weights.get(W.qkv(l)), bias: weights.get(W.qkvBias(l)) }));
  if (!layers.every((x) => whole(x.fc1) && whole(x.qkv) && (x.bias === undefined || whole(x.bias)))) return false;
  // every layer checked before anything is allocated, then all folds in one submission
  const jobs = layers.map((x, l) => {
    const fc1 = x.fc1 as WholeWeight, qkv = x.qkv as WholeWeight, bias = x.bias as WholeWeight | undefined;
    if (fc1.dtype !== 'f32' && fc1.dtype !== 'f16' && fc1.dtype !== 'f16p') throw new Error(`retaining head ${W.fc1(l)} is stored as ${fc1.dtype}`);
    const [R, C] = fc1.shape as [number, number];
    if (qkv.shape[0] !== C) throw new Error(`${W.fc1(l)} [${fc1.shape}] does not match ${W.qkv(l)} [${qkv.shape}]`);
    return { l, fc1: fc1.buf, fc1Dtype: fc1.dtype, qkv, bias, R, C, Hd: qkv.shape[1]!, outDtype: fc1.dtype === 'f16' ? ('f16' as const) : ('f32' as const) };
  });
  const dispatches = jobs.map(({ l, fc1, fc1Dtype, qkv, bias, R, C, Hd, outDtype }) => {
    const out = runner.createBuffer(R * Hd * (outDtype === 'f16' ? 2 : 4), W.fc1Folded(l)); // (R, hidden)
    const outBias = bias ? runner.createBuffer(R * 4, W.fc1FoldedBias(l)) : undefined; // (R) f32
    weights.set(W.fc1Folded(l), { buf: out, dtype: outDtype, shape: [R, Hd] });
    if (outBias) weights.set(W.fc1FoldedBias(l), { buf: outBias, dtype: 'f32', shape: [R] });
    return foldHead({ fc1Dtype, wDtype: qkv.dtype, outDtype, bias: bias !== undefined }, { R, C, Hd },
      { fc1, w: qkv.buf, wScales: qkv.scales, bias: bias?.buf, out, outBias });
  });
  runner.run(dispatches);
  if (!o.keepLoaded) {
    // destroy() after the submission: WebGPU frees a buffer once the work already queued on it has run
    for (const { l, fc1 } of jobs) {
      weights.delete(W.fc1(l));
      runner.destroy(fc1);
    }
  }
  return true;
}
