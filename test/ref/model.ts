/**
 * Reference decoder forward (llama / mistral / qwen2 / phi3) on canonical weights, f32 storage, f64 accumulation.
 *
 * NUMERICS — what it takes to reproduce HF transformers fp32 (checked against the shared golden.json files:
 * every argmax equal, greedy tokens equal, last-row logits within 1e-6..1e-5 relative, which is the goldens' own
 * 5-decimal rounding):
 *  1. Weights: bf16 → f32 is exact (bits << 16), f16 → f32 exact. HF ran fp32 on those widened weights; no
 *     rounding of activations to bf16/f16 anywhere.
 *  2. RMSNorm: var = mean(x²) in f32; y = w · f32(x · rsqrt(var + eps)). eps inside the sqrt, plain `w` (no 1 + w),
 *     per-model eps (llama/phi3 1e-5, qwen2 1e-6). Applied before attention, before the MLP, and before lm_head.
 *  3. inv_freq is computed in f32, op by op: f32(theta ^ f32(2i/rotary)), then 1/·. llama3: wavelen =
 *     f32(1/inv)·2π (torch's `c / t` is `t.reciprocal() * c`); wavelen > orig/low → inv/factor; wavelen < orig/high
 *     → unchanged; in between: (1−s)·inv/factor + s·inv with s = (orig/wavelen − low)/(high − low).
 *  4. Angle = f32(f32(pos) · inv_freq[i]) — one f32 product (HF's inv_freq @ position_ids), NOT an f64 angle: at
 *     positions in the thousands the f32 rounding of the angle is ~1e-4 rad and HF carries it. cos/sin of that f32
 *     angle, rounded to f32. Table layout cat(freqs, freqs): rotate_half pairs dim i with i + rotary/2 (not
 *     interleaved); dims ≥ rotary pass through (partial rotary).
 *  5. Phi-3 longrope: the factors are chosen PER FORWARD CALL from max(position_ids) + 1: ≤ original_max (512)
 *     → short, > 512 → long for the whole call, i.e. all 700 prompt positions of the long golden use the long
 *     factors, including positions < 512 (short everywhere: 90 argmax mismatches). inv = 1/f32(f32(ext_i) ·
 *     f32(theta^(2i/d))). Attention factor sqrt(1 + ln(s)/ln(orig)) with s = max_position_embeddings / original
 *     (= 8 here → 1.1547), NOT rope_scaling.factor; it multiplies BOTH cos and sin (q·k scales by its square);
 *     dropping it gives 1e-2 logit error. In generation HF caches keys AFTER RoPE, so when a sequence grows past
 *     512 during decoding, earlier keys keep their short-factor rotation and only new tokens use long factors
 *     (RefSession reproduces this; the goldens never cross mid-generation: 40 + 16 < 512 < 700).
 *  6. Projections: q/k/v biases (qwen2) are added before RoPE. Phi-3 ships fused qkv_proj (rows Q, K, V) and
 *     gate_up_proj (rows gate then up: `chunk(2)` gives gate first). MLP = down(silu(gate) · up).
 *  7. Attention: scores · 1/sqrt(head_dim) (python float, no rounding of note), causal, softmax in f32 (f64 here),
 *     GQA query head h reads KV head floor(h / (H / KV)) (repeat_kv repeats each KV head for a contiguous group).
 *  8. lm_head on final_norm(x); qwen2 ties it to the embedding matrix. Logits f32.
 *  9. Config spellings: llama `rope_scaling.rope_type = llama3`; phi3 classic `rope_scaling.type = longrope` with
 *     top-level original_max_position_embeddings; qwen2 transformers-5 `rope_parameters.rope_theta` (1e6).
 *     head_dim from config when present, else hidden / heads; no partial_rotary_factor in any fixture.
 * 10. The tokenizer prepends BOS (id 0); golden input_ids start with it.
 */
import type { ModelConfig } from '../../ir/config.js';
import { weightName as W } from '../../ir/config.js';
import {
  rmsnorm, matmul, swigluFused, ropeCosSin, ropeApply, attendHeads, argmax, type RopeOpts,
} from './kernels.js';

