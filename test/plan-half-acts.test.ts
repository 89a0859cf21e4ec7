/**
 * The plan's f16 activations (compiler/lower.ts `halfSwiglu`): on a device with tensor cores, a prefill step writes
 * each layer's swiglu output as f16 and the down projection reads it so, and gate_up and qkv read their rows
 * normalized ahead into f16 by one rmsnorm dispatch each; decode steps, f32 weights, devices without tensor cores and
 * LOCRET_F32_ACTIVATIONS=1 keep f32 throughout. The 8B graph is lowered against a stand-in
 * device: nothing runs, only the emitted kernels are inspected (their numerics: kernels-sgmat.test.ts).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { lower, type LayerCache, type StepDims } from '../compiler/lower.js';
import { fuse } from '../compiler/fuse.js';
import { decoderGraph } from '../ir/models/decoder.js';
import type { Graph } from '../ir/ops.js';
import type { WeightDtype } from '../compiler/kernels/matmul.js';
import { shapeConfig } from '../runtime/shapes.js';
import type { GpuRunner } from '../runtime/gpu/runner.js';

const stub = (size = 16) => ({ size }) as unknown as GPUBuffer;

function plan(g: Graph, tensorCores: boolean, wdtype: WeightDtype) {
  const runner = {
    createBuffer: (bytes: number) => stub(bytes),
    destroy: () => {},
    gpu: { tensorCores, subgroups: true, intDot: false, f16: true, maxBinding: 2 ** 40, limits: { maxComputeWorkgroupStorageSize: 32768 } },
  } as unknown as GpuRunner;
  const shapes = new Map(g.nodes.flatMap((n) => (n.op === 'weight' ? [[n.name, n.shape as number[]] as const] : [])));
  const cache: LayerCache = { k: stub(), v: stub(), scores: stub(), kpos: stub() };
  return lower(g, {
    runner, maxT: 1024, capacity: 4096, cacheDtype: 'f16', cache: () => cache,
    // norm weights stay f32 whatever the matrices are stored in
    weight: (name) => ({ buf: stub(), scales: stub(), dtype: shapes.get(name)!.length === 1 ? 'f32' : wdtype, shape: shapes.get(name)! }),
  });
}

const graph = fuse(decoderGraph(shapeConfig('llama-3.1-8b'), { retainingHeads: true, logitsRows: 1 }));
const step = (T: number, decode = false): StepDims => ({ T, slot0: 0, pos0: 0, rope: stub(), decode });
/** kernel names of the step's swiglu and down-projection dispatches, layer by layer */
function names(p: ReturnType<typeof plan>, s: StepDims) {
  const by = p.dispatchesByNode(s);
  const of = (op: string) => by.filter((n) => n.op === op).map((n) => n.dispatches.map((d) => d.kernel.name));
  return { swiglu: of('norm_linear_swiglu'), residual: of('linear_residual').flat(), qkv: of('qkv_rope') };
}

describe('f16 activations between tensor-core matmuls', () => {
  afterEach(() => {
    delete process.env.LOCRET_F32_ACTIVATIONS;
  });

  it.each(['f16', 'q4'] as const)('a prefill step on tensor cores (%s weights): swiglu writes f16, down reads it; o reads f32', (wdtype) => {
    const { swiglu, residual, qkv } = names(plan(graph, true, wdtype), step(1024));
    expect(swiglu).toHaveLength(32);
    expect(qkv).toHaveLength(32);
    for (const [norm, k, ...rest] of qkv) {
      expect(rest).toEqual([]);
      expect(norm).toMatch(/^rmsnorm.*half-1/);
      expect(k).toMatch(/^qkv_rope.*hx-1/);
      expect(k).toContain('path-sgmat');
    }
    // each layer's gate_up: its rows normalized ahead into f16, then the matmul reading them, writing f16
    for (const [norm, mm, ...rest] of swiglu) {
      expect(rest).toEqual([]);
      expect(norm).toMatch(/^rmsnorm.*half-1/);
      for (const k of ['path-sgmat', 'hx-1', 'hy-1', 'norm-0']) expect(mm).toContain(k);
    }
    // linear_residual alternates o (reads attention output, f32) and down (reads the swiglu output)
    expect(residual).toHaveLength(64);
    residual.forEach((n, i) => (i % 2 === 1 ? expect(n).toContain('hx-1') : expect(n).not.toContain('hx-1')));
  });

  it('LOCRET_NORM_IN_MATMUL=gate_up keeps the norm prologue in the gate_up matmul (still writing f16), =1 in qkv too', () => {
    process.env.LOCRET_NORM_IN_MATMUL = 'gate_up';
    try {
      const { swiglu, residual, qkv } = names(plan(graph, true, 'f16'), step(1024));
      for (const l of qkv) expect(l).toHaveLength(2);
      for (const [mm, ...rest] of swiglu) {
        expect(rest).toEqual([]);
        expect(mm).toContain('norm-1');
        expect(mm).toContain('hy-1');
        expect(mm).not.toContain('hx-1');
      }
      expect(residual.filter((n) => n.includes('hx-1'))).toHaveLength(32);
      process.env.LOCRET_NORM_IN_MATMUL = '1';
      for (const [k, ...rest] of names(plan(graph, true, 'f16'), step(1024)).qkv) {
        expect(rest).toEqual([]);
        expect(k).not.toContain('hx-1');
      }
    } finally {
      delete process.env.LOCRET_NORM_IN_MATMUL;
    }
  });

  it('decode steps, devices without tensor cores, f32 weights and LOCRET_F32_ACTIVATIONS=1 keep f32', () => {
    const f32 = (p: ReturnType<typeof plan>, s: StepDims) => {
      const { swiglu, residual, qkv } = names(p, s);
      expect(swiglu.length).toBeGreaterThan(0);
      for (const n of [...swiglu.flat(), ...residual, ...qkv.flat()]) expect(n).not.toMatch(/hx-1|hy-1|half-1/);
      for (const l of [...swiglu, ...qkv]) expect(l).toHaveLength(1);
    };
    f32(plan(graph, true, 'f16'), step(1, true));
    f32(plan(graph, true, 'f16'), step(8));
    f32(plan(graph, false, 'f16'), step(1024));
    f32(plan(graph, true, 'f32'), step(1024));
    process.env.LOCRET_F32_ACTIVATIONS = '1';
    f32(plan(graph, true, 'f16'), step(1024));
  });
});
