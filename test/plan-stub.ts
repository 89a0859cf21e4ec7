/**
 * Lowering the 8B graph against a stand-in device: buffers are sizes only and nothing runs, so a test can inspect the
 * kernels, grids and buffer sizes a plan emits (their numerics are the kernel tests').
 */
import { lower, type LayerCache, type StepDims } from '../compiler/lower.js';
import { fuse } from '../compiler/fuse.js';
import { decoderGraph } from '../ir/models/decoder.js';
import type { Graph } from '../ir/ops.js';
import type { WeightDtype } from '../compiler/kernels/matmul.js';
import { shapeConfig } from '../runtime/shapes.js';
import type { GpuRunner } from '../runtime/gpu/runner.js';

export const stub = (size = 16) => ({ size }) as unknown as GPUBuffer;

/** the plan of `g` with chunks up to 1024 tokens over a 4096-slot f16 cache */
export function stubPlan(g: Graph, tensorCores: boolean, wdtype: WeightDtype, preRowsF32 = false) {
  const runner = {
    createBuffer: (bytes: number) => stub(bytes),
    destroy: () => {},
    gpu: { tensorCores, subgroups: true, intDot: false, f16: true, maxBinding: 2 ** 40, limits: { maxComputeWorkgroupStorageSize: 32768 } },
  } as unknown as GpuRunner;
  const shapes = new Map(g.nodes.flatMap((n) => (n.op === 'weight' ? [[n.name, n.shape as number[]] as const] : [])));
  const cache: LayerCache = { k: stub(), v: stub(), scores: stub(), kpos: stub() };
  return lower(g, {
    runner, maxT: 1024, capacity: 4096, cacheDtype: 'f16', cache: () => cache, preRowsF32,
    // norm weights stay f32 whatever the matrices are stored in
    weight: (name) => ({ buf: stub(), scales: stub(), dtype: shapes.get(name)!.length === 1 ? 'f32' : wdtype, shape: shapes.get(name)! }),
  });
}

export const graph8b = fuse(decoderGraph(shapeConfig('llama-3.1-8b'), { retainingHeads: true, logitsRows: 1 }));
export const foldedGraph8b = fuse(decoderGraph(shapeConfig('llama-3.1-8b'), { retainingHeads: true, foldedHeads: true, logitsRows: 1 }));
/** a step of T tokens whose first goes to cache slot (and position) slot0 */
export const stubStep = (T: number, decode = false, slot0 = 0): StepDims => ({ T, slot0, pos0: slot0, rope: stub(), decode });
