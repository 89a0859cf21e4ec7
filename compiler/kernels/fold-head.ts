/**
 * A retaining head's fc1 folded into the qkv projection it reads. The head scores concat(Q, K, V) before RoPE,
 * which is linear in the layer's normalized hidden rows xn (concat(Q, K, V) = xn · Wqkvᵀ + b), so
 *
 *   concat(Q, K, V) · fc1ᵀ = xn · (fc1 · Wqkv)ᵀ + fc1 · b
 *
 * and the head can run on xn with the folded weight fc1 · Wqkv (R × hidden instead of R × (H + 2KV)·D: 2/3 of the
 * products at Llama-3.1-8B's shape, 1/3 at Phi-3-mini's) without the pre-RoPE rows ever being written. This kernel
 * computes the fold once per layer at load:
 *
 *   out (R, Hd) = fc1 (R, C) · w (C, Hd)        outBias (R) = fc1 · bias (C)        (C = (H + 2KV)·D)
 *
 * in f32 (f64-free: C terms of products of two stored values), rounded once to the output dtype. Plain 64 × 64
 * output tiles, 4 × 4 per thread over 16-deep slabs in workgroup memory: 51 GFLOP a layer at the 8B shape, a
 * fraction of a second for the model, once. The bias, when there is one, is computed as column Hd of the same
 * product (the tile that holds it reads bias[c] as that column of w).
 */
import { kernel, ro, rw, wgsl } from '../wgsl.js';
import type { Dispatch } from '../../runtime/gpu/runner.js';
import { assertDims, builtins, MAX_WG_PER_DIM, needsF16, weightLoader, type WeightDtype } from './mm-common.js';

export interface FoldOpts {
  /** fc1's storage (retaining heads are never quantized) */
  readonly fc1Dtype: 'f32' | 'f16' | 'f16p';
  /** the qkv weight's storage (any: dequantized as read) */
  readonly wDtype: WeightDtype;
  readonly outDtype: 'f32' | 'f16';
  /** the qkv projection has a bias: also write outBias */
  readonly bias: boolean;
}

export interface FoldDims {
  /** rows of fc1 (the head's hidden width, 1024) */
  readonly R: number;
  /** columns of fc1 = rows of w: (H + 2KV)·D */
  readonly C: number;
  /** columns of w: the model's hidden size */
  readonly Hd: number;
}

export interface FoldBuffers {
  /** (R, C) fc1 */
  readonly fc1: GPUBuffer;
  /** (C, Hd) the qkv weight, rows Q heads, K heads, V heads */
  readonly w: GPUBuffer;
  /** q8 / q4: its (C, Hd/32) f16 scales */
  readonly wScales?: GPUBuffer;
  /** (C) f32 qkv bias, with `bias` */
  readonly bias?: GPUBuffer;
  /** (R, Hd) outDtype, the folded weight */
  readonly out: GPUBuffer;
  /** (R) f32 folded bias, with `bias` */
  readonly outBias?: GPUBuffer;
}

const TILE = 64; // output rows and columns per workgroup
const BK = 16; // slab depth over C
const WG = 256; // 16 × 16 threads, 4 × 4 outputs each

