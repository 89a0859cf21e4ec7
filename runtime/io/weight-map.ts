/**
 * HF tensor names → locret's canonical names (ir/config.ts). q/k/v are stacked into one `qkv` matrix and
 * gate/up into `gate_up` so every family lowers to the same fused kernels. Shapes are checked against the config
 * when the map is built (from headers only); data is read and converted only when a tensor's `load()` is called.
 */
import * as path from 'node:path';
import { qkvWidth, RETAINING_HIDDEN, weightName, type ModelConfig } from '../../ir/config.js';
import { CheckpointError } from './errors.js';
import { openSafetensors } from './safetensors.js';
import type { StoredDtype, TensorStore } from './tensor-store.js';
import { openTorchFile } from './torch-pickle.js';

export interface CanonicalTensor {
  readonly name: string;
  readonly shape: readonly number[];
  /** the widest stored dtype among the source tensors (f32 > f16/bf16) */
  readonly sourceDtype: StoredDtype;
  /** HF tensors it is built from, in row order */
  readonly sources: readonly string[];
  /** read, widen to f32 and (for fused tensors) concatenate rows */
  load(): Float32Array;
}

const eq = (a: readonly number[], b: readonly number[]) => a.length === b.length && a.every((x, i) => x === b[i]);

/** Checks one HF tensor's presence and shape; errors name tensor, file, expected and actual shape. */
function expectTensor(store: TensorStore, name: string, shape: number[], why: string): void {
  const src = store.source ?? 'checkpoint';
  if (!store.has(name)) throw new CheckpointError(`${src}: no tensor "${name}" (${why})`, store.source, name);
  const info = store.info(name);
  if (!eq(info.shape, shape))
    throw new CheckpointError(
      `${info.file}: tensor "${name}" has shape [${info.shape}], expected [${shape}] (${why}); config and checkpoint disagree`,
      info.file,
      name,
    );
}

/** Row-concatenation of source tensors (row-major (out, in) matrices or vectors concatenate as flat arrays). */
function fused(store: TensorStore, name: string, shape: number[], sources: string[]): CanonicalTensor {
  const dtypes = sources.map((s) => {
    const d = store.info(s).dtype;
    if (d === 'q8' || d === 'q4') throw new CheckpointError(`${store.source}: tensor "${s}" is ${d}; checkpoints hold f32, f16 or bf16`, store.source, s);
    return d;
  });
  const sourceDtype: StoredDtype = dtypes.includes('f32') ? 'f32' : dtypes[0];
  return {
    name,
    shape,
    sourceDtype,
    sources,
    load() {
      if (sources.length === 1) return store.readF32(sources[0]);
      const out = new Float32Array(shape.reduce((a, b) => a * b, 1));
      let at = 0;
      for (const s of sources) {
        const part = store.readF32(s);
        out.set(part, at);
        at += part.length;
      }
      return out;
    },
  };
}

/** Some exports drop the leading `model.`; detect it once from the embedding's name. */
function modelPrefix(store: TensorStore): string {
  if (store.has('model.embed_tokens.weight')) return 'model.';
  if (store.has('embed_tokens.weight')) return '';
  throw new CheckpointError(`${store.source ?? 'checkpoint'}: no "model.embed_tokens.weight": not a supported causal LM checkpoint`, store.source);
}

/**
 * Build the lazy canonical weight map for a model. Phi-3 ships `qkv_proj` (rows q, k, v: transformers slices
 * `[:H*D]`, `[H*D : H*D + KV*D]`, rest) and `gate_up_proj` (transformers `chunk(2)`: gate first, then up), which
 * already are the canonical row orders, so they pass through unchanged.
 */
