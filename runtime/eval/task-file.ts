/**
 * Task rows on disk and how they are scored. A row file is JSONL, one
 * `{"prompt", "answer", "depth", "kind", "facts"}` a line (the format of `data/dev-tasks/*.jsonl`).
 */
import { parseJsonl, readTextFile } from './corpus.js';

export interface TaskRow {
  /** Raw text; the tokenizer adds BOS. Ends with the question line; the model continues with the answer. */
  prompt: string;
  answer: string;
  /** Where the asked fact sits in the haystack, 0..1 (fraction of haystack characters before it). */
  depth: number;
  /** Template: 'passkey' (multikey rows too), 'kv' or 'magic'. */
  kind: string;
  /** Facts inserted in the haystack (1 = no distractors). */
  facts: number;
}

/** How many generated tokens are decoded and searched for the answer. */
export const ANSWER_TOKENS = 12;

/**
 * Reads and validates a task file (`.jsonl`, or `.jsonl.xz`). `prompt` and `answer` are required non-empty
 * strings; `depth`, `kind` and `facts` are optional for hand-written files (defaults NaN, 'custom', 1) but are
 * checked when present. Errors name the file and the 1-based line.
 */
export function readTaskFile(path: string): TaskRow[] {
  const rows = parseJsonl(readTextFile(path), path, (v, line) => validateRow(v, `${path}:${line}`));
  if (rows.length === 0) throw new Error(`${path}: no task rows`);
  return rows;
}

export function validateRow(v: unknown, where: string): TaskRow {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error(`${where}: expected a JSON object`);
  const o = v as Record<string, unknown>;
  for (const key of ['prompt', 'answer'] as const) {
    if (!(key in o)) throw new Error(`${where}: missing "${key}"`);
    if (typeof o[key] !== 'string' || (o[key] as string).trim() === '') {
      throw new Error(`${where}: "${key}" must be a non-empty string`);
    }
  }
  if (o.depth !== undefined && (typeof o.depth !== 'number' || !(o.depth >= 0 && o.depth <= 1))) {
    throw new Error(`${where}: "depth" must be a number in [0, 1], got ${JSON.stringify(o.depth)}`);
  }
  if (o.kind !== undefined && typeof o.kind !== 'string') throw new Error(`${where}: "kind" must be a string`);
  if (o.facts !== undefined && !(Number.isInteger(o.facts) && (o.facts as number) >= 1)) {
    throw new Error(`${where}: "facts" must be a positive integer, got ${JSON.stringify(o.facts)}`);
  }
  return {
    prompt: o.prompt as string,
    answer: o.answer as string,
    depth: (o.depth as number | undefined) ?? NaN,
    kind: (o.kind as string | undefined) ?? 'custom',
    facts: (o.facts as number | undefined) ?? 1,
  };
}

/**
 * Whether a row was answered: `generatedText` is the decoded text of the first ANSWER_TOKENS generated tokens
 * (the caller decodes), and the answer must appear in it. Substring, as the reference results count it: the
 * model typically continues ` 70010. Remember it.` and a tokenizer may split digits differently, so neither
 * a prefix nor a token-level match is required. The answer's surrounding whitespace is ignored.
 */
export function isCorrect(generatedText: string, answer: string): boolean {
  const a = answer.trim();
  if (a === '') throw new Error('isCorrect: empty answer would match anything');
  return generatedText.includes(a);
}

/**
 * The "local" part of a prompt: the question, i.e. the text from the prompt's last '\n' on, that newline included
 * (`\nWhat is the pass key of Liam? The pass key of Liam is`). Every template's question starts with that '\n',
 * so this is exactly the question as the generator appended it; Locret runs these tokens without eviction (n_loc)
 * so the question always sees the cache it queries. A prompt without a newline is all question.
 *
 * To get the local token count, tokenize the whole prompt and the prompt without this suffix and subtract:
 * byte-level BPE merges the haystack's final '\n' with the question's into one '\n\n' token, so tokenizing the
 * suffix alone can be off by one.
 */
export function questionSuffix(prompt: string): string {
  const i = prompt.lastIndexOf('\n');
  return i < 0 ? prompt : prompt.slice(i);
}

/** A fact found in a prompt. `start`/`end`: character offsets, half-open, of the whole fact text. */
export interface Needle {
  kind: 'passkey' | 'kv' | 'magic';
  start: number;
  end: number;
  /** Name (passkey, magic) or key (kv). */
  subject: string;
  answer: string;
}

const NEEDLE_PATTERNS: ReadonlyArray<[Needle['kind'], RegExp]> = [
  ['passkey', / The pass key of (\w+) is (\d+)\. Remember it\. \2 is the pass key of \1\.\n/g],
  ['kv', / "([0-9a-f]{8})": "([0-9a-f]{8})",\n/g],
  ['magic', / The special magic number for (\w+) is: (\d+)\.\n/g],
];

/**
 * Every fact of the three templates in `prompt`, in text order. Lets an eviction trace mark the needle span and
 * a report say which facts survived, for generated and hand-made rows alike. Map the character spans to tokens
 * with the tokenizer's offsets.
 */
export function findNeedles(prompt: string): Needle[] {
  const out: Needle[] = [];
  for (const [kind, re] of NEEDLE_PATTERNS) {
    for (const m of prompt.matchAll(re)) {
      out.push({ kind, start: m.index!, end: m.index! + m[0].length, subject: m[1]!, answer: m[2]! });
    }
  }
  return out.sort((a, b) => a.start - b.start);
}
