/**
 * Linear layers: y = f(x) · wᵀ with an optional fused rmsnorm prologue, bias, and an epilogue that stores, adds
 * into the residual stream, applies SiLU, or applies SwiGLU to a fused gate/up projection. Decode-sized T (≤ 8)
 * runs the gemv skeleton, larger T the tiled one (see mm-core.ts); the path is part of the variant key.
 *
 * A dispatch may compute only the output columns [col0, col0 + cols) of y (row stride N) from weight rows that
 * start at any row of the bound buffer: this is how a weight split across several buffers (one per part of whole
 * rows, runtime/weights.ts) runs as one dispatch per part (`matmulParts`). Offsets are uniforms, not key entries.
 */
import { kernel, rw, wgsl } from '../wgsl.js';
import type { Dispatch } from '../../runtime/gpu/runner.js';
import { assertDims, isQuantized, needsF16, unitFor, type WeightDtype, type WeightPart } from './mm-common.js';
import { fmaKernel } from './mm-tiled-wide.js';
import { GEMV_MAX_T, type CoreFamily, type CoreOpts } from './mm-core.js';
import { sgmatGrid, sgmatPick, sgmatSource, sgmatUsable, sgmatVariant, sgmatWorkgroupBytes } from './mm-sgmat.js';
import { gemvGrid, gemvKey, gemvShape, gemvSource, type GemvOpts } from './mm-gemv.js';

export type { WeightDtype, WeightPart } from './mm-common.js';

export interface MatmulOpts {
  readonly wdtype: WeightDtype;
  /** rmsnorm each x row first (x · inverseSqrt(mean(x²) + eps) · normW) */
  readonly norm: boolean;
  /** add an f32 bias: (N), or (2N) gate then up for swiglu */
  readonly bias: boolean;
  /** store: y = …; residual: y += …; silu: y = silu(…); swiglu: y = silu(gate) · up with w = (2N, K) */
  readonly epilogue: 'store' | 'residual' | 'silu' | 'swiglu';
  /** decode path: reduce with subgroup operations (needs the device's `subgroups`; the plan asks gemvSubgroups) */
  readonly subgroups?: boolean;
  /** decode path: q8 / q4 dot products on int8 (GpuContext.intDot) */
  readonly intDot?: boolean;
  /** prefill on tensor cores (mm-sgmat.ts) where the weight and shape allow; only for devices with GpuContext.tensorCores */
  readonly tensorCores?: boolean;
  /** tensor-core shape by name (mm-sgmat.ts SGMAT_VARIANTS) instead of SGMAT_PICK's; the benchmark's A/B */
  readonly sgmatVariant?: string;
  /** the device's maxComputeWorkgroupStorageSize: tensor-core shapes needing more are not picked (default 32 KB) */
  readonly workgroupBytes?: number;
  /**
   * x is stored as f16 / y is written as f16 (not with `residual`): for values that only tensor-core matmuls read,
   * which round their inputs to f16 when staging them anyway. Only on the tensor-core path (an error elsewhere).
   */
  readonly halfX?: boolean;
  readonly halfY?: boolean;
}

export interface MatmulDims {
  readonly T: number;
  readonly N: number;
  readonly K: number;
  readonly eps?: number;
  /** first x row used (x has xRow0 + T rows) */
  readonly xRow0?: number;
  /** first output column computed (default 0) */
  readonly col0?: number;
  /** output columns computed (default N − col0) */
  readonly cols?: number;
  /** row of `w` holding column col0's weights (swiglu: its gate row); default col0 */
  readonly wRow?: number;
  /** swiglu: row of `wu` holding column col0's up weights; default N + col0 */
  readonly uRow?: number;
}

export interface MatmulBuffers {
  /** (xRow0 + T, K) f32 (f16 with halfX) */
  readonly x: GPUBuffer;
  /** (N, K), swiglu (2N, K), in wdtype; or any buffer holding rows wRow.. for the computed columns */
  readonly w: GPUBuffer;
  /** swiglu: the buffer holding the up rows uRow.. (default w) */
  readonly wu?: GPUBuffer;
  /** q8 / q4: scales of the rows in `w` (row r's groups at r·K/32), bound as `w_s` */
  readonly wScales?: GPUBuffer;
  /** q8 / q4 swiglu: scales of the rows in `wu` (default wScales), bound as `wu_s` */
  readonly wuScales?: GPUBuffer;
  /** (K) f32, when norm */
  readonly normW?: GPUBuffer;
  /** (N) f32, swiglu (2N), when bias; always whole (indexed by global column) */
  readonly bias?: GPUBuffer;
  /** (T, N) f32 (f16 with halfY); a column range writes only its columns */
  readonly y: GPUBuffer;
}

