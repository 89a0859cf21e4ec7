/** What a Session is asked for (runtime/session.ts) and what its prefill returns. */
import type { Node } from '../ir/ops.js';
import type { Plan } from '../compiler/lower.js';
import type { CacheDtype } from '../compiler/kernels/attn-common.js';
import type { SampleOpts } from '../compiler/kernels/sample.js';
import type { Dispatch } from './gpu/runner.js';
import type { Policy } from './policies.js';

export interface CacheOptions {
  readonly policy: Policy;
  readonly budget: number;
  readonly chunk: number;
  readonly stabilizer: number;
  readonly positions: 'compact' | 'original';
  readonly maxNew: number;
  /** K/V storage: 'f32', 'f16', or 'int8' (per-row scale, see compiler/kernels/kv-int8.ts); default: f16 with f16 weights, else f32 */
  readonly kvDtype?: CacheDtype;
  /** rope long factors always (Phi-3 longrope), as the official Locret code does */
  readonly ropeLong?: boolean;
  /** every position's logits (tests against goldens) instead of the newest token's */
  readonly allLogits?: boolean;
  /** run the unfused graph (tests proving fusion changes nothing) */
  readonly unfused?: boolean;
  readonly seed?: number;
  /** track every entry's original prompt position (for --trace), moved along by eviction */
  readonly trace?: boolean;
  /** build the retaining heads into the graph even when the policy does not use their scores (head training) */
  readonly withHeads?: boolean;
  /**
   * score with the heads as loaded (fc1 over the pre-RoPE rows) even where the weights hold folded ones (tests);
   * the loaded fc1 is freed after folding unless the engine was loaded with `keepUnfoldedHeads`
   */
  readonly unfoldedHeads?: boolean;
  /** dispatches to run right after a graph node's kernel, within the same submission (see Plan.dispatches) */
  readonly after?: (n: Node, plan: Plan) => Dispatch[];
}

/** How a queued decode run picks its tokens when not greedily: drawn on the GPU, uniform draw i for step i. */
export interface RunPick {
  readonly sampling: SampleOpts;
  /** (≥ steps) uniform draws in [0, 1) */
  readonly uniforms: Float32Array;
}

export interface PrefillResult {
  /** logits of the last prompt token (vocab), or of every token of the last step with allLogits */
  readonly logits: Float32Array;
  readonly promptTokens: number;
  readonly evictedTokens: number;
}
