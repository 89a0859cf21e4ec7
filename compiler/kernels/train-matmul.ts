/**
 * The two f32 matmuls of retaining-head training, C (M, N) = Σ_k A·B over a reduction length K:
 *
 *   'nt'  A (M, K) row-major, B (N, K) row-major   forward   h (T, hidden)   = pre (T, W) · fc1ᵀ        (K = W)
 *   'tn'  A (K, M) row-major, B (K, N) row-major   backward  ∂fc1 (hidden, W) = dhᵀ (hidden, T) · pre (T, W)   (K = T)
 *
 * The backward is the gradient's reduction over tokens: each workgroup owns a 64×64 output tile and walks all T
 * tokens in 16-deep slabs staged in workgroup memory, so no cross-workgroup sum (and no float atomics) is needed.
 * 256 threads each accumulate a 4×4 register block. Bounds are checked on every edge (any M, N, K).
 */
import { kernel, ro, rw, wgsl } from '../wgsl.js';
import type { Dispatch } from '../../runtime/gpu/runner.js';
import { assertDims, builtins, MAX_WG_PER_DIM } from './mm-common.js';

export type TrainLayout = 'nt' | 'tn';

const TILE = 64;
const BK = 16;
const WG = 256;

export function trainMatmul(
  o: { layout: TrainLayout },
  d: { M: number; N: number; K: number },
  b: { a: GPUBuffer; b: GPUBuffer; c: GPUBuffer },
): Dispatch {
  const { M, N, K } = d;
  assertDims('trainMatmul', { M, N, K });
  if (M === 0 || N === 0 || K === 0) throw new Error(`trainMatmul: empty shape ${M}x${N}x${K}`);
  const nt = o.layout === 'nt';
  const spec = kernel({ op: 'train_matmul', layout: o.layout }, () => {
    // element e of a slab (TILE × BK values): row r of the tile and k within the slab, chosen so that adjacent
    // threads read adjacent addresses (along K for row-major (·, K) operands, along the tile for (K, ·) ones)
    const slabIdx = nt ? 'let r = e / BK; let kk = e % BK;' : 'let r = e % TILE; let kk = e / TILE;';
    const aAt = nt ? '(m0 + r) * params.K + k0 + kk' : '(k0 + kk) * params.M + m0 + r';
    const bAt = nt ? '(n0 + r) * params.K + k0 + kk' : '(k0 + kk) * params.N + n0 + r';
    return {
      bindings: [
        ro('a', 'array<f32>'), // nt: (M, K); tn: (K, M)
        ro('b', 'array<f32>'), // nt: (N, K); tn: (K, N)
        rw('c', 'array<f32>'), // (M, N)
      ],
      params: [['M', 'u32'], ['N', 'u32'], ['K', 'u32']],
      workgroupSize: [WG, 1, 1],
      body: wgsl`const TILE = ${TILE}u;
const BK = 16;
var<workgroup> As: array<vec4<f32>, ${(TILE * BK) / 4}>; // (BK, TILE) k-major slab of A
var<workgroup> Bs: array<vec4<f32>, ${(TILE * BK) / 4}>; // (BK, TILE) k-major slab of B

@compute @workgroup_size(${WG})
fn main(${builtins}) {
  let tx = lid % 16u; // output columns n0 + tx*4 .. +3
  let ty = lid / 16u; // output rows m0 + ty*4 .. +3
  let m0 = wid.y * TILE;
  let n0 = wid.x * TILE;
  var acc: array<vec4<f32>, 4>;
  for (var k0 = 0u; k0 < params.K; k0 += BK) {
    for (var i = 0u; i < ${(TILE * BK) / WG}u; i++) {
      let e = lid + i * ${WG}u;
      ${slabIdx}
      var av = 0.0;
      if (m0 + r < params.M && k0 + kk < params.K) { av = a[${aAt}]; }
      As[(kk * TILE + r) / 4u][r % 4u] = av;
      var bv = 0.0;
      if (n0 + r < params.N && k0 + kk < params.K) { bv = b[${bAt}]; }
      Bs[(kk * TILE + r) / 4u][r % 4u] = bv;
    }
    workgroupBarrier();
    for (var kk = 0u; kk < BK; kk++) {
      let av = As[kk * (TILE / 4u) + ty];
      let bv = Bs[kk * (TILE / 4u) + tx];
      acc[0] += av.x * bv;
      acc[1] += av.y * bv;
      acc[2] += av.z * bv;
      acc[3] += av.w * bv;
    }
    workgroupBarrier();
  }
  for (var i = 0u; i < 4u; i++) {
    let m = m0 + ty * 4u + i;
    if (m >= params.M) { continue; }
    for (var j = 0u; j < 4u; j++) {
      let n = n0 + tx * 4u + j;
      if (n < params.N) { c[m * params.N + n] = acc[i][j]; }
    }
  }
}`,
    };
  });
  const gx = Math.ceil(N / TILE);
  const gy = Math.ceil(M / TILE);
  if (gx > MAX_WG_PER_DIM || gy > MAX_WG_PER_DIM) throw new Error(`trainMatmul: ${M}x${N} needs too many tiles`);
  return { kernel: spec, buffers: { ...b }, params: { M, N, K }, workgroups: [gx, gy] };
}
