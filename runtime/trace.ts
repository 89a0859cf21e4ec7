/** `--trace out.json`: which original prompt positions each layer and KV head kept, with the needles marked. */
import * as fs from 'node:fs';
import type { Engine, GenerateResult } from './engine.js';
import { findNeedles } from './eval/task-file.js';
import type { Trace } from './eval/trace-data.js';
import type { Session } from './session.js';

/** Token span of a character span: count the tokens of the text before each end (BOS included, as in the prompt). */
function tokenSpan(engine: Engine, prompt: string, start: number, end: number): { start: number; end: number } {
  const tok = engine.model.tokenizer!;
  const a = tok.encode(prompt.slice(0, start)).length;
  const b = tok.encode(prompt.slice(0, end)).length;
  return { start: Math.max(0, a - 1), end: b };
}

export async function buildTrace(session: Session, engine: Engine, prompt: string, r: GenerateResult): Promise<Trace> {
  const kept = await session.keptOriginalPositions(r.prompt_tokens);
  const marks = engine.model.tokenizer
    ? findNeedles(prompt).map((n) => ({ label: `${n.kind} ${n.subject}`, ...tokenSpan(engine, prompt, n.start, n.end) }))
    : [];
  const c = engine.config;
  return { promptTokens: r.prompt_tokens, layers: c.numLayers, kvHeads: c.numKvHeads, policy: r.policy, budget: r.budget, chunk: session.opts.chunk, marks, kept };
}

export async function writeTrace(file: string, session: Session, engine: Engine, prompt: string, r: GenerateResult): Promise<void> {
  fs.writeFileSync(file, JSON.stringify(await buildTrace(session, engine, prompt, r)));
}
