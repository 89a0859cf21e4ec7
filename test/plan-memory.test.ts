import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import type { ModelConfig } from '../ir/config.js';
import {
  activationTerms,
  bytesPerParam,
  cacheEntryBytes,
  formatPlan,
  parseByteSize,
  planMemory,
  planMemoryFromJson,
  resolvePlanOptions,
} from '../runtime/plan-memory.js';

/** meta-llama/Llama-3.1-8B-Instruct config.json, normalized. */
const llama31_8b: ModelConfig = {
  arch: 'llama',
  hiddenSize: 4096,
  intermediateSize: 14336,
  numLayers: 32,
  numHeads: 32,
  numKvHeads: 8,
  headDim: 128,
  vocabSize: 128256,
  rmsNormEps: 1e-5,
  tieWordEmbeddings: false,
  qkvBias: false,
  maxPositions: 131072,
  rope: { kind: 'llama3', theta: 500000, rotaryDim: 128, factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositions: 8192 },
  bosTokenId: 128000,
  eosTokenIds: [128001, 128008, 128009],
  sourceDtype: 'bf16',
};

/** microsoft/Phi-3-mini-128k-instruct config.json, normalized (factor lists shortened to ones: sizes only). */
const phi3mini128k: ModelConfig = {
  arch: 'phi3',
  hiddenSize: 3072,
  intermediateSize: 8192,
  numLayers: 32,
  numHeads: 32,
  numKvHeads: 32,
  headDim: 96,
  vocabSize: 32064,
  rmsNormEps: 1e-5,
  tieWordEmbeddings: false,
  qkvBias: false,
  maxPositions: 131072,
  rope: {
    kind: 'longrope',
    theta: 10000,
    rotaryDim: 96,
    shortFactor: new Array(48).fill(1),
    longFactor: new Array(48).fill(1),
    originalMaxPositions: 4096,
    maxPositions: 131072,
    attentionFactor: Math.sqrt(1 + Math.log(32) / Math.log(4096)),
  },
  bosTokenId: 1,
  eosTokenIds: [32000, 32001, 32007],
  sourceDtype: 'bf16',
};

