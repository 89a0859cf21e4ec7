/**
 * Decode attention, old (prefill kernel's split path) vs new (attention-decode.ts): GB/s of cache read at the
 * Llama-3.1-8B shape (8 KV heads, GQA 4, head_dim 128, f16 cache, one query) for 16,384 and 131,072 entries per
 * head, plus a correctness check of the new kernel against the old one on the same inputs.
 *
 *   node dist/bench/attn-check.js [--out file.json] [--small] [--reps 20] [--layers 32] [--dtype f16|f32|int8]
 *                                 [--sweep 'v1;v2;v2,kl=16,nt=256;v2,k2=2,slab=512'] [--kpos-zero | --rotated]
 *                                 [--lens 4096,16384,131072] [--profile]
 *
 * --sweep lists decode-kernel configurations (LOCRET_ATTN_DECODE strings, `;`-separated), each timed and checked
 * against the old kernel; the first row's `new` columns keep the default configuration (v1 unless the env says v2).
 *
 * One timed submission holds `layers` attention calls (as a decode step does) over distinct caches when they fit,
 * so the L2 cannot serve a later call from an earlier one. --small runs a CPU-driver-sized shape. --kpos-zero puts
 * every key at position 0, so the rope table costs no memory traffic (a diagnostic of how much it does otherwise).
 * --rotated times the new kernel on keys that already carry RoPE (as decode reads them after a prefill); the old
 * kernel, given every key at position 0 (no rotation), is its reference. --lens replaces the cache lengths; a few
 * lengths show the per-layer fixed cost (the intercept of time against bytes). --profile adds, per length and
 * configuration, the GPU time of the main kernels and of the split-combining kernels apart (timestamp queries).
 */
import * as fs from 'node:fs';
import { attention, attentionScratchBytes, type AttentionOpts } from '../compiler/kernels/attention.js';
import { attentionDecode, attentionDecodeSplit } from '../compiler/kernels/attention-decode.js';
import { cacheRowWords, type CacheDtype } from '../compiler/kernels/attn-common.js';
import { defaultGpu } from '../runtime/gpu/device.js';
import { GpuRunner, type Dispatch } from '../runtime/gpu/runner.js';
import { profileGroups } from '../runtime/gpu/profile.js';
import { ropeTable } from '../runtime/rope.js';
import { rng } from '../runtime/sampling.js';

const arg = (name: string, def?: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : def;
};
const small = process.argv.includes('--small');
const rotated = process.argv.includes('--rotated');
const kposZero = process.argv.includes('--kpos-zero') || rotated;
const reps = Number(arg('reps', small ? '2' : '20'));
const dtype = arg('dtype', 'f16') as CacheDtype;
const KV = small ? 2 : 8;
const G = 4;
const D = 128;
const lens = arg('lens')?.split(',').map(Number) ?? (small ? [300, 1000] : [16384, 131072]);
const profile = process.argv.includes('--profile');
const layersWanted = Number(arg('layers', small ? '2' : '32'));
const sweep = (arg('sweep') ?? '').split(';').map((x) => x.trim()).filter(Boolean);
const baseKnob = process.env.LOCRET_ATTN_DECODE;

/** Random cache words: f16 halves in [-1, 1), int8 codes with a positive scale, f32 in [-1, 1). */
function cacheWords(n: number, seed: number): Uint32Array {
  const next = rng(seed);
  const w = new Uint32Array(n * cacheRowWords(dtype, D));
  if (dtype === 'f32') {
    const f = new Float32Array(w.buffer);
    for (let i = 0; i < f.length; i++) f[i] = next() * 2 - 1;
  } else if (dtype === 'f16') {
    // exponent 14 or less keeps |x| < 1 (sign random)
    for (let i = 0; i < w.length; i++) {
      const h = () => ((next() < 0.5 ? 0x8000 : 0) | Math.floor(next() * 0x3800)) >>> 0;
      w[i] = (h() | (h() << 16)) >>> 0;
    }
  } else {
    const R = cacheRowWords(dtype, D);
    const sc = new Uint32Array(new Float32Array([1 / 127]).buffer)[0]!;
    for (let i = 0; i < w.length; i++) w[i] = i % R === R - 1 ? sc : Math.floor(next() * 2 ** 32) >>> 0;
  }
  return w;
}

function setKnob(v: string | undefined) {
  if (v === undefined) delete process.env.LOCRET_ATTN_DECODE;
  else process.env.LOCRET_ATTN_DECODE = v;
}

