import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError } from '../runtime/io/errors.js';
import { normalizeConfig, readModelConfig } from '../runtime/io/hf-config.js';

const MODELS = path.resolve(__dirname, '../../shared/models');

/** meta-llama/Llama-3.1-8B-Instruct config.json + generation_config.json (public values) */
const LLAMA31_8B = {
  architectures: ['LlamaForCausalLM'], attention_bias: false, attention_dropout: 0.0, bos_token_id: 128000,
  eos_token_id: [128001, 128008, 128009], hidden_act: 'silu', hidden_size: 4096, initializer_range: 0.02,
  intermediate_size: 14336, max_position_embeddings: 131072, mlp_bias: false, model_type: 'llama',
  num_attention_heads: 32, num_hidden_layers: 32, num_key_value_heads: 8, pretraining_tp: 1, rms_norm_eps: 1e-5,
  rope_scaling: { factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_position_embeddings: 8192, rope_type: 'llama3' },
  rope_theta: 500000.0, tie_word_embeddings: false, torch_dtype: 'bfloat16', transformers_version: '4.42.3',
  use_cache: true, vocab_size: 128256,
};
const LLAMA31_8B_GEN = { bos_token_id: 128000, do_sample: true, eos_token_id: [128001, 128008, 128009], temperature: 0.6, top_p: 0.9 };

/**
 * microsoft/Phi-3-mini-128k-instruct config.json: structural values as published; the 48 short/long factors are
 * stand-ins of the right length (the normalizer only checks count and sign).
 */
const PHI3_MINI_128K = {
  architectures: ['Phi3ForCausalLM'], attention_bias: false, attention_dropout: 0.0, bos_token_id: 1, embd_pdrop: 0.0,
  eos_token_id: 32000, hidden_act: 'silu', hidden_size: 3072, initializer_range: 0.02, intermediate_size: 8192,
  max_position_embeddings: 131072, model_type: 'phi3', num_attention_heads: 32, num_hidden_layers: 32,
  num_key_value_heads: 32, original_max_position_embeddings: 4096, pad_token_id: 32000, resid_pdrop: 0.0,
  rms_norm_eps: 1e-5,
  rope_scaling: {
    long_factor: Array.from({ length: 48 }, (_, i) => 1 + i * 0.5),
    short_factor: Array.from({ length: 48 }, (_, i) => 1 + i * 0.01),
    type: 'longrope',
  },
  rope_theta: 10000.0, sliding_window: 262144, tie_word_embeddings: false, torch_dtype: 'bfloat16', use_cache: true,
  vocab_size: 32064,
};
const PHI3_GEN = { bos_token_id: 1, eos_token_id: [32000, 32001, 32007], pad_token_id: 32000 };