export type Weights = (canonicalName: string) => Float32Array;

/** Per-layer projections of one block of tokens: q (T, H, D), k/v (T, KV, D), all pre-RoPE, bias included. */
export interface QkvSplit {
  q: Float32Array;
  k: Float32Array;
  v: Float32Array;
  /** the raw (T, (H+2KV)·D) projection = concat(Q, K, V) per token, the retaining-head input */
  qkv: Float32Array;
}

export function embed(cfg: ModelConfig, w: Weights, ids: readonly number[]): Float32Array {
  const E = w(W.embed), Hd = cfg.hiddenSize;
  const x = new Float32Array(ids.length * Hd);
  ids.forEach((id, t) => {
    if (id < 0 || id >= cfg.vocabSize) throw new Error(`token id ${id} out of range`);
    x.set(E.subarray(id * Hd, (id + 1) * Hd), t * Hd);
  });
  return x;
}

/** attn_norm + fused qkv projection (+ bias), split into q/k/v. */
export function layerQkv(cfg: ModelConfig, w: Weights, l: number, x: Float32Array, T: number): QkvSplit {
  const { hiddenSize: Hd, numHeads: H, numKvHeads: KV, headDim: D } = cfg;
  const xn = rmsnorm(x, T, Hd, w(W.attnNorm(l)), cfg.rmsNormEps);
  const width = (H + 2 * KV) * D;
  const qkv = matmul(xn, T, Hd, w(W.qkv(l)), width, cfg.qkvBias ? w(W.qkvBias(l)) : undefined);
  const q = new Float32Array(T * H * D), k = new Float32Array(T * KV * D), v = new Float32Array(T * KV * D);
  for (let t = 0; t < T; t++) {
    const o = t * width;
    q.set(qkv.subarray(o, o + H * D), t * H * D);
    k.set(qkv.subarray(o + H * D, o + (H + KV) * D), t * KV * D);
    v.set(qkv.subarray(o + (H + KV) * D, o + width), t * KV * D);
  }
  return { q, k, v, qkv };
}

/** x += attn · Woᵀ; x += down(swiglu(gate_up(mlp_norm(x)))). Mutates and returns x. */
export function layerFinish(cfg: ModelConfig, w: Weights, l: number, x: Float32Array, attn: Float32Array, T: number): Float32Array {
  const { hiddenSize: Hd, numHeads: H, headDim: D, intermediateSize: I } = cfg;
  const o = matmul(attn, T, H * D, w(W.o(l)), Hd);
  for (let i = 0; i < x.length; i++) x[i] = x[i] + o[i];
  const xn = rmsnorm(x, T, Hd, w(W.mlpNorm(l)), cfg.rmsNormEps);
  const gu = matmul(xn, T, Hd, w(W.gateUp(l)), 2 * I);
  const d = matmul(swigluFused(gu, T, I), T, I, w(W.down(l)), Hd);
  for (let i = 0; i < x.length; i++) x[i] = x[i] + d[i];
  return x;
}

/** final_norm + lm_head (tied: embed) on the given rows of x (T, hidden) → (rows, vocab). */
export function lmHead(cfg: ModelConfig, w: Weights, x: Float32Array, T: number, rows: readonly number[]): Float32Array {
  const Hd = cfg.hiddenSize;
  const sel = new Float32Array(rows.length * Hd);
  rows.forEach((r, i) => sel.set(x.subarray(r * Hd, (r + 1) * Hd), i * Hd));
  void T;
  const xn = rmsnorm(sel, rows.length, Hd, w(W.finalNorm), cfg.rmsNormEps);
  const head = cfg.tieWordEmbeddings ? w(W.embed) : w(W.lmHead);
  return matmul(xn, rows.length, Hd, head, cfg.vocabSize);
}

export interface SessionOpts {
  /** longrope: always use the long factors */
  forceLong?: boolean;
}

export interface StepOpts {
  /** return logits for every token of the call (default: only the last) */
  allLogits?: boolean;
}

