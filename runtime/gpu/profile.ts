/**
 * GPU time per dispatch from timestamp queries (`timestamp-query`): each dispatch runs in a compute pass of its own
 * that writes a timestamp when it starts and when it ends, so a step's span splits into the kernels' own times and
 * the gaps between them (the barrier, drain and launch between dependent dispatches). Passes of one dispatch each
 * are synchronized like the one pass of a normal step (every dispatch after one that writes its inputs waits for
 * it), so the times are those of the step as it runs, give or take the pass boundaries.
 */
import type { Dispatch, GpuRunner } from './runner.js';

/** WebGPU's largest query set: 2 timestamps per dispatch, so at most half as many dispatches per submission */
const MAX_QUERIES = 4096;

export interface DispatchTimes {
  /** (dispatches) ns from the first dispatch's start to each dispatch's start and end */
  readonly start: Float64Array;
  readonly end: Float64Array;
}

/** Runs the dispatches once, timed. Larger lists go in several submissions (their gaps then include a submit). */
export async function profileDispatches(r: GpuRunner, dispatches: readonly Dispatch[]): Promise<DispatchTimes> {
  if (!r.gpu.timestamps) throw new Error('profile: this device has no timestamp queries (feature timestamp-query)');
  const n = dispatches.length;
  const per = MAX_QUERIES / 2;
  const querySet = r.device.createQuerySet({ type: 'timestamp', count: Math.min(MAX_QUERIES, 2 * n) });
  // (dispatches, 2) u64 ns; each submission's part resolves at a multiple of 2048 · 16 bytes (256-aligned)
  const resolved = r.device.createBuffer({ size: Math.max(16, 16 * n), usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
  try {
    for (let c = 0; c < n; c += per) {
      const part = dispatches.slice(c, c + per);
      const enc = r.device.createCommandEncoder();
      r.record(enc, part, querySet);
      enc.resolveQuerySet(querySet, 0, 2 * part.length, resolved, 16 * c);
      r.device.queue.submit([enc.finish()]);
    }
    const raw = new BigUint64Array(await r.read(resolved, 16 * n));
    const t0 = raw[0] ?? 0n;
    const at = (i: number) => Number(raw[i]! - t0);
    return { start: Float64Array.from({ length: n }, (_, i) => at(2 * i)), end: Float64Array.from({ length: n }, (_, i) => at(2 * i + 1)) };
  } finally {
    querySet.destroy();
    resolved.destroy();
  }
}

export interface ProfileSummary {
  /** first start to last end, ms */
  readonly span_ms: number;
  /** the kernels' own times summed, ms */
  readonly kernels_ms: number;
  /** span minus kernels: time between one dispatch's end and the next one's start, ms */
  readonly gaps_ms: number;
  /** kernel time per group (op), ms */
  readonly by_group_ms: Readonly<Record<string, number>>;
}

/**
 * Times grouped dispatches `reps` times after one untimed run and averages: every field is a mean over the runs.
 */
export async function profileGroups(r: GpuRunner, groups: readonly { readonly name: string; readonly dispatches: readonly Dispatch[] }[], reps: number): Promise<ProfileSummary> {
  const all = groups.flatMap((g) => g.dispatches);
  const owner = groups.flatMap((g) => g.dispatches.map(() => g.name));
  r.run(all);
  let span = 0;
  let kernels = 0;
  const by: Record<string, number> = {};
  for (let k = 0; k < reps; k++) {
    const t = await profileDispatches(r, all);
    span += (t.end[all.length - 1] ?? 0) - (t.start[0] ?? 0);
    t.start.forEach((s, i) => {
      const d = t.end[i]! - s;
      kernels += d;
      by[owner[i]!] = (by[owner[i]!] ?? 0) + d;
    });
  }
  const ms = (ns: number) => ns / reps / 1e6;
  return {
    span_ms: ms(span),
    kernels_ms: ms(kernels),
    gaps_ms: ms(span - kernels),
    by_group_ms: Object.fromEntries(Object.entries(by).map(([k, v]) => [k, ms(v)])),
  };
}
