/**
 * Training samples for the retaining heads: token ids of a prompt followed by an answer, at most `maxTokens` in
 * all. The prompt's tokens get labels; the answer's queries define them. Sample i is a pure function of
 * (source, seed, i), so a resumed run sees exactly the samples it would have seen.
 *
 *   synthetic:<corpus>  retrieval tasks (runtime/eval/tasks.ts) of mixed kinds and 1–4 facts, prompt lengths
 *                       uniform between maxTokens/4 and maxTokens; answer = the tokens of ` ${answer}`
 *   <file.jsonl>        ShareGPT rows {"conversations": [{"from": "human"|"gpt", "value"}]}: prompt = everything
 *                       before the last assistant turn (chat template when the tokenizer has one), answer = it
 */
import { parseJsonl, readCorpus, readTextFile } from '../eval/corpus.js';
import { generateTask, Rng, rowSeed, TASK_KINDS } from '../eval/tasks.js';
import type { ChatMessage, TextTokenizer } from '../io/tokenizer.js';

export interface TrainSample {
  /** prompt then answer token ids */
  readonly ids: readonly number[];
  readonly promptLen: number;
}

export interface TrainData {
  readonly describe: string;
  sample(i: number): TrainSample;
}

export interface DataOptions {
  readonly maxTokens: number;
  readonly seed: number;
  readonly tokenizer: TextTokenizer;
  /** the model's BOS id, kept at the front when a long prompt is cut */
  readonly bos: number | null;
}

/** tokens kept free for the answer of a synthetic task (hex keys and 7-digit numbers are a few tokens) */
const ANSWER_RESERVE = 16;
const MIN_TOKENS = 128;

export function openTrainData(source: string, o: DataOptions): TrainData {
  if (!Number.isInteger(o.maxTokens) || o.maxTokens < MIN_TOKENS) throw new Error(`--max-tokens must be an integer >= ${MIN_TOKENS}`);
  if (source.startsWith('synthetic:')) return syntheticData(readCorpus(source.slice('synthetic:'.length)), o);
  return sharegptData(source, o);
}

export function syntheticData(corpus: readonly string[], o: DataOptions): TrainData {
  const count = (text: string) => o.tokenizer.encode(text).length;
  const hi = o.maxTokens - ANSWER_RESERVE;
  const lo = Math.min(hi, Math.max(MIN_TOKENS / 2, Math.floor(o.maxTokens / 4)));
  // facts plus question can outgrow a short length: fewer facts first, then the longest length allowed
  const taskThatFits = (i: number, kind: (typeof TASK_KINDS)[number], facts: number, tokens: number) => {
    for (const [f, t] of [...Array.from({ length: facts }, (_, j) => [facts - j, tokens]), [1, hi]] as [number, number][]) {
      try {
        return generateTask({ kind, tokens: t, n: i + 1, seed: `train:${o.seed}`, corpus, countTokens: count, facts: f }, i);
      } catch (e) {
        if (!/too small/.test((e as Error).message)) throw e;
      }
    }
    throw new Error(`--max-tokens ${o.maxTokens} is too short for a ${kind} task`);
  };
  return {
    describe: `synthetic retrieval tasks (${corpus.length} corpus documents)`,
    sample(i) {
      const rng = new Rng(rowSeed(`train:${o.seed}`, i));
      const kind = TASK_KINDS[rng.int(0, TASK_KINDS.length - 1)]!;
      const facts = kind === 'passkey' ? 1 : kind === 'multikey' ? rng.int(2, 4) : rng.int(1, 4);
      const tokens = rng.int(lo, hi);
      const row = taskThatFits(i, kind, facts, tokens);
      const prompt = o.tokenizer.encode(row.prompt);
      const answer = o.tokenizer.encode(` ${row.answer}`, { addSpecialTokens: false });
      return fit(prompt, answer, o);
    },
  };
}

interface Turn {
  readonly from: string;
  readonly value: string;
}

const ROLE: Record<string, string> = { human: 'user', user: 'user', gpt: 'assistant', assistant: 'assistant', system: 'system' };

export function sharegptData(file: string, o: DataOptions): TrainData {
  const rows = parseJsonl(readTextFile(file), file, (v, line) => {
    const conv = (v as { conversations?: unknown } | null)?.conversations;
    if (!Array.isArray(conv) || !conv.every((t) => typeof t?.from === 'string' && typeof t?.value === 'string'))
      throw new Error(`${file}:${line}: expected {"conversations": [{"from", "value"}, ...]}`);
    const turns = conv as Turn[];
    const last = turns.findLastIndex((t) => ROLE[t.from] === 'assistant');
    if (last < 1) throw new Error(`${file}:${line}: no assistant turn after a prompt`);
    for (const t of turns) if (!ROLE[t.from]) throw new Error(`${file}:${line}: unknown role "${t.from}"`);
    return turns.slice(0, last + 1);
  });
  if (rows.length === 0) throw new Error(`${file}: no conversations`);
  // a seeded shuffle, then the rows in that order (cycled when there are more steps than rows)
  const order = rows.map((_, i) => i);
  const rng = new Rng(rowSeed(`order:${o.seed}`, 0));
  for (let i = order.length - 1; i > 0; i--) {
    const j = rng.int(0, i);
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  const tok = o.tokenizer;
  return {
    describe: `${rows.length} ShareGPT conversations from ${file}${tok.chatTemplate ? ' (chat template)' : ''}`,
    sample(i) {
      const turns = rows[order[i % rows.length]!]!;
      const msgs: ChatMessage[] = turns.map((t) => ({ role: ROLE[t.from]!, content: t.value }));
      const before = msgs.slice(0, -1);
      let prompt: number[];
      let answer: number[];
      if (tok.chatTemplate) {
        // the template writes BOS itself (as HF's apply_chat_template, which tokenizes without special tokens)
        const head = tok.renderChat(before, { addGenerationPrompt: true });
        const full = tok.renderChat(msgs);
        prompt = tok.encode(head, { addSpecialTokens: false });
        answer = tok.encode(full.startsWith(head) ? full.slice(head.length) : msgs.at(-1)!.content, { addSpecialTokens: false });
      } else {
        prompt = tok.encode(before.map((m) => m.content).join('\n') + '\n');
        answer = tok.encode(msgs.at(-1)!.content, { addSpecialTokens: false });
      }
      return fit(prompt, answer, o);
    },
  };
}

/**
 * Cuts a sample to maxTokens: the answer to at most a quarter of it, then the prompt keeps its BOS and its end
 * (where the question usually is).
 */
function fit(prompt: number[], answer: number[], o: DataOptions): TrainSample {
  if (answer.length === 0) answer = prompt.splice(-1, 1); // degenerate: the prompt's last token becomes the answer
  const a = answer.slice(0, Math.max(1, Math.min(answer.length, Math.floor(o.maxTokens / 4))));
  let p = prompt;
  const room = o.maxTokens - a.length;
  if (p.length > room) {
    const keepBos = o.bos !== null && p[0] === o.bos;
    p = keepBos ? [p[0]!, ...p.slice(p.length - (room - 1))] : p.slice(p.length - room);
  }
  if (p.length === 0) throw new Error('a training sample has an empty prompt');
  return { ids: [...p, ...a], promptLen: p.length };
}
