/**
 * Eviction of every layer after a prefill chunk at the Llama-3.1-8B shape (32 layers × 8 KV heads × 17,408 live
 * slots: budget 16,384 + chunk 1,024, f16, head_dim 128), three ways:
 *   single   evict-single.ts: one workgroup per KV head, compaction in place (the baseline)
 *   ordered  evict.ts layout 'ordered': select, then gather and scatter through a one-layer scratch
 *   holes    evict.ts layout 'holes': select, then the chunk's survivors fill the evicted slots (evict-holes.ts)
 * and the selection dispatch of ordered / holes alone (`*_select_ms`).
 *
 *   node dist/bench/evict-check.js [--out file.json] [--small] [--reps 10] [--dtype f16|f32|int8]
 *
 * All start from identical caches (random scores, positions = ranks, a distinct word in every K/V row word).
 * ordered must end word for word equal to single; holes must hold the same entries (K, V, score) with each kept
 * entry's position its rank, i.e. equal to single once each head's slots are sorted by position. Timing: one
 * submission evicts every layer; each rep first restores scores and positions from a pristine copy in a separate
 * submission, so every rep makes the same selection and moves the same rows; the restore alone is timed and
 * subtracted. --small: CPU-driver size.
 */
import * as fs from 'node:fs';
import { cacheRowWords, type CacheDtype } from '../compiler/kernels/attn-common.js';
import { evict, evictScratchBytes, evictThreads, type EvictLayout } from '../compiler/kernels/evict.js';
import { evictSingle } from '../compiler/kernels/evict-single.js';
import { defaultGpu } from '../runtime/gpu/device.js';
import { GpuRunner, type Dispatch } from '../runtime/gpu/runner.js';
import { rng } from '../runtime/sampling.js';

const arg = (name: string, def?: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : def;
};
const small = process.argv.includes('--small');
const reps = Number(arg('reps', small ? '2' : '10'));
const dtype = arg('dtype', 'f16') as CacheDtype;
const L = small ? 3 : 32;
const KV = small ? 2 : 8;
const D = small ? 64 : 128;
const budget = small ? 1024 : 16384;
const chunk = small ? 256 : 1024;
const len = budget + chunk;
const capacity = len + (small ? 40 : 356); // + local + maxNew, as the session allocates
const stabilizer = small ? 100 : 2500;
const keep = budget;
const forcedFrom = len - stabilizer;

interface Layer { k: GPUBuffer; v: GPUBuffer; scores: GPUBuffer; kpos: GPUBuffer }

