// Plain CPU reference of the Locret chunk plan and cache bookkeeping (mirrors runtime/assembly/index.ts).

export type RefKind = 'chunk' | 'last-chunk' | 'local';

export interface RefConfig {
  layers: number;
  kvHeads: number;
  budget: number; // policy 'full': the largest prompt (maxPrompt)
  chunk: number;
  stabilizer: number;
  local: number;
  maxNew: number;
  policy: 'locret' | 'full';
  positions: 'compact' | 'original';
}

export interface RefStep {
  index: number;
  kind: RefKind;
  start: number;
  length: number;
}

export interface RefStepTrace {
  slot: number;
  firstPos: number;
  evict: boolean;
  keep: number;
  forcedFrom: number;
  evictedSoFar: number;
}

export function refCapacity(c: RefConfig): number {
  return c.policy === 'locret' ? c.budget + c.chunk + c.local + c.maxNew : c.budget + c.maxNew;
}

/** Steps by walking the prompt: context chunks of `chunk` tokens, then the last min(n, local) tokens. */
export function refPlan(c: RefConfig, n: number): RefStep[] {
  const steps: RefStep[] = [];
  const contextEnd = Math.max(0, n - c.local);
  let start = 0;
  while (start < contextEnd) {
    const length = Math.min(c.chunk, contextEnd - start);
    steps.push({ index: steps.length, kind: 'chunk', start, length });
    start += length;
  }
  if (steps.length > 0) steps[steps.length - 1]!.kind = 'last-chunk';
  if (n > contextEnd) steps.push({ index: steps.length, kind: 'local', start: contextEnd, length: n - contextEnd });
  return steps;
}

/** Largest cache length the prefill of an n-token prompt reaches. */
export function refPeak(c: RefConfig, n: number): number {
  let len = 0;
  let peak = 0;
  for (const s of refPlan(c, n)) {
    len += s.length;
    peak = Math.max(peak, len);
    if (c.policy === 'locret' && s.kind !== 'local' && len > c.budget) len = c.budget;
  }
  return peak;
}

/**
 * Runs the prefill on a per-token model of one (layer, head) stream: `cache` holds the prompt index of every
 * kept token, eviction keeps the `keep` entries with the largest made-up scores (stabilizer forced) in order.
 */
export function refRun(c: RefConfig, n: number, score: (token: number) => number = (t) => ((t * 2654435761) >>> 0) / 2 ** 32) {
  const steps = refPlan(c, n);
  const cache: number[] = [];
  const trace: RefStepTrace[] = [];
  let evicted = 0;
  for (const s of steps) {
    const slot = cache.length;
    for (let t = 0; t < s.length; t++) cache.push(s.start + t);
    const firstPos = c.positions === 'compact' ? slot : s.start;
    const lenAfter = cache.length;
    let evict = false;
    let keep = lenAfter;
    let forcedFrom = lenAfter;
    if (c.policy === 'locret' && s.kind !== 'local' && lenAfter > c.budget) {
      evict = true;
      keep = c.budget;
      if (s.kind === 'chunk') forcedFrom = Math.max(0, lenAfter - c.stabilizer);
      const ranked = cache.map((tok, i) => ({ i, s: i >= forcedFrom ? Infinity : score(tok) }));
      ranked.sort((a, b) => b.s - a.s || a.i - b.i);
      const kept = new Set(ranked.slice(0, keep).map((r) => r.i));
      const next = cache.filter((_, i) => kept.has(i));
      evicted += cache.length - next.length;
      cache.length = 0;
      cache.push(...next);
    }
    trace.push({ slot, firstPos, evict, keep, forcedFrom, evictedSoFar: evicted });
  }
  return { steps, trace, cache, length: cache.length, evicted };
}
