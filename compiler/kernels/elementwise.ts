/**
 * Unfused building blocks: the graph before fusion lowers to these, and the tests use them to show that fused
 * kernels equal their unfused composition. Simple and bandwidth-bound: one thread per element (or vec4 chunk),
 * one workgroup per row for the row reductions.
 */
import { kernel, ro, rw, wgsl } from '../wgsl.js';
import type { Dispatch } from '../../runtime/gpu/runner.js';
import { assertDims, builtins, f32Loader, foldGrid, isQuantized, linearWg, needsF16, unitFor, vdot, vt, weightLoader, type WeightDtype } from './mm-common.js';

const WG = 256;

/**
 * y[t, :] = table[ids[t], :] (as f32). `table` may hold only the rows [row0, row0 + rows) of the vocabulary (one
 * part of a table split across buffers): then only the tokens whose id falls there are written, and one dispatch
 * per part fills every row of y.
 */
export function embedding(
  o: { wdtype: WeightDtype },
  d: { T: number; hidden: number; row0?: number; rows?: number },
  b: { ids: GPUBuffer; table: GPUBuffer; y: GPUBuffer; /** q8 / q4: the scales of the same rows */ tableScales?: GPUBuffer },
): Dispatch {
  const { T, hidden } = d;
  const row0 = d.row0 ?? 0;
  const rows = d.rows ?? 0xffffffff;
  assertDims('embedding', { T, hidden, row0, rows });
  const U = unitFor(hidden);
  const perRow = Math.ceil(hidden / U / WG);
  const spec = kernel({ op: 'embedding', wdtype: o.wdtype, u: U }, () => {
    const table = weightLoader('table', o.wdtype, U, '(vocab, hidden)');
    return {
      bindings: [
        ro('ids', 'array<u32>'), // (T) token ids
        ...table.bindings, // rows row0.. of the table (q8 / q4: quants, then scales table_s)
        rw('y', `array<${vt(U)}>`), // (T, hidden) f32
      ],
      params: [['T', 'u32'], ['HU', 'u32'], ['perRow', 'u32'], ['row0', 'u32'], ['rows', 'u32']],
      workgroupSize: [WG, 1, 1],
      enables: needsF16(o.wdtype) ? ['f16'] : [],
      body: wgsl`${table.fn}
@compute @workgroup_size(${WG})
fn main(${builtins}) {
  let g = ${linearWg};
  let t = g / params.perRow;
  let k = (g % params.perRow) * ${WG}u + lid;
  if (t >= params.T || k >= params.HU) { return; }
  let id = ids[t];
  if (id < params.row0 || id - params.row0 >= params.rows) { return; } // another part's token
  y[t * params.HU + k] = table_ld((id - params.row0) * params.HU + k);
}`,
    };
  });
  const buffers: Record<string, GPUBuffer> = { ids: b.ids, table: b.table, y: b.y };
  if (isQuantized(o.wdtype)) {
    if (!b.tableScales) throw new Error(`embedding: ${o.wdtype} table needs its scales buffer`);
    buffers.table_s = b.tableScales;
  }
  return { kernel: spec, buffers, params: { T, HU: hidden / U, perRow, row0, rows }, workgroups: foldGrid(T * perRow) };
}

/**
 * y = x · inverseSqrt(mean(x²) + eps) · w, per row of N. `half`: y is written as f16 (N % 4 == 0), for a tensor-core
 * matmul that reads it as it stages its slabs (compiler/lower.ts `prenorm`).
 */
