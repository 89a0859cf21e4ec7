/**
 * The embeddable API: load a model (HF directory or bundle) onto a WebGPU device and generate.
 *
 *   const engine = await Engine.load('models/tiny-llama');
 *   const r = await engine.generate({ prompt: 'Hello', maxNewTokens: 20, onText: (t) => process.stdout.write(t) });
 */
import { createGpuContext, defaultGpu, type DeviceOptions } from './gpu/device.js';
import { GpuRunner } from './gpu/runner.js';
import { openModel, type ModelSource } from './model-source.js';
import type { Policy } from './policies.js';
import { argmaxOf, rng, validateSampling, type SamplingOptions } from './sampling.js';
import { Session, type CacheOptions } from './session.js';
import { uploadWeights, type GpuWeight, type WeightFormat } from './weights.js';

export interface LoadOptions {
  readonly heads?: string;
  /** weight storage; default f16, or as stored for a bundle compiled to q8 / q4 */
  readonly dtype?: WeightFormat;
  /** notes on the upload (matrices q8 / q4 could not quantize); default console.warn */
  readonly onNote?: (note: string) => void;
  readonly device?: DeviceOptions;
  readonly verify?: boolean;
  readonly onProgress?: (done: number, total: number, name: string) => void;
  /** keep the retaining heads' fc1 as loaded beside the folded one (sessions with `unfoldedHeads`); default freed */
  readonly keepUnfoldedHeads?: boolean;
}

export interface GenerateOptions extends SamplingOptions, Partial<CacheOptions> {
  readonly prompt?: string;
  readonly inputIds?: readonly number[];
  readonly maxNewTokens?: number;
  /** tokens at the end of the prompt appended without eviction, or 'question' = the text after the last newline */
  readonly local?: number | 'question';
  readonly onText?: (text: string) => void;
  readonly onToken?: (id: number) => void;
  readonly stopAtEos?: boolean;
  readonly onPrefillStep?: (done: number, total: number) => void;
  /** keep the session (and its cache) alive in the result, e.g. to trace what was kept; the caller releases it */
  readonly keepSession?: boolean;
}

export interface GenerateResult {
  readonly text: string;
  readonly tokens: number[];
  readonly prompt_tokens: number;
  readonly prefill_ms: number;
  readonly decode_ms_per_token: number;
  readonly peak_gpu_bytes: number;
  readonly policy: Policy;
  readonly budget: number;
  readonly cache_peak_bytes: number;
  readonly evicted_tokens: number;
  readonly session?: Session;
}

export const DEFAULTS = { budget: 2048, chunk: 512, local: 100, maxNewTokens: 64, policy: 'full' as Policy, positions: 'compact' as const };

export class Engine {
  private constructor(
    readonly runner: GpuRunner,
    readonly model: ModelSource,
    readonly weights: Map<string, GpuWeight>,
  ) {}

  static async load(path: string, o: LoadOptions = {}): Promise<Engine> {
    const model = openModel(path, { heads: o.heads, verify: o.verify });
    const gpu = o.device ? await createGpuContext(o.device) : await defaultGpu();
    const runner = new GpuRunner(gpu);
    const weights = uploadWeights(runner, model, o.dtype, o.onProgress, o.onNote, { keepUnfoldedHeads: o.keepUnfoldedHeads });
    return new Engine(runner, model, weights);
  }

  get config() {
    return this.model.config;
  }

  session(o: Partial<CacheOptions> = {}): Session {
    const budget = o.budget ?? DEFAULTS.budget;
    return new Session(this.runner, this.model.config, this.weights, {
      ...o,
      policy: o.policy ?? (this.model.hasHeads ? 'locret' : DEFAULTS.policy),
      budget,
      chunk: o.chunk ?? DEFAULTS.chunk,
      stabilizer: o.stabilizer ?? Math.floor(budget / 4),
      positions: o.positions ?? DEFAULTS.positions,
      maxNew: o.maxNew ?? DEFAULTS.maxNewTokens,
      ropeLong: o.ropeLong,
      allLogits: o.allLogits,
      unfused: o.unfused,
      seed: o.seed,
      trace: o.trace,
    });
  }

