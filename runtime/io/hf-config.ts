/**
 * Hugging Face `config.json` (+ `generation_config.json`) → the normalized ModelConfig of ir/config.ts.
 * Anything locret would silently compute differently from transformers (other rope types, sliding windows,
 * biases, activations, quantized weights) is refused with a ConfigError naming the key, rather than guessed.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Arch, ModelConfig, RopeConfig } from '../../ir/config.js';
import { ConfigError } from './errors.js';

export { ConfigError } from './errors.js';

type Json = Record<string, unknown>;

const ARCHITECTURES: Record<string, Arch> = {
  LlamaForCausalLM: 'llama',
  Qwen2ForCausalLM: 'qwen2',
  Phi3ForCausalLM: 'phi3',
  MistralForCausalLM: 'mistral',
};

/** Defaults of the transformers config classes for keys a config.json may omit. */
const DEFAULTS: Record<Arch, { rmsNormEps: number; maxPositions: number }> = {
  llama: { rmsNormEps: 1e-6, maxPositions: 2048 },
  qwen2: { rmsNormEps: 1e-6, maxPositions: 32768 },
  phi3: { rmsNormEps: 1e-5, maxPositions: 4096 },
  mistral: { rmsNormEps: 1e-6, maxPositions: 4096 * 32 },
};

const DTYPES: Record<string, ModelConfig['sourceDtype']> = { bfloat16: 'bf16', float16: 'f16', float32: 'f32' };

function readJson(file: string): Json {
  let v: unknown;
  try {
    v = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    throw new ConfigError(`cannot read JSON (${(e as Error).message})`, undefined, file);
  }
  if (!v || typeof v !== 'object' || Array.isArray(v)) throw new ConfigError('not a JSON object', undefined, file);
  return v as Json;
}

/** Read `dir/config.json` and, if present, `dir/generation_config.json`. */
export function readModelConfig(dir: string): ModelConfig {
  const file = path.join(dir, 'config.json');
  if (!fs.existsSync(file)) throw new ConfigError('config.json not found', undefined, dir);
  const gen = path.join(dir, 'generation_config.json');
  try {
    return normalizeConfig(readJson(file), fs.existsSync(gen) ? readJson(gen) : undefined);
  } catch (e) {
    if (e instanceof ConfigError && !e.file) throw new ConfigError(e.message, e.key, file);
    throw e;
  }
}

function int(j: Json, key: string, fallback?: number): number {
  const v = j[key] ?? fallback;
  if (!Number.isSafeInteger(v) || (v as number) <= 0) throw new ConfigError(`"${key}" must be a positive integer, got ${JSON.stringify(j[key])}`, key);
  return v as number;
}
function num(j: Json, key: string, fallback?: number): number {
  const v = j[key] ?? fallback;
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new ConfigError(`"${key}" must be a number, got ${JSON.stringify(j[key])}`, key);
  return v;
}
function ids(v: unknown, key: string): number[] {
  if (v === undefined || v === null) return [];
  const list = Array.isArray(v) ? v : [v];
  if (!list.every((x) => Number.isSafeInteger(x) && x >= 0)) throw new ConfigError(`"${key}" must be a token id or a list of them`, key);
  return list as number[];
}

function detectArch(j: Json): Arch {
  const archs = j.architectures;
  if (Array.isArray(archs) && archs.length > 0) {
    if (archs.length !== 1) throw new ConfigError(`"architectures" lists several: ${archs.join(', ')}`, 'architectures');
    const a = ARCHITECTURES[String(archs[0])];
    if (!a)
      throw new ConfigError(
        `unsupported architecture "${archs[0]}" (supported: ${Object.keys(ARCHITECTURES).join(', ')})`,
        'architectures',
      );
    if (j.model_type !== undefined && j.model_type !== a)
      throw new ConfigError(`"model_type" ${JSON.stringify(j.model_type)} contradicts architecture ${archs[0]}`, 'model_type');
    return a;
  }
  const mt = String(j.model_type);
  if ((Object.values(ARCHITECTURES) as string[]).includes(mt)) return mt as Arch;
  throw new ConfigError(`unsupported model_type "${mt}" and no "architectures"`, 'model_type');
}

