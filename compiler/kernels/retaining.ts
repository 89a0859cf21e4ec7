/**
 * Locret retaining head: scores[h, slot0 + t] = Σ_j fc2[h, j] · silu(Σ_k fc1[j, k] · pre[t, k]), in one kernel.
 *
 * A workgroup owns a block of BT tokens and walks the 1024 hidden units in blocks of HB: a tiled matmul (32-deep
 * K slabs in workgroup memory, 256 threads × (BT/16 tokens × 4 hidden) register blocks) produces silu(h) for the
 * block, which goes through workgroup memory straight into the fc2 dot products, accumulated in registers across
 * blocks. The hidden activations never touch global memory, and no cross-workgroup reduction is needed, at the
 * price of parallelism limited to ⌈T/BT⌉ workgroups: meant for prefill chunks (hundreds of tokens or more).
 */
import { kernel, rw, wgsl } from '../wgsl.js';
import type { Dispatch } from '../../runtime/gpu/runner.js';
import { assertDims, builtins, f32Loader, needsF16, unitFor, vdot, vt, weightLoader, type WeightDtype } from './mm-common.js';

export interface RetainingDims {
  readonly T: number;
  /** input width (H + 2KV)·D */
  readonly W: number;
  readonly KV: number;
  readonly hidden?: 1024;
  readonly slot0: number;
  readonly capacity: number;
}

export interface RetainingBuffers {
  /** (T, W) f32 concat(Q, K, V) before RoPE */
  readonly pre: GPUBuffer;
  /** (hidden, W) in wdtype */
  readonly fc1: GPUBuffer;
  /** (KV, hidden) in wdtype */
  readonly fc2: GPUBuffer;
  /** (KV, capacity) f32, writes [h, slot0 + t] */
  readonly scores: GPUBuffer;
}

const WG = 256;
const HB = 64; // hidden units per block
const BK = 32; // K elements per slab

