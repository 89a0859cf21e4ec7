/**
 * A loaded model on a device, and generation under a fixed-size cache: the prompt runs in chunks (the CacheBook
 * in wasm plans them and tracks lengths), each chunk is one queue submission (all layers, scoring and eviction
 * included), then the question tokens, then decode steps of one token each.
 */
import { decoderGraph } from '../ir/models/decoder.js';
import { verify } from '../ir/verify.js';
import type { ModelConfig } from '../ir/config.js';
import type { Op } from '../ir/ops.js';
import { fuse } from '../compiler/fuse.js';
import { lower, type LayerCache, type Plan, type StepDims } from '../compiler/lower.js';
import { evict, evictLayoutFor, evictScratchBytes, evictThreads, type EvictLayout, type EvictScratch } from '../compiler/kernels/evict.js';
import { fillScores } from '../compiler/kernels/scores.js';
import { argmax } from '../compiler/kernels/elementwise.js';
import { feedToken } from '../compiler/kernels/decode-feed.js';
import { sampleToken, type SampleOpts } from '../compiler/kernels/sample.js';
import { fillPositions } from '../compiler/kernels/cache-store.js';
import { CACHE_DTYPES, cacheRowWords, type CacheDtype } from '../compiler/kernels/attn-common.js';
import { checkInt8HeadDim } from '../compiler/kernels/kv-int8.js';
import type { Dispatch, GpuRunner } from './gpu/runner.js';
import { CacheBook, type Step } from './cache.js';
import { POLICY_TRAITS } from './policies.js';
import { ropeTable, useLongFactors } from './rope.js';
import { rotateCacheKeys } from '../compiler/kernels/rotate-keys.js';
import { env, envFlag } from './env.js';
import { decodeVariant } from '../compiler/kernels/attention-decode.js';
import type { GpuWeight } from './weights.js';
import { hasFoldedHeads } from './fold-heads.js';
import type { CacheOptions, PrefillResult, RunPick } from './session-options.js';

export type { CacheOptions, PrefillResult, RunPick } from './session-options.js';

export class Session {
  private plan: Plan | null = null;
  private caches: LayerCache[] = [];
  /** per layer (kv_heads, capacity) u32 original prompt positions, only when tracing */
  private orig: GPUBuffer[] = [];
  /** one layer's worth of eviction scratch, shared by every layer (evicting policies only) */
  private evictScratch: EvictScratch | null = null;
  private capacity = 0;
  private maxT = 0;
  private book: CacheBook | null = null;
  private ropeBuf: { buf: GPUBuffer; positions: number; long: boolean } | null = null;
  private cacheBytes = 0;
  /** largest number of bytes the cache buffers held */
  cachePeakBytes = 0;
  private promptLen = 0;
  private promptMaxPos = 0;
  /** the cache holds keys rotated at their positions (done by the first decode step): decode writes and reads them so */
  private keysRotated = false;

  constructor(
    readonly runner: GpuRunner,
    readonly config: ModelConfig,
    readonly weights: ReadonlyMap<string, GpuWeight>,
    readonly opts: CacheOptions,
  ) {
    const t = POLICY_TRAITS[opts.policy];
    const loaded = weights.has('L0.fc1');
    if ((t.retainingHeads || opts.withHeads) && !loaded && !hasFoldedHeads(weights))
      throw new Error(`policy 'locret' needs retaining heads: compile the model with --heads <file> or pass --heads`);
    if (!loaded && (opts.withHeads || (t.retainingHeads && (opts.after || opts.unfoldedHeads))))
      throw new Error(`unfolded retaining heads need the loaded fc1, which was freed after folding: load with keepUnfoldedHeads`);
    if (opts.budget <= 0 || opts.chunk <= 0) throw new Error(`budget and chunk must be positive`);
    if (opts.stabilizer < 0 || opts.stabilizer > opts.budget) throw new Error(`stabilizer ${opts.stabilizer} must be within 0..budget (${opts.budget})`);
    if (opts.kvDtype !== undefined && !CACHE_DTYPES.includes(opts.kvDtype)) throw new Error(`unknown kv dtype '${String(opts.kvDtype)}' (expected ${CACHE_DTYPES.join(', ')})`);
    if (opts.kvDtype === 'int8') checkInt8HeadDim(config.headDim);
  }

