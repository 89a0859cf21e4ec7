import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { readCorpus } from '../runtime/eval/corpus.js';
import {
  findNeedles,
  generateTask,
  generateTasks,
  isCorrect,
  questionSuffix,
  readTaskFile,
  tasksToJsonl,
  type GenerateOptions,
  type TaskKind,
  type TaskRow,
} from '../runtime/eval/tasks.js';

const shared = fileURLToPath(new URL('../../shared/data/', import.meta.url));
const devFile = (name: string) => join(shared, 'dev-tasks', `${name}.jsonl`);
const haveShared = existsSync(devFile('passkey-4k'));

/** A small corpus shaped like the real one: short documents of a few lines, each ending with '\n'. */
const corpus = Array.from({ length: 40 }, (_, d) =>
  Array.from({ length: 1 + (d % 4) }, (_, l) => `Document ${d} line ${l}: the quick brown fox jumps over the lazy dog.`).join('\n') + '\n',
);

/** A fake tokenizer: one token per whitespace-separated word and per newline. */
const countWords = (t: string) => (t.match(/\S+|\n/g) ?? []).length;

const base = (kind: TaskKind, extra: Partial<GenerateOptions> = {}): GenerateOptions => ({
  kind, tokens: 2000, n: 3, seed: 7, corpus, ...extra,
});

/** The row with its variable parts (names, digits, hex) replaced, to compare templates across rows. */
function shape(r: TaskRow) {
  const raw = questionSuffix(r.prompt);
  const q = raw.replace(/"[0-9a-f]{8}"/g, '"KEY"').replace(/(of|for) [A-Z][a-z]+/g, '$1 NAME');
  const answerForm = /^\d{5}$/.test(r.answer) ? 'passkey' : /^[0-9a-f]{8}$/.test(r.answer) ? 'hex8' : /^\d{6,7}$/.test(r.answer) ? 'magic' : 'other';
  return { keys: Object.keys(r), q, answerForm, kind: r.kind, facts: r.facts, bodyEnd: r.prompt.slice(-raw.length - 1, -raw.length) };
}

/** Checks every structural property the dev rows have. */
function checkRow(r: TaskRow) {
  const needles = findNeedles(r.prompt);
  expect(needles).toHaveLength(r.facts);
  const suffix = questionSuffix(r.prompt);
  const body = r.prompt.slice(0, r.prompt.length - suffix.length);
  expect(body.endsWith('\n')).toBe(true); // haystack cut at a line end, then the question's own '\n'
  for (const n of needles) expect(n.start === 0 || r.prompt[n.start - 1] === '\n').toBe(true); // at line starts
  const target = needles.filter((n) => n.answer === r.answer);
  expect(target).toHaveLength(1);
  expect(suffix).toContain(target[0]!.subject);
  // `depth` ~ fraction of the body before the asked fact (facts before it and the line snap shift it a little)
  expect(Math.abs(target[0]!.start / body.length - r.depth)).toBeLessThan(0.05);
  expect(isCorrect(` ${r.answer}.`, r.answer)).toBe(true);
}

describe.skipIf(!haveShared)('generated rows match the dev-tasks rows', () => {
  const realCorpus = haveShared ? readCorpus(join(shared, 'corpus.jsonl.xz')) : [];
  const cases: Array<[TaskKind, string]> = [['passkey', 'passkey-8k'], ['multikey', 'multikey-8k'], ['kv', 'kv-8k'], ['magic', 'magic-8k']];
  it('reads the xz corpus', () => {
    expect(realCorpus.length).toBeGreaterThan(1000);
    expect(realCorpus.every((d) => typeof d === 'string' && d.length > 0)).toBe(true);
  });
  for (const [kind, file] of cases) {
    it(`${kind} ~ ${file}`, () => {
      const dev = readTaskFile(devFile(file));
      for (const r of dev) checkRow(r); // the properties hold on the real rows …
      const rows = generateTasks({ kind, tokens: 4000, n: 4, seed: 'dev', corpus: realCorpus });
      for (const r of rows) {
        checkRow(r); // … and on ours,
        const subjects = findNeedles(r.prompt).map((n) => n.subject);
        expect(new Set(subjects).size).toBe(subjects.length); // (ours never repeat a name: no ambiguous rows)
        expect(shape(r)).toEqual(shape(dev[0]!)); // with the same template, answer form, kind and fact count.
        expect(Object.keys(JSON.parse(tasksToJsonl([r])))).toEqual(Object.keys(JSON.parse(readFileSync(devFile(file), 'utf8').split('\n')[0]!)));
      }
    });
  }
});

