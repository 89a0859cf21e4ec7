/**
 * GPU memory planner (`locret plan <hf-dir|config.json> --context 131072 ...`): how many bytes weights, the KV
 * cache and one prefill chunk's activations take, and whether that fits a card. The same term lists size the
 * runtime's buffers (activationTerms, cacheCapacity, cacheEntryBytes), so the plan and the allocation agree.
 *
 *   weights      Σ params × bytes/param; norms and biases stay f32 (the kernels read them as f32 whatever the
 *                weight format). f32 4, f16 2, q8 1 + 2/32, q4 0.5 + 2/32 (one f16 scale per group of 32, i.e.
 *                8.5 and 4.5 bits per weight); q8 / q4 quantize only the backbone matrices, the retaining
 *                heads stay f16 (runtime/weights.ts); a head's fc1 is resident only as folded into qkv.
 *   cache        layers × capacity × kvHeads × (2·headDim·kvBytes + 4 score f32 + 4 position u32 [+ 8 int8 scales])
 *                capacity = budget + chunk + local + maxNew   (every evicting policy: cache.ts's layout)
 *                         = context + maxNew                  (policy full)
 *   activations  one prefill chunk of T = min(chunk, context) tokens (prefill is chunked for every policy), f32,
 *                plus (evicting policies) the eviction scratch: a 16-byte word per (KV head, slot) and, when the
 *                cache is compacted in order, one layer's K and V rows, shared by all layers
 *                (compiler/kernels/evict.ts), and one layer's keys rotated
 *                to f16 for the tensor-core prefill attention (compiler/kernels/rotate-keys.ts).
 *
 * Sizes are bytes; `24GB` means 24·10⁹ and `24GiB` 24·2³⁰ (so a plan is never optimistic about a "24GB" card).
 */
import { RETAINING_HIDDEN, qkvWidth, type ModelConfig } from '../ir/config.js';
import { rotatedKeysBytes } from '../compiler/kernels/rotate-keys.js';
import { evictLayoutFor, evictScratchBytes } from '../compiler/kernels/evict.js';
import { POLICY_TRAITS } from './policies.js';
import { quantDtypeFor } from './weights.js';

export const WEIGHT_DTYPES = ['f32', 'f16', 'q8', 'q4'] as const;
export type WeightDtype = (typeof WEIGHT_DTYPES)[number];
export const KV_DTYPES = ['f32', 'f16', 'int8'] as const;
export type KvDtype = (typeof KV_DTYPES)[number];
export const POLICIES = ['locret', 'streaming', 'h2o', 'snapkv', 'random', 'full'] as const;
export type Policy = (typeof POLICIES)[number];

export interface PlanOptions {
  /** Longest prompt, tokens. */
  context: number;
  policy?: Policy;
  /** Entries kept per layer and KV head after eviction (b). */
  budget?: number;
  /** Prefill chunk (B). */
  chunk?: number;
  /** Question tokens appended without eviction (n_loc). */
  local?: number;
  /** Most generated tokens. */
  maxNew?: number;
  dtype?: WeightDtype;
  kvDtype?: KvDtype;
  /** Card memory: bytes, or a size like '24GB', '24GiB', '24000MB'. */
  gpuMemory?: number | string;
  /** RoPE positions: 'compact' (default; ranks < capacity) or 'original' (prompt positions). */
  positions?: 'compact' | 'original';
  /** Count the retaining heads' weights (default: policy locret). */
  retainingHeads?: boolean;
}

export const PLAN_DEFAULTS = {
  policy: 'locret', budget: 16384, chunk: 1024, local: 100, maxNew: 256, dtype: 'f16', kvDtype: 'f16', positions: 'compact',
} as const;

export type ResolvedPlanOptions = Required<Omit<PlanOptions, 'gpuMemory'>> & { gpuMemory: number | null };

/** One named allocation: `bytes` and how it was computed (for the CLI's table and for a reader of the code). */
export interface MemoryTerm {
  name: string;
  bytes: number;
  formula: string;
  /** Parameter count (weight terms only). */
  params?: number;
}