async function main() {
  const gpu = await defaultGpu();
  const r = new GpuRunner(gpu);
  const o: AttentionOpts = { cacheDtype: dtype, numHeads: KV * G, numKvHeads: KV, headDim: D, rotaryDim: D };
  const H = KV * G;
  const results: Record<string, unknown>[] = [];
  console.log(`${gpu.adapterName}: subgroups ${gpu.subgroups}, cache ${dtype}, KV ${KV}, G ${G}, D ${D}, T 1`);
  for (const len of lens) {
    const capacity = len;
    const cacheBytes = KV * capacity * cacheRowWords(dtype, D) * 4;
    // distinct caches per layer up to ~8 GB (a decode step reads every layer's own cache)
    const nCaches = Math.max(1, Math.min(layersWanted, Math.floor(8e9 / (2 * cacheBytes))));
    const kc: GPUBuffer[] = [];
    const vc: GPUBuffer[] = [];
    // same contents in every layer's buffers (generating GBs of random words in JS is slow); distinct addresses
    // are what keeps the L2 from serving later layers
    const kw = cacheWords(KV * capacity, 10);
    const vw = cacheWords(KV * capacity, 11);
    for (let i = 0; i < nCaches; i++) {
      kc.push(r.upload(kw, `k${i}`));
      vc.push(r.upload(vw, `v${i}`));
    }
    const next = rng(7);
    const q = r.upload(Float32Array.from({ length: H * D }, () => next() * 2 - 1), 'q');
    // --kpos-zero: every key at position 0 (one rope row, always cached): how much of the time is rope-table traffic
    const kpos = r.upload(Uint32Array.from({ length: KV * capacity }, (_, i) => (kposZero ? 0 : i % capacity)), 'kpos');
    const rope = r.upload(ropeTable({ kind: 'default', theta: 500000, rotaryDim: D }, capacity), 'rope');
    const d = { T: 1, base: len - 1, capacity, scale: 1 / Math.sqrt(D) };
    const scratch = r.createBuffer(Math.max(16, attentionScratchBytes(o, d)), 'scratch');
    const outOld = r.createBuffer(H * D * 4, 'out-old');
    const outNew = r.createBuffer(H * D * 4, 'out-new');
    const lseOld = r.createBuffer(H * 4, 'lse-old');
    const lseNew = r.createBuffer(H * 4, 'lse-new');
    const calls = (kind: 'old' | 'new'): Dispatch[] => {
      // plans read LOCRET_ATTN_DECODE when built: the sweep sets it per configuration
      const out: Dispatch[] = [];
      for (let l = 0; l < layersWanted; l++) {
        const b = { q, kCache: kc[l % nCaches]!, vCache: vc[l % nCaches]!, kpos, rope, scratch };
        out.push(...(kind === 'old'
          ? attention(o, d, { ...b, out: outOld, lse: lseOld })
          : attentionDecode({ ...o, subgroups: gpu.subgroups, keysRotated: rotated, intDot: gpu.intDot }, d, { ...b, out: outNew, lse: lseNew })));
      }
      return out;
    };
    const time = async (kind: 'old' | 'new', knob = baseKnob) => {
      setKnob(knob);
      const ds = calls(kind);
      setKnob(baseKnob);
      r.run(ds); // compile + warm up
      await r.device.queue.onSubmittedWorkDone();
      const t0 = performance.now();
      for (let i = 0; i < reps; i++) r.run(ds);
      await r.device.queue.onSubmittedWorkDone();
      return (performance.now() - t0) / reps;
    };
    /** GPU ms of the main kernels and of the combining ones (the second dispatch of a split call), per step */
    const prof = async (knob = baseKnob) => {
      if (!profile || !gpu.timestamps) return undefined;
      setKnob(knob);
      const ds = calls('new');
      setKnob(baseKnob);
      const per = ds.length / layersWanted; // 2 when split, else 1
      const groups = ds.map((x, i) => ({ name: i % per === 0 ? 'main' : 'combine', dispatches: [x] }));
      const p = await profileGroups(r, groups, 3);
      return { span_ms: p.span_ms, main_ms: p.by_group_ms.main ?? 0, combine_ms: p.by_group_ms.combine ?? 0, gaps_ms: p.gaps_ms };
    };
    const fmtProf = (p: Awaited<ReturnType<typeof prof>>) =>
      p ? ` | profile: main ${p.main_ms.toFixed(3)}, combine ${p.combine_ms.toFixed(3)}, gaps ${p.gaps_ms.toFixed(3)}, span ${p.span_ms.toFixed(3)} ms` : '';
    const msOld = await time('old');
    const msNew = await time('new');
    const [a, b, la, lb] = [await r.readF32(outOld, H * D), await r.readF32(outNew, H * D), await r.readF32(lseOld, H), await r.readF32(lseNew, H)];
    let err = 0;
    let scale = 1e-6;
    for (let i = 0; i < a.length; i++) {
      err = Math.max(err, Math.abs(a[i]! - b[i]!));
      scale = Math.max(scale, Math.abs(a[i]!));
    }
    let lseErr = 0;
    for (let i = 0; i < H; i++) lseErr = Math.max(lseErr, Math.abs(la[i]! - lb[i]!) / Math.max(1, Math.abs(la[i]!)));
    const bytes = 2 * cacheBytes * layersWanted;
    const p = attentionDecodeSplit({ ...o, subgroups: gpu.subgroups, keysRotated: rotated, intDot: gpu.intDot }, d);
    const pr = await prof();
    const row = {
      entries: len, layers: layersWanted, dtype, cache_gb_per_step: bytes / 1e9,
      old_ms: msOld, new_ms: msNew, old_gb_per_s: bytes / msOld / 1e6, new_gb_per_s: bytes / msNew / 1e6, speedup: msOld / msNew,
      max_rel_err_out: err / scale, max_rel_err_lse: lseErr, variant: p.variant, splits: p.splits, split_keys: p.splitKeys,
      ok: Number.isFinite(err) && err / scale < 1e-3 && lseErr < 1e-4, profile: pr,
    };
    results.push(row);
    console.log(`${len} entries × ${layersWanted} layers (${row.cache_gb_per_step.toFixed(2)} GB): old ${msOld.toFixed(3)} ms = ${row.old_gb_per_s.toFixed(0)} GB/s, ` +
      `new ${msNew.toFixed(3)} ms = ${row.new_gb_per_s.toFixed(0)} GB/s (${row.speedup.toFixed(2)}x; ${p.variant}, ${p.splits} splits of ${p.splitKeys}); ` +
      `new vs old: out ${row.max_rel_err_out.toExponential(2)}, lse ${lseErr.toExponential(2)} ${row.ok ? 'OK' : 'MISMATCH'}${fmtProf(pr)}`);
    for (const knob of sweep) {
      const ms = await time('new', knob);
      const [c, lc] = [await r.readF32(outNew, H * D), await r.readF32(lseNew, H)];
      let e = 0;
      let le = 0;
      for (let i = 0; i < a.length; i++) e = Math.max(e, Math.abs(a[i]! - c[i]!));
      for (let i = 0; i < H; i++) le = Math.max(le, Math.abs(la[i]! - lc[i]!) / Math.max(1, Math.abs(la[i]!)));
      setKnob(knob);
      const sp = attentionDecodeSplit({ ...o, subgroups: gpu.subgroups, keysRotated: rotated, intDot: gpu.intDot }, d);
      setKnob(baseKnob);
      const ok = Number.isFinite(e) && e / scale < 1e-3 && le < 1e-4;
      const pk = await prof(knob);
      const sw = { entries: len, config: knob, ms, gb_per_s: bytes / ms / 1e6, vs_old: msOld / ms, splits: sp.splits, split_keys: sp.splitKeys, max_rel_err_out: e / scale, max_rel_err_lse: le, ok, profile: pk };
      results.push(sw);
      console.log(`  [${knob}] ${ms.toFixed(3)} ms = ${sw.gb_per_s.toFixed(0)} GB/s (${sw.vs_old.toFixed(2)}x old; ${sp.variant}, ${sp.splits} splits of ${sp.splitKeys}); ` +
        `vs old: out ${sw.max_rel_err_out.toExponential(2)}, lse ${le.toExponential(2)} ${ok ? 'OK' : 'MISMATCH'}${fmtProf(pk)}`);
    }
    for (const buf of [...kc, ...vc, q, kpos, rope, scratch, outOld, outNew, lseOld, lseNew]) r.destroy(buf);
  }
  const outFile = arg('out');
  if (outFile) fs.writeFileSync(outFile, JSON.stringify({ adapter: gpu.adapterName, subgroups: gpu.subgroups, results }, null, 2) + '\n');
  if (results.some((x) => !x.ok)) process.exitCode = 1;
}

await main();
