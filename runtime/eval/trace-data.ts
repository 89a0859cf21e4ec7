/**
 * The eviction trace format and the numbers trace-view.ts draws.
 *
 *   {
 *     "promptTokens": 8192, "layers": 8, "kvHeads": 2,
 *     "policy": "locret", "budget": 1024, "chunk": 512,
 *     "marks": [{ "label": "needle", "start": 4100, "end": 4131 }],     // optional, half-open token spans
 *     "kept": [[[0, 1, 2, ...], [...]], ...]                            // [layer][kvHead] sorted positions
 *   }
 *
 * `kept[l][h]` lists the original prompt positions still in layer l's cache for KV head h at the end of prefill.
 */

export interface TraceMark {
  label: string;
  /** First token of the span. */
  start: number;
  /** One past the last token (half-open, like the tokenizer's offsets). */
  end: number;
}

export interface Trace {
  promptTokens: number;
  layers: number;
  kvHeads: number;
  policy: string;
  budget?: number | null;
  chunk?: number | null;
  marks?: TraceMark[];
  kept: number[][][];
}

export interface BinnedTrace {
  bins: number;
  /** Tokens per bin (the last bin may hold fewer). */
  binSize: number;
  /** [layer * kvHeads + head][bin] = kept fraction of the bin, 0..1. */
  fraction: Float64Array[];
}

function fail(msg: string): never {
  throw new Error(`invalid trace: ${msg}`);
}

function posInt(v: unknown, name: string, min = 1): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min) {
    fail(`"${name}" must be an integer >= ${min}, got ${JSON.stringify(v)}`);
  }
  return v;
}

/** Checks a parsed trace JSON and returns it typed; every error names the offending field. */
export function validateTrace(json: unknown): Trace {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) fail('expected a JSON object');
  const o = json as Record<string, unknown>;
  const promptTokens = posInt(o.promptTokens, 'promptTokens');
  const layers = posInt(o.layers, 'layers');
  const kvHeads = posInt(o.kvHeads, 'kvHeads');
  if (typeof o.policy !== 'string') fail(`"policy" must be a string, got ${JSON.stringify(o.policy)}`);
  for (const k of ['budget', 'chunk'] as const) {
    if (o[k] !== undefined && o[k] !== null) posInt(o[k], k, 0);
  }
  if (!Array.isArray(o.kept)) fail('"kept" must be an array [layer][kvHead] of position lists');
  if (o.kept.length !== layers) fail(`"kept" has ${o.kept.length} layers, "layers" says ${layers}`);
  o.kept.forEach((perLayer: unknown, l) => {
    if (!Array.isArray(perLayer)) fail(`kept[${l}] must be an array of ${kvHeads} position lists`);
    if (perLayer.length !== kvHeads) fail(`kept[${l}] has ${perLayer.length} heads, "kvHeads" says ${kvHeads}`);
    perLayer.forEach((list: unknown, h) => {
      if (!Array.isArray(list)) fail(`kept[${l}][${h}] must be an array of positions`);
      let prev = -1;
      for (let i = 0; i < list.length; i++) {
        const p = list[i];
        if (typeof p !== 'number' || !Number.isInteger(p)) fail(`kept[${l}][${h}][${i}] is not an integer: ${JSON.stringify(p)}`);
        if (p < 0 || p >= promptTokens) fail(`kept[${l}][${h}][${i}] = ${p} is outside [0, promptTokens=${promptTokens})`);
        if (p <= prev) fail(`kept[${l}][${h}] is not sorted ascending without repeats (index ${i}: ${prev} then ${p})`);
        prev = p;
      }
    });
  });
  let marks: TraceMark[] | undefined;
  if (o.marks !== undefined) {
    if (!Array.isArray(o.marks)) fail('"marks" must be an array of {label, start, end}');
    marks = o.marks.map((m: unknown, i): TraceMark => {
      if (typeof m !== 'object' || m === null) fail(`marks[${i}] must be an object {label, start, end}`);
      const r = m as Record<string, unknown>;
      if (typeof r.label !== 'string') fail(`marks[${i}].label must be a string`);
      const start = posInt(r.start, `marks[${i}].start`, 0);
      const end = posInt(r.end, `marks[${i}].end`, 0);
      if (!(start < end && end <= promptTokens)) {
        fail(`marks[${i}] span [${start}, ${end}) must satisfy start < end <= promptTokens=${promptTokens}`);
      }
      return { label: r.label, start, end };
    });
  }
  const t: Trace = { promptTokens, layers, kvHeads, policy: o.policy, kept: o.kept as number[][][] };
  if (o.budget !== undefined) t.budget = o.budget as number | null;
  if (o.chunk !== undefined) t.chunk = o.chunk as number | null;
  if (marks) t.marks = marks;
  return t;
}

/** Bins positions so at most `maxBins` columns remain; bins hold `binSize` consecutive positions. */
export function binTrace(t: Trace, maxBins = 1200): BinnedTrace {
  if (!Number.isInteger(maxBins) || maxBins < 1) throw new Error(`maxBins must be a positive integer, got ${maxBins}`);
  const binSize = Math.ceil(t.promptTokens / maxBins);
  const bins = Math.ceil(t.promptTokens / binSize);
  const fraction: Float64Array[] = [];
  for (let l = 0; l < t.layers; l++) {
    for (let h = 0; h < t.kvHeads; h++) {
      const f = new Float64Array(bins);
      for (const p of t.kept[l]![h]!) f[Math.floor(p / binSize)]! += 1;
      for (let b = 0; b < bins; b++) f[b]! /= Math.min(binSize, t.promptTokens - b * binSize);
      fraction.push(f);
    }
  }
  return { bins, binSize, fraction };
}

/** Number of positions of a sorted list in [lo, hi). */
function countIn(sorted: readonly number[], lo: number, hi: number): number {
  const lb = (x: number) => {
    let a = 0;
    let b = sorted.length;
    while (a < b) {
      const m = (a + b) >> 1;
      if (sorted[m]! < x) a = m + 1;
      else b = m;
    }
    return a;
  };
  return lb(hi) - lb(lo);
}

/** How many of a mark's positions layer l, head h kept. */
export function markKept(t: Trace, m: TraceMark, l: number, h: number): { kept: number; total: number } {
  return { kept: countIn(t.kept[l]![h]!, m.start, m.end), total: m.end - m.start };
}

/** Kept fraction of the prompt per layer: mean, min and max over its KV heads. */
export function layerKeptFraction(t: Trace): Array<{ mean: number; min: number; max: number }> {
  return t.kept.map((heads) => {
    const f = heads.map((list) => list.length / t.promptTokens);
    return { mean: f.reduce((a, b) => a + b, 0) / f.length, min: Math.min(...f), max: Math.max(...f) };
  });
}

/** Round tick positions (1, 2 or 5 times a power of ten apart) in [0, n], about `target` of them. */
export function niceTicks(n: number, target: number): number[] {
  const raw = n / Math.max(1, target);
  const pow = 10 ** Math.floor(Math.log10(Math.max(raw, 1)));
  const step = [1, 2, 5, 10].map((k) => k * pow).find((s) => s >= raw) ?? 10 * pow;
  const ticks: number[] = [];
  for (let v = 0; v <= n; v += step) ticks.push(v);
  return ticks;
}