async function main() {
  const gpu = await defaultGpu();
  const r = new GpuRunner(gpu);
  const RW = cacheRowWords(dtype, D);
  const threads = evictThreads(gpu.limits.maxComputeInvocationsPerWorkgroup);
  console.log(`${gpu.adapterName}: ${L} layers × ${KV} KV heads × ${len} slots (capacity ${capacity}), ${dtype} D ${D}, keep ${keep}, forced from ${forcedFrom}, select threads ${threads}`);
  // one layer's K/V words (distinct per word, so a misplaced row shows), shared by every layer: generating GBs in
  // JS is slow; the scores differ per layer, so each layer keeps a different set
  const kw = new Uint32Array(KV * capacity * RW);
  for (let i = 0; i < kw.length; i++) kw[i] = Math.imul(i + 1, 2654435761) >>> 0;
  const vw = kw.map((x) => (x ^ 0x9e3779b9) >>> 0);
  const next = rng(42);
  const pristine = Array.from({ length: L }, (_, l) => ({
    scores: r.upload(Float32Array.from({ length: KV * capacity }, () => next() * 8 - 4), `scores0-${l}`), // (KV, capacity)
    kpos: r.upload(Uint32Array.from({ length: KV * capacity }, (_, i) => i % capacity), `kpos0-${l}`), // (KV, capacity) ranks
  }));
  const make = (tag: string): Layer[] => pristine.map((p, l) => ({
    k: r.upload(kw, `${tag}k${l}`), v: r.upload(vw, `${tag}v${l}`),
    scores: r.createBuffer(p.scores.size, `${tag}s${l}`), kpos: r.createBuffer(p.kpos.size, `${tag}p${l}`),
  }));
  const restore = (ls: Layer[]) => {
    const enc = r.device.createCommandEncoder();
    ls.forEach((x, l) => {
      enc.copyBufferToBuffer(pristine[l]!.scores, 0, x.scores, 0, x.scores.size);
      enc.copyBufferToBuffer(pristine[l]!.kpos, 0, x.kpos, 0, x.kpos.size);
    });
    r.device.queue.submit([enc.finish()]);
  };
  const d = { KV, len, keep, forcedFrom, capacity };
  const scratchOf = (layout: EvictLayout) => {
    const sb = evictScratchBytes(layout, dtype, D, KV, capacity);
    return { rows: sb.rows ? r.createBuffer(sb.rows, `evict-rows-${layout}`) : null, meta: r.createBuffer(sb.meta, `evict-meta-${layout}`), bytes: sb.rows + sb.meta };
  };
  const scratch = { ordered: scratchOf('ordered'), holes: scratchOf('holes') };
  type Kind = 'single' | EvictLayout;
  const calls = (kind: Kind, ls: Layer[]): Dispatch[] => ls.flatMap((x) => {
    const b = { kCache: x.k, vCache: x.v, scores: x.scores, kpos: x.kpos };
    const o = { cacheDtype: dtype, headDim: D, layout: kind === 'single' ? 'ordered' as const : kind, compact: true, threads };
    return kind === 'single' ? evictSingle(o, d, b) : evict(o, d, { ...b, scratch: scratch[kind] });
  });
  const kinds: Kind[] = ['single', 'ordered', 'holes'];
  const caches = Object.fromEntries(kinds.map((k) => [k, make(k)])) as Record<Kind, Layer[]>;
  const ds = Object.fromEntries(kinds.map((k) => [k, calls(k, caches[k])])) as Record<Kind, Dispatch[]>;
  // 1. one eviction each from the same start (also compiles and warms up), compared a layer at a time
  for (const kind of kinds) {
    restore(caches[kind]);
    r.run(ds[kind]);
  }
  const mismatch: Record<string, string> = {};
  const read = (x: Layer) => Promise.all([r.readU32(x.k, kw.length), r.readU32(x.v, vw.length), r.readU32(x.scores, KV * capacity), r.readU32(x.kpos, KV * capacity)]);
  for (let l = 0; l < L; l++) {
    const [want, ord, hol] = [await read(caches.single[l]!), await read(caches.ordered[l]!), await read(caches.holes[l]!)];
    mismatch.ordered ||= wordDiff(l, want, ord);
    mismatch.holes ||= rankDiff(l, want, hol, RW);
  }
  // 2. timing (restores never touch K/V, so reps after the first move garbled rows: same work, other words)
  const results: Record<string, number> = {};
  const time = async (name: string, ls: Layer[], calls: Dispatch[]) => {
    await r.device.queue.onSubmittedWorkDone();
    const t0 = performance.now();
    for (let i = 0; i < reps; i++) { restore(ls); r.run(calls); }
    await r.device.queue.onSubmittedWorkDone();
    const both = (performance.now() - t0) / reps;
    const t1 = performance.now();
    for (let i = 0; i < reps; i++) restore(ls);
    await r.device.queue.onSubmittedWorkDone();
    const restoreMs = (performance.now() - t1) / reps;
    results[`${name}_ms`] = Math.max(1e-6, both - restoreMs);
    results[`${name}_dispatches`] = calls.length;
    console.log(`${name}: ${(both - restoreMs).toFixed(3)} ms for ${L} layers (${calls.length} dispatches; restore ${restoreMs.toFixed(3)} ms subtracted)`);
  };
  for (const kind of kinds) await time(kind, caches[kind], ds[kind]);
  // the selection alone: each layer's first dispatch
  for (const kind of ['ordered', 'holes'] as const) {
    const per = ds[kind].length / L;
    await time(`${kind}_select`, caches[kind], ds[kind].filter((_, i) => i % per === 0));
  }
  const row = {
    adapter: gpu.adapterName, layers: L, kv_heads: KV, head_dim: D, dtype, len, keep, capacity, forced_from: forcedFrom, select_threads: threads,
    scratch_bytes_ordered: scratch.ordered.bytes, scratch_bytes_holes: scratch.holes.bytes, ...results,
    speedup_ordered: results.single_ms! / results.ordered_ms!, speedup_holes: results.ordered_ms! / results.holes_ms!,
    ordered_identical: !mismatch.ordered, holes_same_entries: !mismatch.holes, mismatch: mismatch.ordered || mismatch.holes ? mismatch : undefined,
  };
  console.log(`ordered vs single: ${row.speedup_ordered.toFixed(1)}x, ${mismatch.ordered ? `DIFFER (${mismatch.ordered})` : 'identical'}`);
  console.log(`holes vs ordered: ${row.speedup_holes.toFixed(1)}x, ${mismatch.holes ? `DIFFER (${mismatch.holes})` : 'same entries, positions = ranks'}`);
  const outFile = arg('out');
  if (outFile) fs.writeFileSync(outFile, JSON.stringify(row, null, 2) + '\n');
  if (mismatch.ordered || mismatch.holes) process.exitCode = 1;
}

type Words = Uint32Array[]; // K, V, scores, kpos

function wordDiff(l: number, want: Words, got: Words): string {
  const names = ['K', 'V', 'scores', 'kpos'];
  for (let j = 0; j < 4; j++) {
    const x = want[j]!, y = got[j]!;
    for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return `layer ${l} ${names[j]} word ${i}: want ${x[i]}, got ${y[i]}`;
  }
  return '';
}

/** holes vs the compacted baseline: per head, the entry of rank i (the slot whose position is i) equals slot i's. */
function rankDiff(l: number, want: Words, got: Words, RW: number): string {
  const [wk, wv, ws] = want;
  const [gk, gv, gs, gp] = got;
  for (let h = 0; h < KV; h++) {
    const slotOf = new Int32Array(keep).fill(-1);
    for (let s = 0; s < keep; s++) {
      const p = gp![h * capacity + s]!;
      if (p >= keep || slotOf[p] !== -1) return `layer ${l} head ${h}: position ${p} at slot ${s} is not a fresh rank below ${keep}`;
      slotOf[p] = s;
    }
    for (let i = 0; i < keep; i++) {
      const a = h * capacity + i, b = h * capacity + slotOf[i]!;
      if (ws![a] !== gs![b]) return `layer ${l} head ${h} rank ${i}: score ${gs![b]}, want ${ws![a]}`;
      for (let w = 0; w < RW; w++) {
        if (wk![a * RW + w] !== gk![b * RW + w]) return `layer ${l} head ${h} rank ${i}: K word ${w} differs`;
        if (wv![a * RW + w] !== gv![b * RW + w]) return `layer ${l} head ${h} rank ${i}: V word ${w} differs`;
      }
    }
  }
  return '';
}

await main();