  encode(prompt: string): number[] {
    if (!this.model.tokenizer) throw new Error(`${this.model.path} has no tokenizer.json: pass token ids (--input-ids)`);
    return this.model.tokenizer.encode(prompt);
  }

  /** Number of prompt tokens that form the question: the text after the prompt's last newline. */
  questionTokens(prompt: string, ids: readonly number[]): number {
    const cut = prompt.lastIndexOf('\n');
    if (cut < 0) return 0;
    const head = this.model.tokenizer!.encode(prompt.slice(0, cut));
    // the question is whatever the full encoding has beyond the head's tokens (BPE merges never cross a newline here)
    return Math.max(0, ids.length - head.length);
  }

  async generate(o: GenerateOptions): Promise<GenerateResult> {
    validateSampling(o);
    const ids = o.inputIds ? [...o.inputIds] : this.encode(o.prompt ?? '');
    const maxNew = o.maxNewTokens ?? DEFAULTS.maxNewTokens;
    const local = o.local === 'question' ? (o.prompt !== undefined ? this.questionTokens(o.prompt, ids) : 0) : (o.local ?? DEFAULTS.local);
    const s = this.session({ ...o, maxNew, trace: o.keepSession });
    this.runner.resetPeak();
    const t0 = performance.now();
    const pre = await s.prefill(ids, local, o.onPrefillStep);
    const t1 = performance.now();
    const eos = new Set(this.model.config.eosTokenIds);
    const rand = rng(o.seed ?? 0);
    const greedy = !o.temperature;
    const dec = this.model.tokenizer?.streamDecoder({ skipSpecialTokens: true });
    const tokens: number[] = [];
    // sampled tokens are drawn on the GPU (compiler/kernels/sample.ts), one uniform draw of the seeded generator each
    const sampling = greedy ? undefined : { temperature: o.temperature!, topK: o.topK, topP: o.topP };
    let next = sampling ? await s.sampleAfterPrefill(sampling, rand()) : argmaxOf(pre.logits, pre.logits.length - this.model.config.vocabSize);
    // tokens are decoded in runs queued back to back (no readback per token); runs grow from 1 so the first tokens
    // stream out at once. A kept session decodes one at a time so its cache holds no steps past the stop.
    let queued: number[] = [];
    let run = 1;
    for (let i = 0; i < maxNew; i++) {
      tokens.push(next);
      o.onToken?.(next);
      if (dec && o.onText) o.onText(dec.push(next));
      if ((o.stopAtEos ?? true) && eos.has(next)) break;
      if (i === maxNew - 1) break;
      if (queued.length === 0) {
        const n = o.keepSession ? 1 : Math.min(run, maxNew - 1 - i);
        queued = await s.decodeRun(next, n, sampling && { sampling, uniforms: Float32Array.from({ length: n }, rand) });
        run = Math.min(2 * run, 32);
      }
      next = queued.shift()!;
    }
    if (dec && o.onText) o.onText(dec.flush?.() ?? '');
    const t2 = performance.now();
    const text = this.model.tokenizer ? this.model.tokenizer.decode(tokens.filter((t) => !eos.has(t)), { skipSpecialTokens: true }) : '';
    const result: GenerateResult = {
      text,
      tokens,
      prompt_tokens: ids.length,
      prefill_ms: t1 - t0,
      decode_ms_per_token: tokens.length > 1 ? (t2 - t1) / (tokens.length - 1) : 0,
      peak_gpu_bytes: this.runner.peakBytes,
      policy: s.opts.policy,
      budget: s.opts.budget,
      cache_peak_bytes: s.cachePeakBytes,
      evicted_tokens: s.evictedTokens,
    };
    if (o.keepSession) return { ...result, session: s };
    s.release();
    return result;
  }
}
