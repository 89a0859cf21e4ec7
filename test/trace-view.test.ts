import { describe, expect, it } from 'vitest';
import {
  binTrace,
  markKept,
  renderTraceFile,
  renderTraceHtml,
  renderTraceSvg,
  validateTrace,
  type Trace,
} from '../runtime/eval/trace-view.js';

/**
 * A trace shaped like a Locret prefill: every head keeps the first 4 tokens (sink), the last min(300, P/10) (recent), and a
 * scatter in between; odd heads also keep the needle, even heads of layer 0 lose half of it.
 */
function syntheticTrace(promptTokens = 5000, layers = 4, kvHeads = 2): Trace {
  const start = Math.floor(promptTokens * 0.4);
  const needle = { label: 'needle <pass key>', start, end: start + 30 };
  const recent = Math.min(300, Math.floor(promptTokens / 10));
  const kept: number[][][] = [];
  for (let l = 0; l < layers; l++) {
    const perLayer: number[][] = [];
    for (let h = 0; h < kvHeads; h++) {
      const s = new Set<number>();
      for (let p = 0; p < 4; p++) s.add(p);
      for (let p = promptTokens - recent; p < promptTokens; p++) s.add(p);
      for (let p = 4; p < promptTokens - recent; p += 7 + ((l + h) % 5)) s.add(p);
      if (h % 2 === 1) for (let p = needle.start; p < needle.end; p++) s.add(p);
      else if (l === 0) for (let p = needle.start; p < needle.start + 15; p++) s.add(p);
      else for (let p = needle.start; p < needle.end; p++) s.delete(p);
      perLayer.push([...s].sort((a, b) => a - b));
    }
    kept.push(perLayer);
  }
  return { promptTokens, layers, kvHeads, policy: 'locret', budget: 1024, chunk: 512, marks: [needle], kept };
}

const count = (s: string, re: RegExp) => (s.match(re) ?? []).length;

describe('validateTrace', () => {
  it('accepts a well-formed trace (round trip through JSON)', () => {
    const t = syntheticTrace();
    expect(validateTrace(JSON.parse(JSON.stringify(t)))).toEqual(t);
  });

  it('names the offending field', () => {
    const bad = (patch: (t: Record<string, unknown>) => void) => {
      const t = JSON.parse(JSON.stringify(syntheticTrace(100, 2, 2))) as Record<string, unknown>;
      patch(t);
      return () => validateTrace(t);
    };
    expect(() => validateTrace([])).toThrow(/expected a JSON object/);
    expect(bad((t) => (t.promptTokens = 0))).toThrow(/"promptTokens" must be an integer >= 1/);
    expect(bad((t) => delete t.policy)).toThrow(/"policy" must be a string/);
    expect(bad((t) => (t.layers = 3))).toThrow(/"kept" has 2 layers, "layers" says 3/);
    expect(bad((t) => (t.kept as number[][][])[1]!.pop())).toThrow(/kept\[1\] has 1 heads/);
    expect(bad((t) => ((t.kept as number[][][])[0]![1] = [3, 2]))).toThrow(/kept\[0\]\[1\] is not sorted/);
    expect(bad((t) => ((t.kept as number[][][])[0]![0] = [5, 100]))).toThrow(/kept\[0\]\[0\]\[1\] = 100 is outside \[0, promptTokens=100\)/);
    expect(bad((t) => ((t.kept as unknown[][][])[0]![0] = [1.5]))).toThrow(/not an integer/);
    expect(bad((t) => (t.marks = [{ label: 'x', start: 50, end: 50 }]))).toThrow(/marks\[0\] span \[50, 50\)/);
    expect(bad((t) => (t.marks = [{ start: 1, end: 2 }]))).toThrow(/marks\[0\]\.label/);
  });
});

