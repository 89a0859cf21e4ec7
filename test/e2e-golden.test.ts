/**
 * tiny-llama end to end against Hugging Face transformers (fp32) outputs: token ids, per-position argmax, final
 * logits, greedy continuation; f32 and f16 weight paths; fused and unfused graphs agree, with the kernel counts
 * that prove the fusion. With retaining heads: their two kernels per layer leave the logits alone, and the entries
 * their scores keep match the CPU reference's.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { Engine } from '../runtime/engine.js';
import { argmaxOf } from '../runtime/sampling.js';
import { expectClose, relL2 } from './gpu-harness.js';
import { fixture, TINY_LLAMA } from './paths.js';
import { refConfig, refWeights } from './ref/load-for-ref.js';
import { locretGenerate } from './ref/locret.js';
import { withEnv } from './with-env.js';

const golden = JSON.parse(fs.readFileSync(path.join(TINY_LLAMA, 'golden.json'), 'utf8'));
const V = 4096;


async function allLogits(e: Engine, unfused = false, policy: 'full' | 'locret' = 'full') {
  // locret with a budget over the prompt never evicts: the same step as 'full', plus the retaining heads
  const s = e.session({ policy, budget: 512, chunk: 512, allLogits: true, unfused, maxNew: 1 });
  const r = await s.prefill(golden.input_ids, 0);
  const kernels = s.kernelsPerStep;
  s.release();
  return { logits: r.logits, kernels };
}

describe('tiny-llama vs HF transformers', () => {
  let f32: Engine;
  let f16: Engine;
  beforeAll(async () => {
    f32 = await Engine.load(TINY_LLAMA, { dtype: 'f32' });
    f16 = await Engine.load(TINY_LLAMA, { dtype: 'f16' });
  });

  it('tokenizes the prompt to the golden ids (BOS included)', () => {
    expect(f32.encode(golden.prompt)).toEqual(golden.input_ids);
  });

  it('f32: argmax at every position, logits_last within rel L2 1e-3, logsumexp', async () => {
    const { logits } = await allLogits(f32);
    const T = golden.input_ids.length;
    const am = Array.from({ length: T }, (_, t) => argmaxOf(logits, t * V, V));
    expect(am).toEqual(golden.argmax);
    const last = logits.subarray((T - 1) * V, T * V);
    const err = relL2(last, golden.logits_last);
    expect(err, `logits_last rel L2 ${err}`).toBeLessThan(1e-3);
    expectClose(logits.subarray(5 * V, 5 * V + 64), golden.logits_pos5_first64, 1e-3, 'logits pos 5');
    for (let t = 0; t < T; t++) {
      const row = logits.subarray(t * V, (t + 1) * V);
      const m = Math.max(...row);
      const lse = m + Math.log(row.reduce((a, x) => a + Math.exp(x - m), 0));
      expect(Math.abs(lse - golden.logsumexp[t])).toBeLessThan(1e-3 * Math.max(1, Math.abs(golden.logsumexp[t])));
    }
  });

  it('f32: greedy_24 equal', async () => {
    const r = await f32.generate({ inputIds: golden.input_ids, maxNewTokens: 24, policy: 'full', stopAtEos: false });
    expect(r.tokens).toEqual(golden.greedy_24);
    expect(r.text).toBe(golden.greedy_24_text);
  });

  it('f16: greedy_24 equal', async () => {
    const r = await f16.generate({ inputIds: golden.input_ids, maxNewTokens: 24, policy: 'full', stopAtEos: false });
    expect(r.tokens).toEqual(golden.greedy_24);
  });

  it('fused and unfused graphs give the same logits; fusion cuts the kernel count', async () => {
    const fused = await allLogits(f32);
    const unfused = await allLogits(f32, true);
    expectClose(fused.logits, unfused.logits, 1e-4, 'fused vs unfused logits');
    const L = f32.config.numLayers;
    // per layer unfused: rmsnorm, qkv linear, kv_store, rope, attention, o linear, add, rmsnorm, gate_up linear,
    // silu_mul, down linear, add = 12; + embedding, last_rows, final rmsnorm, lm_head = 4
    expect(unfused.kernels).toBe(12 * L + 4);
    // fused: qkv_rope, attention, o linear_residual, norm_linear_swiglu, down linear_residual = 5; + embedding, norm_linear
    expect(fused.kernels).toBe(5 * L + 2);
  });
});

describe('tiny-llama with retaining heads', () => {
  const headsFile = fixture('models/tiny-llama/retaining_heads.safetensors');
  let e: Engine;
  beforeAll(async () => {
    e = await Engine.load(TINY_LLAMA, { dtype: 'f32', heads: headsFile, keepUnfoldedHeads: true });
  });

  it('two kernels per layer (fc1 matmul + silu, fc2 scores) that leave the logits unchanged', async () => {
    const full = await allLogits(e, false, 'full');
    const heads = await allLogits(e, false, 'locret');
    const L = e.config.numLayers;
    expect(full.kernels).toBe(5 * L + 2);
    expect(heads.kernels).toBe(7 * L + 2);
    // the heads' scratch is recycled activation memory: it must not clobber anything still live
    expectClose(heads.logits, full.logits, 0, 'logits with retaining heads');
  });

  // fc1 folded into the qkv weight at load (runtime/fold-heads.ts) scores the normalized rows: the same scores as the
  // heads over the pre-RoPE rows, up to f32 rounding (f16 weights: the folded weight's own f16 rounding)
  it('folded heads score like the loaded heads', async () => {
    const scores = async (eng: Engine, unfoldedHeads: boolean) => {
      const s = eng.session({ policy: 'locret', budget: 64, chunk: 16, stabilizer: 4, maxNew: 1, unfoldedHeads });
      await s.prefill(golden.input_ids, 0); // 56 tokens within the budget: nothing evicted, every score kept
      const ops = s.stepOps;
      const got = await s.cachedScores();
      s.release();
      return { ops, got };
    };
    for (const [name, eng, tol] of [['f32', e, 1e-5], ['f16', await Engine.load(TINY_LLAMA, { dtype: 'f16', heads: headsFile, keepUnfoldedHeads: true }), 2e-2]] as const) {
      const folded = await scores(eng, false), plain = await scores(eng, true);
      expect(folded.ops).toContain('norm_retaining_head');
      expect(folded.ops).not.toContain('retaining_head');
      expect(plain.ops).toContain('retaining_head');
      folded.got.forEach((layer, l) => layer.forEach((row, h) => {
        expect(row.length).toBe(golden.input_ids.length);
        // the last chunk's stabilizer is not set (nothing follows it): every score is finite
        expectClose(row, plain.got[l]![h]!, tol, `${name} layer ${l} head ${h}: folded vs loaded heads`, 1e-3);
      }));
    }
  });

  it('the entries kept under eviction match the CPU reference', async () => {
    const ids: number[] = golden.input_ids;
    // 56 tokens: evicting chunks of 16, 16, 15, then 9 question tokens. Repeated tokens score exactly alike in layer
    // 0, and the reference breaks such ties by position; that survives on the GPU only while every evicting chunk
    // takes the same matmul path (a chunk of ≤ 8 tokens would run fc1 on the gemv path and round differently).
    const o = { budget: 16, chunk: 16, stabilizer: 4, local: 9 };
    const s = e.session({ policy: 'locret', budget: o.budget, chunk: o.chunk, stabilizer: o.stabilizer, maxNew: 1, trace: true });
    await s.prefill(ids, o.local);
    const got = await s.keptOriginalPositions(ids.length);
    s.release();
    const cfg = refConfig(TINY_LLAMA);
    const want = locretGenerate(cfg, refWeights(TINY_LLAMA, cfg, headsFile), ids, { ...o, nLoc: o.local, maxNew: 1 }).final;
    expect(got).toEqual(want);
  });

  // at its first decode step, the fused graph rotates every cached key once and decodes on them; the unfused graph and
  // LOCRET_DECODE_ROTATED=0 rotate each key at every step. Eviction (budget 24) makes kept keys change position.
  it('decode on keys rotated once equals decode rotating every key at every step', async () => {
    const decodeLogits = async (eng: Engine, unfused: boolean) => {
      const s = eng.session({ policy: 'locret', budget: 24, chunk: 8, stabilizer: 4, unfused, maxNew: 4 });
      await s.prefill(golden.input_ids, 3);
      const out: Float32Array[] = [];
      for (const tok of [17, 902, 5]) out.push(await s.decode(tok));
      const rotated = s.decodeOnRotatedKeys;
      s.release();
      return { rotated, logits: out };
    };
    const engines: [string, Engine, number][] = [['f32', e, 1e-4], ['f16', await Engine.load(TINY_LLAMA, { dtype: 'f16', heads: headsFile }), 1e-2]];
    for (const [name, eng, tol] of engines) {
      const once = await decodeLogits(eng, false);
      expect(once.rotated, 'fused graph decodes on rotated keys').toBe(true);
      const perStep = await withEnv({ LOCRET_DECODE_ROTATED: '0' }, () => decodeLogits(eng, false));
      expect(perStep.rotated).toBe(false);
      const unfused = await decodeLogits(eng, true);
      expect(unfused.rotated).toBe(false);
      // the older decode kernel (kept for timing): it reads keys before RoPE
      const v1 = await withEnv({ LOCRET_ATTN_DECODE: 'v1' }, () => decodeLogits(eng, false));
      expect(v1.rotated).toBe(false);
      once.logits.forEach((l, i) => {
        expectClose(l, perStep.logits[i]!, tol, `${name} decode step ${i}: rotated once vs per step`);
        expectClose(l, unfused.logits[i]!, tol, `${name} decode step ${i}: fused vs unfused`);
        expectClose(l, v1.logits[i]!, tol, `${name} decode step ${i}: rotated once vs the v1 kernel`);
      });
    }
  });
});