  get cacheDtype(): CacheDtype {
    if (this.opts.kvDtype) return this.opts.kvDtype;
    // quantized weights come with an f16 cache: they are chosen to save memory, and the cache is its other half
    const w = this.weights.get('L0.qkv')!;
    return w.dtype === 'f16' || w.dtype === 'q8' || w.dtype === 'q4' ? 'f16' : 'f32';
  }

  private async ensure(promptLen: number, local: number): Promise<CacheBook> {
    this.book ??= await CacheBook.load();
    const c = this.config;
    const evicts = POLICY_TRAITS[this.opts.policy].evicts;
    const need = this.book.configure({
      layers: c.numLayers, kvHeads: c.numKvHeads, budget: this.opts.budget, chunk: this.opts.chunk,
      stabilizer: this.opts.stabilizer, local, maxNew: this.opts.maxNew, policy: evicts ? 'locret' : 'full',
      maxPrompt: promptLen, positions: this.opts.positions,
    });
    const maxT = Math.max(Math.min(this.opts.chunk, promptLen), Math.min(local, promptLen), 1);
    if (need > this.capacity || maxT > this.maxT || !this.plan) this.allocate(Math.max(need, this.capacity), Math.max(maxT, this.maxT));
    return this.book;
  }

  private allocate(capacity: number, maxT: number): void {
    this.release();
    const c = this.config;
    const kvBytes = c.numKvHeads * capacity * cacheRowWords(this.cacheDtype, c.headDim) * 4;
    this.caches = Array.from({ length: c.numLayers }, (_, l) => ({
      k: this.runner.createBuffer(kvBytes, `K${l}`), // (kv_heads, capacity, head_dim) f32|f16; int8: (kv_heads, capacity, head_dim/4 + 1) u32
      v: this.runner.createBuffer(kvBytes, `V${l}`), // same layout as K
      scores: this.runner.createBuffer(c.numKvHeads * capacity * 4, `score${l}`), // (kv_heads, capacity)
      kpos: this.runner.createBuffer(c.numKvHeads * capacity * 4, `pos${l}`), // (kv_heads, capacity)
    }));
    if (this.opts.trace) this.orig = this.caches.map((_, l) => this.runner.createBuffer(c.numKvHeads * capacity * 4, `orig${l}`));
    if (POLICY_TRAITS[this.opts.policy].evicts) {
      const sb = evictScratchBytes(this.evictLayout, this.cacheDtype, c.headDim, c.numKvHeads, capacity);
      this.evictScratch = {
        rows: sb.rows ? this.runner.createBuffer(sb.rows, 'evict-rows') : null, // (2: K, V, kv_heads, capacity, row words) u32
        meta: this.runner.createBuffer(sb.meta, 'evict-meta'), // (kv_heads, capacity) vec4<u32> | (kv_heads, 4, capacity) u32
      };
    }
    this.cacheBytes = c.numLayers * (2 * kvBytes + 8 * c.numKvHeads * capacity);
    this.cachePeakBytes = Math.max(this.cachePeakBytes, this.cacheBytes);
    this.capacity = capacity;
    this.maxT = maxT;
    const t = POLICY_TRAITS[this.opts.policy];
    // folded heads (runtime/fold-heads.ts) where the weights have them, unless the pre-RoPE rows are wanted (training)
    const foldedHeads = hasFoldedHeads(this.weights) && !this.opts.withHeads && !this.opts.after && !this.opts.unfoldedHeads;
    let g = decoderGraph(c, { retainingHeads: t.retainingHeads || !!this.opts.withHeads, foldedHeads, attentionScores: t.attentionScores, logitsRows: this.opts.allLogits ? 'all' : 1 });
    verify(g);
    if (!this.opts.unfused) {
      g = fuse(g);
      verify(g);
    }
    this.graphOutput = g.outputs[0]!;
    this.plan = lower(g, {
      runner: this.runner, maxT, capacity, cacheDtype: this.cacheDtype,
      preRowsF32: this.opts.after !== undefined, // a hook may read the pre-RoPE rows (the head trainer does)
      weight: (name) => {
        const w = this.weights.get(name === 'lm_head' && c.tieWordEmbeddings ? 'embed' : name);
        if (!w) throw new Error(`model has no tensor ${name}`);
        return w;
      },
      cache: (l) => this.caches[l]!,
    });
    this.argmaxOut = this.runner.createBuffer(4 * maxT, 'argmax'); // (rows) u32
  }
  private graphOutput = 0;
  private argmaxOut: GPUBuffer | null = null;
  /** logits rows the last prefill left in the output (its last row follows the prompt) */
  private prefillRows = 1;

