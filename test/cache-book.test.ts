import { rng } from '../runtime/sampling.js';
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import { CacheBook, CacheBookError, type CacheConfig } from '../runtime/cache.js';
import { refCapacity, refPeak, refPlan, refRun, type RefConfig } from './ref/cache-plan.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const wasmPath = fileURLToPath(new URL('../runtime/wasm/cache.wasm', import.meta.url));
const asmDir = fileURLToPath(new URL('../runtime/assembly/', import.meta.url));

/** Builds the wasm when it is missing or older than its sources. */
function ensureWasm(): void {
  const newestSource = Math.max(...readdirSync(asmDir).map((f) => statSync(asmDir + f).mtimeMs));
  if (existsSync(wasmPath) && statSync(wasmPath).mtimeMs >= newestSource) return;
  execFileSync(process.execPath, [
    fileURLToPath(new URL('../node_modules/assemblyscript/bin/asc.js', import.meta.url)),
    'runtime/assembly/index.ts', '--config', 'asconfig.json', '--target', 'release',
  ], { cwd: root, stdio: 'inherit' });
}


function toBook(c: RefConfig): CacheConfig {
  return c.policy === 'locret'
    ? { ...c }
    : { layers: c.layers, kvHeads: c.kvHeads, chunk: c.chunk, stabilizer: c.stabilizer, local: c.local, maxNew: c.maxNew, policy: 'full', maxPrompt: c.budget, positions: c.positions };
}

function cfg(p: Partial<RefConfig>): RefConfig {
  return { layers: 2, kvHeads: 2, budget: 16, chunk: 8, stabilizer: 2, local: 4, maxNew: 5, policy: 'locret', positions: 'compact', ...p };
}

/** Runs prompt + decode through the book and the reference and compares everything observable. */
function compare(book: CacheBook, c: RefConfig, n: number): void {
  expect(book.configure(toBook(c))).toBe(refCapacity(c));
  const ref = refRun(c, n);
  const steps = book.plan(n);
  expect(steps).toEqual(refPlan(c, n));
  expect(book.length).toBe(0);
  expect(steps.reduce((a, s) => a + s.length, 0)).toBe(n);
  for (const [i, s] of steps.entries()) {
    expect(book.prefillDone).toBe(false);
    const r = ref.trace[i]!;
    expect(book.begin(s)).toEqual({ slot: r.slot, firstPos: r.firstPos });
    for (let l = 0; l < c.layers; l++) expect(book.layerLength(l)).toBe(r.slot + s.length);
    expect(book.end(s)).toEqual({ evict: r.evict, keep: r.keep, forcedFrom: r.forcedFrom });
    for (let l = 0; l < c.layers; l++) expect(book.layerLength(l)).toBe(r.keep);
    expect(book.evictedTokens).toBe(r.evictedSoFar);
    expect(book.processedTokens).toBe(s.start + s.length);
    if (r.evict) {
      expect(r.keep).toBe(c.budget);
      expect(r.forcedFrom).toBeGreaterThanOrEqual(r.slot + s.length - c.stabilizer);
    }
  }
  expect(book.prefillDone).toBe(true);
  expect(book.length).toBe(ref.length);
  expect(book.evictedTokens).toBe(ref.evicted);
  expect(book.evictedTokens + book.length).toBe(n);
  if (c.policy === 'locret') expect(book.length).toBeLessThanOrEqual(c.budget + c.local);
  // The local part is never evicted: the last min(n, local) tokens are the newest entries.
  const loc = Math.min(n, c.local);
  expect(ref.cache.slice(ref.cache.length - loc)).toEqual(Array.from({ length: loc }, (_, t) => n - loc + t));

  // Decode until the cache is full, then one more must throw.
  const len0 = book.length;
  const free = book.capacity - len0;
  expect(free).toBeGreaterThanOrEqual(c.maxNew);
  for (let k = 0; k < free; k++) {
    const d = book.appendDecode();
    expect(d.slot).toBe(len0 + k);
    expect(d.pos).toBe(c.positions === 'compact' ? len0 + k : n + k);
  }
  expect(book.length).toBe(book.capacity);
  expect(book.decodedTokens).toBe(free);
  expect(() => book.appendDecode()).toThrow(/KV cache full/);
  expect(book.length).toBe(book.capacity);
  expect(book.evictedTokens).toBe(ref.evicted);
}