function family(o: MatmulOpts): CoreFamily {
  const swiglu = o.epilogue === 'swiglu';
  const op = o.epilogue === 'residual' ? '+=' : '=';
  const siluFn = 'fn silu(g: f32) -> f32 { return g / (1.0 + exp(-g)); }';
  // silu: the retaining head's hidden layer, silu(pre · fc1ᵀ)
  const act0 = (v: string) => (o.epilogue === 'silu' ? `silu(${v})` : v);
  const act = (v: string) => (o.halfY ? `f16(${act0(v)})` : act0(v));
  const out = (v: string) => (o.halfY ? `f16(${v})` : v);
  const epi = swiglu
    ? wgsl`${siluFn}
fn epi(t: u32, c: u32, g: vec2<f32>, u: vec2<f32>) {
  let o = t * params.N + params.col0 + c;
  y[o] = ${out('silu(g.x) * u.x')};
  if (c + 1u < params.NC) { y[o + 1u] = ${out('silu(g.y) * u.y')}; }
}`
    : wgsl`${o.epilogue === 'silu' && siluFn}
fn epi(t: u32, c: u32, v: vec2<f32>) {
  let o = t * params.N + params.col0 + c;
  y[o] ${op} ${act('v.x')};
  if (c + 1u < params.NC) { y[o + 1u] ${op} ${act('v.y')}; }
}`;
  // c is a column of this dispatch (0 ≤ c < NC = cols); col0 + c is its column of y and of the bias
  const rows = wgsl`fn wrow(c: u32) -> u32 { return params.wRow + c; }
${swiglu && 'fn urow(c: u32) -> u32 { return params.uRow + c; }'}
fn brow(c: u32, s: u32) -> u32 { return s * params.N + params.col0 + c; }`;
  return {
    bindings: [rw('y', o.halfY ? 'array<f16>' : 'array<f32>')], // (T, N) f32, f16 with halfY (residual: the residual stream, accumulated into)
    params: [['N', 'u32'], ['col0', 'u32'], ['wRow', 'u32'], ['uRow', 'u32']],
    helpers: `${rows}\n${epi}`,
    brow: true,
    enables: needsF16(o.wdtype) || o.halfY ? ['f16'] : [],
    wShape: swiglu ? '(2N, K): gate rows, then up rows' : '(N, K)',
  };
}

