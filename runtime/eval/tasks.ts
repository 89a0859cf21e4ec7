/**
 * Synthetic long-context retrieval tasks (`locret tasks`), in exactly the templates the tiny model was trained on
 * and the rows of `data/dev-tasks/*.jsonl` use:
 *
 *   prompt = haystack with the facts inserted + question
 *   passkey  fact     ` The pass key of {Name} is {5 digits}. Remember it. {digits} is the pass key of {Name}.\n`
 *            question `\nWhat is the pass key of {Name}? The pass key of {Name} is`
 *   multikey the passkey template with several facts about different names (rows say kind 'passkey', facts 4,
 *            exactly as multikey-8k.jsonl does: the template is the passkey one, `facts` says how many)
 *   kv       fact ` "{8 hex}": "{8 hex}",\n`     question `\nThe value of key "{key}" is`
 *   magic    fact ` The special magic number for {Name} is: {6-7 digits}.\n`
 *            question `\nWhat is the special magic number for {Name}? The special magic number for {Name} is:`
 *
 * Layout, as measured on the dev rows:
 * - haystack: consecutive corpus documents from a random start, joined with '\n' (documents end with '\n', so a
 *   blank line separates them; the corpus wraps around), cut at a line end, so the haystack ends with '\n' and
 *   the question's own leading '\n' leaves a blank line before it;
 * - each fact is inserted at the start of a line (the dev rows put facts between lines, mid-sentence or not);
 * - `depth` (3 decimals) is where the asked-about fact sits: the fraction of the haystack's characters before it,
 *   snapped back to the start of that line; the other facts (distractors) sit at independent random depths;
 * - `facts` counts the facts in the prompt (passkey 1, multikey 4, kv 4, magic 2 by default).
 * One deliberate difference: a row's names (and kv keys, and answers) are all distinct. The dev multikey set
 * sometimes repeats the asked name among distractors, which makes those rows ambiguous.
 *
 * Length: the prompt is the longest such text whose `countTokens(prompt)` is <= `tokens` (pass the model's
 * tokenizer; the default approximation is 4 characters a token). Generation is deterministic in (seed, row index):
 * row i is the same whatever `n` is.
 */
export { findNeedles, isCorrect, questionSuffix, readTaskFile, type Needle, type TaskRow } from './task-file.js';
import type { TaskRow } from './task-file.js';

export const TASK_KINDS = ['passkey', 'multikey', 'kv', 'magic'] as const;
export type TaskKind = (typeof TASK_KINDS)[number];

export type CountTokens = (text: string) => number;

/** Rough count when no tokenizer is at hand: ~4 characters a token (English BPE). */
export const approxTokens: CountTokens = (text) => Math.ceil(text.length / 4);

export const DEFAULT_FACTS: Readonly<Record<TaskKind, number>> = { passkey: 1, multikey: 4, kv: 4, magic: 2 };

export interface GenerateOptions {
  kind: TaskKind;
  /** Upper bound on countTokens(prompt). */
  tokens: number;
  /** Number of rows. */
  n: number;
  seed: number | string;
  /** Documents (see readCorpus). */
  corpus: readonly string[];
  countTokens?: CountTokens;
  /** Facts per prompt (default DEFAULT_FACTS[kind]; passkey forces 1). */
  facts?: number;
  /** Depth of the asked fact in every row (0..1); default uniform random per row. */
  depth?: number;
}

/** Names as they appear in the dev sets (single BPE-friendly words, capitalized). */
const NAMES = [
  'Adrian', 'Amelia', 'Beatrice', 'Benjamin', 'Bob', 'Carol', 'Cedric', 'Charlotte', 'Daniel', 'David', 'Delilah',
  'Edmund', 'Erin', 'Felix', 'Frank', 'Georgia', 'Gideon', 'Grace', 'Harriet', 'Heidi', 'Henry', 'Ignatius',
  'Isabel', 'Ivan', 'Jasper', 'Josephine', 'Judy', 'Kenneth', 'Lavinia', 'Liam', 'Magnus', 'Mallory', 'Matilda',
  'Nathan', 'Niaj', 'Olivia', 'Ophelia', 'Oswald', 'Patrick', 'Peggy', 'Penelope', 'Quentin', 'Roderick',
  'Rosalind', 'Rupert', 'Samuel', 'Seraphina', 'Sybil', 'Theodora', 'Tobias', 'Trent', 'Ulysses', 'Ursula',
  'Victor', 'Vincent', 'Walter', 'William', 'Winifred', 'Ximena', 'Yolanda', 'Yusuf', 'Zachary', 'Zoe',
] as const;

