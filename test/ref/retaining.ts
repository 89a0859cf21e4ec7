/**
 * Locret retaining-head reference: per token, per KV head, a retention score
 *   score(T, KV) = fc2 · silu(fc1 · concat(Q, K, V))
 * where concat(Q, K, V) is the layer's raw qkv projection of the token ((H + 2·KV)·D: all Q heads, then K heads,
 * then V heads), taken BEFORE RoPE (bias included when the model has q/k/v biases). fc1 (1024, (H+2KV)·D),
 * fc2 (KV, 1024), no biases. f64 accumulation, f32 results.
 */
import type { ModelConfig } from '../../ir/config.js';
import { RETAINING_HIDDEN, qkvWidth, weightName as W } from '../../ir/config.js';
import { matmul, silu } from './kernels.js';
import type { Weights } from './model.js';

/** scores (T, KV) from the (T, (H+2KV)·D) pre-RoPE qkv rows of layer l. */
export function retainingScores(cfg: ModelConfig, w: Weights, l: number, qkv: Float32Array, T: number): Float32Array {
  return retainingScoresRaw(qkv, T, qkvWidth(cfg), w(W.fc1(l)), w(W.fc2(l)), cfg.numKvHeads);
}

/** Same on explicit matrices: fc1 (hidden, width), fc2 (kv, hidden). */
export function retainingScoresRaw(
  qkv: Float32Array, T: number, width: number, fc1: Float32Array, fc2: Float32Array, kv: number,
): Float32Array {
  const hidden = fc1.length / width;
  if (!Number.isInteger(hidden) || fc2.length !== kv * hidden) {
    throw new Error(`retaining head shapes: fc1 ${fc1.length} for width ${width}, fc2 ${fc2.length} for ${kv} kv heads`);
  }
  if (hidden !== RETAINING_HIDDEN) throw new Error(`retaining head hidden ${hidden} != ${RETAINING_HIDDEN}`);
  const h = silu(matmul(qkv, T, width, fc1, hidden));
  return matmul(h, T, hidden, fc2, kv);
}