export interface MemoryPlan {
  weights_bytes: number;
  cache_bytes: number;
  activation_bytes: number;
  total_bytes: number;
  gpu_memory_bytes: number | null;
  /** total <= gpu memory; null when no gpu memory was given. */
  fits: boolean | null;
  detail: {
    params: number;
    bytes_per_param: number;
    weights: MemoryTerm[];
    cache: { capacity: number; bytes_per_entry: number; per_layer_bytes: number; layers: number; kv_heads: number };
    activations: MemoryTerm[];
    options: ResolvedPlanOptions;
    warnings: string[];
  };
}

export function bytesPerParam(dtype: WeightDtype): number {
  switch (dtype) {
    case 'f32': return 4;
    case 'f16': return 2;
    case 'q8': return 1 + 2 / 32;
    case 'q4': return 0.5 + 2 / 32;
  }
}

/**
 * Bytes of one cache entry (one token of one KV head in one layer): K and V of headDim each, the f32 retention
 * score and the u32 RoPE position; int8 adds one f32 scale per (token, head) for K and one for V.
 */
export function cacheEntryBytes(cfg: ModelConfig, kvDtype: KvDtype): number {
  const kvBytes = kvDtype === 'f32' ? 4 : kvDtype === 'f16' ? 2 : 1;
  return 2 * cfg.headDim * kvBytes + 4 + 4 + (kvDtype === 'int8' ? 2 * 4 : 0);
}

/** Slots per layer and KV head, as runtime/cache.ts allocates them. */
export function cacheCapacity(o: Pick<ResolvedPlanOptions, 'policy' | 'context' | 'budget' | 'chunk' | 'local' | 'maxNew'>): number {
  return o.policy === 'full' ? o.context + o.maxNew : o.budget + o.chunk + o.local + o.maxNew;
}

/** Parameter groups, with the bytes each takes at `dtype` (norms and biases at f32). */
export function weightTerms(cfg: ModelConfig, dtype: WeightDtype, retaining: boolean): MemoryTerm[] {
  const bpp = bytesPerParam(dtype);
  const L = cfg.numLayers;
  const h = cfg.hiddenSize;
  const qkv = qkvWidth(cfg);
  const qd = cfg.numHeads * cfg.headDim;
  const I = cfg.intermediateSize;
  const V = cfg.vocabSize;
  const terms: MemoryTerm[] = [];
  // q4 keeps the output projection q8 (weights.ts quantDtypeFor)
  const names = cfg.tieWordEmbeddings ? [] : ['lm_head'];
  const quantized = (name: string, params: number, formula: string) => {
    const b = dtype === 'q8' || dtype === 'q4' ? bytesPerParam(quantDtypeFor(name, dtype, names) ?? dtype) : bpp;
    terms.push({ name, params, bytes: params * b, formula: `${formula} × ${b}${b !== bpp ? ` (${name === 'embed' ? 'tied output' : 'output'}: q8)` : ''}` });
  };
  const f32 = (name: string, params: number, formula: string) =>
    terms.push({ name, params, bytes: params * 4, formula: `${formula} × 4 (f32)` });
  quantized('embed', V * h, `vocab ${V} × hidden ${h}`);
  quantized('qkv', L * qkv * h, `layers ${L} × (H+2KV)·D ${qkv} × hidden ${h}`);
  if (cfg.qkvBias) f32('qkv_bias', L * qkv, `layers ${L} × (H+2KV)·D ${qkv}`);
  quantized('o', L * h * qd, `layers ${L} × hidden ${h} × H·D ${qd}`);
  quantized('gate_up', L * 2 * I * h, `layers ${L} × 2·I ${2 * I} × hidden ${h}`);
  quantized('down', L * h * I, `layers ${L} × hidden ${h} × I ${I}`);
  f32('norms', (2 * L + 1) * h, `(2·layers + 1) × hidden ${h}`);
  if (!cfg.tieWordEmbeddings) quantized('lm_head', V * h, `vocab ${V} × hidden ${h}`);
  if (retaining) {
    const R = RETAINING_HIDDEN;
    const headBytes = dtype === 'q8' || dtype === 'q4' ? 2 : bpp; // f16 under q8 / q4: heads are never quantized
    const never = headBytes !== bpp ? ' (f16, never quantized)' : '';
    // fc1 is folded into qkv at load (runtime/fold-heads.ts) and then freed: its parameters, not its bytes, remain
    terms.push({ name: 'retaining_heads_fc1', params: L * R * qkv, bytes: 0, formula: `layers ${L} × fc1 ${R}×${qkv} × 0 (folded at load, then freed)` });
    terms.push({ name: 'retaining_heads_fc2', params: L * cfg.numKvHeads * R, bytes: L * cfg.numKvHeads * R * headBytes, formula: `layers ${L} × fc2 ${cfg.numKvHeads}×${R} × ${headBytes}${never}` });
    terms.push({ name: 'retaining_heads_folded', params: 0, bytes: L * R * h * headBytes, formula: `layers ${L} × fc1·qkv ${R}×${h} × ${headBytes} (derived at load)` });
    if (cfg.qkvBias) terms.push({ name: 'retaining_heads_folded_bias', params: 0, bytes: L * R * 4, formula: `layers ${L} × ${R} × 4 (f32, derived at load)` });
  }
  return terms;
}