/** Small fast PRNG (mulberry32): our own so rows are identical on every Node version and platform. */
export class Rng {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0;
  }
  /** Uniform in [0, 1). */
  next(): number {
    this.s = (this.s + 0x6d2b79f5) >>> 0;
    let t = this.s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  /** Uniform integer in [lo, hi]. */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }
}

/** Seed of row `index`: FNV-1a over the seed's text, mixed with the index (rows independent of `n`). */
export function rowSeed(seed: number | string, index: number): number {
  let h = 0x811c9dc5;
  for (const ch of `${seed}#${index}`) h = Math.imul(h ^ ch.charCodeAt(0), 0x01000193);
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  return h >>> 0;
}

interface Fact {
  text: string;
  question: string;
  answer: string;
}

/** `count` facts with distinct names/keys and distinct answers; facts[0] is the one asked about. */
function makeFacts(kind: TaskKind, count: number, rng: Rng): Fact[] {
  const used = new Set<string>();
  const answers = new Set<string>();
  const unique = (draw: () => string, seen: Set<string>): string => {
    for (;;) {
      const v = draw();
      if (!seen.has(v)) return seen.add(v), v;
    }
  };
  const name = () => unique(() => NAMES[rng.int(0, NAMES.length - 1)]!, used);
  const hex8 = () => rng.int(0, 0xffffffff).toString(16).padStart(8, '0');
  const facts: Fact[] = [];
  for (let i = 0; i < count; i++) {
    if (kind === 'kv') {
      const key = unique(hex8, used);
      const value = unique(hex8, answers);
      facts.push({ text: ` "${key}": "${value}",\n`, question: `\nThe value of key "${key}" is`, answer: value });
    } else if (kind === 'magic') {
      const who = name();
      const num = unique(() => String(rng.int(100_000, 9_999_999)), answers);
      facts.push({
        text: ` The special magic number for ${who} is: ${num}.\n`,
        question: `\nWhat is the special magic number for ${who}? The special magic number for ${who} is:`,
        answer: num,
      });
    } else {
      const who = name();
      const key = unique(() => String(rng.int(10_000, 99_999)), answers);
      facts.push({
        text: ` The pass key of ${who} is ${key}. Remember it. ${key} is the pass key of ${who}.\n`,
        question: `\nWhat is the pass key of ${who}? The pass key of ${who} is`,
        answer: key,
      });
    }
  }
  return facts;
}

/** Start of the line containing character `p` of `text` (text[p-1] === '\n' means p already is one). */
function lineStart(text: string, p: number): number {
  return p <= 0 ? 0 : text.lastIndexOf('\n', p - 1) + 1;
}

/** Inserts the facts at their depths (in haystack characters, snapped to line starts) and appends the question. */
function assemble(hay: string, facts: readonly Fact[], depths: readonly number[]): string {
  const at = facts.map((_, i) => ({ i, pos: lineStart(hay, Math.round(depths[i]! * hay.length)) }));
  at.sort((a, b) => a.pos - b.pos || a.i - b.i);
  const parts: string[] = [];
  let prev = 0;
  for (const { i, pos } of at) {
    parts.push(hay.slice(prev, pos), facts[i]!.text);
    prev = pos;
  }
  parts.push(hay.slice(prev), facts[0]!.question);
  return parts.join('');
}

/** Corpus documents from `start` on (wrapping), joined with '\n', each ending with '\n'; at least `minChars`. */
function takeText(corpus: readonly string[], start: number, minChars: number): string {
  const parts: string[] = [];
  let len = 0;
  for (let i = start; len < minChars; i++) {
    const d = corpus[i % corpus.length]!;
    const doc = d.endsWith('\n') ? d : d + '\n';
    if (parts.length) parts.push('\n'), len++;
    parts.push(doc);
    len += doc.length;
  }
  return parts.join('');
}

/**
 * The longest haystack (cut at a line end of the corpus text) whose assembled prompt fits `maxTokens`. Counting
 * can be expensive (a real tokenizer over a 128K-token prompt), so the search interpolates on the token count
 * and falls back to bisection whenever interpolation keeps landing on one side (regula falsi stalls there).
 */