describe('planMemory', () => {
  it('counts the published parameter totals', () => {
    expect(planMemory(llama31_8b, { context: 8192, policy: 'full' }).detail.params).toBe(8_030_261_248);
    expect(planMemory(phi3mini128k, { context: 8192, policy: 'full' }).detail.params).toBe(3_821_079_552);
    // retaining heads: fc1 1024 x (H+2KV)D + fc2 KV x 1024 per layer
    const withHeads = planMemory(llama31_8b, { context: 8192 }).detail.params;
    expect(withHeads - 8_030_261_248).toBe(32 * (1024 * 6144 + 8 * 1024));
  });

  it('Llama-3.1-8B f16 at 128K: Locret b=16384 fits 24GB, the full cache does not', () => {
    const locret = planMemory(llama31_8b, { context: 131072, policy: 'locret', budget: 16384, chunk: 1024, gpuMemory: '24GB' });
    expect(locret.fits).toBe(true);
    expect(locret.total_bytes).toBeLessThan(24e9);
    expect(locret.detail.cache.capacity).toBe(16384 + 1024 + 100 + 256);
    expect(locret.cache_bytes).toBe(32 * 17764 * 8 * (2 * 128 * 2 + 8));
    expect(locret.total_bytes).toBe(locret.weights_bytes + locret.cache_bytes + locret.activation_bytes);

    const full = planMemory(llama31_8b, { context: 131072, policy: 'full', gpuMemory: '24GB' });
    expect(full.fits).toBe(false);
    expect(full.detail.cache.capacity).toBe(131072 + 256);
    expect(full.cache_bytes).toBeGreaterThan(17e9);
  });

  it('Phi-3-mini-128K at b=6000, chunk 3072 fits 24GB', () => {
    const p = planMemory(phi3mini128k, { context: 131072, budget: 6000, chunk: 3072, gpuMemory: '24GB' });
    expect(p.fits).toBe(true);
    expect(p.detail.cache.capacity).toBe(6000 + 3072 + 100 + 256);
    expect(p.cache_bytes).toBe(32 * 9428 * 32 * (2 * 96 * 2 + 8));
  });

  it('orders weight formats and cache formats by size', () => {
    const w = (dtype: 'f32' | 'f16' | 'q8' | 'q4') => planMemory(llama31_8b, { context: 131072, dtype }).weights_bytes;
    expect(w('q4')).toBeLessThan(w('q8'));
    expect(w('q8')).toBeLessThan(w('f16'));
    expect(w('f16')).toBeLessThan(w('f32'));
    const c = (kvDtype: 'f32' | 'f16' | 'int8') => planMemory(llama31_8b, { context: 131072, kvDtype }).cache_bytes;
    expect(c('int8')).toBeLessThan(c('f16'));
    expect(c('f16')).toBeLessThan(c('f32'));
    expect(bytesPerParam('q4')).toBe(0.5 + 2 / 32);
    expect(cacheEntryBytes(llama31_8b, 'int8')).toBe(2 * 128 + 8 + 8);
    // norms stay f32 whatever the weight format
    const norms = (dtype: 'f16' | 'q4') => planMemory(llama31_8b, { context: 1, dtype }).detail.weights.find((t) => t.name === 'norms')!.bytes;
    expect(norms('q4')).toBe(norms('f16'));
  });

  it('activations: one chunk of min(chunk, context) tokens, named terms', () => {
    const o = resolvePlanOptions({ context: 131072, chunk: 1024 });
    const terms = Object.fromEntries(activationTerms(llama31_8b, o).map((t) => [t.name, t.bytes]));
    expect(terms).toEqual({
      hidden: 2 * 1024 * 4096 * 4,
      qkv: 1024 * 6144 * 4,
      q_rope: 1024 * 4096 * 4,
      attn_out: 1024 * 4096 * 4,
      mlp: 1024 * 14336 * 4,
      logits: 128256 * 4,
      rope_table: 17764 * 64 * 8,
      evict_scratch: 8 * 17764 * 16, // holes filled in place: the lists only
      rotated_keys: 8 * 17764 * 128 * 2, // one layer's keys, f16, for the prefill attention
      retaining_hidden: 1024 * 1024 * 4,
    });
    const short = resolvePlanOptions({ context: 300, chunk: 1024, policy: 'full' });
    const t2 = Object.fromEntries(activationTerms(llama31_8b, short).map((t) => [t.name, t.bytes]));
    expect(t2.qkv).toBe(300 * 6144 * 4);
    expect(t2.rope_table).toBe((300 + 256) * 64 * 8);
    expect(t2.retaining_hidden).toBeUndefined();
    expect(t2.evict_scratch).toBeUndefined(); // policy full never evicts
    // compaction in original order (SnapKV pools along slots; original positions are not ranks) copies one layer's rows
    for (const o of [{ policy: 'snapkv' as const }, { positions: 'original' as const }]) {
      const t3 = Object.fromEntries(activationTerms(llama31_8b, resolvePlanOptions({ context: 131072, ...o })).map((t) => [t.name, t.bytes]));
      expect(t3.evict_scratch, JSON.stringify(o)).toBe(8 * 17764 * (2 * 128 * 2 + 16));
    }
    expect(t2.rotated_keys).toBe(8 * (300 + 256) * 128 * 2); // the whole cache: context + maxNew
  });

  it('fits is null without a memory size; warnings for odd settings', () => {
    const p = planMemory(llama31_8b, { context: 200000 });
    expect(p.fits).toBeNull();
    expect(p.detail.warnings.join('\n')).toMatch(/exceeds the model's max_position_embeddings 131072/);
    expect(planMemory(llama31_8b, { context: 4096 }).detail.warnings.join('\n')).toMatch(/never evicts/);
  });

  it('rejects bad options clearly', () => {
    expect(() => planMemory(llama31_8b, { context: 0 })).toThrow(/--context must be an integer >= 1/);
    expect(() => planMemory(llama31_8b, { context: 10, budget: 1.5 })).toThrow(/--budget/);
    expect(() => planMemory(llama31_8b, { context: 10, dtype: 'q3' as never })).toThrow(/unknown --dtype 'q3'/);
    expect(() => planMemory(llama31_8b, { context: 10, policy: 'lru' as never })).toThrow(/unknown policy 'lru'/);
    expect(() => planMemory(llama31_8b, { context: 10, gpuMemory: 'lots' })).toThrow(/cannot parse memory size "lots"/);
  });

  it('formats a readable report', () => {
    const text = formatPlan(planMemory(llama31_8b, { context: 131072, gpuMemory: '24GB' }));
    expect(text).toMatch(/weights +16\.\d\d GB +\(8\.\d\dB params\)/);
    expect(text).toMatch(/kv cache +2\.\d\d GB +32 layers × 17764 slots × 8 KV heads × 520 B/);
    expect(text).toContain('fits in 24.00 GB');
  });
});

describe('parseByteSize', () => {
  it('parses decimal and binary units', () => {
    expect(parseByteSize('24GB')).toBe(24e9);
    expect(parseByteSize('24 GiB')).toBe(24 * 2 ** 30);
    expect(parseByteSize('24000MB')).toBe(24e9);
    expect(parseByteSize('1.5gb')).toBe(1.5e9);
    expect(parseByteSize('512MiB')).toBe(512 * 2 ** 20);
    expect(parseByteSize('1000')).toBe(1000);
    expect(parseByteSize(8e9)).toBe(8e9);
    expect(() => parseByteSize('24XB')).toThrow(/use e\.g\. 24GB/);
    expect(() => parseByteSize('-1GB')).toThrow(/cannot parse/);
  });
});

const tinyConfig = fileURLToPath(new URL('../../shared/models/tiny-llama/config.json', import.meta.url));
const hfConfig = fileURLToPath(new URL('../runtime/io/hf-config.ts', import.meta.url));

describe.skipIf(!existsSync(tinyConfig) || !existsSync(hfConfig))('planMemoryFromJson', () => {
  it('plans the tiny model from its config.json', async () => {
    const { normalizeConfig } = await import('../runtime/io/hf-config.js');
    const json = JSON.parse(readFileSync(tinyConfig, 'utf8')) as unknown;
    const p = planMemoryFromJson(json, { context: 8192, budget: 1024, chunk: 512 }, (j) => normalizeConfig(j as never));
    // 15.7M parameters (README), plus the retaining heads: 8 x (1024 x 640 + 2 x 1024)
    expect(Math.abs(p.detail.params - 8 * (1024 * 640 + 2 * 1024) - 15.7e6)).toBeLessThan(0.1e6);
    expect(p.detail.cache.capacity).toBe(1024 + 512 + 100 + 256);
  });
});