/**
 * f32 buffers of one prefill chunk (T tokens). Layers run one after another and reuse these, so they are counted
 * once, not per layer. Logits are computed for the last position only.
 */
export function activationTerms(cfg: ModelConfig, o: ResolvedPlanOptions): MemoryTerm[] {
  const T = Math.min(o.chunk, o.context);
  const qkv = qkvWidth(cfg);
  const qd = cfg.numHeads * cfg.headDim;
  const ropePositions = o.positions === 'compact' ? cacheCapacity(o) : o.context + o.maxNew;
  const half = cfg.rope.rotaryDim / 2;
  const terms: MemoryTerm[] = [
    { name: 'hidden', bytes: 2 * T * cfg.hiddenSize * 4, formula: `2 (residual + normed) × T ${T} × hidden ${cfg.hiddenSize} × 4` },
    { name: 'qkv', bytes: T * qkv * 4, formula: `T ${T} × (H+2KV)·D ${qkv} × 4` },
    { name: 'q_rope', bytes: T * qd * 4, formula: `T ${T} × H·D ${qd} × 4` },
    { name: 'attn_out', bytes: T * qd * 4, formula: `T ${T} × H·D ${qd} × 4` },
    { name: 'mlp', bytes: T * cfg.intermediateSize * 4, formula: `T ${T} × I ${cfg.intermediateSize} × 4 (SwiGLU fused into gate_up)` },
    { name: 'logits', bytes: cfg.vocabSize * 4, formula: `vocab ${cfg.vocabSize} × 4 (last position)` },
    { name: 'rope_table', bytes: ropePositions * half * 8, formula: `positions ${ropePositions} × rotary/2 ${half} × 8 (vec2<f32>)` },
  ];
  if (o.policy !== 'full') {
    const cap = cacheCapacity(o);
    // the bytes the session allocates (evict.ts): the lists, plus one layer's K+V rows when compacting in order
    const layout = evictLayoutFor(o.positions === 'compact', POLICY_TRAITS[o.policy].slotOrder);
    const sb = evictScratchBytes(layout, o.kvDtype, cfg.headDim, cfg.numKvHeads, cap);
    const slots = cfg.numKvHeads * cap;
    terms.push({
      name: 'evict_scratch',
      bytes: sb.rows + sb.meta,
      formula: layout === 'ordered'
        ? `KV ${cfg.numKvHeads} × capacity ${cap} × (K+V row ${sb.rows / slots} + ${sb.meta / slots} meta) (one layer, reused)`
        : `KV ${cfg.numKvHeads} × capacity ${cap} × ${sb.meta / slots} meta (one layer, reused; holes filled in place)`,
    });
  }
  // the prefill attention rotates one layer's keys into an f16 buffer first (compiler/kernels/rotate-keys.ts): always
  // on tensor cores, and for f16 / int8 caches on the f32 path; counted on every device so a plan never undercounts
  const cap = cacheCapacity(o);
  terms.push({
    name: 'rotated_keys',
    bytes: rotatedKeysBytes(cfg, cap),
    formula: `KV ${cfg.numKvHeads} × capacity ${cap} × headDim ${cfg.headDim} × 2 (f16, one layer, reused)`,
  });
  if (o.retainingHeads) {
    terms.push({ name: 'retaining_hidden', bytes: T * RETAINING_HIDDEN * 4, formula: `T ${T} × ${RETAINING_HIDDEN} × 4` });
  }
  return terms;
}

