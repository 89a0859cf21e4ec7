/**
 * Reading the text files evaluation works from: JSONL (optionally xz-compressed, as the shipped corpus is) and
 * plain-text corpora. Node has no xz decoder and we keep the runtime free of native add-ons, so `.xz` goes
 * through the system `xz` command.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

/** Largest decompressed file we accept through `xz -dc` (the shipped corpus is ~26 MB). */
const MAX_XZ_BYTES = 1 << 30;

/** The whole file as UTF-8 text; `.xz` files are decompressed with `xz -dc`. */
export function readTextFile(path: string): string {
  if (!path.endsWith('.xz')) {
    try {
      return readFileSync(path, 'utf8');
    } catch (e) {
      throw new Error(`cannot read ${path}: ${(e as Error).message}`);
    }
  }
  const r = spawnSync('xz', ['-dc', '--', path], { maxBuffer: MAX_XZ_BYTES });
  if (r.error) {
    const code = (r.error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') {
      throw new Error(
        `cannot read ${path}: the \`xz\` command was not found. Install it (Debian/Ubuntu: apt-get install xz-utils, ` +
          `macOS: brew install xz) or decompress the file first: xz -dk ${path}`,
      );
    }
    if (code === 'ENOBUFS') throw new Error(`cannot read ${path}: decompressed size exceeds ${MAX_XZ_BYTES} bytes`);
    throw new Error(`cannot read ${path}: running xz failed: ${r.error.message}`);
  }
  if (r.status !== 0) {
    const msg = r.stderr.toString('utf8').trim() || `exit status ${r.status}`;
    throw new Error(`cannot read ${path}: xz -dc failed: ${msg}`);
  }
  return r.stdout.toString('utf8');
}

/**
 * Parses JSONL text; `onRow(value, lineNumber)` sees each non-blank line (1-based numbers, so errors can point
 * at the line a person opens in an editor).
 */
export function parseJsonl<T>(text: string, file: string, onRow: (value: unknown, line: number) => T): T[] {
  const out: T[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trim();
    if (line === '') continue;
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch (e) {
      throw new Error(`${file}:${i + 1}: invalid JSON: ${(e as Error).message}`);
    }
    out.push(onRow(value, i + 1));
  }
  return out;
}

/**
 * A corpus as a list of documents. `.jsonl` / `.jsonl.xz`: one `{"text": ...}` per line (the shipped format).
 * Anything else is plain text, split into paragraphs at blank lines so a haystack can start at many places.
 */
export function readCorpus(path: string): string[] {
  const text = readTextFile(path);
  const docs = /\.jsonl(\.xz)?$/.test(path)
    ? parseJsonl(text, path, (v, line) => {
        const t = (v as { text?: unknown } | null)?.text;
        if (typeof t !== 'string') throw new Error(`${path}:${line}: expected an object with a string "text" field`);
        return t;
      })
    : text.split(/\n[ \t]*\n/).map((p) => p.trim() + '\n');
  const nonEmpty = docs.filter((d) => d.trim() !== '');
  if (nonEmpty.length === 0) throw new Error(`${path}: the corpus holds no text`);
  return nonEmpty;
}