function refuseUnsupported(j: Json, arch: Arch, numLayers: number, maxPositions: number): void {
  const act = j.hidden_act ?? 'silu';
  if (act !== 'silu') throw new ConfigError(`"hidden_act" is "${act}"; only silu (SwiGLU) is implemented`, 'hidden_act');
  if (j.quantization_config) throw new ConfigError('quantized checkpoints are not supported', 'quantization_config');
  if (arch !== 'qwen2' && j.attention_bias === true)
    throw new ConfigError('"attention_bias": true (q/k/v/o biases) is not supported for this architecture', 'attention_bias');
  if (j.mlp_bias === true) throw new ConfigError('"mlp_bias": true is not supported', 'mlp_bias');
  if (Array.isArray(j.layer_types) && j.layer_types.some((t) => t !== 'full_attention'))
    throw new ConfigError('"layer_types" contains non-full attention layers (sliding window is not implemented)', 'layer_types');
  const sw = j.sliding_window;
  const windowBinds = typeof sw === 'number' && sw < maxPositions;
  if (arch === 'qwen2') {
    // transformers: layer l slides iff use_sliding_window && l >= max_window_layers
    const mwl = typeof j.max_window_layers === 'number' ? j.max_window_layers : 0;
    if (j.use_sliding_window === true && windowBinds && mwl < numLayers)
      throw new ConfigError(
        `"use_sliding_window" is true with sliding_window ${sw} on layers >= ${mwl}: attention would be windowed, which locret does not implement`,
        'use_sliding_window',
      );
  } else if (windowBinds) {
    // Mistral v0.1 (4096) and Phi-3-4k (2047) restrict attention to a window; HF masks it, we would not
    throw new ConfigError(
      `"sliding_window" ${sw} is smaller than max_position_embeddings ${maxPositions}: windowed attention is not implemented`,
      'sliding_window',
    );
  }
}

/** Rope settings in either spelling: classic rope_theta + rope_scaling, or transformers-5 rope_parameters. */
function ropeSettings(j: Json): { theta: number; params: Json; key: string } {
  const rp = j.rope_parameters;
  if (rp && typeof rp === 'object') {
    const p = rp as Json;
    if (p.rope_theta === undefined && Object.values(p).some((v) => v && typeof v === 'object' && !Array.isArray(v)))
      throw new ConfigError('per-layer-type "rope_parameters" are not supported', 'rope_parameters');
    return { theta: num(p, 'rope_theta', (j.rope_theta as number) ?? 10000), params: p, key: 'rope_parameters' };
  }
  const rs = j.rope_scaling;
  return { theta: num(j, 'rope_theta', 10000), params: rs && typeof rs === 'object' ? (rs as Json) : {}, key: 'rope_scaling' };
}

function normalizeRope(j: Json, headDim: number, maxPositions: number): RopeConfig {
  const { theta, params, key } = ropeSettings(j);
  const prf = num(params.partial_rotary_factor !== undefined ? params : j, 'partial_rotary_factor', 1);
  const rotaryDim = Math.floor(headDim * prf);
  if (rotaryDim <= 0 || rotaryDim % 2 !== 0 || rotaryDim > headDim)
    throw new ConfigError(`partial_rotary_factor ${prf} gives rotary dim ${rotaryDim} (must be even, 2..${headDim})`, 'partial_rotary_factor');
  const type = String(params.rope_type ?? params.type ?? 'default');
  const k = (name: string) => `${key}.${name}`;
  switch (type) {
    case 'default':
    case 'none':
      return { kind: 'default', theta, rotaryDim };
    case 'llama3': {
      const need = (name: string) => {
        const v = params[name];
        if (typeof v !== 'number' || !(v > 0)) throw new ConfigError(`llama3 rope needs positive "${name}"`, k(name));
        return v;
      };
      return {
        kind: 'llama3', theta, rotaryDim,
        factor: need('factor'),
        lowFreqFactor: need('low_freq_factor'),
        highFreqFactor: need('high_freq_factor'),
        originalMaxPositions: need('original_max_position_embeddings'),
      };
    }
    case 'longrope':
    case 'su':
      return longrope(j, params, key, theta, rotaryDim, maxPositions);
    default:
      throw new ConfigError(
        `rope type "${type}" is not implemented (supported: default, llama3, longrope/su); results would be wrong`,
        k(params.rope_type !== undefined ? 'rope_type' : 'type'),
      );
  }
}

