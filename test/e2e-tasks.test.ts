/**
 * Long-context retrieval on tiny-llama: ~4K-token passkey prompts with the full cache, with Locret eviction at
 * b=512 (must still answer), and with StreamingLLM at b=512 (must fail: proves entries really are evicted).
 * Settings as the reference table: chunk 512, stabilizer b/4, the question (text after the last newline) local.
 */
import { beforeAll, describe, expect, it } from 'vitest';

// ten ~3.7K-token prompts per test: minutes each on a CPU Vulkan driver
const LONG = 1_800_000;
import { Engine } from '../runtime/engine.js';
import { runEval } from '../runtime/eval/run-eval.js';
import { readTaskFile } from '../runtime/eval/task-file.js';
import { fixture, TINY_LLAMA } from './paths.js';

const rows = () => readTaskFile(fixture('data/dev-tasks/passkey-4k.jsonl'));
const common = { chunk: 512, local: 'question' as const, positions: 'compact' as const, quiet: true };

describe('passkey-4k on tiny-llama', () => {
  let full: Engine;
  let heads: Engine;
  beforeAll(async () => {
    full = await Engine.load(TINY_LLAMA, { dtype: 'f16' });
    heads = await Engine.load(TINY_LLAMA, { dtype: 'f16', heads: fixture('models/tiny-llama/retaining_heads.safetensors') });
  });

  it('full cache answers at least 9 of 10', async () => {
    const r = await runEval(full, rows(), { ...common, policy: 'full', budget: 512, stabilizer: 128 });
    console.log(`full: ${r.correct}/${r.total}`, r.rows.map((x) => x.output));
    expect(r.correct).toBeGreaterThanOrEqual(9);
  }, LONG);

  it('locret b=512 answers at least 9 of 10 while evicting', async () => {
    const r = await runEval(heads, rows(), { ...common, policy: 'locret', budget: 512, stabilizer: 128 });
    console.log(`locret b=512: ${r.correct}/${r.total}`, r.rows.map((x) => x.output));
    expect(r.correct).toBeGreaterThanOrEqual(9);
  }, LONG);

  it('streaming b=512 answers at most 3 of 10', async () => {
    const r = await runEval(full, rows(), { ...common, policy: 'streaming', budget: 512, stabilizer: 128 });
    console.log(`streaming b=512: ${r.correct}/${r.total}`);
    expect(r.correct).toBeLessThanOrEqual(3);
  }, LONG);
});
