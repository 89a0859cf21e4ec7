// CacheBook: typed wrapper over runtime/wasm/cache.wasm (compiled from runtime/assembly/), which owns the KV cache
// bookkeeping and the chunk plan of the Locret method. The GPU buffers themselves live in the session; this class
// says where each step's tokens go, which positions they take, and when and how to evict.
//
// GPU cache memory per layer l (allocated once, `capacity` slots per KV head):
//
//   K[l], V[l]  f32/f16  (kv_heads, capacity, head_dim)          keys stored before RoPE (rotated in place by
//                                                                the first decode step; int8 rows re-quantized)
//               int8     (kv_heads, capacity, head_dim/4 + 1) u32  codes + per-row scale (below)
//   score[l]    f32      (kv_heads, capacity)                    retention score, written once at insertion
//   pos[l]      u32      (kv_heads, capacity)                    RoPE position of each slot
//
//   int8 row (one token, one KV head; compiler/kernels/kv-int8.ts), scale = max|x| / 127, x ≈ code · scale:
//     word  0             1                   D/4-1               D/4
//         [ c0 c1 c2 c3 | c4 c5 c6 c7 | ... | cD-4 .. cD-1      | scale f32 ]   D + 4 bytes (f16: 2D)
//   quantized when stored, dequantized (then rotated, until decode) on load by attention; eviction moves whole rows,
//   so a row's scale always travels with its codes.
//
//            slot 0 ................ len-1 | len ...... len+T-1 | free ............ capacity-1
//   head 0 [ kept entries                  | step's new tokens  |                            ]
//   head 1 [ (each head keeps its own set) | step's new tokens  |                            ]
//   (new tokens always in order; kept entries in original order, or, after an eviction that fills holes
//    (compiler/kernels/evict-holes.ts), in any slot order with pos = their rank in original order)
//   ...                                     ^ begin(step).slot
//
//   capacity = budget + chunk + local + maxNew     (policy 'locret')
//            = maxPrompt + maxNew                   (policy 'full', never evicts)
//
// Eviction after end(step) with evict=true: per layer and KV head keep the `keep` highest scores among slots
// [0, len), entries of rank >= forcedFrom forced kept (stabilizer), kept in slots [0, keep); new length = keep.

export type StepKind = 'chunk' | 'last-chunk' | 'local';

export interface Step {
  /** Index in the plan; steps must be begun and ended in this order. */
  index: number;
  /** 'chunk': evict after (stabilizer forced); 'last-chunk': evict after (no stabilizer); 'local': never evict. */
  kind: StepKind;
  /** Index of the step's first token in the prompt. */
  start: number;
  /** Number of tokens appended by the step. */
  length: number;
}

export interface CacheConfig {
  layers: number;
  kvHeads: number;
  /** Entries kept per layer and KV head after eviction (b). Ignored by policy 'full'. */
  budget?: number;
  /** Prefill chunk size (B). */
  chunk: number;
  /** Newest entries forced kept by a non-final chunk's eviction (n_s); must not exceed budget. Default 0. */
  stabilizer?: number;
  /** Last prompt tokens appended without eviction (n_loc). Default 0. */
  local?: number;
  /** Largest number of generated tokens the cache must hold. Default 0. */
  maxNew?: number;
  /** 'locret' (default) evicts; 'full' keeps everything. */
  policy?: 'locret' | 'full';
  /** Longest prompt for policy 'full' (sets its capacity). */
  maxPrompt?: number;
  /** 'compact' (default): positions are cache ranks; 'original': absolute token positions. */
  positions?: 'compact' | 'original';
}

export interface StepBegin {
  /** First slot of the step's tokens (= cache length before the step); token t goes to slot + t. */
  slot: number;
  /** RoPE position of the step's first query; token t takes firstPos + t. */
  firstPos: number;
}

export interface StepEnd {
  /** Whether to run eviction now. */
  evict: boolean;
  /** Entries kept per layer and KV head (= cache length after this step). */
  keep: number;
  /** First slot forced kept by the stabilizer; equal to the pre-eviction length when nothing is forced. */
  forcedFrom: number;
}

export interface DecodeSlot {
  slot: number;
  pos: number;
}

/** Where the compiled wasm comes from: a URL or path, its bytes, or a compiled module. */
export type WasmSource = URL | string | ArrayBuffer | ArrayBufferView | WebAssembly.Module;

