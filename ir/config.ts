/**
 * The normalized model description every layer of locret works from. Hugging Face `config.json` files in their
 * several spellings (classic `rope_theta`/`rope_scaling`, transformers-5 `rope_parameters`, Phi-3's fused
 * projections) are turned into this one shape by `runtime/io/hf-config.ts`; nothing downstream reads raw HF keys.
 */

export const ARCHS = ['llama', 'qwen2', 'phi3', 'mistral'] as const;
export type Arch = (typeof ARCHS)[number];

/** Rotary embedding variants. Each carries exactly the numbers its inverse-frequency formula needs. */
export type RopeConfig =
  | { readonly kind: 'default'; readonly theta: number; readonly rotaryDim: number }
  | {
      readonly kind: 'llama3';
      readonly theta: number;
      readonly rotaryDim: number;
      readonly factor: number;
      readonly lowFreqFactor: number;
      readonly highFreqFactor: number;
      readonly originalMaxPositions: number;
    }
  | {
      /** Phi-3 `longrope` (alias `su`): per-dimension short/long factors and an attention scaling factor. */
      readonly kind: 'longrope';
      readonly theta: number;
      readonly rotaryDim: number;
      readonly shortFactor: readonly number[];
      readonly longFactor: readonly number[];
      readonly originalMaxPositions: number;
      readonly maxPositions: number;
      /** multiplies cos and sin; HF: sqrt(1 + ln(scale)/ln(original)) when not given */
      readonly attentionFactor: number;
    };

export interface ModelConfig {
  readonly arch: Arch;
  readonly hiddenSize: number;
  readonly intermediateSize: number;
  readonly numLayers: number;
  readonly numHeads: number;
  readonly numKvHeads: number;
  readonly headDim: number;
  readonly vocabSize: number;
  readonly rmsNormEps: number;
  readonly tieWordEmbeddings: boolean;
  /** q/k/v projections carry biases (Qwen2) */
  readonly qkvBias: boolean;
  readonly maxPositions: number;
  readonly rope: RopeConfig;
  readonly bosTokenId: number | null;
  /** every id that ends generation (generation_config.json wins over config.json) */
  readonly eosTokenIds: readonly number[];
  /** the checkpoint's own dtype (`torch_dtype` / `dtype`) */
  readonly sourceDtype: 'f32' | 'f16' | 'bf16';
}

/**
 * Canonical weight names inside locret (bundles, graphs, kernels). The HF → canonical mapping per architecture
 * lives in `runtime/io/weight-map.ts`: q/k/v are concatenated into one `qkv` matrix and gate/up into `gate_up`
 * (Phi-3 already ships them fused), so every family lowers to the same fused kernels.
 *
 *   embed            (vocab, hidden)
 *   L{i}.attn_norm   (hidden)
 *   L{i}.qkv         ((heads + 2*kv_heads) * head_dim, hidden)      rows: all Q heads, then K heads, then V heads
 *   L{i}.qkv_bias    ((heads + 2*kv_heads) * head_dim)              only when qkvBias
 *   L{i}.o           (hidden, heads * head_dim)
 *   L{i}.mlp_norm    (hidden)
 *   L{i}.gate_up     (2 * intermediate, hidden)                     rows: gate, then up
 *   L{i}.down        (hidden, intermediate)
 *   L{i}.fc1         (1024, (heads + 2*kv_heads) * head_dim)         retaining head, optional
 *   L{i}.fc2         (kv_heads, 1024)                                retaining head, optional
 *   L{i}.fc1_folded  (1024, hidden)                                  fc1 · qkv, computed at load (runtime/fold-heads.ts)
 *   L{i}.fc1_folded_bias (1024)                                      fc1 · qkv_bias, when qkvBias
 *   final_norm       (hidden)
 *   lm_head          (vocab, hidden)                                 absent when tieWordEmbeddings
 */
export const weightName = {
  embed: 'embed',
  finalNorm: 'final_norm',
  lmHead: 'lm_head',
  attnNorm: (l: number) => `L${l}.attn_norm`,
  qkv: (l: number) => `L${l}.qkv`,
  qkvBias: (l: number) => `L${l}.qkv_bias`,
  o: (l: number) => `L${l}.o`,
  mlpNorm: (l: number) => `L${l}.mlp_norm`,
  gateUp: (l: number) => `L${l}.gate_up`,
  down: (l: number) => `L${l}.down`,
  fc1: (l: number) => `L${l}.fc1`,
  fc2: (l: number) => `L${l}.fc2`,
  fc1Folded: (l: number) => `L${l}.fc1_folded`,
  fc1FoldedBias: (l: number) => `L${l}.fc1_folded_bias`,
} as const;

/** Hidden width of a retaining head's first layer, fixed by the paper and the official checkpoints. */
export const RETAINING_HIDDEN = 1024;

export function qkvWidth(c: ModelConfig): number {
  return (c.numHeads + 2 * c.numKvHeads) * c.headDim;
}