export function retainingHead(o: { wdtype: WeightDtype }, d: RetainingDims, b: RetainingBuffers): Dispatch {
  const { T, W, KV, slot0, capacity } = d;
  const HID = d.hidden ?? 1024;
  assertDims('retainingHead', { T, W, KV, slot0, capacity, HID });
  if (T === 0 || W === 0 || KV === 0) throw new Error('retainingHead: empty shape');
  if (HID % HB !== 0) throw new Error(`retainingHead: hidden ${HID} must be a multiple of ${HB}`);
  if (slot0 + T > capacity) throw new Error(`retainingHead: slots ${slot0}..${slot0 + T} exceed capacity ${capacity}`);
  const U = unitFor(W);
  // two tokens per thread halves the slab reads per FMA, but only pays when there are enough blocks to fill a GPU
  const TM = T > 1024 ? 2 : 1;
  const BT = 16 * TM;
  const spec = kernel({ op: 'retaining', wdtype: o.wdtype, u: U, kv: KV, hid: HID, bt: BT }, () => {
    const pre = f32Loader('pre', U, '(T, W) concat(Q, K, V) before RoPE');
    const fc1 = weightLoader('fc1', o.wdtype, U, '(hidden, W)');
    const fc2 = weightLoader('fc2', o.wdtype, 4, '(KV, hidden)');
    const UPR = BK / U;
    const A_PER = Math.ceil((BT * UPR) / WG); // BT·UPR can be below WG: guarded
    const B_PER = (HB * UPR) / WG;
    const SPT = Math.ceil((BT * KV) / WG);
    const AT = TM === 2 ? 'vec2<f32>' : 'f32';
    const VT = vt(U);
    const storeA = U === 4
      ? `for (var j = 0u; j < 4u; j++) { As[(kc * 4u + j) * BT + m] = xv[j]; }`
      : 'As[kc * BT + m] = xv;';
    const storeB = U === 4
      ? 'for (var j = 0u; j < 4u; j++) { Bs[(kc * 4u + j) * (HB / 4u) + n / 4u][n % 4u] = wv[j]; }'
      : 'Bs[kc * (HB / 4u) + n / 4u][n % 4u] = wv;';
    const aRead = TM === 2
      ? 'let a = vec2<f32>(As[kk * BT + ty * 2u], As[kk * BT + ty * 2u + 1u]);'
      : 'let a = As[kk * BT + ty];';
    const fma = TM === 2 ? 'acc[0] += a.x * b;\n      acc[1] += a.y * b;' : 'acc[0] += a * b;';
    return {
      bindings: [
        pre.binding,
        fc1.binding,
        fc2.binding,
        rw('scores', 'array<f32>'), // (KV, capacity) retention scores
      ],
      params: [['T', 'u32'], ['W', 'u32'], ['slot0', 'u32'], ['cap', 'u32']],
      workgroupSize: [WG, 1, 1],
      enables: needsF16(o.wdtype) ? ['f16'] : [],
      body: wgsl`${pre.fn}
${fc1.fn}
${fc2.fn}
const WG = ${WG}u;
const U = ${U}u;
const BT = ${BT}u;  // tokens per workgroup
const HB = ${HB}u;  // hidden units per block
const BK = ${BK}u;  // K elements per slab
const UPR = ${UPR}u;
const KV = ${KV}u;
const HID = ${HID}u;
var<workgroup> As: array<f32, ${BK * BT}>;            // (BK, BT) pre slab, k-major
var<workgroup> Bs: array<vec4<f32>, ${(BK * HB) / 4}>; // (BK, HB) fc1 slab, k-major; then (BT, HB) silu(h)
${AT !== 'f32' && `// each thread: tokens ty*2, ty*2+1`}

fn silu4(g: vec4<f32>) -> vec4<f32> { return g / (1.0 + exp(-g)); }

@compute @workgroup_size(${WG})
fn main(${builtins}) {
  let tx = lid % 16u; // hidden units tx*4 .. tx*4+3 of the block
  let ty = lid / 16u; // token(s) of the block
  let t0 = wid.x * BT;
  let KU = params.W / U;
  var sacc = array<f32, ${SPT}>(); // scores of outputs lid + s·WG, output o = token (o / KV), head (o % KV)
  for (var hb = 0u; hb < HID; hb += HB) {
    // explicit initializer: some drivers (seen on Dawn + lavapipe) do not re-zero an uninitialized var declared
    // inside a loop body on each iteration
    var acc = array<vec4<f32>, ${TM}>();
    for (var k0 = 0u; k0 < KU; k0 += UPR) {
      for (var i = 0u; i < ${A_PER}u; i++) {
        let u = lid + i * WG;
        let m = u / UPR;
        let kc = u % UPR;
        var xv = ${VT}(0.0);
        if (t0 + m < params.T && k0 + kc < KU) { xv = pre_ld((t0 + m) * KU + k0 + kc); }
        if (u < BT * UPR) { ${storeA} }
      }
      for (var i = 0u; i < ${B_PER}u; i++) {
        let u = lid + i * WG;
        let n = u / UPR;
        let kc = u % UPR;
        var wv = ${VT}(0.0);
        if (k0 + kc < KU) { wv = fc1_ld((hb + n) * KU + k0 + kc); }
        ${storeB}
      }
      workgroupBarrier();
      for (var kk = 0u; kk < BK; kk++) {
        ${aRead}
        let b = Bs[kk * (HB / 4u) + tx];
        ${fma}
      }
      workgroupBarrier();
    }
    for (var i = 0u; i < ${TM}u; i++) { Bs[(ty * ${TM}u + i) * (HB / 4u) + tx] = silu4(acc[i]); }
    workgroupBarrier();
    for (var s = 0u; s < ${SPT}u; s++) {
      let o = lid + s * WG;
      if (o < BT * KV) {
        let m = o / KV;
        let h = o % KV;
        var sum = 0.0;
        for (var j = 0u; j < HB / 4u; j++) { sum += ${vdot(4, 'Bs[m * (HB / 4u) + j]', 'fc2_ld((h * HID + hb) / 4u + j)')}; }
        sacc[s] += sum;
      }
    }
    workgroupBarrier();
  }
  for (var s = 0u; s < ${SPT}u; s++) {
    let o = lid + s * WG;
    let m = o / KV;
    if (o < BT * KV && t0 + m < params.T) { scores[(o % KV) * params.cap + params.slot0 + t0 + m] = sacc[s]; }
  }
}`,
    };
  });
  const blocks = Math.ceil(T / BT);
  if (blocks > 65535) throw new Error(`retainingHead: too many token blocks (${blocks})`);
  return { kernel: spec, buffers: { ...b }, params: { T, W, slot0, cap: capacity }, workgroups: [blocks] };
}