function fitHaystack(
  corpus: readonly string[],
  start: number,
  build: (hay: string) => string,
  count: CountTokens,
  maxTokens: number,
): string {
  const base = count(build(''));
  if (base > maxTokens) {
    throw new Error(`--tokens ${maxTokens} is too small: the facts and the question alone take ${base} tokens`);
  }
  let want = maxTokens * 5 + 1000;
  let text = takeText(corpus, start, want);
  let tFull = count(build(text));
  while (tFull <= maxTokens) {
    want *= 2;
    if (want > 2 ** 30) throw new Error(`cannot reach ${maxTokens} tokens: countTokens grows too slowly with text`);
    text = takeText(corpus, start, want);
    tFull = count(build(text));
  }
  const ends = [0];
  for (let i = text.indexOf('\n'); i >= 0; i = text.indexOf('\n', i + 1)) ends.push(i + 1);
  let lo = 0;
  let tLo = base;
  let hi = ends.length - 1;
  let tHi = tFull;
  let lastSide = 0;
  let sameSide = 0;
  while (hi - lo > 1) {
    let mid: number;
    if (sameSide >= 2 || tHi <= tLo) {
      mid = (lo + hi) >> 1;
      sameSide = 0;
    } else {
      const target = ends[lo]! + ((maxTokens - tLo) / (tHi - tLo)) * (ends[hi]! - ends[lo]!);
      mid = lowerBound(ends, target);
      mid = Math.min(hi - 1, Math.max(lo + 1, mid));
    }
    const t = count(build(text.slice(0, ends[mid])));
    const side = t <= maxTokens ? -1 : 1;
    if (side < 0) (lo = mid), (tLo = t);
    else (hi = mid), (tHi = t);
    sameSide = side === lastSide ? sameSide + 1 : 1;
    lastSide = side;
  }
  return text.slice(0, ends[lo]);
}

/** First index i with a[i] >= x (a ascending). */
function lowerBound(a: readonly number[], x: number): number {
  let l = 0;
  let r = a.length;
  while (l < r) {
    const m = (l + r) >> 1;
    if (a[m]! < x) l = m + 1;
    else r = m;
  }
  return l;
}

function checkOptions(o: GenerateOptions): number {
  if (!(TASK_KINDS as readonly string[]).includes(o.kind)) {
    throw new Error(`unknown task kind '${o.kind}' (expected one of ${TASK_KINDS.join(', ')})`);
  }
  if (!Number.isInteger(o.tokens) || o.tokens <= 0) throw new Error(`tokens must be a positive integer, got ${o.tokens}`);
  if (!Number.isInteger(o.n) || o.n < 0) throw new Error(`n must be a non-negative integer, got ${o.n}`);
  if (!o.corpus.some((d) => d.trim() !== '')) throw new Error('the corpus holds no text');
  if (o.depth !== undefined && !(o.depth >= 0 && o.depth <= 1)) throw new Error(`depth must be in [0, 1], got ${o.depth}`);
  const facts = o.kind === 'passkey' ? 1 : (o.facts ?? DEFAULT_FACTS[o.kind]);
  if (!Number.isInteger(facts) || facts < 1) throw new Error(`facts must be a positive integer, got ${facts}`);
  if (o.kind !== 'kv' && facts > NAMES.length) throw new Error(`at most ${NAMES.length} facts (distinct names)`);
  return facts;
}

/** Row `index` of the set described by `opts` (what generateTasks returns at that index). */
export function generateTask(opts: GenerateOptions, index: number): TaskRow {
  const nFacts = checkOptions(opts);
  // The kind is part of the seed so a passkey and a kv set made with one seed do not share names and depths.
  const rng = new Rng(rowSeed(`${opts.kind}:${opts.seed}`, index));
  const corpus = opts.corpus.filter((d) => d.trim() !== '');
  const start = rng.int(0, corpus.length - 1);
  const facts = makeFacts(opts.kind, nFacts, rng);
  const round3 = (x: number) => Math.round(x * 1000) / 1000;
  const depths = facts.map(() => round3(rng.next()));
  if (opts.depth !== undefined) depths[0] = round3(opts.depth);
  const build = (hay: string) => assemble(hay, facts, depths);
  const hay = fitHaystack(corpus, start, build, opts.countTokens ?? approxTokens, opts.tokens);
  return {
    prompt: build(hay),
    answer: facts[0]!.answer,
    depth: depths[0]!,
    kind: opts.kind === 'kv' || opts.kind === 'magic' ? opts.kind : 'passkey',
    facts: nFacts,
  };
}

export function generateTasks(opts: GenerateOptions): TaskRow[] {
  checkOptions(opts);
  return Array.from({ length: opts.n }, (_, i) => generateTask(opts, i));
}

/** Rows as JSONL text (one object a line, keys in the dev files' order). */
export function tasksToJsonl(rows: readonly TaskRow[]): string {
  return rows
    .map((r) => JSON.stringify({ prompt: r.prompt, answer: r.answer, depth: r.depth, kind: r.kind, facts: r.facts }))
    .map((l) => l + '\n')
    .join('');
}
