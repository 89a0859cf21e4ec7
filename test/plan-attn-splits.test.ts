/**
 * `LOCRET_ATTN_SPLITS=N` (compiler/lower.ts): prompt chunks' attention cuts each block's key range into N splits
 * merged by a combine dispatch, on both prefill kernels, with a scratch buffer that holds the partials; decode steps
 * keep their own plan. Numerics of split attention: kernels-attn(-sgmat).test.ts (cases with forced splits).
 */
import { describe, expect, it } from 'vitest';
import type { Dispatch } from '../runtime/gpu/runner.js';
import { withEnv } from './with-env.js';
import { graph8b, stubPlan, stubStep } from './plan-stub.js';

type Plan = ReturnType<typeof stubPlan>;
const attention = (p: Plan, T: number, decode: boolean, slot0: number): Dispatch[][] =>
  p.dispatchesByNode(stubStep(T, decode, slot0)).filter((n) => n.op === 'attention').map((n) => n.dispatches);
const grid = (d: Dispatch) => [d.kernel.name, ...d.workgroups];

describe('prefill attention key splits', () => {
  it.each([true, false])('tensor cores %s: 3 splits and a combine per layer for a 1024-token chunk; decode as before', (tc) => {
    const [before, beforeDecode] = [attention(stubPlan(graph8b, tc, 'f16'), 1024, false, 3072), attention(stubPlan(graph8b, tc, 'f16'), 1, true, 4000)];
    const [after, afterDecode] = withEnv({ LOCRET_ATTN_SPLITS: '3' }, () => {
      const p = stubPlan(graph8b, tc, 'f16');
      return [attention(p, 1024, false, 3072), attention(p, 1, true, 4000)];
    });
    expect(after).toHaveLength(32);
    for (const [l, ds] of after.entries()) {
      const [main, combine] = ds.slice(-2);
      expect(main!.kernel.name, `layer ${l}`).toMatch(tc ? /^attention_sgmat/ : /^attention/);
      expect(main!.workgroups[2], `layer ${l}: splits`).toBe(3);
      expect(combine!.kernel.name, `layer ${l}`).toMatch(/combine/);
      // the main kernel's partials (3 × T × H × (D + 4) f32) fit the scratch it writes
      const scratch = main!.buffers.scratch as GPUBuffer;
      expect(scratch.size).toBeGreaterThanOrEqual(3 * 1024 * 32 * 132 * 4);
    }
    // the default plan keeps one split at this size (no combine); decode steps are untouched by the switch
    for (const ds of before) expect(ds.at(-1)!.workgroups[2] ?? 1).toBe(1);
    expect(afterDecode.map((ds) => ds.map(grid))).toEqual(beforeDecode.map((ds) => ds.map(grid)));
  });
});