  get kernelsPerStep(): number {
    return this.plan?.kernelCount ?? 0;
  }

  /**
   * Rope table covering positions <= maxPos, in the factor set this step needs. Longrope picks its factors from
   * the sequence length as HF does for a whole prompt (its largest position), so every chunk of one prompt uses the
   * same factors; keys are cached before RoPE, so a switch during decode re-rotates all of them consistently.
   */
  private rope(maxPos: number): GPUBuffer {
    const long = useLongFactors(this.config.rope, Math.max(maxPos, this.promptMaxPos), this.opts.ropeLong);
    const want = Math.max(maxPos + 1, this.capacity);
    const r = this.ropeBuf;
    if (r && r.positions >= want && r.long === long) return r.buf;
    if (r) this.runner.destroy(r.buf);
    const positions = Math.max(want, r?.positions ?? 0);
    const buf = this.runner.upload(ropeTable(this.config.rope, positions, long), 'rope'); // (positions, rotary/2) vec2<f32>
    this.ropeBuf = { buf, positions, long };
    return buf;
  }

  /** Runs the whole prompt; `local` = the last n tokens appended without eviction (the question). */
  async prefill(ids: readonly number[], local: number, onStep?: (done: number, total: number) => void): Promise<PrefillResult> {
    if (ids.length === 0) throw new Error('empty prompt');
    const vocab = this.config.vocabSize;
    for (const id of ids) if (!Number.isInteger(id) || id < 0 || id >= vocab) throw new Error(`token id ${id} is outside the vocabulary (0..${vocab - 1})`);
    const book = await this.ensure(ids.length, Math.min(local, ids.length));
    const steps = book.plan(ids.length);
    this.promptLen = ids.length;
    // largest position the prompt reaches: its length, unless compact positions keep every rank below capacity
    const compactEvicting = this.opts.positions === 'compact' && POLICY_TRAITS[this.opts.policy].evicts;
    this.promptMaxPos = (compactEvicting ? Math.min(ids.length, this.capacity) : ids.length) - 1;
    this.keysRotated = false;
    let last: Step | null = null;
    for (const step of steps) {
      const { slot, firstPos } = book.begin(step);
      const T = step.length;
      const ds = this.stepDispatches(ids.slice(step.start, step.start + T), T, slot, firstPos, step.start, false);
      const e = book.end(step);
      if (e.evict) ds.push(...this.evictDispatches(slot + T, e.keep, e.forcedFrom));
      this.runner.run(ds);
      last = step;
      onStep?.(step.index + 1, steps.length);
    }
    const rows = this.opts.allLogits ? last!.length : 1;
    this.prefillRows = rows;
    const logits = await this.runner.readF32(this.plan!.output(this.graphOutput), rows * vocab);
    return { logits, promptTokens: ids.length, evictedTokens: book.evictedTokens };
  }

  /**
   * Decode may read keys rotated once instead of rotating every key at every step (positions no longer move once the
   * prompt is in): fused graph (int8 rows are quantized again once, see rotateCacheKeys), and a rope table that more
   * positions cannot change (longrope moves to its long factors past its original length; keys before RoPE let
   * the whole cache follow). LOCRET_DECODE_ROTATED=0 keeps rotating per step (A/B timing), as do the switches that
   * time the older decode kernels (LOCRET_ATTN_DECODE=v1, LOCRET_OLD_DECODE_ATTN=1), which read keys before RoPE.
   */
  private canRotateKeys(): boolean {
    const rope = this.config.rope;
    const olderKernel = decodeVariant({}) === 'v1' || envFlag('LOCRET_OLD_DECODE_ATTN');
    return !this.opts.unfused && env('LOCRET_DECODE_ROTATED') !== '0' && !olderKernel &&
      (rope.kind !== 'longrope' || useLongFactors(rope, this.promptMaxPos, this.opts.ropeLong));
  }