export function rmsnorm(d: { T: number; N: number; eps: number; half?: boolean }, b: { x: GPUBuffer; w: GPUBuffer; y: GPUBuffer }): Dispatch {
  const { T, N } = d;
  assertDims('rmsnorm', { T, N });
  const U = unitFor(N);
  const half = d.half === true;
  if (half && U !== 4) throw new Error(`rmsnorm: an f16 output needs N % 4 == 0 (N=${N})`);
  const spec = kernel({ op: 'rmsnorm', u: U, ...(half ? { half: 1 } : {}) }, () => {
    const x = f32Loader('x', U, '(T, N)');
    const w = f32Loader('w', U, '(N) norm weight');
    return {
      bindings: [x.binding, w.binding, rw('y', half ? 'array<vec4<f16>>' : `array<${vt(U)}>`) /* (T, N) f32, or f16 */],
      params: [['T', 'u32'], ['N', 'u32'], ['eps', 'f32']],
      workgroupSize: [WG, 1, 1],
      enables: half ? ['f16'] : [],
      body: wgsl`${x.fn}
${w.fn}
var<workgroup> red: array<f32, ${WG}>;
@compute @workgroup_size(${WG})
fn main(${builtins}) {
  let t = ${linearWg};
  if (t >= params.T) { return; }
  let NU = params.N / ${U}u;
  var s = 0.0;
  for (var k = lid; k < NU; k += ${WG}u) { let v = x_ld(t * NU + k); s += ${vdot(U, 'v', 'v')}; }
  red[lid] = s;
  workgroupBarrier();
  for (var h = ${WG / 2}u; h > 0u; h >>= 1u) {
    if (lid < h) { red[lid] += red[lid + h]; }
    workgroupBarrier();
  }
  let r = inverseSqrt(red[0] / f32(params.N) + params.eps);
  for (var k = lid; k < NU; k += ${WG}u) { y[t * NU + k] = ${half ? 'vec4<f16>(x_ld(t * NU + k) * r * w_ld(k))' : 'x_ld(t * NU + k) * r * w_ld(k)'}; }
}`,
    };
  });
  return { kernel: spec, buffers: b, params: { T, N, eps: d.eps }, workgroups: foldGrid(T) };
}

/** y = a + b over n f32 elements. */
export function add(d: { n: number }, b: { a: GPUBuffer; b: GPUBuffer; y: GPUBuffer }): Dispatch {
  const { n } = d;
  assertDims('add', { n });
  const U = unitFor(n);
  const T = vt(U);
  const spec = kernel({ op: 'add', u: U }, () => ({
    bindings: [
      ro('a', `array<${T}>`), // (n) f32
      ro('b', `array<${T}>`), // (n) f32
      rw('y', `array<${T}>`), // (n) f32
    ],
    params: [['n', 'u32']],
    workgroupSize: [WG, 1, 1],
    body: wgsl`@compute @workgroup_size(${WG})
fn main(${builtins}) {
  let i = ${linearWg} * ${WG}u + lid;
  if (i < params.n) { y[i] = a[i] + b[i]; }
}`,
  }));
  return { kernel: spec, buffers: b, params: { n: n / U }, workgroups: foldGrid(Math.ceil(n / U / WG)) };
}

/** y[t, j] = silu(gu[t, j]) · gu[t, N + j]. */
export function siluMul(d: { T: number; N: number }, b: { gu: GPUBuffer; y: GPUBuffer }): Dispatch {
  const { T, N } = d;
  assertDims('siluMul', { T, N });
  const spec = kernel({ op: 'silu_mul' }, () => ({
    bindings: [
      ro('gu', 'array<f32>'), // (T, 2N) gate, then up, per row
      rw('y', 'array<f32>'), // (T, N)
    ],
    params: [['n', 'u32'], ['N', 'u32']],
    workgroupSize: [WG, 1, 1],
    body: wgsl`@compute @workgroup_size(${WG})
fn main(${builtins}) {
  let i = ${linearWg} * ${WG}u + lid;
  if (i >= params.n) { return; }
  let t = i / params.N;
  let j = i % params.N;
  let g = gu[t * 2u * params.N + j];
  y[i] = g / (1.0 + exp(-g)) * gu[t * 2u * params.N + params.N + j];
}`,
  }));
  return { kernel: spec, buffers: b, params: { n: T * N, N }, workgroups: foldGrid(Math.ceil((T * N) / WG)) };
}

