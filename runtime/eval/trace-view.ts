/**
 * Eviction trace → a heatmap a person can read (`locret trace-view trace.json -o trace.html|trace.svg`).
 *
 *   rows    one per (layer, KV head): each head keeps its own tokens, so a head that drops the needle shows up
 *   x       prompt position, binned to at most ~1200 columns; shade = fraction of the bin still in the cache at
 *           the end of prefill (white-grey: evicted, dark blue: all kept)
 *   marks   labelled bands over all rows (e.g. the needle span), and a dot per row and mark at the right:
 *           green = every position of the mark kept, amber = some, red = none
 *
 * The output is self-contained (inline SVG and CSS, no scripts, fonts or links) so it can be attached to an issue
 * or opened from a CI artifact. Trace validation and the numbers behind the picture live in trace-data.ts.
 */
import { binTrace, layerKeptFraction, markKept, niceTicks, type Trace } from './trace-data.js';

export { validateTrace, binTrace, markKept, type Trace, type TraceMark, type BinnedTrace } from './trace-data.js';

export interface RenderOptions {
  /** Most columns of the heatmap (default 1200). */
  maxBins?: number;
  /** Title shown above the picture. */
  title?: string;
}

const PLOT_W = 1200;
const MARK_COLORS = ['#e6550d', '#31a354', '#756bb1', '#d6616b', '#3182bd', '#8c6d31'];
const KEPT_RGB = [8, 48, 107];
const EVICTED_RGB = [240, 240, 240];

