import { describe, it, expect } from 'vitest';
import { readFileSync } from 'node:fs';
import { Tokenizer } from '@huggingface/tokenizers';
import { refConfig, refWeights } from './ref/load-for-ref.js';
import { locretGenerate, selectTopKeep, type LocretOpts } from './ref/locret.js';
import { RefSession } from './ref/model.js';

const DIR = '../shared/models/tiny-llama';

describe('selectTopKeep', () => {
  it('keeps the top-b in original order, earlier wins ties, forced tail kept', () => {
    const s = new Float32Array([0.5, 2, 1, 2, -1, 3, 0.5]);
    expect(selectTopKeep(s, 7, 3)).toEqual([1, 3, 5]);
    expect(selectTopKeep(s, 7, 4)).toEqual([1, 2, 3, 5]);
    // ties at 0.5 (indices 0 and 6): the earlier one wins
    expect(selectTopKeep(s, 7, 5)).toEqual([0, 1, 2, 3, 5]);
    // newest 2 forced (+inf): 4 and 6 survive despite low scores
    expect(selectTopKeep(s, 7, 3, 5)).toEqual([5, 6, 1].sort((a, b) => a - b));
    expect(selectTopKeep(s, 7, 4, 4)).toEqual([1, 4, 5, 6]);
    expect(selectTopKeep(s, 3, 5)).toEqual([0, 1, 2]);
    expect(selectTopKeep(new Float32Array([NaN, 0, -Infinity]), 3, 1)).toEqual([1]);
  });
});

describe('locret reference on tiny-llama passkey-4k', () => {
  const cfg = refConfig(DIR);
  const w = refWeights(DIR, cfg, `${DIR}/retaining_heads.safetensors`);
  const tok = new Tokenizer(
    JSON.parse(readFileSync(`${DIR}/tokenizer.json`, 'utf8')),
    JSON.parse(readFileSync(`${DIR}/tokenizer_config.json`, 'utf8')),
  );
  const rows = readFileSync('../shared/data/dev-tasks/passkey-4k.jsonl', 'utf8').trim().split('\n').slice(0, 2)
    .map((l) => JSON.parse(l) as { prompt: string; answer: string });

  function prep(prompt: string): { ids: number[]; nLoc: number } {
    const ids = tok.encode(prompt).ids;
    const suffix = prompt.slice(prompt.lastIndexOf('\n') + 1);
    const sIds = tok.encode(suffix, { add_special_tokens: false }).ids;
    // the suffix tokenizes the same alone as at the end of the prompt
    expect(ids.slice(ids.length - sIds.length)).toEqual(sIds);
    return { ids, nLoc: sIds.length };
  }
  const base: Omit<LocretOpts, 'nLoc'> = { budget: 512, chunk: 512, stabilizer: 128, maxNew: 12 };

  rows.forEach((row, i) => {
    it(`prompt ${i}: locret b=512 answers, streaming b=512 does not`, () => {
      const { ids, nLoc } = prep(row.prompt);
      const t0 = Date.now();
      const loc = locretGenerate(cfg, w, ids, { ...base, nLoc, policy: { kind: 'locret' } });
      const t1 = Date.now();
      const text = tok.decode(loc.tokens);
      const str = locretGenerate(cfg, w, ids, { ...base, nLoc, policy: { kind: 'streaming' } });
      const t2 = Date.now();
      const sText = tok.decode(str.tokens);
      console.log(`prompt ${i}: ${ids.length} tokens, n_loc ${nLoc}, answer ${row.answer}; locret (${t1 - t0} ms) ${JSON.stringify(text)}; streaming (${t2 - t1} ms) ${JSON.stringify(sText)}`);
      expect(text).toContain(row.answer);
      expect(sText).not.toContain(row.answer);
      // traces: every layer/head holds exactly the budget after each chunk, in increasing original order
      for (const tr of loc.traces) {
        for (const layer of tr.kept) for (const head of layer) {
          expect(head.length).toBe(Math.min(512, tr.chunkEnd));
          for (let j = 1; j < head.length; j++) expect(head[j]).toBeGreaterThan(head[j - 1]);
        }
      }
      // streaming keeps the 4 sinks and the most recent entries
      const last = str.traces[str.traces.length - 1];
      expect(last.kept[0][0].slice(0, 4)).toEqual([0, 1, 2, 3]);
      expect(last.kept[0][0][511]).toBe(last.chunkEnd - 1);
      expect(last.kept[0][0][4]).toBe(last.chunkEnd - 508);
    });
  });
});