interface CacheExports {
  memory: WebAssembly.Memory;
  configure(
    layers: number, kvHeads: number, budget: number, chunk: number, stabilizer: number, local: number,
    maxNew: number, policyEvicts: number, compact: number,
  ): number;
  planPrompt(n: number): number;
  stepCount(): number;
  stepKind(i: number): number;
  stepStart(i: number): number;
  stepLength(i: number): number;
  beginStep(i: number): number;
  firstPosition(): number;
  endStep(i: number): number;
  endKeep(): number;
  endForcedFrom(): number;
  prefillDone(): number;
  appendDecode(): number;
  length(layer: number): number;
  evictedTokens(): number;
  processedTokens(): number;
  decodedTokens(): number;
  capacity(): number;
}

const KINDS: readonly StepKind[] = ['chunk', 'last-chunk', 'local'];

/** Error raised by the wasm cache book (invalid configuration, misuse, capacity overflow). */
export class CacheBookError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CacheBookError';
  }
}

/** Reads an AssemblyScript string (UTF-16LE, byte length stored in the 4 bytes before it). */
function readAsString(memory: WebAssembly.Memory, ptr: number): string {
  if (!ptr) return '';
  const buf = memory.buffer;
  const bytes = new Uint32Array(buf, ptr - 4, 1)[0]!;
  const units = new Uint16Array(buf, ptr, bytes >>> 1);
  let s = '';
  for (let i = 0; i < units.length; i += 4096) s += String.fromCharCode(...units.subarray(i, i + 4096));
  return s;
}

let defaultModule: Promise<WebAssembly.Module> | undefined;

function isNodeFileUrl(url: URL): boolean {
  return url.protocol === 'file:' && typeof process !== 'undefined' && !!process.versions?.node;
}

async function fetchBytes(url: URL): Promise<ArrayBuffer | Uint8Array> {
  if (isNodeFileUrl(url)) {
    const fs = await import('node:fs/promises');
    return fs.readFile(url);
  }
  const res = await fetch(url);
  if (!res.ok) throw new CacheBookError(`cannot fetch ${url.href}: ${res.status} ${res.statusText}`);
  return res.arrayBuffer();
}

async function compileFrom(source: WasmSource): Promise<WebAssembly.Module> {
  if (source instanceof WebAssembly.Module) return source;
  if (source instanceof URL || typeof source === 'string') {
    const url = source instanceof URL ? source : new URL(source, typeof location !== 'undefined' ? location.href : import.meta.url);
    const bytes = await fetchBytes(url);
    return WebAssembly.compile(bytes as BufferSource);
  }
  return WebAssembly.compile(source as BufferSource);
}

/** Default location: package root runtime/wasm/cache.wasm, seen from dist/runtime/cache.js or runtime/cache.ts. */
async function loadDefaultModule(): Promise<WebAssembly.Module> {
  const candidates = [
    new URL('../../runtime/wasm/cache.wasm', import.meta.url),
    new URL('../runtime/wasm/cache.wasm', import.meta.url),
  ];
  const errors: string[] = [];
  for (const url of candidates) {
    try {
      return await compileFrom(url);
    } catch (e) {
      errors.push(`${url.href}: ${(e as Error).message}`);
    }
  }
  throw new CacheBookError(`cannot load cache.wasm (run \`npm run build:wasm\`): ${errors.join('; ')}`);
}

export class CacheBook {
  private readonly x: CacheExports;
  private steps: Step[] = [];

  private constructor(instance: WebAssembly.Instance) {
    this.x = instance.exports as unknown as CacheExports;
  }

  /**
   * Instantiates a cache book. Without a source, loads runtime/wasm/cache.wasm from the package (Node or a
   * bundler serving that file next to the module); in browsers pass its URL or bytes.
   */
  static async load(source?: WasmSource): Promise<CacheBook> {
    let module: Promise<WebAssembly.Module>;
    if (source === undefined) {
      defaultModule ??= loadDefaultModule();
      defaultModule.catch(() => (defaultModule = undefined));
      module = defaultModule;
    } else {
      module = compileFrom(source);
    }
    return CacheBook.instantiate(await module);
  }