export function canonicalWeights(cfg: ModelConfig, store: TensorStore): Map<string, CanonicalTensor> {
  const m = new Map<string, CanonicalTensor>();
  const p = modelPrefix(store);
  const H = cfg.hiddenSize;
  const add = (name: string, shape: number[], parts: [string, number[]][], why: string) => {
    for (const [src, s] of parts) expectTensor(store, src, s, why);
    m.set(name, fused(store, name, shape, parts.map(([s]) => s)));
  };
  const qDim = cfg.numHeads * cfg.headDim;
  const kvDim = cfg.numKvHeads * cfg.headDim;
  const I = cfg.intermediateSize;

  add(weightName.embed, [cfg.vocabSize, H], [[`${p}embed_tokens.weight`, [cfg.vocabSize, H]]], 'vocab_size x hidden_size');
  for (let l = 0; l < cfg.numLayers; l++) {
    const L = `${p}layers.${l}.`;
    add(weightName.attnNorm(l), [H], [[`${L}input_layernorm.weight`, [H]]], 'hidden_size');
    add(weightName.mlpNorm(l), [H], [[`${L}post_attention_layernorm.weight`, [H]]], 'hidden_size');
    add(weightName.o(l), [H, qDim], [[`${L}self_attn.o_proj.weight`, [H, qDim]]], 'hidden_size x heads*head_dim');
    add(weightName.down(l), [H, I], [[`${L}mlp.down_proj.weight`, [H, I]]], 'hidden_size x intermediate_size');
    if (cfg.arch === 'phi3') {
      add(weightName.qkv(l), [qkvWidth(cfg), H], [[`${L}self_attn.qkv_proj.weight`, [qkvWidth(cfg), H]]], 'fused q,k,v rows');
      add(weightName.gateUp(l), [2 * I, H], [[`${L}mlp.gate_up_proj.weight`, [2 * I, H]]], 'fused gate,up rows');
    } else {
      const a = `${L}self_attn.`;
      add(weightName.qkv(l), [qkvWidth(cfg), H], [
        [`${a}q_proj.weight`, [qDim, H]],
        [`${a}k_proj.weight`, [kvDim, H]],
        [`${a}v_proj.weight`, [kvDim, H]],
      ], 'heads/kv_heads x head_dim by hidden_size');
      if (cfg.qkvBias)
        add(weightName.qkvBias(l), [qkvWidth(cfg)], [
          [`${a}q_proj.bias`, [qDim]],
          [`${a}k_proj.bias`, [kvDim]],
          [`${a}v_proj.bias`, [kvDim]],
        ], 'q/k/v biases');
      add(weightName.gateUp(l), [2 * I, H], [
        [`${L}mlp.gate_proj.weight`, [I, H]],
        [`${L}mlp.up_proj.weight`, [I, H]],
      ], 'intermediate_size x hidden_size');
    }
    // a bias we would ignore changes the result: refuse instead
    for (const b of ['self_attn.o_proj.bias', 'mlp.down_proj.bias', 'mlp.gate_proj.bias', 'mlp.up_proj.bias', ...(cfg.qkvBias ? [] : ['self_attn.q_proj.bias', 'self_attn.qkv_proj.bias'])])
      if (store.has(L + b)) throw new CheckpointError(`${store.info(L + b).file}: has "${L + b}" but the config implies no such bias`, store.info(L + b).file, L + b);
  }
  if (store.has(`${p}layers.${cfg.numLayers}.input_layernorm.weight`))
    throw new CheckpointError(`${store.source ?? 'checkpoint'}: has more layers than num_hidden_layers ${cfg.numLayers}`, store.source);
  add(weightName.finalNorm, [H], [[`${p}norm.weight`, [H]]], 'hidden_size');
  if (!cfg.tieWordEmbeddings) add(weightName.lmHead, [cfg.vocabSize, H], [['lm_head.weight', [cfg.vocabSize, H]]], 'untied lm_head');
  return m;
}

const HEAD_NAME = /^(?:base_model\.)?(?:model\.)*layers\.(\d+)\.self_attn\.(fc[12])\.(weight|bias)$/;

/**
 * Locret retaining heads (`model.layers.{i}.self_attn.fc1.weight` [1024, (H+2KV)*D], `fc2.weight` [KV, 1024])
 * from a `.safetensors` or torch `.bin` file, as canonical `L{i}.fc1` / `L{i}.fc2`. Every layer must have both.
 */
export function loadRetainingHeads(file: string, cfg: ModelConfig): Map<string, CanonicalTensor> {
  const ext = path.extname(file).toLowerCase();
  const store = ext === '.safetensors' ? openSafetensors(file) : openTorchFile(file);
  const found = new Map<string, string>();
  for (const n of store.names()) {
    const mt = HEAD_NAME.exec(n);
    if (!mt) continue;
    if (mt[3] === 'bias') throw new CheckpointError(`${file}: "${n}": retaining heads with biases are not supported`, file, n);
    const canon = mt[2] === 'fc1' ? weightName.fc1(Number(mt[1])) : weightName.fc2(Number(mt[1]));
    if (found.has(canon)) throw new CheckpointError(`${file}: both "${found.get(canon)}" and "${n}" map to ${canon}`, file, n);
    found.set(canon, n);
  }
  const m = new Map<string, CanonicalTensor>();
  for (let l = 0; l < cfg.numLayers; l++) {
    const specs: [string, number[]][] = [
      [weightName.fc1(l), [RETAINING_HIDDEN, qkvWidth(cfg)]],
      [weightName.fc2(l), [cfg.numKvHeads, RETAINING_HIDDEN]],
    ];
    for (const [canon, shape] of specs) {
      const src = found.get(canon) ?? `model.layers.${l}.self_attn.${canon.split('.')[1]}.weight`;
      if (!store.has(src)) throw new CheckpointError(`${file}: no retaining head tensor "${src}" for layer ${l}`, file, src);
      expectTensor(store, src, shape, canon.endsWith('fc1') ? '1024 x (heads + 2*kv_heads)*head_dim' : 'kv_heads x 1024');
      m.set(canon, fused(store, canon, shape, [src]));
    }
  }
  if (found.size !== 2 * cfg.numLayers)
    throw new CheckpointError(`${file}: has ${found.size / 2} layers of retaining heads, model has ${cfg.numLayers}`, file);
  return m;
}