describe('generateTasks', () => {
  it('is deterministic in (seed, index), independent of n', () => {
    const a = generateTasks(base('multikey'));
    expect(generateTasks(base('multikey'))).toEqual(a);
    expect(generateTasks(base('multikey', { n: 5 })).slice(0, 3)).toEqual(a);
    expect(generateTask(base('multikey'), 2)).toEqual(a[2]);
    expect(generateTasks(base('multikey', { seed: 8 }))[0]!.prompt).not.toBe(a[0]!.prompt);
    expect(new Set(a.map((r) => r.answer)).size).toBe(3);
  });

  it('writes the exact templates', () => {
    const [p] = generateTasks(base('passkey', { n: 1 }));
    const m = / The pass key of (\w+) is (\d{5})\. Remember it\. \2 is the pass key of \1\.\n/.exec(p!.prompt)!;
    expect(m[2]).toBe(p!.answer);
    expect(questionSuffix(p!.prompt)).toBe(`\nWhat is the pass key of ${m[1]}? The pass key of ${m[1]} is`);
    const [k] = generateTasks(base('kv', { n: 1 }));
    const kv = findNeedles(k!.prompt).find((x) => x.answer === k!.answer)!;
    expect(k!.prompt.slice(kv.start, kv.end)).toBe(` "${kv.subject}": "${k!.answer}",\n`);
    expect(questionSuffix(k!.prompt)).toBe(`\nThe value of key "${kv.subject}" is`);
    const [g] = generateTasks(base('magic', { n: 1 }));
    const mg = findNeedles(g!.prompt).find((x) => x.answer === g!.answer)!;
    expect(g!.prompt.slice(mg.start, mg.end)).toBe(` The special magic number for ${mg.subject} is: ${g!.answer}.\n`);
    expect(questionSuffix(g!.prompt)).toBe(
      `\nWhat is the special magic number for ${mg.subject}? The special magic number for ${mg.subject} is:`,
    );
    for (const r of [p!, k!, g!]) checkRow(r);
    expect([p!.facts, k!.facts, g!.facts]).toEqual([1, 4, 2]);
  });

  it('multikey rows are passkey-template rows with distractors, as in multikey-8k.jsonl', () => {
    for (const r of generateTasks(base('multikey', { n: 5 }))) {
      expect(r.kind).toBe('passkey');
      expect(r.facts).toBe(4);
      checkRow(r);
      const names = findNeedles(r.prompt).map((n) => n.subject);
      expect(new Set(names).size).toBe(4);
    }
    expect(generateTasks(base('multikey', { n: 1, facts: 6 }))[0]!.facts).toBe(6);
  });

  it('fills the token budget without exceeding it', () => {
    for (const tokens of [300, 2000, 9000]) {
      let calls = 0;
      const countTokens = (t: string) => (calls++, countWords(t));
      const rows = generateTasks(base('kv', { tokens, countTokens }));
      for (const r of rows) {
        const n = countWords(r.prompt);
        expect(n).toBeLessThanOrEqual(tokens);
        expect(n).toBeGreaterThan(tokens - 20); // within one corpus line
      }
      expect(calls / rows.length).toBeLessThan(40);
    }
    // default: ~4 characters a token
    const [r] = generateTasks(base('passkey', { tokens: 1000, n: 1 }));
    expect(r!.prompt.length).toBeLessThanOrEqual(4000);
    expect(r!.prompt.length).toBeGreaterThan(3900);
  });

  it('puts the asked fact at the requested depth', () => {
    for (const depth of [0, 0.25, 0.5, 1]) {
      const [r] = generateTasks(base('passkey', { n: 1, depth }));
      expect(r!.depth).toBe(depth);
      checkRow(r!);
    }
  });

  it('rejects bad options clearly', () => {
    expect(() => generateTasks(base('passkey', { tokens: 10 }))).toThrow(/too small.*alone take/);
    expect(() => generateTasks(base('nope' as TaskKind))).toThrow(/unknown task kind 'nope'/);
    expect(() => generateTasks(base('kv', { corpus: ['  '] }))).toThrow(/no text/);
    expect(() => generateTasks(base('kv', { depth: 2 }))).toThrow(/depth/);
  });
});