export function escapeXml(s: string): string {
  return s.replace(/[<>&"']/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;', "'": '&#39;' })[c]!);
}

/** Fill for a kept fraction: grey (evicted) to dark blue (all kept), linear in RGB. */
function shade(f: number): string {
  const c = EVICTED_RGB.map((e, i) => Math.round(e + (KEPT_RGB[i]! - e) * f));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}

function markColor(i: number): string {
  return MARK_COLORS[i % MARK_COLORS.length]!;
}

function statusColor(kept: number, total: number): string {
  return kept === total ? '#2ca02c' : kept === 0 ? '#d62728' : '#ffb000';
}

function fmtTok(v: number): string {
  return v >= 1000 && v % 1000 === 0 ? `${v / 1000}k` : String(v);
}

export function renderTraceSvg(trace: Trace, opts: RenderOptions = {}): string {
  const b = binTrace(trace, opts.maxBins ?? 1200);
  const rows = trace.layers * trace.kvHeads;
  const marks = trace.marks ?? [];
  // Rows shrink to fit ~900 px (32 layers x 8 heads = 256 rows of 3 px) but never below 3 px.
  const rowH = Math.max(3, Math.min(14, Math.floor(900 / rows)));
  const labelEvery = rowH >= 9 ? 'head' : 'layer';
  const left = 70;
  const markLabelRows = Math.min(marks.length, 3);
  const top = 34 + 16 * Math.max(1, markLabelRows);
  const cellW = PLOT_W / b.bins;
  const plotH = rows * rowH;
  const right = left + PLOT_W + 12;
  const width = right + Math.max(1, marks.length) * 12 + 60;
  const height = top + plotH + 100;
  const xOf = (pos: number) => left + (pos / b.binSize) * cellW;
  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" ` +
      `font-family="ui-sans-serif, system-ui, sans-serif" font-size="11" data-rows="${rows}" data-bins="${b.bins}" ` +
      `data-bin-size="${b.binSize}">`,
    `<rect width="${width}" height="${height}" fill="#ffffff"/>`,
    `<text x="${left}" y="16" font-size="13" font-weight="600">${escapeXml(opts.title ?? 'Eviction trace')}</text>`,
    `<text x="${left}" y="30" fill="#444">${escapeXml(describeTrace(trace, b.binSize))}</text>`,
  );
  // Heatmap: runs of equal (quantized) shade become one rect, so a 256 x 1200 map stays a few hundred KB.
  out.push(`<rect x="${left}" y="${top}" width="${PLOT_W}" height="${plotH}" fill="${shade(0)}"/>`);
  for (let l = 0; l < trace.layers; l++) {
    for (let h = 0; h < trace.kvHeads; h++) {
      const r = l * trace.kvHeads + h;
      const y = top + r * rowH;
      out.push(`<g class="row" data-layer="${l}" data-head="${h}">`);
      const q = b.fraction[r]!.map((f) => Math.round(f * 32) / 32);
      for (let i = 0; i < b.bins; ) {
        let j = i + 1;
        while (j < b.bins && q[j] === q[i]) j++;
        if (q[i]! > 0) {
          const x = left + i * cellW;
          out.push(`<rect x="${x.toFixed(2)}" y="${y}" width="${((j - i) * cellW).toFixed(2)}" height="${rowH}" fill="${shade(q[i]!)}"/>`);
        }
        i = j;
      }
      out.push('</g>');
      const label = labelEvery === 'head' ? `L${l} h${h}` : h === 0 && (trace.kvHeads * rowH >= 9 || l % 2 === 0) ? `L${l}` : '';
      if (label) out.push(`<text x="${left - 6}" y="${y + Math.min(rowH, 11) - 1}" text-anchor="end" font-size="${Math.min(11, Math.max(8, rowH))}">${label}</text>`);
    }
  }
  out.push(`<rect x="${left}" y="${top}" width="${PLOT_W}" height="${plotH}" fill="none" stroke="#888"/>`);
  // Marks: a translucent band over all rows with solid edges (at least 2 px wide so a 30-token needle in a 128K
  // prompt stays visible), its label above the plot, and a status dot per row on the right.
  marks.forEach((m, i) => {
    const color = markColor(i);
    const x0 = xOf(m.start);
    const w = Math.max(2, xOf(m.end) - x0);
    const ly = top - 6 - 16 * (i % 3);
    out.push(
      `<g class="mark" data-label="${escapeXml(m.label)}" data-start="${m.start}" data-end="${m.end}">`,
      `<rect x="${x0.toFixed(2)}" y="${top}" width="${w.toFixed(2)}" height="${plotH}" fill="${color}" fill-opacity="0.22" stroke="${color}" stroke-width="1"/>`,
      `<line x1="${(x0 + w / 2).toFixed(2)}" x2="${(x0 + w / 2).toFixed(2)}" y1="${ly + 3}" y2="${top}" stroke="${color}"/>`,
      `<text x="${(x0 + w / 2).toFixed(2)}" y="${ly}" text-anchor="${x0 > left + PLOT_W * 0.85 ? 'end' : x0 < left + PLOT_W * 0.15 ? 'start' : 'middle'}" fill="${color}" font-weight="600">${escapeXml(m.label)} [${m.start}, ${m.end})</text>`,
      '</g>',
    );
    const cx = right + 6 + i * 12;
    out.push(`<text x="${cx}" y="${top - 4}" text-anchor="middle" fill="${color}" font-weight="600">${i + 1}</text>`);
    for (let r = 0; r < rows; r++) {
      const { kept, total } = markKept(trace, m, Math.floor(r / trace.kvHeads), r % trace.kvHeads);
      // Thin rows get a gapless strip (a 2 px square would be invisible); thicker rows get separate squares.
      const d = rowH >= 6 ? Math.min(8, rowH - 1) : rowH;
      out.push(`<rect class="mark-status" x="${cx - 4}" y="${top + r * rowH + (rowH - d) / 2}" width="8" height="${d}" fill="${statusColor(kept, total)}"/>`);
    }
  });
  // Layer separators last, so they also split the mark bands and status strips into layers.
  if (trace.kvHeads > 1) {
    for (let l = 1; l < trace.layers; l++) {
      const y = top + l * trace.kvHeads * rowH;
      out.push(`<line x1="${left}" x2="${right + marks.length * 12}" y1="${y}" y2="${y}" stroke="#ffffff" stroke-width="1"/>`);
    }
  }
  // x axis
  const axisY = top + plotH;
  for (const t of niceTicks(trace.promptTokens, 10)) {
    const x = xOf(t).toFixed(2);
    out.push(`<line x1="${x}" x2="${x}" y1="${axisY}" y2="${axisY + 4}" stroke="#444"/>`);
    out.push(`<text x="${x}" y="${axisY + 16}" text-anchor="middle">${fmtTok(t)}</text>`);
  }
  out.push(`<text x="${left + PLOT_W / 2}" y="${axisY + 32}" text-anchor="middle" fill="#444">prompt position (tokens)</text>`);
  // Legend: shade scale, then the mark status colours.
  const ly = axisY + 52;
  out.push(`<text x="${left}" y="${ly + 10}">fraction of the bin kept:</text>`);
  for (let i = 0; i <= 10; i++) {
    const x = left + 150 + i * 22;
    out.push(`<rect x="${x}" y="${ly}" width="22" height="12" fill="${shade(i / 10)}" stroke="#ccc" stroke-width="0.5"/>`);
    if (i % 5 === 0) out.push(`<text x="${x + 11}" y="${ly + 26}" text-anchor="middle">${i / 10}</text>`);
  }
  if (marks.length) {
    const x = left + 430;
    const items: Array<[string, string]> = [['#2ca02c', 'mark fully kept'], ['#ffb000', 'partly kept'], ['#d62728', 'evicted']];
    items.forEach(([c, t], i) => {
      out.push(`<rect x="${x + i * 130}" y="${ly + 2}" width="9" height="9" fill="${c}"/>`, `<text x="${x + i * 130 + 14}" y="${ly + 10}">${t}</text>`);
    });
    out.push(`<text x="${x}" y="${ly + 26}" fill="#444">(squares right of the map, one column per mark, one per row)</text>`);
  }
  out.push('</svg>');
  return out.join('\n');
}

function describeTrace(t: Trace, binSize: number): string {
  const parts = [`policy ${t.policy}`];
  if (t.budget !== undefined && t.budget !== null) parts.push(`budget ${t.budget}`);
  if (t.chunk !== undefined && t.chunk !== null) parts.push(`chunk ${t.chunk}`);
  parts.push(`${t.promptTokens} prompt tokens`, `${t.layers} layers × ${t.kvHeads} KV heads`, `1 column = ${binSize} token${binSize > 1 ? 's' : ''}`);
  return parts.join(' · ');
}

export function renderTraceHtml(trace: Trace, opts: RenderOptions = {}): string {
  const title = opts.title ?? 'Eviction trace';
  const marks = trace.marks ?? [];
  const perLayer = layerKeptFraction(trace);
  const pct = (x: number) => `${(100 * x).toFixed(1)}%`;
  const layerRows = perLayer
    .map((s, l) => `<tr><td>L${l}</td><td>${pct(s.mean)}</td><td>${pct(s.min)}</td><td>${pct(s.max)}</td>` +
      `<td><div class="bar" style="width:${(100 * s.mean).toFixed(1)}%"></div></td></tr>`)
    .join('\n');
  const markTables = marks.map((m, i) => {
    const head = Array.from({ length: trace.kvHeads }, (_, h) => `<th>h${h}</th>`).join('');
    let all = 0;
    const body = Array.from({ length: trace.layers }, (_, l) => {
      const cells = Array.from({ length: trace.kvHeads }, (_, h) => {
        const { kept, total } = markKept(trace, m, l, h);
        if (kept === total) all++;
        return `<td style="background:${statusColor(kept, total)}33">${kept}/${total}</td>`;
      }).join('');
      return `<tr><td>L${l}</td>${cells}</tr>`;
    }).join('\n');
    return `<h3><span style="color:${markColor(i)}">■</span> Mark ${i + 1}: ${escapeXml(m.label)} [${m.start}, ${m.end}) — ` +
      `fully kept by ${all} of ${trace.layers * trace.kvHeads} heads</h3>\n<table class="grid"><tr><th></th>${head}</tr>\n${body}\n</table>`;
  }).join('\n');
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${escapeXml(title)}</title>
<style>
body { font: 13px ui-sans-serif, system-ui, sans-serif; margin: 16px; color: #222; }
table { border-collapse: collapse; margin: 8px 0 20px; }
td, th { padding: 2px 8px; text-align: right; border-bottom: 1px solid #eee; }
.grid td { font-variant-numeric: tabular-nums; font-size: 11px; }
.bar { height: 9px; background: rgb(${KEPT_RGB.join(',')}); min-width: 1px; }
td:last-child { width: 200px; text-align: left; }
.grid td:last-child { width: auto; text-align: right; }
.scroll { overflow-x: auto; }
</style></head><body>
<div class="scroll">${renderTraceSvg(trace, opts)}</div>
<h2>Kept fraction per layer</h2>
<p>Entries of the prompt kept at the end of prefill, over the layer's ${trace.kvHeads} KV heads (mean, min, max).</p>
<table><tr><th>layer</th><th>mean</th><th>min</th><th>max</th><th></th></tr>
${layerRows}
</table>
${marks.length ? `<h2>Marks kept per head</h2><p>Positions of each mark still cached, per layer (rows) and KV head (columns).</p>\n${markTables}` : ''}
</body></html>
`;
}

/** HTML, or the bare SVG when `path` ends in `.svg`. */
export function renderTraceFile(trace: Trace, path: string, opts: RenderOptions = {}): string {
  return path.toLowerCase().endsWith('.svg') ? renderTraceSvg(trace, opts) : renderTraceHtml(trace, opts);
}
