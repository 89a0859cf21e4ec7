/** Published configurations used by benchmarks and the planner when no checkpoint is at hand. */
import type { ModelConfig } from '../ir/config.js';

export const SHAPES: Record<string, ModelConfig> = {
  'llama-3.1-8b': {
    arch: 'llama', hiddenSize: 4096, intermediateSize: 14336, numLayers: 32, numHeads: 32, numKvHeads: 8, headDim: 128,
    vocabSize: 128256, rmsNormEps: 1e-5, tieWordEmbeddings: false, qkvBias: false, maxPositions: 131072,
    rope: { kind: 'llama3', theta: 500000, rotaryDim: 128, factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositions: 8192 },
    bosTokenId: 128000, eosTokenIds: [128001, 128008, 128009], sourceDtype: 'bf16',
  },
  'phi-3-mini': {
    arch: 'phi3', hiddenSize: 3072, intermediateSize: 8192, numLayers: 32, numHeads: 32, numKvHeads: 32, headDim: 96,
    vocabSize: 32064, rmsNormEps: 1e-5, tieWordEmbeddings: false, qkvBias: false, maxPositions: 131072,
    rope: {
      kind: 'longrope', theta: 10000, rotaryDim: 96, originalMaxPositions: 4096, maxPositions: 131072,
      shortFactor: Array(48).fill(1), longFactor: Array(48).fill(4), attentionFactor: Math.sqrt(1 + Math.log(32) / Math.log(4096)),
    },
    bosTokenId: 1, eosTokenIds: [32000, 32007], sourceDtype: 'bf16',
  },
};

export function shapeConfig(name: string): ModelConfig {
  const c = SHAPES[name];
  if (!c) throw new Error(`unknown shape '${name}' (known: ${Object.keys(SHAPES).join(', ')})`);
  return c;
}