  /** Every layer's cached keys in slots [0, kvEnd) rotated in place at their positions. */
  private rotateKeysDispatches(kvEnd: number): Dispatch[] {
    const c = this.config;
    const o = { cacheDtype: this.cacheDtype, numKvHeads: c.numKvHeads, headDim: c.headDim, rotaryDim: c.rope.rotaryDim };
    const rope = this.rope(this.promptMaxPos);
    return this.caches.map((l) => rotateCacheKeys(o, { kvEnd, capacity: this.capacity }, { kCache: l.k, kpos: l.kpos, rope }));
  }

  /** `ids` null: the input ids are already on the GPU (written by the previous step's feedToken) */
  private stepDispatches(ids: readonly number[] | null, T: number, slot0: number, pos0: number, absStart: number, decode: boolean): Dispatch[] {
    if (ids) this.runner.write(this.plan!.ids, new Uint32Array(ids));
    const after = this.opts.after;
    const plan = this.plan!;
    // the first decode step rotates the prompt's keys in place ahead of its own dispatches, in the same submission:
    // sessions that never decode (training, scoring) never pay for it
    const ds = decode && !this.keysRotated && slot0 > 0 && this.canRotateKeys() ? this.rotateKeysDispatches(slot0) : [];
    if (ds.length) this.keysRotated = true;
    ds.push(...plan.dispatches({ T, slot0, pos0, rope: this.rope(pos0 + T - 1), decode, keysRotated: decode && this.keysRotated }, undefined, after && ((n) => after(n, plan))));
    if (this.opts.trace && !decode)
      this.orig.forEach((buf) => ds.push(fillPositions({ T, KV: this.config.numKvHeads, slot0, start: absStart, capacity: this.capacity }, { buf })));
    const fill = POLICY_TRAITS[this.opts.policy].fill;
    if (fill && !decode) {
      for (let l = 0; l < this.config.numLayers; l++)
        ds.push(fillScores({ policy: fill }, { T, KV: this.config.numKvHeads, slot0, pos0: absStart, capacity: this.capacity, seed: this.opts.seed ?? 0, layer: l }, { scores: this.caches[l]!.scores }));
    }
    return ds;
  }

  private evictDispatches(len: number, keep: number, forcedFrom: number): Dispatch[] {
    const c = this.config;
    const threads = evictThreads(this.runner.gpu.limits.maxComputeInvocationsPerWorkgroup);
    const o = { cacheDtype: this.cacheDtype, headDim: c.headDim, layout: this.evictLayout, compact: this.opts.positions === 'compact', threads };
    const scratch = this.evictScratch;
    if (!scratch) throw new Error(`policy '${this.opts.policy}' does not evict`);
    return this.caches.flatMap((l, i) =>
      evict(o, { KV: c.numKvHeads, len, keep, forcedFrom, capacity: this.capacity }, { kCache: l.k, vCache: l.v, scores: l.scores, kpos: l.kpos, orig: this.orig[i], scratch }));
  }

  /**
   * How eviction keeps the cache: 'holes' (the chunk's survivors fill evicted slots, order lives in the positions)
   * unless positions are original ones or the policy pools scores along slots (evict.ts).
   */
  get evictLayout(): EvictLayout {
    return evictLayoutFor(this.opts.positions === 'compact', POLICY_TRAITS[this.opts.policy].slotOrder);
  }

  /**
   * Benchmarks: one eviction of every layer at full size (budget + chunk → budget), all of it (selection and every
   * move), each layer's positions first reset to ranks 0..len-1 (a valid cache, whatever earlier probes left;
   * timed along, one small dispatch per layer); destroys the cache's content.
   */
  evictionProbe(): Dispatch[] {
    const len = Math.min(this.capacity, this.opts.budget + this.opts.chunk);
    const ranks = this.caches.map((l) => fillPositions({ T: len, KV: this.config.numKvHeads, slot0: 0, start: 0, capacity: this.capacity }, { buf: l.kpos }));
    return [...ranks, ...this.evictDispatches(len, this.opts.budget, len - this.opts.stabilizer)];
  }