const refuse = (json: object, key: string, msg: RegExp) => {
  let err: unknown;
  try {
    normalizeConfig(json as Record<string, unknown>);
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(ConfigError);
  expect((err as ConfigError).key).toBe(key);
  expect((err as Error).message).toMatch(msg);
};

describe('hf-config', () => {
  it('tiny-llama: llama3 rope, untied, bf16', () => {
    const c = readModelConfig(path.join(MODELS, 'tiny-llama'));
    expect(c).toEqual({
      arch: 'llama', hiddenSize: 384, intermediateSize: 1024, numLayers: 8, numHeads: 6, numKvHeads: 2, headDim: 64,
      vocabSize: 4096, rmsNormEps: 1e-5, tieWordEmbeddings: false, qkvBias: false, maxPositions: 16384,
      rope: { kind: 'llama3', theta: 500000, rotaryDim: 64, factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositions: 2048 },
      bosTokenId: 0, eosTokenIds: [1], sourceDtype: 'bf16',
    });
  });

  it('tiny-phi3: longrope with top-level original_max_position_embeddings', () => {
    const c = readModelConfig(path.join(MODELS, 'tiny-phi3'));
    expect(c).toMatchObject({ arch: 'phi3', hiddenSize: 256, numHeads: 4, numKvHeads: 4, headDim: 64, qkvBias: false, maxPositions: 4096, sourceDtype: 'bf16' });
    if (c.rope.kind !== 'longrope') throw new Error('expected longrope');
    expect(c.rope.shortFactor.length).toBe(32);
    expect(c.rope.longFactor[31]).toBe(16.5);
    expect(c.rope.originalMaxPositions).toBe(512);
    expect(c.rope.maxPositions).toBe(4096);
    expect(c.rope.attentionFactor).toBeCloseTo(Math.sqrt(1 + Math.log(8) / Math.log(512)), 15);
  });

  it('tiny-qwen2: transformers-5 rope_parameters, tied, f16, biases', () => {
    const c = readModelConfig(path.join(MODELS, 'tiny-qwen2'));
    expect(c).toMatchObject({
      arch: 'qwen2', hiddenSize: 256, intermediateSize: 640, numLayers: 3, numHeads: 8, numKvHeads: 2, headDim: 32,
      rmsNormEps: 1e-6, tieWordEmbeddings: true, qkvBias: true, sourceDtype: 'f16', eosTokenIds: [1],
      rope: { kind: 'default', theta: 1e6, rotaryDim: 32 },
    });
  });

  it('Llama-3.1-8B', () => {
    const c = normalizeConfig(LLAMA31_8B, LLAMA31_8B_GEN);
    expect(c).toMatchObject({ numKvHeads: 8, headDim: 128, vocabSize: 128256, maxPositions: 131072, bosTokenId: 128000, eosTokenIds: [128001, 128008, 128009] });
    expect(c.rope).toEqual({ kind: 'llama3', theta: 500000, rotaryDim: 128, factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositions: 8192 });
  });

  it('Phi-3-mini-128K: attention factor as transformers computes it; generation_config eos wins', () => {
    const c = normalizeConfig(PHI3_MINI_128K, PHI3_GEN);
    expect(c.eosTokenIds).toEqual([32000, 32001, 32007]);
    expect(c.headDim).toBe(96);
    if (c.rope.kind !== 'longrope') throw new Error('expected longrope');
    expect(c.rope.attentionFactor).toBeCloseTo(Math.sqrt(1 + Math.log(32) / Math.log(4096)), 15);
    expect(c.rope.attentionFactor).toBeCloseTo(1.1902380714238083, 12);
    // `su` alias, explicit attention_factor, partial rotary
    const su = normalizeConfig({ ...PHI3_MINI_128K, partial_rotary_factor: 0.5, rope_scaling: { ...PHI3_MINI_128K.rope_scaling, type: 'su', short_factor: Array(24).fill(1), long_factor: Array(24).fill(2), attention_factor: 1.5 } });
    expect(su.rope).toMatchObject({ kind: 'longrope', rotaryDim: 48, attentionFactor: 1.5 });
    // no scale → factor 1
    const same = normalizeConfig({ ...PHI3_MINI_128K, max_position_embeddings: 4096 });
    expect(same.rope.kind === 'longrope' && same.rope.attentionFactor).toBe(1);
  });

  it('defaults: head_dim, kv heads, eos list from config, mistral', () => {
    const c = normalizeConfig({ architectures: ['MistralForCausalLM'], model_type: 'mistral', hidden_size: 64, intermediate_size: 128, num_hidden_layers: 2, num_attention_heads: 4, vocab_size: 100, eos_token_id: [5, 6], sliding_window: null, head_dim: null });
    expect(c).toMatchObject({ arch: 'mistral', headDim: 16, numKvHeads: 4, eosTokenIds: [5, 6], bosTokenId: null, rmsNormEps: 1e-6, sourceDtype: 'f32', rope: { kind: 'default', theta: 10000, rotaryDim: 16 } });
  });

  it('refuses what it would compute wrong, naming the key', () => {
    refuse({ ...LLAMA31_8B, architectures: ['GPT2LMHeadModel'] }, 'architectures', /unsupported architecture "GPT2LMHeadModel"/);
    refuse({ ...LLAMA31_8B, architectures: undefined, model_type: 'gemma' }, 'model_type', /unsupported model_type "gemma"/);
    refuse({ ...LLAMA31_8B, rope_scaling: { rope_type: 'linear', factor: 2 } }, 'rope_scaling.rope_type', /rope type "linear" is not implemented/);
    refuse({ ...LLAMA31_8B, rope_scaling: { type: 'dynamic', factor: 2 } }, 'rope_scaling.type', /"dynamic"/);
    refuse({ ...LLAMA31_8B, rope_scaling: null, rope_parameters: { rope_type: 'yarn', rope_theta: 1e4, factor: 4 } }, 'rope_parameters.rope_type', /"yarn"/);
    refuse({ ...LLAMA31_8B, rope_scaling: { rope_type: 'llama3', factor: 8 } }, 'rope_scaling.low_freq_factor', /llama3/);
    refuse({ ...LLAMA31_8B, hidden_act: 'gelu' }, 'hidden_act', /only silu/);
    refuse({ ...LLAMA31_8B, attention_bias: true }, 'attention_bias', /not supported/);
    refuse({ ...LLAMA31_8B, mlp_bias: true }, 'mlp_bias', /not supported/);
    refuse({ ...LLAMA31_8B, quantization_config: { quant_method: 'gptq' } }, 'quantization_config', /quantized/);
    refuse({ ...LLAMA31_8B, torch_dtype: 'float8_e4m3fn' }, 'torch_dtype', /float8/);
    refuse({ ...LLAMA31_8B, num_key_value_heads: 5 }, 'num_key_value_heads', /multiple/);
    refuse({ ...LLAMA31_8B, hidden_size: undefined }, 'hidden_size', /positive integer/);
    refuse({ ...PHI3_MINI_128K, sliding_window: 2047 }, 'sliding_window', /2047 is smaller than max_position_embeddings.*windowed attention/);
    refuse({ ...PHI3_MINI_128K, rope_scaling: { ...PHI3_MINI_128K.rope_scaling, short_factor: [1, 2] } }, 'rope_scaling.short_factor', /48 positive numbers/);
    const mistral = { architectures: ['MistralForCausalLM'], model_type: 'mistral', hidden_size: 4096, intermediate_size: 14336, num_hidden_layers: 32, num_attention_heads: 32, num_key_value_heads: 8, vocab_size: 32000, max_position_embeddings: 32768, sliding_window: 4096 };
    refuse(mistral, 'sliding_window', /4096 is smaller than max_position_embeddings 32768/);
    expect(normalizeConfig({ ...mistral, sliding_window: 32768 }).arch).toBe('mistral');
    const qwen = { architectures: ['Qwen2ForCausalLM'], model_type: 'qwen2', hidden_size: 64, intermediate_size: 128, num_hidden_layers: 4, num_attention_heads: 4, vocab_size: 100, max_position_embeddings: 32768, sliding_window: 4096, max_window_layers: 2 };
    expect(normalizeConfig({ ...qwen, use_sliding_window: false }).qkvBias).toBe(true);
    refuse({ ...qwen, use_sliding_window: true }, 'use_sliding_window', /attention would be windowed/);
    expect(normalizeConfig({ ...qwen, use_sliding_window: true, max_window_layers: 4 }).arch).toBe('qwen2');
    refuse({ ...qwen, layer_types: ['full_attention', 'sliding_attention', 'full_attention', 'full_attention'] }, 'layer_types', /sliding window/);
    expect(() => readModelConfig(path.join(MODELS, '..'))).toThrow(/config\.json not found/);
  });
});
