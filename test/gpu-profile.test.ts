/**
 * The timestamp profile (runtime/gpu/profile.ts): one start and end per dispatch, in order, a kernel with 512 times
 * the work of another taking longer, the outputs the same as an untimed run, and the grouped summary adding up.
 */
import { describe, expect, it } from 'vitest';
import { kernel, rw, wgsl } from '../compiler/wgsl.js';
import { profileDispatches, profileGroups } from '../runtime/gpu/profile.js';
import type { Dispatch } from '../runtime/gpu/runner.js';
import { gpuRunner } from './gpu-harness.js';

/** y[i] = y[i] · 0.5 + 1, `iters` times per element: dependent work the shader compiler cannot fold away */
const busy = (iters: number) =>
  kernel({ op: 'test_profile_busy', iters }, () => ({
    bindings: [rw('y', 'array<f32>')],
    params: [],
    workgroupSize: [64, 1, 1],
    body: wgsl`
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) g: vec3<u32>) {
  var v = y[g.x];
  for (var i = 0u; i < ${iters}u; i++) { v = v * 0.5 + 1.0; }
  y[g.x] = v;
}`,
  }));

describe('GPU timestamp profile', async () => {
  const r = await gpuRunner();
  it('the device has timestamp queries (the CPU driver does)', () => {
    expect(r.gpu.timestamps).toBe(true);
  });

  it('times each dispatch in order; more work takes longer; results are those of an untimed run', async () => {
    const n = 64 * 64;
    const y = r.upload(new Float32Array(n), 'y');
    const d = (iters: number): Dispatch => ({ kernel: busy(iters), buffers: { y }, params: {}, workgroups: [n / 64] });
    const list = [d(64), d(32768), d(64), d(32768)];
    r.run(list); // the CPU driver compiles a pipeline at its first dispatch: keep that out of the times
    const t = await profileDispatches(r, list);
    expect(t.start.length).toBe(4);
    for (let i = 0; i < 4; i++) {
      expect(t.end[i]!, `dispatch ${i} ends after it starts`).toBeGreaterThan(t.start[i]!);
      if (i > 0) expect(t.start[i]!, `dispatch ${i} starts after ${i - 1} ends (it reads its output)`).toBeGreaterThanOrEqual(t.end[i - 1]!);
    }
    const dur = (i: number) => t.end[i]! - t.start[i]!;
    expect(dur(1)).toBeGreaterThan(4 * dur(0));
    expect(dur(3)).toBeGreaterThan(4 * dur(2));
    // thousands of steps of v → v/2 + 1 from 0: the fixed point 2 within f32
    const got = await r.readF32(y, n);
    expect(got.every((v) => Math.abs(v - 2) < 1e-6)).toBe(true);
    r.destroy(y);
  });

  it('sums kernel time by group; span = kernels + gaps', async () => {
    const y = r.upload(new Float32Array(256), 'y');
    const d = (iters: number): Dispatch => ({ kernel: busy(iters), buffers: { y }, params: {}, workgroups: [4] });
    // heavy: 16,384 times the light kernels' work, so its time beats three light dispatches' fixed cost on a busy CPU
    // driver (8,192 iterations did not, once, under a full test run)
    const s = await profileGroups(r, [{ name: 'light', dispatches: [d(16), d(16)] }, { name: 'heavy', dispatches: [d(262144)] }, { name: 'light', dispatches: [d(16)] }], 3);
    expect(Object.keys(s.by_group_ms).sort()).toEqual(['heavy', 'light']);
    expect(s.by_group_ms.heavy!).toBeGreaterThan(s.by_group_ms.light!);
    expect(s.by_group_ms.heavy! + s.by_group_ms.light!).toBeCloseTo(s.kernels_ms, 9);
    expect(s.gaps_ms).toBeGreaterThanOrEqual(0);
    expect(s.span_ms).toBeCloseTo(s.kernels_ms + s.gaps_ms, 9);
    r.destroy(y);
  });
});