  /**
   * Benchmarks: the retaining-head kernels of one chunk, both of each layer (fc1 matmul + silu, fc2 scores), with
   * the scores written past the cache's live entries.
   */
  scoringProbe(T: number): Dispatch[] {
    const slot0 = Math.max(0, this.capacity - T);
    return this.plan!.dispatches({ T, slot0, pos0: slot0, rope: this.rope(this.capacity) }, (op) => op === 'retaining_head' || op === 'norm_retaining_head');
  }

  /**
   * Benchmarks: the dispatches of one step of T tokens (a decode token when `decode`) written past the live
   * entries, keeping only the ops `only` accepts. Reads and overwrites cache slots beyond the current length.
   */
  stepProbe(T: number, decode: boolean, only?: (op: Op) => boolean): Dispatch[] {
    return this.plan!.dispatches(this.probeDims(T, decode), only);
  }

  /** stepProbe's dispatches grouped by the op that emits them, in step order (profiles, bench-breakdown.ts). */
  stepProbeByOp(T: number, decode: boolean): { readonly op: Op; readonly dispatches: Dispatch[] }[] {
    return this.plan!.dispatchesByNode(this.probeDims(T, decode));
  }

  private probeDims(T: number, decode: boolean): StepDims {
    const slot0 = Math.max(0, Math.min(this.book?.length ?? 0, this.capacity - T));
    return { T, slot0, pos0: slot0, rope: this.rope(this.capacity), decode, keysRotated: decode && this.keysRotated };
  }

  /** Ops of the step graph (each lowers to one kernel family). */
  get stepOps(): Op[] {
    return [...new Set(this.plan!.ops)];
  }

  /** Appends one generated token and returns the logits that follow it. */
  async decode(token: number): Promise<Float32Array> {
    this.submitDecode(token);
    return this.runner.readF32(this.plan!.output(this.graphOutput), this.config.vocabSize);
  }

  /** Appends one token and returns the greedy next token (reads back 4 bytes, not the logits). */
  async decodeGreedy(token: number): Promise<number> {
    this.submitDecode(token, true);
    return (await this.runner.readU32(this.argmaxOut!, 1))[0]!;
  }

  /**
   * Greedy decode of n tokens after `token` without a readback per token: each step's argmax is fed to the next
   * step on the GPU (feedToken), so the n steps are queued back to back and the tokens come back in one read.
   * Returns exactly what n calls of decodeGreedy would (the caller stops at EOS itself; steps after it are wasted
   * work but leave earlier tokens unchanged).
   */
  decodeGreedyRun(token: number, n: number): Promise<number[]> {
    return this.decodeRun(token, n);
  }

  /**
   * Decode of n tokens after `token`, queued like decodeGreedyRun; with `pick`, each step's token is drawn on the GPU
   * (compiler/kernels/sample.ts) with the run's uniform draw i instead of taken greedily (one draw per step, so a
   * seeded generator gives the same tokens however a generation is cut into runs).
   */
  async decodeRun(token: number, n: number, pick?: RunPick): Promise<number[]> {
    if (!Number.isInteger(n) || n < 1) throw new Error(`decodeRun: n must be a positive integer, got ${n}`);
    if (pick && pick.uniforms.length < n) throw new Error(`decodeRun: ${n} steps need ${n} uniform draws, got ${pick.uniforms.length}`);
    const plan = this.plan!;
    const tokens = this.runner.createBuffer(4 * n, 'decode-run'); // (n) u32
    const uniforms = pick ? this.runner.upload(pick.uniforms.subarray(0, n), 'draws') : null; // (n) f32
    try {
      for (let i = 0; i < n; i++) {
        const { slot, pos } = this.book!.appendDecode();
        const ds = this.stepDispatches(i === 0 ? [token] : null, 1, slot, pos, this.promptLen, true);
        ds.push(this.pickToken(0, pick && uniforms ? { sampling: pick.sampling, uniforms, draw: i } : undefined));
        ds.push(feedToken({ index: i }, { argmax: this.argmaxOut!, ids: plan.ids, tokens }));
        this.runner.run(ds);
      }
      return Array.from(await this.runner.readU32(tokens, n));
    } finally {
      this.runner.destroy(tokens);
      if (uniforms) this.runner.destroy(uniforms);
    }
  }

