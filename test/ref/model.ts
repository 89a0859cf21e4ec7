/**
 * Reference decoder forward (llama / mistral / qwen2 / phi3) on canonical weights, f32 storage, f64 accumulation.
 *
 * DETAILS THAT MATTER TO MATCH HF transformers fp32 (verified against the shared golden.json files):
 * (filled in below, see NUMERICS)
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