/**
 * Full-cache session mirroring HF generate(): keys are cached AFTER RoPE with the table of the call that produced
 * them (HF DynamicCache semantics), so a longrope switch mid-generation leaves old keys rotated with the short
 * factors, exactly like HF.
 */
export class RefSession {
  len = 0;
  private kBuf: Float32Array[][];
  private vBuf: Float32Array[][];
  private cap = 0;

  constructor(readonly cfg: ModelConfig, readonly w: Weights, readonly opts: SessionOpts = {}) {
    this.kBuf = []; this.vBuf = [];
    this.grow(64);
  }

  private grow(need: number): void {
    if (need <= this.cap) return;
    const cap = Math.max(need, this.cap * 2);
    const { numLayers: L, numKvHeads: KV, headDim: D } = this.cfg;
    for (let l = 0; l < L; l++) {
      this.kBuf[l] ??= []; this.vBuf[l] ??= [];
      for (let g = 0; g < KV; g++) {
        const nk = new Float32Array(cap * D), nv = new Float32Array(cap * D);
        if (this.kBuf[l][g]) { nk.set(this.kBuf[l][g]); nv.set(this.vBuf[l][g]); }
        this.kBuf[l][g] = nk; this.vBuf[l][g] = nv;
      }
    }
    this.cap = cap;
  }

  /** Run tokens ids at positions len..len+T-1 through the model; returns logits (last or all rows, vocab). */
  forward(ids: readonly number[], step: StepOpts = {}): Float32Array {
    const cfg = this.cfg, w = this.w;
    const { numLayers: L, numHeads: H, numKvHeads: KV, headDim: D } = cfg;
    const T = ids.length, past = this.len;
    this.grow(past + T);
    const positions = Array.from({ length: T }, (_, t) => past + t);
    // HF longrope: the table of this call is decided by max(position_ids) + 1 (= total length so far)
    const ropeOpts: RopeOpts = { seqLen: past + T, forceLong: this.opts.forceLong ?? false };
    const table = ropeCosSin(cfg.rope, positions, ropeOpts);
    const x = embed(cfg, w, ids);
    for (let l = 0; l < L; l++) {
      const { q, k, v } = layerQkv(cfg, w, l, x, T);
      const qr = ropeApply(q, T, H, D, table);
      const kr = ropeApply(k, T, KV, D, table);
      for (let g = 0; g < KV; g++) {
        for (let t = 0; t < T; t++) {
          this.kBuf[l][g].set(kr.subarray((t * KV + g) * D, (t * KV + g + 1) * D), (past + t) * D);
          this.vBuf[l][g].set(v.subarray((t * KV + g) * D, (t * KV + g + 1) * D), (past + t) * D);
        }
      }
      const heads = this.kBuf[l].map((kb, g) => ({ k: kb, v: this.vBuf[l][g], len: past + T }));
      const attn = attendHeads(qr, T, H, D, heads, (t) => past + t + 1);
      layerFinish(cfg, w, l, x, attn, T);
    }
    this.len = past + T;
    const rows = step.allLogits ? positions.map((_, t) => t) : [T - 1];
    return lmHead(cfg, w, x, T, rows);
  }

  /** Greedy decoding: prefill `prompt` (if given) then `maxNew` tokens; stops after an EOS when stopAtEos. */
  generateGreedy(prompt: readonly number[], maxNew: number, stopAtEos = false): number[] {
    const V = this.cfg.vocabSize;
    let logits = this.forward(prompt);
    const out: number[] = [];
    for (let i = 0; i < maxNew; i++) {
      const next = argmax(logits, logits.length - V, V);
      out.push(next);
      if (stopAtEos && this.cfg.eosTokenIds.includes(next)) break;
      if (i + 1 < maxNew) logits = this.forward([next]);
    }
    return out;
  }
}

/** Logits (T, vocab) for every position of ids with full causal attention (one call, positions 0..T-1). */
export function refForward(cfg: ModelConfig, weights: Weights, ids: readonly number[], opts: SessionOpts = {}): Float32Array {
  return new RefSession(cfg, weights, opts).forward(ids, { allLogits: true });
}
