/**
 * Eviction of every layer after a prefill chunk, old (evict-single.ts: one workgroup per KV head, in place) vs new
 * (evict.ts: select, then gather and scatter through a shared scratch over thousands of workgroups), at the
 * Llama-3.1-8B shape: 32 layers × 8 KV heads × 17,408 live slots (budget 16,384 + chunk 1,024), f16, head_dim 128.
 *
 *   node dist/bench/evict-check.js [--out file.json] [--small] [--reps 10] [--dtype f16|f32|int8]
 *
 * Both variants start from identical caches (random scores, a distinct word in every K/V row word) and must end in
 * identical buffers (K, V, scores, positions), compared in full. Timing: one submission evicts every layer; each
 * rep first restores the scores (and positions) from a pristine copy in a separate submission, so every rep makes
 * the same selection and moves the same rows; the restore alone is timed and subtracted. --small: CPU-driver size.
 */
import * as fs from 'node:fs';
import { cacheRowWords, type CacheDtype } from '../compiler/kernels/attn-common.js';
import { evict, evictScratchBytes, evictThreads } from '../compiler/kernels/evict.js';
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
    kpos: r.upload(Uint32Array.from({ length: KV * capacity }, (_, i) => (i % capacity) + l), `kpos0-${l}`), // (KV, capacity)
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
  const sb = evictScratchBytes(dtype, D, KV, capacity);
  const scratch = { rows: r.createBuffer(sb.rows, 'evict-rows'), meta: r.createBuffer(sb.meta, 'evict-meta') };
  const o = { cacheDtype: dtype, headDim: D, compact: true, threads };
  const d = { KV, len, keep, forcedFrom, capacity };
  const calls = (kind: 'old' | 'new', ls: Layer[]): Dispatch[] => ls.flatMap((x) => {
    const b = { kCache: x.k, vCache: x.v, scores: x.scores, kpos: x.kpos };
    return kind === 'old' ? evictSingle(o, d, b) : evict(o, d, { ...b, scratch });
  });
  const results: Record<string, number> = {};
  const caches = { old: make('old'), new: make('new') };
  const ds = { old: calls('old', caches.old), new: calls('new', caches.new) };
  // 1. one eviction each from the same start (also compiles and warms up), compared in full, a layer at a time
  for (const kind of ['old', 'new'] as const) {
    restore(caches[kind]);
    r.run(ds[kind]);
  }
  let mismatch = '';
  const names = ['K', 'V', 'scores', 'kpos'] as const;
  const read = (x: Layer) => Promise.all([r.readU32(x.k, kw.length), r.readU32(x.v, vw.length), r.readU32(x.scores, KV * capacity), r.readU32(x.kpos, KV * capacity)]);
  for (let l = 0; l < L && !mismatch; l++) {
    const [a, b] = [await read(caches.old[l]!), await read(caches.new[l]!)];
    for (let j = 0; j < 4 && !mismatch; j++) {
      const x = a[j]!, y = b[j]!;
      for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) { mismatch = `layer ${l} ${names[j]} word ${i}: old ${x[i]}, new ${y[i]}`; break; }
    }
  }
  // 2. timing (restores never touch K/V, so reps after the first move garbled rows: same work, other words)
  for (const kind of ['old', 'new'] as const) {
    const ls = caches[kind];
    await r.device.queue.onSubmittedWorkDone();
    const t0 = performance.now();
    for (let i = 0; i < reps; i++) { restore(ls); r.run(ds[kind]); }
    await r.device.queue.onSubmittedWorkDone();
    const both = (performance.now() - t0) / reps;
    const t1 = performance.now();
    for (let i = 0; i < reps; i++) restore(ls);
    await r.device.queue.onSubmittedWorkDone();
    const restoreMs = (performance.now() - t1) / reps;
    results[`${kind}_ms`] = Math.max(1e-6, both - restoreMs);
    results[`${kind}_dispatches`] = ds[kind].length;
    console.log(`${kind}: ${(both - restoreMs).toFixed(3)} ms for ${L} layers (${ds[kind].length} dispatches; restore ${restoreMs.toFixed(3)} ms subtracted)`);
  }
  const oldMs = results.old_ms!;
  const newMs = results.new_ms!;
  const row = {
    adapter: gpu.adapterName, layers: L, kv_heads: KV, head_dim: D, dtype, len, keep, capacity, forced_from: forcedFrom, select_threads: threads,
    scratch_bytes: sb.rows + sb.meta, ...results, speedup: oldMs / newMs, identical: mismatch === '', mismatch: mismatch || undefined,
  };
  console.log(`new vs old: ${(oldMs / newMs).toFixed(1)}x; caches ${mismatch ? `DIFFER (${mismatch})` : 'identical'}; scratch ${((sb.rows + sb.meta) / 1e6).toFixed(1)} MB`);
  const outFile = arg('out');
  if (outFile) fs.writeFileSync(outFile, JSON.stringify(row, null, 2) + '\n');
  if (mismatch) process.exitCode = 1;
}

await main();
