/**
 * Where a step's time goes: the GPU time of a prefill chunk and of a decode step, split by op (each op's
 * dispatches of every layer timed alone, back to back), next to the whole step and the host time spent encoding
 * it. Parts timed alone do not add up exactly to the whole (caches are warmer or colder without their
 * neighbours), and an op of little GPU work timed alone measures its host encoding instead. Where the device has
 * timestamp queries, `gpu` holds the step's own profile: each kernel's GPU time inside the whole step, summed by
 * op, and the gaps between dependent dispatches.
 */
import type { Op } from '../ir/ops.js';
import type { GpuRunner } from './gpu/runner.js';
import { profileGroups, type ProfileSummary } from './gpu/profile.js';
import type { Session } from './session.js';

export interface StepBreakdown {
  /** GPU time of the whole step, ms (many steps submitted back to back, so host encoding overlaps) */
  readonly total_ms: number;
  /** host time to build, encode and submit the step's dispatches, ms */
  readonly encode_ms: number;
  readonly dispatches: number;
  /** ms per op, every layer's dispatches of that op */
  readonly by_op: Partial<Record<Op, number>>;
  /** timestamp profile of the whole step (by_group_ms: kernel ms per op), when the device has timestamp queries */
  readonly gpu?: ProfileSummary;
}

async function timeRuns(r: GpuRunner, reps: number, f: () => void): Promise<number> {
  f();
  await r.device.queue.onSubmittedWorkDone();
  const t0 = performance.now();
  for (let i = 0; i < reps; i++) f();
  await r.device.queue.onSubmittedWorkDone();
  return (performance.now() - t0) / reps;
}

/** Breaks down one step of T tokens (decode: one token) of a session whose cache is already filled. */
export async function stepBreakdown(r: GpuRunner, s: Session, T: number, decode: boolean, reps: number): Promise<StepBreakdown> {
  const all = s.stepProbe(T, decode);
  const total = await timeRuns(r, reps, () => r.run(s.stepProbe(T, decode)));
  await r.device.queue.onSubmittedWorkDone();
  const e0 = performance.now();
  for (let i = 0; i < reps; i++) r.run(s.stepProbe(T, decode));
  const encode = (performance.now() - e0) / reps;
  await r.device.queue.onSubmittedWorkDone();
  const byOp: Partial<Record<Op, number>> = {};
  for (const op of s.stepOps) {
    if (s.stepProbe(T, decode, (o) => o === op).length === 0) continue;
    byOp[op] = await timeRuns(r, reps, () => r.run(s.stepProbe(T, decode, (o) => o === op)));
  }
  const gpu = r.gpu.timestamps
    ? await profileGroups(r, s.stepProbeByOp(T, decode).map((g) => ({ name: g.op, dispatches: g.dispatches })), reps)
    : undefined;
  return { total_ms: total, encode_ms: encode, dispatches: all.length, by_op: byOp, gpu };
}