describe('CacheBook (wasm) vs TS reference', () => {
  let book: CacheBook;
  beforeAll(async () => {
    ensureWasm();
    book = await CacheBook.load();
  });

  it('plans the documented example', () => {
    // 30 tokens, local 4 -> context 26 = chunks 8, 8, 8, 2; budget 10, stabilizer 3.
    const c = cfg({ budget: 10, chunk: 8, stabilizer: 3, local: 4, maxNew: 2 });
    expect(book.configure(toBook(c))).toBe(10 + 8 + 4 + 2);
    const steps = book.plan(30);
    expect(steps.map((s) => [s.kind, s.start, s.length])).toEqual([
      ['chunk', 0, 8], ['chunk', 8, 8], ['chunk', 16, 8], ['last-chunk', 24, 2], ['local', 26, 4],
    ]);
    const out = steps.map((s) => ({ ...book.begin(s), ...book.end(s), len: book.length }));
    expect(out).toEqual([
      { slot: 0, firstPos: 0, evict: false, keep: 8, forcedFrom: 8, len: 8 },
      { slot: 8, firstPos: 8, evict: true, keep: 10, forcedFrom: 13, len: 10 },
      { slot: 10, firstPos: 10, evict: true, keep: 10, forcedFrom: 15, len: 10 },
      { slot: 10, firstPos: 10, evict: true, keep: 10, forcedFrom: 12, len: 10 },
      { slot: 10, firstPos: 10, evict: false, keep: 14, forcedFrom: 14, len: 14 },
    ]);
    expect(book.evictedTokens).toBe(16);
    expect(book.appendDecode()).toEqual({ slot: 14, pos: 14 });
  });

  it('original positions: queries and decode tokens take absolute indices', () => {
    const c = cfg({ budget: 10, chunk: 8, stabilizer: 3, local: 4, maxNew: 2, positions: 'original' });
    book.configure(toBook(c));
    const steps = book.plan(30);
    expect(steps.map((s) => book.begin(s).firstPos + 0 * book.end(s).keep)).toEqual([0, 8, 16, 24, 26]);
    expect(book.appendDecode()).toEqual({ slot: 14, pos: 30 });
    expect(book.appendDecode()).toEqual({ slot: 15, pos: 31 });
  });

  it('edge cases', () => {
    const cases: [Partial<RefConfig>, number][] = [
      [{}, 1], // shorter than local
      [{}, 4], // exactly local -> one local step
      [{}, 5], // one context token
      [{}, 3 + 4], // shorter than one chunk
      [{}, 8 + 4], // exactly one chunk
      [{}, 16 + 4], // exact multiple, no eviction yet (len 16 == budget)
      [{}, 24 + 4], // exact multiple with eviction
      [{}, 24 + 5],
      [{ local: 100 }, 60], // local larger than the prompt: everything local
      [{ local: 0 }, 40], // no local part: last step is the last chunk
      [{ local: 0 }, 1],
      [{ budget: 1000 }, 300], // budget above the prompt: never evicts
      [{ budget: 3, chunk: 1, stabilizer: 3 }, 50], // stabilizer == budget, one-token chunks
      [{ budget: 5, chunk: 20, stabilizer: 5 }, 90], // chunks bigger than budget
      [{ budget: 8, chunk: 4, stabilizer: 0 }, 41],
      [{ budget: 1, chunk: 1, stabilizer: 1, local: 1, maxNew: 0 }, 10],
      [{ stabilizer: 12, chunk: 4 }, 60], // stabilizer larger than the chunk
      [{ policy: 'full', budget: 100 }, 100], // full: prompt == maxPrompt
      [{ policy: 'full', budget: 100, local: 0 }, 37],
      [{ policy: 'full', budget: 100, local: 200 }, 50],
      [{ layers: 1, kvHeads: 1 }, 33],
      [{ layers: 40, kvHeads: 8 }, 133],
    ];
    for (const [p, n] of cases) {
      for (const positions of ['compact', 'original'] as const) {
        const c = cfg({ ...p, positions });
        try {
          compare(book, c, n);
        } catch (e) {
          throw new Error(`config ${JSON.stringify(c)} n=${n}: ${(e as Error).message}`);
        }
      }
    }
  });

  it('everything local when local >= prompt', () => {
    book.configure(toBook(cfg({ local: 50 })));
    expect(book.plan(50)).toEqual([{ index: 0, kind: 'local', start: 0, length: 50 }]);
    expect(book.plan(7)).toEqual([{ index: 0, kind: 'local', start: 0, length: 7 }]);
  });

  it('random configurations', () => {
    const r = rng(1234);
    const int = (lo: number, hi: number) => lo + Math.floor(r() * (hi - lo + 1));
    for (let iter = 0; iter < 400; iter++) {
      const policy = r() < 0.2 ? 'full' : 'locret';
      const budget = int(1, 64);
      const n = int(1, 300);
      const c: RefConfig = {
        layers: int(1, 6),
        kvHeads: int(1, 4),
        budget: policy === 'full' ? n + int(0, 10) : budget,
        chunk: r() < 0.2 ? int(1, 3) : int(1, 80),
        stabilizer: int(0, Math.min(budget, 20)),
        local: r() < 0.2 ? 0 : int(0, r() < 0.1 ? 400 : 40),
        maxNew: int(0, 20),
        policy,
        positions: r() < 0.5 ? 'compact' : 'original',
      };
      try {
        compare(book, c, n);
      } catch (e) {
        throw new Error(`iter ${iter} config ${JSON.stringify(c)} n=${n}: ${(e as Error).message}`);
      }
    }
  });

  it('random plans match the reference, peak never exceeds capacity', () => {
    const r = rng(99);
    const int = (lo: number, hi: number) => lo + Math.floor(r() * (hi - lo + 1));
    for (let iter = 0; iter < 2000; iter++) {
      const c = cfg({ budget: int(1, 200), chunk: int(1, 200), local: int(0, 200), maxNew: int(0, 50) });
      c.stabilizer = int(0, c.budget);
      const n = int(1, 5000);
      book.configure(toBook(c));
      expect(book.plan(n)).toEqual(refPlan(c, n));
      expect(refPeak(c, n)).toBeLessThanOrEqual(book.capacity);
    }
  });

  it('full policy refuses prompts that exceed the capacity', () => {
    const c = cfg({ policy: 'full', budget: 100, maxNew: 10 });
    expect(book.configure(toBook(c))).toBe(110);
    expect(book.plan(110).length).toBeGreaterThan(0);
    expect(() => book.plan(111)).toThrow(/prompt of 111 tokens needs 111 cache slots, capacity is 110/);
    expect(() => book.plan(111)).toThrow(CacheBookError);
    // The book still works after an error.
    expect(book.plan(100).length).toBe(Math.ceil(96 / 8) + 1);
  });

  it('validates the configuration', () => {
    const base = cfg({});
    expect(() => book.configure({ ...base, budget: 0 })).toThrow(/budget must be > 0/);
    expect(() => book.configure({ ...base, chunk: 0 })).toThrow(/chunk must be > 0/);
    expect(() => book.configure({ ...base, layers: 0 })).toThrow(/layers must be > 0/);
    expect(() => book.configure({ ...base, kvHeads: 0 })).toThrow(/kvHeads must be > 0/);
    expect(() => book.configure({ ...base, stabilizer: 17 })).toThrow(/stabilizer \(17\) must not exceed budget \(16\)/);
    expect(() => book.configure({ ...base, local: -1 })).toThrow(/local must be/);
    expect(() => book.configure({ ...base, budget: 1.5 })).toThrow(/budget must be a non-negative 32-bit integer/);
    expect(() => book.configure({ ...base, budget: 0x3fffffff, chunk: 0x3fffffff })).toThrow(/capacity .* exceeds the limit/);
    expect(() => book.configure({ layers: 1, kvHeads: 1, chunk: 4, policy: 'full' })).toThrow(/maxPrompt/);
    expect(() => book.configure({ layers: 1, kvHeads: 1, chunk: 4 })).toThrow(/needs a budget/);
    expect(book.configure({ layers: 1, kvHeads: 1, chunk: 4, policy: 'full', maxPrompt: 9, maxNew: 1 })).toBe(10);
  });

  it('rejects misuse', async () => {
    const fresh = await CacheBook.load();
    expect(() => fresh.plan(10)).toThrow(/not configured/);
    fresh.configure(toBook(cfg({})));
    expect(() => fresh.begin(0)).toThrow(/no prompt planned/);
    expect(() => fresh.appendDecode()).toThrow(/no prompt planned/);
    expect(() => fresh.plan(0)).toThrow(/prompt length must be > 0/);
    const steps = fresh.plan(40);
    expect(() => fresh.appendDecode()).toThrow(/decode before the prompt's prefill finished/);
    expect(() => fresh.begin(steps[1]!)).toThrow(/expected step 0, got 1/);
    expect(() => fresh.end(steps[0]!)).toThrow(/without a matching beginStep/);
    expect(() => fresh.begin(steps.length)).toThrow(/out of range/);
    fresh.begin(steps[0]!);
    expect(() => fresh.begin(steps[0]!)).toThrow(/still open/);
    expect(() => fresh.begin(steps[1]!)).toThrow(/still open/);
    expect(() => fresh.layerLength(2)).toThrow(/layer 2 out of range/);
    fresh.end(steps[0]!);
    expect(() => fresh.end(steps[0]!)).toThrow(/without a matching beginStep/);
    for (const s of steps.slice(1)) {
      fresh.begin(s);
      fresh.end(s);
    }
    expect(fresh.prefillDone).toBe(true);
    expect(() => fresh.begin(0)).toThrow(/expected step/);
    fresh.appendDecode();
    // Replanning resets the cache.
    fresh.plan(3);
    expect(fresh.length).toBe(0);
    expect(fresh.evictedTokens).toBe(0);
    expect(fresh.decodedTokens).toBe(0);
  });

  it('instances are independent and load from bytes or a module', async () => {
    const bytes = readFileSync(wasmPath);
    const a = await CacheBook.load(bytes);
    const b = CacheBook.instantiate(await WebAssembly.compile(bytes));
    const u = await CacheBook.load(new URL('../runtime/wasm/cache.wasm', import.meta.url));
    a.configure(toBook(cfg({})));
    b.configure(toBook(cfg({ budget: 40 })));
    u.configure(toBook(cfg({ budget: 3, stabilizer: 1 })));
    a.plan(20);
    a.begin(0);
    expect(a.length).toBe(8);
    expect(b.length).toBe(0);
    expect(u.capacity).toBe(3 + 8 + 4 + 5);
    expect(b.capacity).toBe(40 + 8 + 4 + 5);
  });

  it('reference sanity: stabilizer tokens survive a chunk eviction', () => {
    const c = cfg({ budget: 6, chunk: 8, stabilizer: 4, local: 0, layers: 1, kvHeads: 1 });
    // Scores decreasing with the token index: without forcing the oldest would be kept.
    const { cache } = refRun(c, 16, (t) => -t);
    // Chunk 0..7: keep 0, 1 + forced 4..7. Last chunk 8..15: top-6 without forcing keeps the oldest.
    expect(cache).toEqual([0, 1, 4, 5, 6, 7]);
    const two = refRun({ ...c, local: 0 }, 24, (t) => -t);
    // After chunk 1 (tokens 0..15): keep 0,1 + forced 12..15; after last chunk: top-6 of [0,1,12..15,16..23].
    expect(two.cache).toEqual([0, 1, 12, 13, 14, 15]);
  });
});
