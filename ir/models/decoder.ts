/**
 * The decoder-only transformer graph shared by the Llama family (Llama 2/3.x, Mistral, Qwen2/2.5, Phi-3): they
 * differ only in config values and in how their checkpoints name weights, which runtime/io/weight-map.ts folds
 * into the canonical names used here (q/k/v fused into `qkv`, gate/up into `gate_up`).
 */
import { qkvWidth, RETAINING_HIDDEN, weightName as W, type ModelConfig } from '../config.js';
import { GraphBuilder } from '../graph.js';
import type { Graph } from '../ops.js';

export interface DecoderGraphOptions {
  /** add the Locret retaining head of every layer (scores written into the cache at insertion) */
  readonly retainingHeads: boolean;
  /** logits rows produced: the newest token only while generating, or every row */
  readonly logitsRows: number | 'all';
  /** H2O / SnapKV: the attention each cached entry receives becomes its score */
  readonly attentionScores?: 'h2o' | 'snapkv' | null;
  /**
   * the heads read the normalized hidden rows with fc1 folded into the qkv weight (`L{i}.fc1_folded`, computed at
   * load: runtime/fold-heads.ts) instead of the pre-RoPE concat(Q, K, V)
   */
  readonly foldedHeads?: boolean;
}

export function graphDims(c: ModelConfig) {
  return {
    hidden: c.hiddenSize,
    numHeads: c.numHeads,
    numKvHeads: c.numKvHeads,
    headDim: c.headDim,
    rotaryDim: c.rope.rotaryDim,
    vocab: c.vocabSize,
    numLayers: c.numLayers,
  };
}

export function decoderGraph(c: ModelConfig, o: DecoderGraphOptions): Graph {
  const g = new GraphBuilder(graphDims(c));
  const hd = c.hiddenSize;
  const qkvw = qkvWidth(c);
  const ids = g.inputIds();
  const embed = g.weight(W.embed, [c.vocabSize, hd]);
  let h = g.embedding(ids, embed);
  for (let l = 0; l < c.numLayers; l++) {
    const n1 = g.rmsnorm(h, g.weight(W.attnNorm(l), [hd]), c.rmsNormEps);
    const bias = c.qkvBias ? g.weight(W.qkvBias(l), [qkvw]) : null;
    const qkv = g.linear(n1, g.weight(W.qkv(l), [qkvw, hd]), bias);
    const q = g.kvStore(qkv, l);
    const qr = g.rope(q);
    if (o.retainingHeads) {
      // an effect: scores land in the layer's cache; nothing in the step reads them
      const fc2 = g.weight(W.fc2(l), [c.numKvHeads, RETAINING_HIDDEN]);
      if (o.foldedHeads) {
        // its own rmsnorm node of the same input and weight (fusion folds it into the head, as qkv's into qkv_rope)
        const hn = g.rmsnorm(h, g.weight(W.attnNorm(l), [hd]), c.rmsNormEps);
        const fb = c.qkvBias ? g.weight(W.fc1FoldedBias(l), [RETAINING_HIDDEN]) : null;
        g.retainingHead(hn, g.weight(W.fc1Folded(l), [RETAINING_HIDDEN, hd]), fc2, l, fb);
      } else g.retainingHead(qkv, g.weight(W.fc1(l), [RETAINING_HIDDEN, qkvw]), fc2, l);
    }
    const attn = g.attention(qr, l, q);
    if (o.attentionScores) g.attentionStats(qr, l, attn, o.attentionScores);
    h = g.sum(h, g.linear(attn, g.weight(W.o(l), [hd, c.numHeads * c.headDim])));
    const n2 = g.rmsnorm(h, g.weight(W.mlpNorm(l), [hd]), c.rmsNormEps);
    const gu = g.linear(n2, g.weight(W.gateUp(l), [2 * c.intermediateSize, hd]));
    h = g.sum(h, g.linear(g.siluMul(gu), g.weight(W.down(l), [hd, c.intermediateSize])));
  }
  const last = g.lastRows(h, o.logitsRows);
  const fin = g.rmsnorm(last, g.weight(W.finalNorm, [hd]), c.rmsNormEps);
  const head = c.tieWordEmbeddings ? embed : g.weight(W.lmHead, [c.vocabSize, hd]);
  const logits = g.linear(fin, head);
  return g.build([logits]);
}