describe('binTrace', () => {
  it('bins to at most maxBins columns with exact kept fractions', () => {
    const t: Trace = { promptTokens: 10, layers: 1, kvHeads: 1, policy: 'streaming', kept: [[[0, 1, 2, 9]]] };
    const b = binTrace(t, 4); // binSize 3: [0,3) [3,6) [6,9) [9,10)
    expect(b.binSize).toBe(3);
    expect(b.bins).toBe(4);
    expect([...b.fraction[0]!]).toEqual([1, 0, 0, 1]);
    const big = binTrace(syntheticTrace(131072, 1, 1));
    expect(big.bins).toBeLessThanOrEqual(1200);
    expect(big.binSize).toBe(110);
  });

  it('counts kept positions of a mark', () => {
    const t = syntheticTrace();
    const m = t.marks![0]!;
    expect(markKept(t, m, 0, 1)).toEqual({ kept: 30, total: 30 });
    expect(markKept(t, m, 0, 0).kept).toBeGreaterThanOrEqual(15);
    expect(markKept(t, m, 0, 0).kept).toBeLessThan(30);
    expect(markKept(t, m, 2, 0)).toEqual({ kept: 0, total: 30 });
  });
});

describe('renderTraceSvg / renderTraceHtml', () => {
  const t = syntheticTrace();
  const svg = renderTraceSvg(t);

  it('draws one row per (layer, head), the bins, the mark and a legend', () => {
    expect(svg.startsWith('<svg xmlns="http://www.w3.org/2000/svg"')).toBe(true);
    expect(svg.trimEnd().endsWith('</svg>')).toBe(true);
    expect(count(svg, /<g class="row"/g)).toBe(8);
    expect(svg).toContain('data-layer="3" data-head="1"');
    expect(svg).toContain('data-rows="8"');
    expect(svg).toContain('data-bins="1000" data-bin-size="5"');
    expect(svg).toContain('data-label="needle &lt;pass key&gt;" data-start="2000" data-end="2030"');
    expect(svg).toContain('needle &lt;pass key&gt; [2000, 2030)');
    expect(svg).not.toContain('<pass key>'); // escaped
    expect(count(svg, /class="mark-status"/g)).toBe(8);
    expect(count(svg, /class="mark-status"[^>]*fill="#2ca02c"/g)).toBe(4); // odd heads keep the needle
    expect(count(svg, /class="mark-status"[^>]*fill="#ffb000"/g)).toBe(1); // layer 0 head 0: half
    expect(count(svg, /class="mark-status"[^>]*fill="#d62728"/g)).toBe(3);
    expect(svg).toContain('fraction of the bin kept');
    expect(svg).toContain('policy locret · budget 1024 · chunk 512 · 5000 prompt tokens');
    expect(svg).toContain('>L3 h1<');
    // self-contained: no external resources
    expect(svg).not.toMatch(/href=|<script|url\(/);
  });

  it('labels layers only when rows are too thin for per-head labels', () => {
    const many = renderTraceSvg(syntheticTrace(2000, 32, 8));
    expect(count(many, /<g class="row"/g)).toBe(256);
    expect(many).not.toContain('>L3 h1<');
    expect(many).toContain('>L2<');
  });

  it('the HTML page embeds the SVG and summarizes layers and marks', () => {
    const html = renderTraceHtml(t, { title: 'passkey row 3' });
    expect(html.startsWith('<!doctype html>')).toBe(true);
    expect(html).toContain('<title>passkey row 3</title>');
    expect(html).toContain('<svg');
    expect(count(html, /<tr><td>L\d+<\/td><td>\d+\.\d%/g)).toBe(4);
    expect(html).toContain('fully kept by 4 of 8 heads');
    expect(html).toContain('<td style="background:#2ca02c33">30/30</td>');
    expect(html).not.toMatch(/<script|<link|src=/);
  });

  it('renderTraceFile picks SVG for .svg paths', () => {
    expect(renderTraceFile(t, 'out/trace.SVG').startsWith('<svg')).toBe(true);
    expect(renderTraceFile(t, 'trace.html').startsWith('<!doctype html>')).toBe(true);
  });

  it('stays compact for a 128K-token, 256-row trace', () => {
    const big = syntheticTrace(131072, 32, 8);
    const s = renderTraceSvg(big);
    expect(s).toContain('data-bins="1192" data-bin-size="110"');
    expect(s.length).toBeLessThan(20_000_000);
  });
});