describe('readTaskFile', () => {
  const dir = mkdtempSync(join(tmpdir(), 'locret-tasks-'));
  const write = (name: string, text: string) => {
    const p = join(dir, name);
    writeFileSync(p, text);
    return p;
  };

  it('reads valid rows, skipping blank lines', () => {
    const rows = generateTasks(base('magic', { n: 2 }));
    const got = readTaskFile(write('ok.jsonl', tasksToJsonl(rows) + '\n'));
    expect(got).toEqual(rows);
  });

  it('names the file and line of malformed JSON', () => {
    const p = write('bad.jsonl', '{"prompt":"a","answer":"1"}\n\n{"prompt": "b", answer}\n');
    expect(() => readTaskFile(p)).toThrow(new RegExp(`bad\\.jsonl:3: invalid JSON`));
  });

  it('rejects rows missing prompt or answer, or with bad fields', () => {
    expect(() => readTaskFile(write('m.jsonl', '{"prompt":"a"}\n'))).toThrow(/m\.jsonl:1: missing "answer"/);
    expect(() => readTaskFile(write('e.jsonl', '{"prompt":"","answer":"1"}\n'))).toThrow(/"prompt" must be a non-empty string/);
    expect(() => readTaskFile(write('d.jsonl', '{"prompt":"a","answer":"1","depth":3}\n'))).toThrow(/"depth" must be a number in \[0, 1\]/);
    expect(() => readTaskFile(write('a.jsonl', '[1,2]\n'))).toThrow(/expected a JSON object/);
    expect(() => readTaskFile(write('empty.jsonl', '\n'))).toThrow(/no task rows/);
    expect(() => readTaskFile(join(dir, 'missing.jsonl'))).toThrow(/cannot read/);
  });

  it.skipIf(!haveShared)('reads the dev sets', () => {
    const rows = readTaskFile(devFile('passkey-4k'));
    expect(rows).toHaveLength(10);
    expect(rows[0]!.kind).toBe('passkey');
  });
});

describe('isCorrect and questionSuffix', () => {
  it('finds the answer in the decoded first tokens', () => {
    expect(isCorrect(' 70010. Remember it. 70010 is', '70010')).toBe(true);
    expect(isCorrect('70010', ' 70010 ')).toBe(true);
    expect(isCorrect(' 7001. Remember', '70010')).toBe(false);
    expect(isCorrect(' "ee56e151",', 'ee56e151')).toBe(true);
    expect(() => isCorrect('anything', '  ')).toThrow(/empty answer/);
  });

  it('questionSuffix is the last line with its leading newline', () => {
    expect(questionSuffix('hay\nhay\n\nWhat is the pass key of Liam? The pass key of Liam is')).toBe(
      '\nWhat is the pass key of Liam? The pass key of Liam is',
    );
    expect(questionSuffix('no newline')).toBe('no newline');
  });
});
