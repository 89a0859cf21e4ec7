/**
 * Merges the key splits of decode attention: for each (query, head) row, out = Σ o_i e^(m_i - M) / L with
 * L = Σ l_i e^(m_i - M), lse = M + log L, from the per-split partials in `scratch`:
 *
 *   scratch: [splits][T·H][D/4] vec4 unnormalized outputs, then [splits][T·H] vec4 (max, sum, 0, 0)
 *
 * Decode has few rows (T·H = 32 for an 8B model) and tens of splits, so the combine is all latency: it must not
 * chain barriers. The grid is (row, quad block): a workgroup owns QB output quads of one row (a whole 128-wide head)
 * and its WC threads are QB quads × SL split lanes (adjacent lanes read adjacent 16-byte quads of a split). Each
 * thread folds its splits i ≡ lane (mod SL) with an online max, so its loads are independent and issued together;
 * one barrier later, thread q < QB merges the SL (output, max, sum) triples of its quad. No pass over the splits
 * first for the row's max (a barrier-chained reduction that took ~11 µs per call on an H100).
 */
import { kernel, ro, rw, wgsl } from '../wgsl.js';
import type { Dispatch } from '../../runtime/gpu/runner.js';
import { NEG } from './attn-common.js';

/** Most splits one row may have (the decode kernels' plans cap theirs here). */
export const MAX_SPLITS = 1024;
const WC = 256; // combine threads

/** Output quads per workgroup: the largest power of two ≤ 32 dividing D/4 (a 128-wide head in one workgroup). */
const quadBlock = (headDim: number) => [32, 16, 8, 4, 2, 1].find((b) => (headDim / 4) % b === 0)!;

function combineKernel(headDim: number, withLse: boolean) {
  const DQ = headDim / 4;
  const QB = quadBlock(headDim);
  const SL = WC / QB; // split lanes
  return kernel({ op: 'attention_decode_combine', D: headDim, lse: withLse, v: 2 }, () => ({
    bindings: [
      ro('scratch', 'array<vec4<f32>>'), // see above
      rw('out', 'array<vec4<f32>>'), // (T, H*D)
      ...(withLse ? [rw('lse', 'array<f32>')] : []), // (T, H)
    ],
    params: [['TH', 'u32'], ['splits', 'u32']],
    workgroupSize: [WC, 1, 1],
    body: wgsl`
const DQ = ${DQ}u;
const QB = ${QB}u;
const SL = ${SL}u;
const NEG = ${NEG};
var<workgroup> pa: array<vec4<f32>, ${WC}>; // (SL, QB) per-lane outputs, weighed by exp(their max)
var<workgroup> pm: array<f32, ${WC}>; // (SL, QB) per-lane max
var<workgroup> pl: array<f32, ${WC}>; // (SL, QB) per-lane sum

@compute @workgroup_size(${WC})
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>) {
  let th = wg.x;
  let mlAt = params.splits * params.TH * DQ;
  let qi = lid % QB;
  let j = wg.y * QB + qi;
  // this lane's splits, online: a split that saw no key of this row has m = NEG, l = 0 and a zero output, so it
  // adds nothing whatever the running max is (and is rescaled to 0 by the first real split)
  var m = NEG;
  var l = 0.0;
  var a = vec4<f32>(0.0);
  for (var i = lid / QB; i < params.splits; i += SL) {
    let ml = scratch[mlAt + i * params.TH + th];
    let o = scratch[(i * params.TH + th) * DQ + j];
    if (ml.x > m) {
      let al = exp(m - ml.x);
      a *= al;
      l *= al;
      m = ml.x;
    }
    let w = exp(ml.x - m);
    a += o * w;
    l += ml.y * w;
  }
  pa[lid] = a;
  pm[lid] = m;
  pl[lid] = l;
  workgroupBarrier();
  if (lid < QB) {
    var M = NEG;
    for (var k = 0u; k < SL; k++) { M = max(M, pm[k * QB + lid]); }
    var L = 0.0;
    var s = vec4<f32>(0.0);
    for (var k = 0u; k < SL; k++) {
      let w = exp(pm[k * QB + lid] - M); // a lane with no split: m = NEG, l = 0, a = 0
      L += pl[k * QB + lid] * w;
      s += pa[k * QB + lid] * w;
    }
    out[th * DQ + j] = s / L;
${withLse ? '    if (lid == 0u && wg.y == 0u) { lse[th] = M + log(L); }' : ''}
  }
}`,
  }));
}

/** The combine dispatch over `splits` partials of TH = T·H rows. */
export function decodeCombine(
  headDim: number,
  d: { TH: number; splits: number },
  b: { scratch: GPUBuffer; out: GPUBuffer; lse?: GPUBuffer },
): Dispatch {
  if (d.splits > MAX_SPLITS) throw new Error(`attention combine: ${d.splits} splits exceed ${MAX_SPLITS}`);
  if (d.TH > 65535) throw new Error(`attention combine: ${d.TH} rows exceed one grid dimension`);
  const withLse = b.lse !== undefined;
  const k = combineKernel(headDim, withLse);
  const QB = quadBlock(headDim);
  const buffers: Record<string, GPUBuffer> = withLse ? { scratch: b.scratch, out: b.out, lse: b.lse! } : { scratch: b.scratch, out: b.out };
  return { kernel: k, buffers, params: { TH: d.TH, splits: d.splits }, workgroups: [d.TH, headDim / 4 / QB] };
}