/** Mirrors transformers `_compute_longrope_parameters`. */
function longrope(j: Json, params: Json, key: string, theta: number, rotaryDim: number, maxPositions: number): RopeConfig {
  const factors = (name: string) => {
    const v = params[name];
    if (!Array.isArray(v) || v.length !== rotaryDim / 2 || !v.every((x) => typeof x === 'number' && x > 0))
      throw new ConfigError(`longrope "${name}" must list ${rotaryDim / 2} positive numbers (rotary dim / 2)`, `${key}.${name}`);
    return v as number[];
  };
  const shortFactor = factors('short_factor');
  const longFactor = factors('long_factor');
  // Phi-3 keeps the pretraining context top-level and derives the scale from the two lengths, not from "factor"
  const orig = j.original_max_position_embeddings ?? params.original_max_position_embeddings;
  let originalMaxPositions: number;
  let factor: number;
  if (orig !== undefined && orig !== null) {
    if (!Number.isSafeInteger(orig) || (orig as number) <= 0)
      throw new ConfigError('"original_max_position_embeddings" must be a positive integer', 'original_max_position_embeddings');
    originalMaxPositions = orig as number;
    factor = maxPositions / originalMaxPositions;
  } else {
    originalMaxPositions = maxPositions;
    factor = typeof params.factor === 'number' ? params.factor : 1;
  }
  let attentionFactor: number;
  if (typeof params.attention_factor === 'number') attentionFactor = params.attention_factor;
  else attentionFactor = factor <= 1 ? 1 : Math.sqrt(1 + Math.log(factor) / Math.log(originalMaxPositions));
  return { kind: 'longrope', theta, rotaryDim, shortFactor, longFactor, originalMaxPositions, maxPositions, attentionFactor };
}

/** Normalize a parsed config.json (and optional generation_config.json). */
export function normalizeConfig(json: Json, genJson?: Json): ModelConfig {
  const arch = detectArch(json);
  const d = DEFAULTS[arch];
  const hiddenSize = int(json, 'hidden_size');
  const numHeads = int(json, 'num_attention_heads');
  const numKvHeads = int(json, 'num_key_value_heads', numHeads);
  if (numHeads % numKvHeads !== 0)
    throw new ConfigError(`num_attention_heads ${numHeads} is not a multiple of num_key_value_heads ${numKvHeads}`, 'num_key_value_heads');
  if (json.head_dim == null && hiddenSize % numHeads !== 0)
    throw new ConfigError(`hidden_size ${hiddenSize} is not divisible by num_attention_heads ${numHeads}`, 'hidden_size');
  const headDim = json.head_dim == null ? hiddenSize / numHeads : int(json, 'head_dim');
  const numLayers = int(json, 'num_hidden_layers');
  const maxPositions = int(json, 'max_position_embeddings', d.maxPositions);
  refuseUnsupported(json, arch, numLayers, maxPositions);

  const dtypeKey = json.torch_dtype !== undefined ? 'torch_dtype' : 'dtype';
  const dt = json[dtypeKey] ?? 'float32';
  const sourceDtype = DTYPES[String(dt)];
  if (!sourceDtype) throw new ConfigError(`"${dtypeKey}" ${JSON.stringify(dt)} is not one of float32, float16, bfloat16`, dtypeKey);

  const gen = genJson ?? {};
  const bos = gen.bos_token_id ?? json.bos_token_id;
  const eosKey = gen.eos_token_id != null ? 'generation_config.eos_token_id' : 'eos_token_id';
  return {
    arch,
    hiddenSize,
    intermediateSize: int(json, 'intermediate_size'),
    numLayers,
    numHeads,
    numKvHeads,
    headDim,
    vocabSize: int(json, 'vocab_size'),
    rmsNormEps: num(json, 'rms_norm_eps', d.rmsNormEps),
    tieWordEmbeddings: json.tie_word_embeddings === true,
    qkvBias: arch === 'qwen2',
    maxPositions,
    rope: normalizeRope(json, headDim, maxPositions),
    bosTokenId: ids(bos, 'bos_token_id')[0] ?? null,
    eosTokenIds: ids(gen.eos_token_id ?? json.eos_token_id, eosKey),
    sourceDtype,
  };
}
