/**
 * Merges the key splits of decode attention: for each (query, head) row, out = Σ o_i e^(m_i - M) / L with
 * L = Σ l_i e^(m_i - M), lse = M + log L, from the per-split partials in `scratch`:
 *
 *   scratch: [splits][T·H][D/4] vec4 unnormalized outputs, then [splits][T·H] vec4 (max, sum, 0, 0)
 *
 * Decode has few rows (T·H = 32 for an 8B model) and many splits, so one workgroup per row would leave most SMs
 * idle while each streams ~100 KB. Instead the grid is (row, quad block): a workgroup owns QB output quads of one
 * row and its WC threads are QB quads × SL split lanes (adjacent lanes read adjacent 16-byte quads of a split).
 * Every workgroup of a row recomputes the row's max and sum (splits × 16 bytes, cheap) instead of a third pass.
 */
import { kernel, ro, rw, wgsl } from '../wgsl.js';
import type { Dispatch } from '../../runtime/gpu/runner.js';
import { NEG, workgroupReduce } from './attn-common.js';

/** Most splits one row may have: the combine keeps one weight per split in workgroup memory. */
export const MAX_SPLITS = 1024;
const WC = 256; // combine threads

function combineKernel(headDim: number, withLse: boolean) {
  const DQ = headDim / 4;
  const QB = [8, 4, 2, 1].find((b) => DQ % b === 0)!; // output quads per workgroup
  const SL = WC / QB; // split lanes
  return kernel({ op: 'attention_decode_combine', D: headDim, lse: withLse }, () => ({
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
var<workgroup> red: array<f32, ${WC}>;
var<workgroup> wt: array<f32, ${MAX_SPLITS}>; // e^(m_i - M) per split
var<workgroup> part: array<vec4<f32>, ${WC}>; // (SL, QB) partial outputs

${workgroupReduce(WC)}

@compute @workgroup_size(${WC})
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>) {
  let th = wg.x;
  let mlAt = params.splits * params.TH * DQ;
  var mx = NEG;
  for (var i = lid; i < params.splits; i += ${WC}u) { mx = max(mx, scratch[mlAt + i * params.TH + th].x); }
  mx = reduce(lid, mx, true);
  var sum = 0.0;
  // a split that saw no key of this row has m = NEG, l = 0: its weight exp(NEG - mx) is exactly 0
  for (var i = lid; i < params.splits; i += ${WC}u) {
    let v = scratch[mlAt + i * params.TH + th];
    let e = exp(v.x - mx);
    wt[i] = e;
    sum += v.y * e;
  }
  sum = reduce(lid, sum, false); // its barriers also publish wt
  let qi = lid % QB;
  let j = wg.y * QB + qi;
  var a = vec4<f32>(0.0);
  for (var i = lid / QB; i < params.splits; i += SL) { a += scratch[(i * params.TH + th) * DQ + j] * wt[i]; }
  part[lid] = a;
  workgroupBarrier();
  if (lid < QB) {
    var s = part[lid];
    for (var k = 1u; k < SL; k++) { s += part[k * QB + lid]; }
    out[th * DQ + j] = s / sum;
  }
${withLse ? '  if (lid == 0u && wg.y == 0u) { lse[th] = mx + log(sum); }' : ''}
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
  const QB = [8, 4, 2, 1].find((x) => (headDim / 4) % x === 0)!;
  const buffers: Record<string, GPUBuffer> = withLse ? { scratch: b.scratch, out: b.out, lse: b.lse! } : { scratch: b.scratch, out: b.out };
  return { kernel: k, buffers, params: { TH: d.TH, splits: d.splits }, workgroups: [d.TH, headDim / 4 / QB] };
}