export function foldHead(o: FoldOpts, d: FoldDims, b: FoldBuffers): Dispatch {
  const { R, C, Hd } = d;
  assertDims('foldHead', { R, C, Hd });
  if (R === 0 || C === 0 || Hd === 0) throw new Error('foldHead: empty shape');
  if (o.bias !== (b.bias !== undefined) || o.bias !== (b.outBias !== undefined)) throw new Error('foldHead: bias needs both bias and outBias buffers');
  const quant = o.wDtype === 'q8' || o.wDtype === 'q4';
  if (quant !== (b.wScales !== undefined)) throw new Error(`foldHead: ${o.wDtype} weights ${quant ? 'need' : 'take no'} scales`);
  if (o.outDtype === 'f16' && !needsF16(o.fc1Dtype)) throw new Error(`foldHead: f16 output from ${o.fc1Dtype} fc1 (an f16 output needs shader-f16, which ${o.fc1Dtype} storage says the device lacks)`);
  const cols = Hd + (o.bias ? 1 : 0);
  const grid: [number, number] = [Math.ceil(cols / TILE), Math.ceil(R / TILE)];
  if (grid[0] > MAX_WG_PER_DIM || grid[1] > MAX_WG_PER_DIM) throw new Error(`foldHead: grid ${grid.join('×')} too large`);
  const spec = kernel({ op: 'fold_head', fc1: o.fc1Dtype, w: o.wDtype, out: o.outDtype, bias: o.bias }, () => {
    const fc1 = weightLoader('fc1', o.fc1Dtype, 1, '(R, C)');
    const w = weightLoader('w', o.wDtype, 1, '(C, Hd) qkv rows');
    const f16 = needsF16(o.fc1Dtype) || needsF16(o.wDtype) || o.outDtype === 'f16';
    return {
      bindings: [
        ...fc1.bindings,
        ...w.bindings,
        ...(o.bias ? [ro('bias', 'array<f32>')] : []), // (C) qkv bias
        rw('out', `array<${o.outDtype}>`), // (R, Hd) folded weight
        ...(o.bias ? [rw('outBias', 'array<f32>')] : []), // (R) folded bias
      ],
      params: [['R', 'u32'], ['C', 'u32'], ['Hd', 'u32']],
      workgroupSize: [WG, 1, 1],
      enables: f16 ? ['f16'] : [],
      body: wgsl`${fc1.fn}
${w.fn}
const TILE = ${TILE}u;
const BK = ${BK}u;
var<workgroup> aS: array<f32, ${TILE * BK}>; // (TILE rows of fc1, BK) slab
var<workgroup> bS: array<f32, ${BK * TILE}>; // (BK, TILE columns of w) slab

// column h of row c of w, the bias as column Hd, zero past both (no read out of bounds: shaders may run unchecked)
fn wAt(c: u32, h: u32) -> f32 {
  if (c >= params.C) { return 0.0; }
  if (h < params.Hd) { return w_ld(c * params.Hd + h); }
  ${o.bias ? 'if (h == params.Hd) { return bias[c]; }' : ''}
  return 0.0;
}

@compute @workgroup_size(${WG})
fn main(${builtins}) {
  let j0 = wid.y * TILE;
  let h0 = wid.x * TILE;
  let tr = (lid / 16u) * 4u; // this thread's 4 rows and 4 columns within the tile
  let tc = (lid % 16u) * 4u;
  var acc: array<array<f32, 4>, 4>;
  for (var c0 = 0u; c0 < params.C; c0 += BK) {
    for (var e = lid; e < TILE * BK; e += ${WG}u) {
      let j = j0 + e / BK;
      let c = c0 + e % BK;
      var a = 0.0;
      if (j < params.R && c < params.C) { a = fc1_ld(j * params.C + c); }
      aS[e] = a;
      bS[e] = wAt(c0 + e / TILE, h0 + e % TILE);
    }
    workgroupBarrier();
    for (var k = 0u; k < BK; k++) {
      for (var i = 0u; i < 4u; i++) {
        let a = aS[(tr + i) * BK + k];
        for (var q = 0u; q < 4u; q++) { acc[i][q] += a * bS[k * TILE + tc + q]; }
      }
    }
    workgroupBarrier();
  }
  for (var i = 0u; i < 4u; i++) {
    let j = j0 + tr + i;
    if (j >= params.R) { continue; }
    for (var q = 0u; q < 4u; q++) {
      let h = h0 + tc + q;
      if (h < params.Hd) { out[j * params.Hd + h] = ${o.outDtype}(acc[i][q]); }
      ${o.bias ? 'if (h == params.Hd) { outBias[j] = acc[i][q]; }' : ''}
    }
  }
}`,
    };
  });
  const buffers: Record<string, GPUBuffer> = { fc1: b.fc1, w: b.w, out: b.out };
  if (b.wScales) buffers.w_s = b.wScales;
  if (b.bias) buffers.bias = b.bias;
  if (b.outBias) buffers.outBias = b.outBias;
  return { kernel: spec, buffers, params: { R, C, Hd }, workgroups: grid };
}
