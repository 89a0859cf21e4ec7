/**
 * Decode steps of one session differ, for the slot-dependent kernels (qkv_rope, attention), only in where the new
 * token lands: its slot and position, which reach the kernels as uniform parameters. Building their dispatches from
 * scratch every step (options, plans, kernel variant keys) took 0.74 ms of a 32-layer step's host time, against
 * q4 GPU steps of ~4 ms on an H100, where the host's whole step (list, record, submit) came to 2.5–5 ms: a slow
 * host became the bottleneck. A node's dispatches are kept under a signature of everything else they depend on
 * (token count, key form, the attention plan, tuning switches) and reused with those parameters patched (the list
 * then takes 0.15–0.19 ms; bench/encode-overhead.ts times both). The rope table, a buffer, is compared by
 * identity. LOCRET_NO_STEP_MEMO=1 builds every step afresh.
 */
import type { Dispatch } from '../runtime/gpu/runner.js';
import type { StepDims } from './lower.js';

type Emit = (s: StepDims) => Dispatch[];

/** Signatures kept per node before the memo starts over (a long generation moves through a few attention plans). */
const MAX_ENTRIES = 64;

export interface DecodeMemo {
  /** what the node's dispatches depend on besides the patched parameters; null: build afresh (not memoized) */
  signature(s: StepDims): string | null;
  /** the cached dispatches with this step's parameters (new objects: callers may keep earlier steps' lists) */
  patch(ds: readonly Dispatch[], s: StepDims): Dispatch[];
}

export function memoDecode(e: Emit, m: DecodeMemo): Emit {
  const memo = new Map<string, { rope: GPUBuffer; ds: Dispatch[] }>();
  return (s) => {
    const sig = m.signature(s);
    if (sig === null) return e(s);
    const hit = memo.get(sig);
    if (hit && hit.rope === s.rope) return m.patch(hit.ds, s);
    const ds = e(s);
    if (memo.size >= MAX_ENTRIES) memo.clear();
    memo.set(sig, { rope: s.rope, ds });
    return ds;
  };
}

/** A dispatch list with `values` merged into the parameters of the dispatches at `which` indices. */
export function withParams(ds: readonly Dispatch[], values: Readonly<Record<string, number>>, which: (i: number) => boolean = () => true): Dispatch[] {
  return ds.map((d, i) => (which(i) ? { ...d, params: { ...d.params, ...values } } : d));
}
