/**
 * Greedy decode without a round trip per token: the argmax of step i becomes the input id of step i + 1 on the
 * GPU (and is logged at tokens[i]), so the host can queue many steps back to back and read all tokens at the end.
 */
import { kernel, ro, rw, wgsl } from '../wgsl.js';
import type { Dispatch } from '../../runtime/gpu/runner.js';

export function feedToken(d: { index: number }, b: { argmax: GPUBuffer; ids: GPUBuffer; tokens: GPUBuffer }): Dispatch {
  if (!Number.isInteger(d.index) || d.index < 0) throw new Error(`feedToken: index must be a non-negative integer, got ${d.index}`);
  const spec = kernel({ op: 'feed_token' }, () => ({
    bindings: [
      ro('argmax', 'array<u32>'), // (1) this step's greedy token
      rw('ids', 'array<u32>'), // (maxT) the next step's input ids; row 0 is written
      rw('tokens', 'array<u32>'), // (n) tokens of the run so far
    ],
    params: [['index', 'u32']],
    workgroupSize: [1, 1, 1],
    body: wgsl`@compute @workgroup_size(1)
fn main() {
  let t = argmax[0];
  ids[0] = t;
  tokens[params.index] = t;
}`,
  }));
  return { kernel: spec, buffers: b, params: { index: d.index }, workgroups: [1] };
}