export function matmul(o: MatmulOpts, d: MatmulDims, b: MatmulBuffers): Dispatch {
  const { T, N, K } = d;
  const xRow0 = d.xRow0 ?? 0;
  const col0 = d.col0 ?? 0;
  const cols = d.cols ?? N - col0;
  const wRow = d.wRow ?? col0;
  const uRow = d.uRow ?? N + col0;
  assertDims('matmul', { T, N, K, xRow0, col0, cols, wRow, uRow });
  if (T === 0 || cols === 0 || K === 0) throw new Error(`matmul: empty shape T=${T} cols=${cols} K=${K}`);
  if (col0 + cols > N) throw new Error(`matmul: columns ${col0}..${col0 + cols} exceed N=${N}`);
  if (o.norm && !b.normW) throw new Error('matmul: norm needs normW');
  if (o.bias && !b.bias) throw new Error('matmul: bias needs a bias buffer');
  if (o.halfY && o.epilogue === 'residual') throw new Error('matmul: the residual stream stays f32 (halfY with a residual epilogue)');
  if (o.halfX && o.norm) throw new Error('matmul: the norm prologue reads f32 x (halfX with norm)');
  const U = unitFor(K);
  const streams = o.epilogue === 'swiglu' ? 2 : 1;
  const core: CoreOpts = { wdtype: o.wdtype, U, norm: o.norm, bias: o.bias, streams, halfX: o.halfX };
  const base = { op: 'matmul', wdtype: o.wdtype, norm: o.norm, bias: o.bias, epilogue: o.epilogue, u: U, ...(o.halfX ? { hx: 1 } : {}), ...(o.halfY ? { hy: 1 } : {}) };
  const buffers: Record<string, GPUBuffer> = { x: b.x, w: b.w, y: b.y };
  if (streams === 2) buffers.wu = b.wu ?? b.w;
  if (isQuantized(o.wdtype)) {
    if (!b.wScales) throw new Error(`matmul: ${o.wdtype} weights need their scales buffer`);
    buffers.w_s = b.wScales;
    if (streams === 2) buffers.wu_s = b.wuScales ?? b.wScales;
  }
  if (o.norm) buffers.normW = b.normW!;
  if (o.bias) buffers.bias = b.bias!;
  const params = { T, NC: cols, K, xRow0, eps: d.eps ?? 1e-6, N, col0, wRow, uRow };
  const sgmat = o.tensorCores === true && sgmatUsable(o.wdtype, T, K);
  if ((o.halfX || o.halfY) && !sgmat) throw new Error(`matmul: f16 x / y are for the tensor-core path (T=${T}, K=${K}, ${o.wdtype} weights${o.tensorCores ? '' : ', no tensor cores'})`);
  if (T <= GEMV_MAX_T) {
    const g: GemvOpts = { wdtype: o.wdtype, norm: o.norm, bias: o.bias, streams, subgroups: o.subgroups ?? false };
    const shape = gemvShape(o.wdtype, T, streams, K, cols, o.intDot);
    const spec = kernel({ ...base, ...gemvKey(g, T, shape) }, () => gemvSource(g, T, shape, family(o)));
    return { kernel: spec, buffers, params, workgroups: gemvGrid(cols, shape.R) };
  }
  if (sgmat) {
    const sgv = o.sgmatVariant ?? sgmatPick(streams, o.norm, cols, T, o.workgroupBytes, o.epilogue === 'silu');
    const V = sgmatVariant(sgv, streams);
    const need = sgmatWorkgroupBytes(V, o.norm);
    if (o.workgroupBytes !== undefined && need > o.workgroupBytes) throw new Error(`matmul: tensor-core shape ${sgv} needs ${need} bytes of workgroup memory, the device offers ${o.workgroupBytes}`);
    const spec = kernel({ ...base, path: 'sgmat', sgv }, () => sgmatSource(core, family(o), sgv));
    return { kernel: spec, buffers, params, workgroups: sgmatGrid(cols, T, V) };
  }
  return { ...fmaKernel(base, core, () => family(o), cols, T), buffers, params };
}

/**
 * y = f(x) · wᵀ for a weight stored as parts of whole rows (one part when unsplit): one dispatch per run of output
 * columns whose weight rows lie in one part (swiglu: whose gate rows lie in one part and up rows in one part).
 *
 *   parts   rows [0, r1) | [r1, r2) | … | [rk, rows)        (rows = N, or 2N for swiglu)
 *   columns split at every r_i (and, for swiglu, every r_i − N inside (0, N))
 */
export function matmulParts(
  o: MatmulOpts,
  d: Omit<MatmulDims, 'col0' | 'cols' | 'wRow' | 'uRow'>,
  b: Omit<MatmulBuffers, 'w' | 'wu'>,
  parts: readonly WeightPart[],
): Dispatch[] {
  const streams = o.epilogue === 'swiglu' ? 2 : 1;
  const rows = streams * d.N;
  let at = 0;
  for (const p of parts) {
    if (p.row0 !== at || p.rows <= 0) throw new Error(`matmul: weight parts must tile rows 0..${rows} in order, got a part at ${p.row0} (+${p.rows})`);
    at += p.rows;
  }
  if (at !== rows) throw new Error(`matmul: weight parts cover ${at} rows, the weight has ${rows}`);
  const cuts = new Set([0, d.N]);
  for (const p of parts) for (let s = 0; s < streams; s++) if (p.row0 - s * d.N > 0 && p.row0 - s * d.N < d.N) cuts.add(p.row0 - s * d.N);
  const edges = [...cuts].sort((a, b) => a - b);
  const partOf = (row: number) => parts.find((p) => row >= p.row0 && row < p.row0 + p.rows)!;
  const out: Dispatch[] = [];
  for (let i = 0; i + 1 < edges.length; i++) {
    const col0 = edges[i]!;
    const g = partOf(col0);
    const u = streams === 2 ? partOf(d.N + col0) : g;
    out.push(matmul(o, { ...d, col0, cols: edges[i + 1]! - col0, wRow: col0 - g.row0, uRow: d.N + col0 - u.row0 }, { ...b, w: g.buf, wu: u.buf, wScales: g.scales, wuScales: u.scales }));
  }
  return out;
}