const UNITS: Record<string, number> = {
  '': 1, b: 1, k: 1e3, kb: 1e3, m: 1e6, mb: 1e6, g: 1e9, gb: 1e9, t: 1e12, tb: 1e12,
  ki: 2 ** 10, kib: 2 ** 10, mi: 2 ** 20, mib: 2 ** 20, gi: 2 ** 30, gib: 2 ** 30, ti: 2 ** 40, tib: 2 ** 40,
};

/** '24GB' → 24e9, '24GiB' → 24·2³⁰, '24000MB' → 24e9, '1e9' or a number → bytes. */
export function parseByteSize(s: string | number): number {
  if (typeof s === 'number') {
    if (!(Number.isFinite(s) && s > 0)) throw new Error(`memory size must be a positive number of bytes, got ${s}`);
    return s;
  }
  const m = /^\s*(\d+(?:\.\d+)?(?:e\d+)?)\s*([a-z]*)\s*$/i.exec(s);
  const unit = m ? UNITS[m[2]!.toLowerCase()] : undefined;
  if (!m || unit === undefined || !(Number(m[1]) > 0)) {
    throw new Error(`cannot parse memory size "${s}": use e.g. 24GB (10^9 bytes), 24GiB (2^30 bytes) or 24000MB`);
  }
  return Math.floor(Number(m[1]) * unit);
}