  /** Draws the token that follows the prompt on the GPU, from the last prefill's last logits row (see decodeRun). */
  async sampleAfterPrefill(sampling: SampleOpts, u: number): Promise<number> {
    if (!this.plan) throw new Error('sampleAfterPrefill: prefill first');
    const uniforms = this.runner.upload(Float32Array.of(u), 'draw'); // (1) f32
    try {
      this.runner.run([this.pickToken(this.prefillRows - 1, { sampling, uniforms, draw: 0 })]);
      return (await this.runner.readU32(this.argmaxOut!, 1))[0]!;
    } finally {
      this.runner.destroy(uniforms);
    }
  }

  /** The dispatch writing the token after logits row `row` to argmaxOut[0]: drawn, or greedy (decode steps: row 0). */
  private pickToken(row: number, draw?: { sampling: SampleOpts; uniforms: GPUBuffer; draw: number }): Dispatch {
    const x = this.plan!.output(this.graphOutput);
    const n = this.config.vocabSize;
    if (draw) return sampleToken(draw.sampling, { n, row, draw: draw.draw }, { x, uniforms: draw.uniforms, out: this.argmaxOut! });
    if (row !== 0) throw new Error('pickToken: greedy picks read logits row 0');
    return argmax({ rows: 1, n }, { x, out: this.argmaxOut! });
  }

  private submitDecode(token: number, withArgmax = false): void {
    const { slot, pos } = this.book!.appendDecode();
    const ds = this.stepDispatches([token], 1, slot, pos, this.promptLen, true);
    if (withArgmax) ds.push(this.pickToken(0));
    this.runner.run(ds);
  }

  /** Per layer and KV head, the original positions of the prompt tokens still cached, ascending (needs `trace`). */
  async keptOriginalPositions(promptTokens: number): Promise<number[][][]> {
    if (!this.opts.trace) throw new Error('session was not created with trace: true');
    const c = this.config;
    const len = Math.min(this.book!.length - this.book!.decodedTokens, promptTokens);
    const layers = await this.runner.readMany(this.orig.map((buf) => ({ buf, bytes: c.numKvHeads * this.capacity * 4 })));
    // sorted: with layout 'holes' slot order is not original order (original positions are)
    return layers.map((b) => {
      const all = new Uint32Array(b);
      return Array.from({ length: c.numKvHeads }, (_, h) => Array.from(all.subarray(h * this.capacity, h * this.capacity + len)).sort((x, y) => x - y));
    });
  }

  /** Per layer and KV head, the retention scores of the cached entries in slot order (tests and diagnostics). */
  async cachedScores(): Promise<Float32Array[][]> {
    const { numKvHeads: KV } = this.config;
    const len = this.book?.length ?? 0;
    const layers = await this.runner.readMany(this.caches.map((l) => ({ buf: l.scores, bytes: KV * this.capacity * 4 })));
    return layers.map((b) => {
      const all = new Float32Array(b);
      return Array.from({ length: KV }, (_, h) => all.slice(h * this.capacity, h * this.capacity + len));
    });
  }

  get evictedTokens(): number {
    return this.book?.evictedTokens ?? 0;
  }
  get cacheLength(): number {
    return this.book?.length ?? 0;
  }
  /** decode reads keys rotated once, by its first step (see canRotateKeys), rather than rotating each at every step */
  get decodeOnRotatedKeys(): boolean {
    return this.keysRotated;
  }

  release(): void {
    this.plan?.release();
    this.plan = null;
    for (const l of this.caches) for (const b of [l.k, l.v, l.scores, l.kpos]) this.runner.destroy(b);
    for (const b of this.orig) this.runner.destroy(b);
    if (this.evictScratch) for (const b of [this.evictScratch.rows, this.evictScratch.meta]) if (b) this.runner.destroy(b);
    this.evictScratch = null;
    this.caches = [];
    this.orig = [];
    if (this.argmaxOut) this.runner.destroy(this.argmaxOut);
    this.argmaxOut = null;
    if (this.ropeBuf) this.runner.destroy(this.ropeBuf.buf);
    this.ropeBuf = null;
  }
}
