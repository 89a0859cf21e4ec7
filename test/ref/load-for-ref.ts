/**
 * A deliberately tiny, self-contained checkpoint loader for the CPU references (independent of runtime/io so the
 * references do not share bugs with the code they check): safetensors (single or sharded) → Float32Array by HF
 * name, a minimal config.json → ModelConfig mapping for the fixture families, and the HF → canonical weight map.
 */
import { readFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import type { ModelConfig, RopeConfig, Arch } from '../../ir/config.js';

interface StEntry { dtype: string; shape: number[]; data_offsets: [number, number] }

/** One parsed safetensors file: header + raw bytes. */
export class RefSafetensors {
  readonly entries = new Map<string, StEntry>();
  private readonly buf: Buffer;
  private readonly dataStart: number;
  constructor(readonly path: string) {
    this.buf = readFileSync(path);
    const n = Number(this.buf.readBigUInt64LE(0));
    const header = JSON.parse(this.buf.subarray(8, 8 + n).toString('utf8')) as Record<string, unknown>;
    this.dataStart = 8 + n;
    for (const [k, v] of Object.entries(header)) if (k !== '__metadata__') this.entries.set(k, v as StEntry);
  }
  shape(name: string): number[] {
    const e = this.entries.get(name);
    if (!e) throw new Error(`${this.path}: no tensor ${name}`);
    return e.shape;
  }
  /** values widened to f32 exactly (bf16: high half of an f32; f16: IEEE half) */
  f32(name: string): Float32Array {
    const e = this.entries.get(name);
    if (!e) throw new Error(`${this.path}: no tensor ${name}`);
    const [a, b] = e.data_offsets;
    const bytes = this.buf.subarray(this.dataStart + a, this.dataStart + b);
    const n = e.shape.reduce((x, y) => x * y, 1);
    const out = new Float32Array(n);
    if (e.dtype === 'F32') {
      for (let i = 0; i < n; i++) out[i] = bytes.readFloatLE(4 * i);
    } else if (e.dtype === 'BF16') {
      const u = new Uint32Array(out.buffer);
      for (let i = 0; i < n; i++) u[i] = bytes.readUInt16LE(2 * i) << 16;
    } else if (e.dtype === 'F16') {
      for (let i = 0; i < n; i++) out[i] = halfToFloat(bytes.readUInt16LE(2 * i));
    } else {
      throw new Error(`${this.path}: ${name} has unsupported dtype ${e.dtype}`);
    }
    return out;
  }
}

import { f16BitsToF32 as halfToFloat } from './f16.js';
export { halfToFloat };

/** All tensors of a model directory by HF name (single file or sharded with an index). */
export function loadHfTensors(dir: string): Map<string, () => Float32Array> {
  const files: string[] = [];
  const idx = join(dir, 'model.safetensors.index.json');
  if (existsSync(idx)) {
    const wm = (JSON.parse(readFileSync(idx, 'utf8')) as { weight_map: Record<string, string> }).weight_map;
    for (const f of new Set(Object.values(wm))) files.push(join(dir, f));
  } else {
    files.push(join(dir, 'model.safetensors'));
  }
  const out = new Map<string, () => Float32Array>();
  for (const f of files) {
    const st = new RefSafetensors(f);
    for (const name of st.entries.keys()) out.set(name, () => st.f32(name));
  }
  return out;
}

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

/** Minimal HF config.json → ModelConfig for llama / qwen2 / phi3 / mistral (classic and transformers-5 spellings). */
export function refConfig(dir: string): ModelConfig {
  const c = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as Json;
  let gen: Json = {};
  if (existsSync(join(dir, 'generation_config.json'))) gen = JSON.parse(readFileSync(join(dir, 'generation_config.json'), 'utf8')) as Json;
  const arch = c.model_type as Arch;
  const numHeads = c.num_attention_heads as number;
  const headDim = (c.head_dim as number | undefined) ?? (c.hidden_size as number) / numHeads;
  const rp: Json = c.rope_parameters ?? c.rope_scaling ?? {};
  const theta = (c.rope_theta ?? rp.rope_theta ?? 10000) as number;
  const prf = (c.partial_rotary_factor ?? rp.partial_rotary_factor ?? 1) as number;
  const rotaryDim = Math.floor(headDim * prf);
  const type = (rp.rope_type ?? rp.type ?? 'default') as string;
  const maxPositions = c.max_position_embeddings as number;
  let rope: RopeConfig;
  if (type === 'default') {
    rope = { kind: 'default', theta, rotaryDim };
  } else if (type === 'llama3') {
    rope = {
      kind: 'llama3', theta, rotaryDim, factor: rp.factor, lowFreqFactor: rp.low_freq_factor,
      highFreqFactor: rp.high_freq_factor, originalMaxPositions: rp.original_max_position_embeddings,
    };
  } else if (type === 'longrope' || type === 'su') {
    const orig = (c.original_max_position_embeddings ?? rp.original_max_position_embeddings ?? maxPositions) as number;
    // HF: when the config has original_max_position_embeddings, factor = max / original (rope_scaling.factor ignored)
    const factor = c.original_max_position_embeddings !== undefined ? maxPositions / orig : ((rp.factor ?? 1) as number);
    const attentionFactor = (rp.attention_factor as number | undefined)
      ?? (factor <= 1 ? 1 : Math.sqrt(1 + Math.log(factor) / Math.log(orig)));
    rope = {
      kind: 'longrope', theta, rotaryDim, shortFactor: rp.short_factor, longFactor: rp.long_factor,
      originalMaxPositions: orig, maxPositions, attentionFactor,
    };
  } else {
    throw new Error(`unsupported rope type ${type}`);
  }
  const eosRaw = gen.eos_token_id ?? c.eos_token_id;
  const eos = eosRaw === undefined || eosRaw === null ? [] : Array.isArray(eosRaw) ? eosRaw : [eosRaw];
  const dt = (c.torch_dtype ?? c.dtype ?? 'float32') as string;
  return {
    arch,
    hiddenSize: c.hidden_size,
    intermediateSize: c.intermediate_size,
    numLayers: c.num_hidden_layers,
    numHeads,
    numKvHeads: c.num_key_value_heads ?? numHeads,
    headDim,
    vocabSize: c.vocab_size,
    rmsNormEps: c.rms_norm_eps,
    tieWordEmbeddings: c.tie_word_embeddings ?? false,
    qkvBias: arch === 'qwen2' || c.attention_bias === true,
    maxPositions,
    rope,
    bosTokenId: gen.bos_token_id ?? c.bos_token_id ?? null,
    eosTokenIds: eos,
    sourceDtype: dt === 'bfloat16' ? 'bf16' : dt === 'float16' ? 'f16' : 'f32',
  };
}

function concat(parts: Float32Array[]): Float32Array {
  const out = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) { out.set(p, o); o += p.length; }
  return out;
}