  /** Synchronous instantiation from an already compiled module. */
  static instantiate(module: WebAssembly.Module): CacheBook {
    let memory: WebAssembly.Memory | undefined;
    const imports = {
      env: {
        abort(msg: number, file: number, line: number, col: number): never {
          const text = memory ? readAsString(memory, msg) : 'cache.wasm aborted';
          const where = memory && file ? ` (${readAsString(memory, file)}:${line}:${col})` : '';
          throw new CacheBookError(text + where);
        },
      },
    };
    const instance = new WebAssembly.Instance(module, imports);
    const book = new CacheBook(instance);
    memory = book.x.memory;
    return book;
  }

  /** Sets geometry and method parameters, resets all state; returns the capacity (slots per layer and KV head). */
  configure(c: CacheConfig): number {
    const policy = c.policy ?? 'locret';
    const positions = c.positions ?? 'compact';
    if (policy !== 'locret' && policy !== 'full') throw new CacheBookError(`unknown policy ${String(policy)}`);
    if (positions !== 'compact' && positions !== 'original') {
      throw new CacheBookError(`unknown positions mode ${String(positions)}`);
    }
    const evicts = policy === 'locret';
    if (evicts && c.budget === undefined) throw new CacheBookError("policy 'locret' needs a budget");
    if (!evicts && c.maxPrompt === undefined) throw new CacheBookError("policy 'full' needs maxPrompt");
    const budget = evicts ? c.budget! : c.maxPrompt!;
    const stabilizer = c.stabilizer ?? 0;
    const local = c.local ?? 0;
    const maxNew = c.maxNew ?? 0;
    for (const [name, v] of Object.entries({ layers: c.layers, kvHeads: c.kvHeads, budget, chunk: c.chunk, stabilizer, local, maxNew })) {
      if (!Number.isInteger(v) || v < 0 || v > 0x7fffffff) throw new CacheBookError(`${name} must be a non-negative 32-bit integer, got ${v}`);
    }
    const cap = this.x.configure(c.layers, c.kvHeads, budget, c.chunk, stabilizer, local, maxNew, evicts ? 1 : 0, positions === 'compact' ? 1 : 0);
    this.steps = [];
    return cap;
  }

  /** Plans a prompt's prefill and empties the cache; throws if the plan would exceed the capacity. */
  plan(promptLen: number): Step[] {
    if (!Number.isInteger(promptLen) || promptLen > 0x7fffffff) throw new CacheBookError(`bad prompt length ${promptLen}`);
    const n = this.x.planPrompt(promptLen);
    const steps: Step[] = new Array(n);
    for (let i = 0; i < n; i++) {
      steps[i] = { index: i, kind: KINDS[this.x.stepKind(i)]!, start: this.x.stepStart(i), length: this.x.stepLength(i) };
    }
    this.steps = steps;
    return steps;
  }

  /** Appends the step's tokens to the book; returns where they go and their first RoPE position. */
  begin(step: Step | number): StepBegin {
    const slot = this.x.beginStep(typeof step === 'number' ? step : step.index);
    return { slot, firstPos: this.x.firstPosition() };
  }

  /** Closes the step; tells whether and how to evict, and records the post-eviction length. */
  end(step: Step | number): StepEnd {
    const evict = this.x.endStep(typeof step === 'number' ? step : step.index) !== 0;
    return { evict, keep: this.x.endKeep(), forcedFrom: this.x.endForcedFrom() };
  }

  /** Appends one generated token; throws when the cache is full. */
  appendDecode(): DecodeSlot {
    const slot = this.x.appendDecode();
    return { slot, pos: this.x.firstPosition() };
  }

  /** Cache length of a layer (all layers are equal under this method). */
  layerLength(layer: number): number {
    return this.x.length(layer);
  }

  /** Cache length (layer 0; every layer and KV head holds the same count). */
  get length(): number {
    return this.x.length(0);
  }

  /** Tokens evicted so far per (layer, KV head) stream. */
  get evictedTokens(): number {
    return this.x.evictedTokens();
  }

  /** Tokens appended so far (begun prompt steps + decoded tokens). */
  get processedTokens(): number {
    return this.x.processedTokens();
  }

  get decodedTokens(): number {
    return this.x.decodedTokens();
  }

  /** True once every planned step has ended (decode may start). */
  get prefillDone(): boolean {
    return this.x.prefillDone() !== 0;
  }

  get capacity(): number {
    return this.x.capacity();
  }

  /** The current plan (as returned by plan()). */
  get plannedSteps(): readonly Step[] {
    return this.steps;
  }
}