export function formatBytes(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)} GB`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)} MB`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)} KB`;
  return `${Math.round(n)} B`;
}

function intOption(v: number, name: string, min: number): number {
  if (!Number.isInteger(v) || v < min) throw new Error(`--${name} must be an integer >= ${min}, got ${v}`);
  return v;
}

export function resolvePlanOptions(o: PlanOptions): ResolvedPlanOptions {
  const policy = o.policy ?? PLAN_DEFAULTS.policy;
  if (!(POLICIES as readonly string[]).includes(policy)) throw new Error(`unknown policy '${policy}' (expected ${POLICIES.join(', ')})`);
  const dtype = o.dtype ?? PLAN_DEFAULTS.dtype;
  if (!(WEIGHT_DTYPES as readonly string[]).includes(dtype)) throw new Error(`unknown --dtype '${dtype}' (expected ${WEIGHT_DTYPES.join(', ')})`);
  const kvDtype = o.kvDtype ?? PLAN_DEFAULTS.kvDtype;
  if (!(KV_DTYPES as readonly string[]).includes(kvDtype)) throw new Error(`unknown --kv-dtype '${kvDtype}' (expected ${KV_DTYPES.join(', ')})`);
  const positions = o.positions ?? PLAN_DEFAULTS.positions;
  if (positions !== 'compact' && positions !== 'original') throw new Error(`unknown positions '${positions}' (expected compact, original)`);
  return {
    context: intOption(o.context, 'context', 1),
    policy,
    budget: intOption(o.budget ?? PLAN_DEFAULTS.budget, 'budget', 1),
    chunk: intOption(o.chunk ?? PLAN_DEFAULTS.chunk, 'chunk', 1),
    local: intOption(o.local ?? PLAN_DEFAULTS.local, 'local', 0),
    maxNew: intOption(o.maxNew ?? PLAN_DEFAULTS.maxNew, 'max-new', 0),
    dtype,
    kvDtype,
    positions,
    retainingHeads: o.retainingHeads ?? policy === 'locret',
    gpuMemory: o.gpuMemory === undefined ? null : parseByteSize(o.gpuMemory),
  };
}

export function planMemory(cfg: ModelConfig, opts: PlanOptions): MemoryPlan {
  const o = resolvePlanOptions(opts);
  const warnings: string[] = [];
  if (o.context > cfg.maxPositions) {
    warnings.push(`context ${o.context} exceeds the model's max_position_embeddings ${cfg.maxPositions}`);
  }
  if (o.policy !== 'full' && o.budget + o.chunk + o.local >= o.context + o.maxNew) {
    warnings.push(`budget + chunk + local ≥ context: the cache never evicts; policy full would allocate less`);
  }
  const weights = weightTerms(cfg, o.dtype, o.retainingHeads);
  const activations = activationTerms(cfg, o);
  const capacity = cacheCapacity(o);
  const entry = cacheEntryBytes(cfg, o.kvDtype);
  const perLayer = capacity * cfg.numKvHeads * entry;
  const sum = (t: MemoryTerm[]) => t.reduce((a, b) => a + b.bytes, 0);
  const weightsBytes = Math.ceil(sum(weights));
  const cacheBytes = cfg.numLayers * perLayer;
  const actBytes = sum(activations);
  const total = weightsBytes + cacheBytes + actBytes;
  const bpp = bytesPerParam(o.dtype);
  const params = weights.reduce((a, t) => a + (t.params ?? 0), 0);
  return {
    weights_bytes: weightsBytes,
    cache_bytes: cacheBytes,
    activation_bytes: actBytes,
    total_bytes: total,
    gpu_memory_bytes: o.gpuMemory,
    fits: o.gpuMemory === null ? null : total <= o.gpuMemory,
    detail: {
      params,
      bytes_per_param: bpp,
      weights,
      cache: { capacity, bytes_per_entry: entry, per_layer_bytes: perLayer, layers: cfg.numLayers, kv_heads: cfg.numKvHeads },
      activations,
      options: o,
      warnings,
    },
  };
}

/** A plain-text report for the CLI. */
export function formatPlan(p: MemoryPlan): string {
  const o = p.detail.options;
  const c = p.detail.cache;
  const rows = (terms: MemoryTerm[]) => terms.map((t) => `    ${t.name.padEnd(18)} ${formatBytes(t.bytes).padStart(10)}   ${t.formula}`);
  const lines = [
    `policy ${o.policy}, context ${o.context}` + (o.policy === 'full' ? '' : `, budget ${o.budget}, chunk ${o.chunk}, local ${o.local}`) +
      `, max new ${o.maxNew}, weights ${o.dtype}, kv ${o.kvDtype}`,
    `  weights     ${formatBytes(p.weights_bytes).padStart(10)}   (${(p.detail.params / 1e9).toFixed(2)}B params)`,
    ...rows(p.detail.weights),
    `  kv cache    ${formatBytes(p.cache_bytes).padStart(10)}   ${c.layers} layers × ${c.capacity} slots × ${c.kv_heads} KV heads × ${c.bytes_per_entry} B`,
    `  activations ${formatBytes(p.activation_bytes).padStart(10)}`,
    ...rows(p.detail.activations),
    `  total       ${formatBytes(p.total_bytes).padStart(10)}`,
  ];
  if (p.gpu_memory_bytes !== null) {
    lines.push(`  ${p.fits ? 'fits' : 'does NOT fit'} in ${formatBytes(p.gpu_memory_bytes)}`);
  }
  for (const w of p.detail.warnings) lines.push(`  warning: ${w}`);
  return lines.join('\n');
}

/**
 * Plans from a raw HF config.json object. `normalize` turns it into a ModelConfig (runtime/io/hf-config.ts's
 * normalizeConfig); it is a parameter so this module does not depend on the config reader's file layout.
 */
export function planMemoryFromJson(json: unknown, opts: PlanOptions, normalize: (json: unknown) => ModelConfig): MemoryPlan {
  return planMemory(normalize(json), opts);
}