/**
 * Canonical-name weight getter over an HF directory (cached). Optional retaining heads file (safetensors with the
 * official `model.layers.{i}.self_attn.fc1/fc2.weight` names) adds `L{i}.fc1` / `L{i}.fc2`.
 */
export function refWeights(dir: string, cfg: ModelConfig, retainingHeads?: string): (name: string) => Float32Array {
  const hf = loadHfTensors(dir);
  const rh = retainingHeads ? new RefSafetensors(retainingHeads) : null;
  const cache = new Map<string, Float32Array>();
  const get = (n: string): Float32Array => {
    const f = hf.get(n);
    if (!f) throw new Error(`${dir}: missing ${n}`);
    return f();
  };
  const resolve = (name: string): Float32Array => {
    if (name === 'embed') return get('model.embed_tokens.weight');
    if (name === 'final_norm') return get('model.norm.weight');
    if (name === 'lm_head') return cfg.tieWordEmbeddings ? get('model.embed_tokens.weight') : get('lm_head.weight');
    const m = /^L(\d+)\.(.+)$/.exec(name);
    if (!m) throw new Error(`unknown canonical weight ${name}`);
    const p = `model.layers.${m[1]}.`;
    switch (m[2]) {
      case 'attn_norm': return get(p + 'input_layernorm.weight');
      case 'mlp_norm': return get(p + 'post_attention_layernorm.weight');
      case 'o': return get(p + 'self_attn.o_proj.weight');
      case 'down': return get(p + 'mlp.down_proj.weight');
      case 'qkv':
        if (cfg.arch === 'phi3') return get(p + 'self_attn.qkv_proj.weight');
        return concat(['q', 'k', 'v'].map((x) => get(`${p}self_attn.${x}_proj.weight`)));
      case 'qkv_bias':
        return concat(['q', 'k', 'v'].map((x) => get(`${p}self_attn.${x}_proj.bias`)));
      case 'gate_up':
        if (cfg.arch === 'phi3') return get(p + 'mlp.gate_up_proj.weight');
        return concat([get(p + 'mlp.gate_proj.weight'), get(p + 'mlp.up_proj.weight')]);
      case 'fc1':
      case 'fc2':
        if (!rh) throw new Error(`no retaining heads loaded for ${name}`);
        return rh.f32(`${p}self_attn.${m[2]}.weight`);
      default:
        throw new Error(`unknown canonical weight ${name}`);
    }
  };
  return (name: string) => {
    let w = cache.get(name);
    if (!w) { w = resolve(name); cache.set(name, w); }
    return w;
  };
}
