/**
 * The plan's f16 activations (compiler/lower.ts `halfSwiglu`): on a device with tensor cores, a prefill step writes
 * each layer's swiglu output as f16 and the down projection reads it so, and gate_up and qkv read their rows
 * normalized ahead into f16 by one rmsnorm dispatch each, qkv writes the pre-RoPE rows that the retaining heads' fc1
 * reads as f16 (unless a caller reads them: the head trainer); decode steps, f32 weights, devices without tensor cores and
 * LOCRET_F32_ACTIVATIONS=1 keep f32 throughout. The 8B graph is lowered against a stand-in
 * device: nothing runs, only the emitted kernels are inspected (their numerics: kernels-sgmat.test.ts).
 */
import { describe, expect, it } from 'vitest';
import type { StepDims } from '../compiler/lower.js';
import { withEnv } from './with-env.js';
import { graph8b as graph, foldedGraph8b as foldedGraph, stubPlan as plan, stubStep as step } from './plan-stub.js';

/** kernel names of the step's swiglu and down-projection dispatches, layer by layer */
function names(p: ReturnType<typeof plan>, s: StepDims) {
  const by = p.dispatchesByNode(s);
  const of = (op: string) => by.filter((n) => n.op === op).map((n) => n.dispatches.map((d) => d.kernel.name));
  return { swiglu: of('norm_linear_swiglu'), residual: of('linear_residual').flat(), qkv: of('qkv_rope'), heads: of('retaining_head'), folded: of('norm_retaining_head') };
}

describe('f16 activations between tensor-core matmuls', () => {
  it.each(['f16', 'q4'] as const)('a prefill step on tensor cores (%s weights): swiglu writes f16, down reads it; o reads f32', (wdtype) => {
    const { swiglu, residual, qkv, heads } = names(plan(graph, true, wdtype), step(1024));
    expect(swiglu).toHaveLength(32);
    expect(qkv).toHaveLength(32);
    for (const [norm, k, ...rest] of qkv) {
      expect(rest).toEqual([]);
      expect(norm).toMatch(/^rmsnorm.*half-1/);
      expect(k).toMatch(/^qkv_rope.*hx-1/);
      expect(k).toContain('path-sgmat');
      expect(k).toContain('hp-1'); // pre-RoPE rows written as f16 ...
    }
    // ... for each retaining head's fc1 (silu epilogue) to read, then its fc2 scores
    expect(heads).toHaveLength(32);
    for (const [fc1, fc2, ...rest] of heads) {
      expect(rest).toEqual([]);
      for (const k of ['path-sgmat', 'hx-1', 'epilogue-silu']) expect(fc1).toContain(k);
      expect(fc2).toMatch(/^retaining/);
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
    withEnv({ LOCRET_NORM_IN_MATMUL: 'gate_up' }, () => {
      const { swiglu, residual, qkv } = names(plan(graph, true, 'f16'), step(1024));
      for (const l of qkv) expect(l).toHaveLength(2);
      for (const [mm, ...rest] of swiglu) {
        expect(rest).toEqual([]);
        expect(mm).toContain('norm-1');
        expect(mm).toContain('hy-1');
        expect(mm).not.toContain('hx-1');
      }
      expect(residual.filter((n) => n.includes('hx-1'))).toHaveLength(32);
    });
    for (const [k, ...rest] of withEnv({ LOCRET_NORM_IN_MATMUL: '1' }, () => names(plan(graph, true, 'f16'), step(1024))).qkv) {
      expect(rest).toEqual([]);
      expect(k).not.toContain('hx-1');
    }
  });

  it('decode steps, devices without tensor cores, f32 weights and LOCRET_F32_ACTIVATIONS=1 keep f32', () => {
    const f32 = (p: ReturnType<typeof plan>, s: StepDims) => {
      const { swiglu, residual, qkv, heads } = names(p, s);
      expect(swiglu.length).toBeGreaterThan(0);
      for (const n of [...swiglu.flat(), ...residual, ...qkv.flat(), ...heads.flat()]) expect(n).not.toMatch(/hx-1|hy-1|half-1|hp-1/);
      for (const l of [...swiglu, ...qkv]) expect(l).toHaveLength(1);
    };
    f32(plan(graph, true, 'f16'), step(1, true));
    f32(plan(graph, true, 'f16'), step(8));
    f32(plan(graph, false, 'f16'), step(1024));
    f32(plan(graph, true, 'f32'), step(1024));
    withEnv({ LOCRET_F32_ACTIVATIONS: '1' }, () => f32(plan(graph, true, 'f16'), step(1024)));
  });

  it('folded heads: rows normalized ahead as f16 for fc1 · Wqkv on the tensor cores, no pre-RoPE rows written; f32 elsewhere', () => {
    const { qkv, heads, folded } = names(plan(foldedGraph, true, 'f16'), step(1024));
    expect(heads).toEqual([]);
    expect(folded).toHaveLength(32);
    for (const [norm, k] of qkv) {
      expect(norm).toMatch(/^rmsnorm.*half-1/);
      expect(k).toContain('pre-0');
    }
    // fc1 reads the rows qkv_rope's rmsnorm left in the shared f16 buffer just before: no second norm
    for (const [fc1, fc2, ...rest] of folded) {
      expect(rest).toEqual([]);
      for (const k of ['path-sgmat', 'hx-1', 'epilogue-silu', 'norm-0']) expect(fc1).toContain(k);
      expect(fc2).toMatch(/^retaining/);
    }
    // where qkv normalizes in its own prologue (or LOCRET_HEAD_OWN_NORM=1) the head writes the rows itself
    for (const [flag, value] of [['LOCRET_NORM_IN_MATMUL', 'qkv'], ['LOCRET_HEAD_OWN_NORM', '1']] as const) {
      process.env[flag] = value;
      try {
        for (const [norm, fc1, fc2, ...rest] of names(plan(foldedGraph, true, 'f16'), step(1024)).folded) {
          expect(rest).toEqual([]);
          expect(norm).toMatch(/^rmsnorm.*half-1/);
          for (const k of ['path-sgmat', 'hx-1', 'epilogue-silu', 'norm-0']) expect(fc1).toContain(k);
          expect(fc2).toMatch(/^retaining/);
        }
      } finally {
        delete process.env[flag];
      }
    }
    // without tensor cores: the norm in the matmul's prologue, f32 rows
    for (const [fc1, fc2, ...rest] of names(plan(foldedGraph, false, 'f16'), step(1024)).folded) {
      expect(rest).toEqual([]);
      expect(fc1).toContain('norm-1');
      expect(fc1).not.toContain('hx-1');
      expect(fc2).toMatch(/^retaining/);
    }
    expect(names(plan(foldedGraph, true, 'f16'), step(1, true)).folded.flat()).toEqual([]); // decode tokens are never scored
  });

  it('a plan whose caller reads the pre-RoPE rows (the head trainer) keeps them f32; the rest stays f16', () => {
    const { swiglu, qkv, heads } = names(plan(graph, true, 'f16', true), step(1024));
    expect(heads).toHaveLength(32);
    for (const [, k] of qkv) {
      expect(k).toContain('hx-1');
      expect(k).not.toContain('hp-1');
    }
    for (const [fc1] of heads) expect(fc1).not.toContain('hx-1');
    for (const [, mm] of swiglu) expect(mm).toContain('hy-1');
  });
});