/** In-place HF RoPE (rotate_half) of x (T, heads, D) at positions pos0 + t; dims ≥ rotaryDim are untouched. */
export function rope(
  d: { T: number; heads: number; headDim: number; rotaryDim: number; pos0: number },
  b: { x: GPUBuffer; rope: GPUBuffer },
): Dispatch {
  const { T, heads, headDim, rotaryDim, pos0 } = d;
  assertDims('rope', { T, heads, headDim, rotaryDim, pos0 });
  if (rotaryDim % 2 !== 0 || rotaryDim > headDim) throw new Error(`rope: bad rotaryDim ${rotaryDim} for headDim ${headDim}`);
  const half = rotaryDim / 2;
  const n = T * heads * half;
  const spec = kernel({ op: 'rope' }, () => ({
    bindings: [
      rw('x', 'array<f32>'), // (T, heads, D) rotated in place
      ro('rope', 'array<vec2<f32>>'), // (positions, rotaryDim/2) (cos, sin)
    ],
    params: [['n', 'u32'], ['heads', 'u32'], ['D', 'u32'], ['half', 'u32'], ['pos0', 'u32']],
    workgroupSize: [WG, 1, 1],
    body: wgsl`@compute @workgroup_size(${WG})
fn main(${builtins}) {
  let i = ${linearWg} * ${WG}u + lid;
  if (i >= params.n) { return; }
  let j = i % params.half;
  let th = i / params.half; // t * heads + head
  let t = th / params.heads;
  let o = th * params.D + j;
  let cs = rope[(params.pos0 + t) * params.half + j];
  let x1 = x[o];
  let x2 = x[o + params.half];
  x[o] = x1 * cs.x - x2 * cs.y;
  x[o + params.half] = x2 * cs.x + x1 * cs.y;
}`,
  }));
  return { kernel: spec, buffers: b, params: { n, heads, D: headDim, half, pos0 }, workgroups: foldGrid(Math.ceil(n / WG)) };
}

/** out[r] = index of the first maximum of x[r, :]. */
export function argmax(d: { rows: number; n: number }, b: { x: GPUBuffer; out: GPUBuffer }): Dispatch {
  const { rows, n } = d;
  assertDims('argmax', { rows, n });
  const spec = kernel({ op: 'argmax' }, () => ({
    bindings: [
      ro('x', 'array<f32>'), // (rows, n)
      rw('out', 'array<u32>'), // (rows)
    ],
    params: [['rows', 'u32'], ['n', 'u32']],
    workgroupSize: [WG, 1, 1],
    body: wgsl`var<workgroup> bv: array<f32, ${WG}>;
var<workgroup> bi: array<u32, ${WG}>;
const NONE = 0xffffffffu;

// (v, i) beats (bestV, bestI): larger value, or equal value at a smaller index; NONE never wins
fn better(v: f32, i: u32, bestV: f32, bestI: u32) -> bool {
  return i != NONE && (bestI == NONE || v > bestV || (v == bestV && i < bestI));
}

@compute @workgroup_size(${WG})
fn main(${builtins}) {
  let r = ${linearWg};
  if (r >= params.rows) { return; }
  var v = 0.0;
  var idx = NONE;
  for (var k = lid; k < params.n; k += ${WG}u) {
    let e = x[r * params.n + k];
    if (better(e, k, v, idx)) { v = e; idx = k; }
  }
  bv[lid] = v;
  bi[lid] = idx;
  workgroupBarrier();
  for (var h = ${WG / 2}u; h > 0u; h >>= 1u) {
    if (lid < h && better(bv[lid + h], bi[lid + h], bv[lid], bi[lid])) {
      bv[lid] = bv[lid + h];
      bi[lid] = bi[lid + h];
    }
    workgroupBarrier();
  }
  if (lid == 0u) { out[r] = select(bi[0], 0u, bi[0] == NONE); }
}`,
  }));
  return { kernel: spec, buffers: b, params: { rows, n }, workgroups: foldGrid(rows) };
}
