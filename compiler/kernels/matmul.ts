/**
 * Linear layers: y = f(x) · wᵀ with an optional fused rmsnorm prologue, bias, and an epilogue that stores, adds
 * into the residual stream, or applies SwiGLU to a fused gate/up projection. Decode-sized T (≤ 8) runs the gemv
 * skeleton, larger T the tiled one (see mm-core.ts); the path is part of the variant key.
 */
import { kernel, rw, wgsl } from '../wgsl.js';
import type { Dispatch } from '../../runtime/gpu/runner.js';
import { assertDims, needsF16, unitFor, type WeightDtype } from './mm-common.js';
import { GEMV_MAX_T, gemvGrid, gemvShape, gemvSource, tiledGrid, tiledSource, type CoreFamily, type CoreOpts } from './mm-core.js';

export type { WeightDtype } from './mm-common.js';

export interface MatmulOpts {
  readonly wdtype: WeightDtype;
  /** rmsnorm each x row first (x · inverseSqrt(mean(x²) + eps) · normW) */
  readonly norm: boolean;
  /** add an f32 bias: (N), or (2N) gate then up for swiglu */
  readonly bias: boolean;
  /** store: y = …; residual: y += …; swiglu: y = silu(gate) · up with w = (2N, K) */
  readonly epilogue: 'store' | 'residual' | 'swiglu';
}

export interface MatmulDims {
  readonly T: number;
  readonly N: number;
  readonly K: number;
  readonly eps?: number;
  /** first x row used (x has xRow0 + T rows) */
  readonly xRow0?: number;
}

export interface MatmulBuffers {
  /** (xRow0 + T, K) f32 */
  readonly x: GPUBuffer;
  /** (N, K), swiglu (2N, K), in wdtype */
  readonly w: GPUBuffer;
  /** (K) f32, when norm */
  readonly normW?: GPUBuffer;
  /** (N) f32, swiglu (2N), when bias */
  readonly bias?: GPUBuffer;
  /** (T, N) f32 */
  readonly y: GPUBuffer;
}

function family(o: MatmulOpts): CoreFamily {
  const swiglu = o.epilogue === 'swiglu';
  const op = o.epilogue === 'residual' ? '+=' : '=';
  const epi = swiglu
    ? wgsl`fn silu(g: f32) -> f32 { return g / (1.0 + exp(-g)); }
fn epi(t: u32, c: u32, g: vec2<f32>, u: vec2<f32>) {
  let o = t * params.NC + c;
  y[o] = silu(g.x) * u.x;
  if (c + 1u < params.NC) { y[o + 1u] = silu(g.y) * u.y; }
}`
    : wgsl`fn epi(t: u32, c: u32, v: vec2<f32>) {
  let o = t * params.NC + c;
  y[o] ${op} v.x;
  if (c + 1u < params.NC) { y[o + 1u] ${op} v.y; }
}`;
  return {
    bindings: [rw('y', 'array<f32>')], // (T, N) f32 output (residual: the residual stream, accumulated into)
    params: [],
    helpers: `fn wrow(c: u32) -> u32 { return c; }\n${epi}`,
    enables: needsF16(o.wdtype) ? ['f16'] : [],
    wShape: swiglu ? '(2N, K): gate rows, then up rows' : '(N, K)',
  };
}

export function matmul(o: MatmulOpts, d: MatmulDims, b: MatmulBuffers): Dispatch {
  const { T, N, K } = d;
  const xRow0 = d.xRow0 ?? 0;
  assertDims('matmul', { T, N, K, xRow0 });
  if (T === 0 || N === 0 || K === 0) throw new Error(`matmul: empty shape T=${T} N=${N} K=${K}`);
  if (o.norm && !b.normW) throw new Error('matmul: norm needs normW');
  if (o.bias && !b.bias) throw new Error('matmul: bias needs a bias buffer');
  const U = unitFor(K);
  const streams = o.epilogue === 'swiglu' ? 2 : 1;
  const core: CoreOpts = { wdtype: o.wdtype, U, norm: o.norm, bias: o.bias, streams };
  const base = { op: 'matmul', wdtype: o.wdtype, norm: o.norm, bias: o.bias, epilogue: o.epilogue, u: U };
  const buffers: Record<string, GPUBuffer> = { x: b.x, w: b.w, y: b.y };
  if (o.norm) buffers.normW = b.normW!;
  if (o.bias) buffers.bias = b.bias!;
  const params = { T, NC: N, K, xRow0, eps: d.eps ?? 1e-6 };
  if (T <= GEMV_MAX_T) {
    const { R, WG } = gemvShape(T, streams, K, U);
    const spec = kernel({ ...base, path: 'gemv', t: T, r: R, wg: WG }, () => gemvSource(core, T, R, WG, family(o)));
    return { kernel: spec, buffers, params, workgroups: gemvGrid(N, R) };
  }
  const spec = kernel({ ...base, path: 'tiled' }, () => tiledSource(core, family(o)));
  return { kernel: spec, buffers, params, workgroups: tiledGrid(N, T) };
}
