/** `locret eval`: a task set through generation, scored as the reference results are (answer in 12 tokens). */
import type { Engine } from '../engine.js';
import type { Policy } from '../policies.js';
import { progress } from '../progress.js';
import { ANSWER_TOKENS, isCorrect, type TaskRow } from './task-file.js';

export interface EvalOptions {
  readonly policy?: Policy;
  readonly budget: number;
  readonly chunk: number;
  readonly stabilizer: number;
  readonly local: number | 'question';
  readonly positions: 'compact' | 'original';
  readonly kvDtype?: 'f32' | 'f16' | 'int8';
  readonly ropeLong?: boolean;
  readonly limit?: number;
  readonly quiet?: boolean;
}

export interface EvalResult {
  correct: number;
  total: number;
  accuracy: number;
  mean_prompt_tokens: number;
  prefill_tokens_per_s: number;
  peak_gpu_bytes: number;
  cache_peak_bytes: number;
  policy: Policy;
  budget: number;
  rows: { answer: string; output: string; correct: boolean; prompt_tokens: number }[];
}

export async function runEval(engine: Engine, rows: readonly TaskRow[], o: EvalOptions): Promise<EvalResult> {
  const todo = rows.slice(0, o.limit ?? rows.length);
  const bar = o.quiet ? null : progress({ total: todo.length, label: 'eval', unit: 'row' });
  let correct = 0;
  let promptTokens = 0;
  let prefillMs = 0;
  let peak = 0;
  let cachePeak = 0;
  let policy: Policy = o.policy ?? 'full';
  const out: EvalResult['rows'] = [];
  for (const row of todo) {
    const r = await engine.generate({ ...o, prompt: row.prompt, maxNewTokens: ANSWER_TOKENS, stopAtEos: false });
    const ok = isCorrect(r.text, row.answer);
    correct += ok ? 1 : 0;
    promptTokens += r.prompt_tokens;
    prefillMs += r.prefill_ms;
    peak = Math.max(peak, r.peak_gpu_bytes);
    cachePeak = Math.max(cachePeak, r.cache_peak_bytes);
    policy = r.policy;
    out.push({ answer: row.answer, output: r.text, correct: ok, prompt_tokens: r.prompt_tokens });
    bar?.tick(1, `${correct}/${out.length} correct`);
  }
  bar?.done();
  return {
    correct,
    total: todo.length,
    accuracy: todo.length ? correct / todo.length : 0,
    mean_prompt_tokens: todo.length ? promptTokens / todo.length : 0,
    prefill_tokens_per_s: prefillMs > 0 ? promptTokens / (prefillMs / 1000) : 0,
    peak_gpu_bytes: peak,
    cache_peak_bytes: cachePeak,
    policy,
    budget: o.budget,
    rows: out,
  };
}
