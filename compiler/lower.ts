/**
 * Lowering: a (fused or unfused) graph becomes a dispatch plan. Every node that computes something gets exactly one
 * kernel family; its activation buffer is sized for the largest step (`maxT` rows) and reused by liveness
 * (placement.ts), so a 32-layer model needs a handful of activation buffers, not hundreds. A plan is built once and then emits the
 * dispatches of any step (prefill chunk, question, decode token) from that step's dims.
 *
 * A weight over the device's storage-binding limit arrives split into parts of whole rows (runtime/weights.ts):
 * matmuls then emit one dispatch per run of output columns inside one part, the embedding one gather per part.
 * Ops that read a weight whole (norms, biases, qkv_rope, a retaining head's fc2) fail with a clear message if it is
 * split.
 */
import { assertNever, type Graph, type Node, type NodeId, type NodeOf, type Op } from '../ir/ops.js';
import type { Dispatch, GpuRunner } from '../runtime/gpu/runner.js';
import { weightParts, type GpuWeight } from '../runtime/weights.js';
import { attention, attentionScratchBytes } from './kernels/attention.js';
import { attentionSgmat, sgmatAttentionUsable } from './kernels/attention-sgmat.js';
import { rotatedKeysBytes } from './kernels/rotate-keys.js';
import { attentionDecode, attentionDecodeSignature, DECODE_MAX_T } from './kernels/attention-decode.js';
import type { CacheDtype } from './kernels/attn-common.js';
import { copyLastRows, kvStore } from './kernels/cache-store.js';
import { kvQuantize } from './kernels/kv-int8.js';
import { add, embedding, rmsnorm, rope, siluMul } from './kernels/elementwise.js';
import { GEMV_MAX_T } from './kernels/mm-core.js';
import { checkQkvSlots, qkvRope } from './kernels/qkv-rope.js';
import { retainingScores } from './kernels/retaining.js';
import { attentionStats } from './kernels/scores.js';
import { env, envFlag } from '../runtime/env.js';
import { memoDecode, withParams, type DecodeMemo } from './step-memo.js';
import { placeActivations } from './placement.js';
import { attnOpts, cols, gemvSg, mm, optWhole, tensorCores, w, wgBytes, whole, type Ctx, type Emit, type KvStage, type Lowering } from './lower-ctx.js';
import { halfPre, halfSwiglu, headRowsFromQkv, prenorm } from './half-acts.js';

export interface LayerCache {
  readonly k: GPUBuffer; // (kv_heads, capacity, head_dim) f32|f16, or (kv_heads, capacity, head_dim/4 + 1) u32 int8 rows
  readonly v: GPUBuffer; // same layout as k
  readonly scores: GPUBuffer; // (kv_heads, capacity) f32
  readonly kpos: GPUBuffer; // (kv_heads, capacity) u32
}

export interface LowerEnv {
  readonly runner: GpuRunner;
  /** rows of the largest step */
  readonly maxT: number;
  readonly capacity: number;
  readonly cacheDtype: CacheDtype;
  /** the pre-RoPE rows stay f32 (a caller reads them through Plan.output: the head trainer) */
  readonly preRowsF32?: boolean;
  weight(name: string): GpuWeight;
  cache(layer: number): LayerCache;
}

/** What changes from one step to the next. */
export interface StepDims {
  readonly T: number;
  /** cache slot of the step's first token (= cache length before the step) */
  readonly slot0: number;
  /** RoPE position of the step's first token */
  readonly pos0: number;
  /** rope table for this step: (positions, rotary/2) vec2<f32> */
  readonly rope: GPUBuffer;
  /** a decode token (never evicted) rather than a prompt step */
  readonly decode?: boolean;
  /**
   * the cached keys carry RoPE (decode after rotateCacheKeys; fused graphs, f32 / f16 caches): the step writes its
   * keys rotated and decode attention reads them as they are
   */
  readonly keysRotated?: boolean;
}

export interface Plan {
  /**
   * The step's dispatches, in order; record them into one submission. `only` keeps just some ops (benchmarks);
   * `after` appends the caller's dispatches right after a node's kernel, while its inputs are still live (e.g. a
   * trainer copying each layer's pre-RoPE qkv rows out of a buffer that the next layer reuses).
   */
  dispatches(s: StepDims, only?: (op: Op) => boolean, after?: (n: Node) => Dispatch[]): Dispatch[];
  /** The same dispatches grouped by the node (and op) that emits them, in step order (profiles). */
  dispatchesByNode(s: StepDims): { readonly op: Op; readonly dispatches: Dispatch[] }[];
  readonly ids: GPUBuffer; // (maxT) u32, written by the caller before each step
  output(id: NodeId): GPUBuffer;
  /** kernels per step (one per computing node, two per retaining head; split weights and attention count as one) */
  readonly kernelCount: number;
  /** the op of each computing node, in step order (benchmarks time them one op at a time) */
  readonly ops: readonly Op[];
  readonly activationBytes: number;
  release(): void;
}

const headWidth = (c: Ctx, n: NodeOf<'retaining_head' | 'norm_retaining_head'>) => c.g.nodes[n.fc1]!.shape[0] as number;
/** a retaining head's second kernel: its fc2 dot products of the silu activations into the layer's cache scores */
const headScores = (c: Ctx, n: NodeOf<'retaining_head' | 'norm_retaining_head'>, s: StepDims) =>
  retainingScores({ wdtype: w(c, n.fc2).dtype }, { T: s.T, KV: c.g.dims.numKvHeads, hidden: headWidth(c, n), slot0: s.slot0, capacity: c.env.capacity },
    { hid: c.buf(n.id), fc2: whole(c, n.fc2, 'retaining_head'), scores: c.env.cache(n.layer).scores });
const lowerings: { readonly [O in Op]: Lowering<O> } = {
  input_ids: () => null,
  weight: () => null,
  pre_output: () => null,
  embedding: (n, c) => (s) => {
    const t = w(c, n.table);
    return weightParts(t).map((p) => embedding({ wdtype: t.dtype }, { T: s.T, hidden: n.shape[1] as number, row0: p.row0, rows: p.rows }, { ids: c.buf(n.ids), table: p.buf, tableScales: p.scales, y: c.buf(n.id) }));
  },
  rmsnorm: (n, c) => (s) => [rmsnorm({ T: c.rows(n.id, s), N: n.shape[1] as number, eps: n.eps }, { x: c.buf(n.x), w: whole(c, n.w, 'rmsnorm'), y: c.buf(n.id) })],
  linear: (n, c) => (s) =>
    mm(c, { norm: false, bias: n.bias !== null, epilogue: 'store' }, n.w, { T: c.rows(n.id, s), N: n.shape[1] as number, K: cols(c, n.x) },
      { x: c.buf(n.x), bias: optWhole(c, n.bias, 'linear bias'), y: c.buf(n.id) }),
  norm_linear: (n, c) => (s) => {
    const T = c.rows(n.x, s);
    const R = n.xRowsFromEnd === 'all' ? T : Math.min(n.xRowsFromEnd, T);
    return mm(c, { norm: true, bias: n.bias !== null, epilogue: 'store' }, n.w, { T: R, N: n.shape[1] as number, K: cols(c, n.x), eps: n.eps, xRow0: T - R },
      { x: c.buf(n.x), normW: whole(c, n.normW, 'norm_linear norm'), bias: optWhole(c, n.bias, 'norm_linear bias'), y: c.buf(n.id) });
  },
  linear_residual: (n, c) => (s) =>
    mm(c, { norm: false, bias: false, epilogue: 'residual', halfX: halfSwiglu(c, n.x, s) }, n.w, { T: c.rows(n.id, s), N: n.shape[1] as number, K: cols(c, n.x) },
      { x: c.buf(n.x), y: c.buf(n.id) }),
  norm_linear_swiglu: (n, c) => (s) => {
    const d = { T: c.rows(n.id, s), N: n.shape[1] as number, K: cols(c, n.x), eps: n.eps };
    const normW = whole(c, n.normW, 'norm_linear_swiglu norm');
    const o = { bias: false, epilogue: 'swiglu', halfY: halfSwiglu(c, n.id, s) } as const;
    if (!prenorm(c, n.w, d.T, d.K, 'gate_up')) return mm(c, { ...o, norm: true }, n.w, d, { x: c.buf(n.x), normW, y: c.buf(n.id) });
    const xh = c.normedHalf!;
    return [rmsnorm({ ...d, N: d.K, half: true }, { x: c.buf(n.x), w: normW, y: xh }), ...mm(c, { ...o, norm: false, halfX: true }, n.w, d, { x: xh, y: c.buf(n.id) })];
  },
  kv_store: (n, c) => (s) => {
    if (s.keysRotated) throw new Error('kv_store writes keys before RoPE: rotated-key steps need the fused graph');
    const l = c.env.cache(n.layer);
    return [kvStore(attnOpts(c), { T: s.T, slot0: s.slot0, pos0: s.pos0, capacity: c.env.capacity }, { qkv: c.buf(n.qkv), q: c.buf(n.id), kCache: l.k, vCache: l.v, kpos: l.kpos })];
  },
  rope: (n, c) => (s) => {
    const { headDim, rotaryDim } = c.g.dims;
    return [rope({ T: s.T, heads: n.shape[1] as number, headDim, rotaryDim, pos0: s.pos0 }, { x: c.buf(n.x), rope: s.rope })];
  },
  qkv_rope: (n, c) => (s) => {
    const l = c.env.cache(n.layer);
    // int8: qkv_rope writes f32 rows to the staging cache at slots 0..T-1 (keys rotated when the cache holds rotated
    // keys), then kvQuantize packs them into the cache
    const st = c.env.cacheDtype === 'int8' ? c.kvStage() : null;
    const ct = st ? 'f32' : (c.env.cacheDtype as 'f32' | 'f16');
    const K = cols(c, n.x);
    const normed = prenorm(c, n.w, s.T, K, 'qkv');
    const pre = n.writePre ? preNode(c, n.id) : undefined;
    const o = { ...attnOpts(c), cacheDtype: ct, wdtype: w(c, n.w).dtype, bias: n.bias !== null, writePre: n.writePre, halfPre: pre !== undefined && halfPre(c, pre, s), tensorCores: tensorCores(c), workgroupBytes: wgBytes(c), subgroups: gemvSg(c), intDot: c.env.runner.gpu.intDot, rotateKeys: s.keysRotated, normedX: normed };
    const at = st ? { slot0: 0, capacity: c.env.maxT } : { slot0: s.slot0, capacity: c.env.capacity };
    const normW = whole(c, n.normW, 'qkv_rope');
    const xn = normed ? [rmsnorm({ T: s.T, N: K, eps: n.eps, half: true }, { x: c.buf(n.x), w: normW, y: c.normedHalf! })] : [];
    const fused = qkvRope(o, { T: s.T, K, eps: n.eps, pos0: s.pos0, ...at }, {
      x: normed ? c.normedHalf! : c.buf(n.x), normW, w: whole(c, n.w, 'qkv_rope'), wScales: weightParts(w(c, n.w))[0]!.scales, bias: optWhole(c, n.bias, 'qkv_rope'), rope: s.rope,
      q: c.buf(n.id), kCache: st?.k ?? l.k, vCache: st?.v ?? l.v, kpos: st?.kpos ?? l.kpos, pre: pre === undefined ? undefined : c.buf(pre),
    });
    if (!st) return [...xn, fused];
    return [...xn, fused, kvQuantize({ ...attnOpts(c), mode: 'staged' }, { T: s.T, slot0: s.slot0, pos0: s.pos0, capacity: c.env.capacity, stageCap: c.env.maxT },
      { kSrc: st.k, vSrc: st.v, kCache: l.k, vCache: l.v, kpos: l.kpos })];
  },
  // decode tokens are never evicted, so they need no scores. Two kernels: hid = silu(pre · fc1ᵀ) on the main matmul
  // into the node's own buffer (sized (maxT, hidden), see placement.ts), then the fc2 dot products into the cache.
  retaining_head: (n, c) => (s) => {
    if (s.decode) return [];
    const d = { T: s.T, N: headWidth(c, n), K: cols(c, n.pre) };
    const o = { norm: false, bias: n.fc1Bias !== null, epilogue: 'silu', halfX: halfPre(c, n.pre, s) } as const;
    return [...mm(c, o, n.fc1, d, { x: c.buf(n.pre), bias: optWhole(c, n.fc1Bias, 'retaining head bias'), y: c.buf(n.id) }), headScores(c, n, s)];
  },
  // a folded head (fc1 · Wqkv, runtime/fold-heads.ts) over the layer input through the attention norm: on the tensor
  // cores it reads rows normalized ahead as f16 (qkv's), elsewhere it normalizes in the matmul's prologue
  norm_retaining_head: (n, c) => (s) => {
    if (s.decode) return [];
    const d = { T: s.T, N: headWidth(c, n), K: cols(c, n.x), eps: n.eps };
    const normW = whole(c, n.normW, 'retaining head norm');
    const b = { bias: optWhole(c, n.fc1Bias, 'retaining head bias'), y: c.buf(n.id) };
    const o = { bias: n.fc1Bias !== null, epilogue: 'silu' } as const;
    // the rows qkv_rope normalized just before are reused where they are still there (headRowsFromQkv)
    const own = () => headRowsFromQkv(c, n, d.T) ? [] : [rmsnorm({ T: d.T, N: d.K, eps: n.eps, half: true }, { x: c.buf(n.x), w: normW, y: c.normedHalf! })];
    const hid = prenorm(c, n.fc1, d.T, d.K, 'head')
      ? [...own(), ...mm(c, { ...o, norm: false, halfX: true }, n.fc1, d, { ...b, x: c.normedHalf! })]
      : mm(c, { ...o, norm: true }, n.fc1, d, { ...b, x: c.buf(n.x), normW });
    return [...hid, headScores(c, n, s)];
  },
  // decode-sized chunks take the bandwidth kernel (every SM streams a slab of the cache); LOCRET_OLD_DECODE_ATTN=1
  // keeps the prefill kernel for them (A/B timing)
  attention: (n, c) => (s) => {
    const l = c.env.cache(n.layer);
    const decode = decodeAttention(s);
    const d = { ...attnDims(c, s), ...(decode ? {} : { splits: prefillAttnSplits() }) };
    const b = { q: c.buf(n.q), kCache: l.k, vCache: l.v, kpos: l.kpos, rope: s.rope, out: c.buf(n.id), scratch: c.scratch(), lse: c.lse };
    if (s.keysRotated && s.T > DECODE_MAX_T) throw new Error(`rotated keys are read by decode attention only (T ≤ ${DECODE_MAX_T}, got ${s.T})`);
    if (decode) return attentionDecode(decodeAttnOpts(c, s), d, b);
    // prefill on tensor cores where the device has them (attention-sgmat.ts), else f32 FMAs (attention.ts);
    // LOCRET_NO_TENSOR_CORES=1 keeps f32 FMAs everywhere, LOCRET_TC_ATTENTION=0 for attention alone. Keys are
    // rotated once per layer into kRot (f16) for the tensor cores (their tiles are f16 anyway) and for f16 / int8
    // caches; an f32 cache keeps exact f32 keys, rotated while loaded.
    const o = { ...attnOpts(c), workgroupBytes: c.env.runner.gpu.limits.maxComputeWorkgroupStorageSize, subgroupMin: c.env.runner.gpu.subgroupMinSize };
    const tc = tensorCores(c) && env('LOCRET_TC_ATTENTION') !== '0' && sgmatAttentionUsable(o, d);
    const kb = tc || c.env.cacheDtype !== 'f32' ? { ...b, kRot: c.keyRot() } : b;
    return tc ? attentionSgmat(o, d, kb) : attention(o, d, kb);
  },
  attention_stats: (n, c) => (s) => {
    if (s.T === 1 && s.decode) return []; // decode tokens are never evicted: their attention scores nothing
    if (s.keysRotated) throw new Error('attention scores read keys before RoPE');
    const l = c.env.cache(n.layer);
    return attentionStats({ ...attnOpts(c), mode: n.mode }, { T: s.T, base: s.slot0, capacity: c.env.capacity, scale: 1 / Math.sqrt(c.g.dims.headDim) },
      { q: c.buf(n.q), kCache: l.k, kpos: l.kpos, rope: s.rope, lse: c.lse!, scores: l.scores });
  },
  silu_mul: (n, c) => (s) => [siluMul({ T: s.T, N: n.shape[1] as number }, { gu: c.buf(n.x), y: c.buf(n.id) })],
  add: (n, c) => (s) => [add({ n: c.rows(n.id, s) * (n.shape[1] as number) }, { a: c.buf(n.a), b: c.buf(n.b), y: c.buf(n.id) })],
  last_rows: (n, c) => (s) => {
    const T = c.rows(n.x, s);
    const R = n.rows === 'all' ? T : Math.min(n.rows, T);
    return [copyLastRows({ T, R, N: n.shape[1] as number }, { x: c.buf(n.x), y: c.buf(n.id) })];
  },
};

/**
 * What an op's dispatches depend on besides the plan: the step's row count alone ('rows': matmuls, norms, the
 * embedding; built once per (T, decode) and reused, which keeps a decode step's host time low), or also its cache
 * slots, positions and rope table ('slots': rebuilt every step).
 */
const stepDependence: { readonly [O in Op]: 'rows' | 'slots' } = {
  input_ids: 'rows', weight: 'rows', pre_output: 'rows', embedding: 'rows', rmsnorm: 'rows', linear: 'rows', norm_linear: 'rows',
  linear_residual: 'rows', norm_linear_swiglu: 'rows', silu_mul: 'rows', add: 'rows', last_rows: 'rows',
  kv_store: 'slots', rope: 'slots', qkv_rope: 'slots', retaining_head: 'slots', norm_retaining_head: 'slots', attention: 'slots', attention_stats: 'slots',
};

function memoByRows(e: Emit): Emit {
  const memo = new Map<string, Dispatch[]>();
  return (s) => {
    const k = `${s.T}|${s.decode ? 1 : 0}`;
    let d = memo.get(k);
    if (!d) memo.set(k, (d = e(s)));
    return d;
  };
}

/** The decode-step opts of attention's fast path, shared by its lowering and its memo signature (built once per form). */
const decodeAttnOptsMemo = new WeakMap<Ctx, Map<boolean, ReturnType<typeof makeDecodeAttnOpts>>>();
const makeDecodeAttnOpts = (c: Ctx, keysRotated: boolean) => ({ ...attnOpts(c), subgroups: c.env.runner.gpu.subgroups, keysRotated, intDot: c.env.runner.gpu.intDot });
function decodeAttnOpts(c: Ctx, s: StepDims) {
  let m = decodeAttnOptsMemo.get(c);
  if (!m) decodeAttnOptsMemo.set(c, (m = new Map()));
  const kr = s.keysRotated === true;
  let o = m.get(kr);
  if (!o) m.set(kr, (o = makeDecodeAttnOpts(c, kr)));
  return o;
}
const attnDims = (c: Ctx, s: StepDims) => ({ T: s.T, base: s.slot0, capacity: c.env.capacity, scale: 1 / Math.sqrt(c.g.dims.headDim) });
/**
 * `LOCRET_ATTN_SPLITS=N`: prefill attention (both kernels) cuts each block's key range into N splits merged by the
 * combine kernel, instead of its plan's count (A/B timing of the grid; results equal within rounding).
 */
function prefillAttnSplits(): number | undefined {
  const n = Number(env('LOCRET_ATTN_SPLITS'));
  return Number.isInteger(n) && n >= 1 ? n : undefined;
}

/** attention takes the decode kernels (and their rotated-key form) for short steps */
const decodeAttention = (s: StepDims) => s.keysRotated === true || (s.T <= DECODE_MAX_T && !envFlag('LOCRET_OLD_DECODE_ATTN'));

/**
 * Slot-dependent ops whose decode dispatches are reused from step to step with the new slot and position patched
 * in (step-memo.ts): qkv_rope (with an int8 cache, its write to staging slot 0 and the quantization into the cache)
 * and decode attention.
 */
const decodeMemos: { readonly [O in Op]?: (n: NodeOf<O>, c: Ctx) => DecodeMemo } = {
  qkv_rope: (n, c) => ({
    // decode-sized steps take the gemv path, whose shape depends on T and LOCRET_GEMV only
    signature: (s) => (s.decode && s.T <= GEMV_MAX_T ? `${s.T}|${s.keysRotated ? 1 : 0}|${env('LOCRET_GEMV') ?? ''}` : null),
    patch: (ds, s) => {
      checkQkvSlots(s.slot0, s.T, c.env.capacity); // also the bound kvQuantize checks
      if (c.env.cacheDtype !== 'int8') return withParams(ds, { slot0: s.slot0, pos0: s.pos0 });
      // qkv_rope writes staging slots 0..T-1 (its slot0 stays 0); kvQuantize moves them to the cache
      return [...withParams(ds.slice(0, 1), { pos0: s.pos0 }), ...withParams(ds.slice(1), { slot0: s.slot0, pos0: s.pos0 })];
    },
  }),
  attention: (n, c) => ({
    signature: (s) => (s.decode && decodeAttention(s) ? attentionDecodeSignature(decodeAttnOpts(c, s), attnDims(c, s)) : null),
    patch: (ds, s) => withParams(ds, { base: s.slot0 }, (i) => i === 0), // the main kernel; the combine reads no slots
  }),
};

/** the pre_output node of a qkv_rope node that writes its pre-RoPE rows */
function preNode(c: Ctx, fusedId: NodeId): NodeId {
  const pre = c.g.nodes.find((m) => m.op === 'pre_output' && m.of === fusedId);
  if (!pre) throw new Error(`qkv_rope node ${fusedId} writes a pre-RoPE output nobody reads`);
  return pre.id;
}


export function lower(g: Graph, env: LowerEnv): Plan {
  const { runner, maxT } = env;
  const placed = placeActivations(g, runner, maxT);
  const { bufs, owned } = placed;
  const ids = bufs.get(g.nodes.find((n) => n.op === 'input_ids')!.id)!;
  let lse: GPUBuffer | undefined;
  if (g.nodes.some((n) => n.op === 'attention_stats')) {
    lse = placed.create(maxT * g.dims.numHeads * 4, 'attention-lse'); // (maxT, heads)
  }
  const steps: { node: Node; emit: Emit }[] = [];
  let scratchBuf: GPUBuffer | null = null;
  let keyRotBuf: GPUBuffer | null = null;
  let stage: KvStage | null = null;
  const stageBuf = placed.create;
  const normedHalf = runner.gpu.tensorCores && g.nodes.some((n) => n.op === 'norm_linear_swiglu' || n.op === 'qkv_rope') ? stageBuf(maxT * g.dims.hidden * 2, 'normed-rows-f16') : null;
  const ctx: Ctx = {
    g,
    env,
    lse,
    buf: (id) => {
      const b = bufs.get(id);
      if (!b) throw new Error(`node ${id} (${g.nodes[id]?.op}) has no buffer`);
      return b;
    },
    // rows are T, or a fixed count R taken from the end (logits of the newest tokens), never more than T
    rows: (id, s) => {
      const r = g.nodes[id]!.shape[0]!;
      return r === 'T' ? s.T : Math.min(r, s.T);
    },
    scratch: () => {
      if (!scratchBuf) {
        const { numHeads, numKvHeads, headDim, rotaryDim } = g.dims;
        const o = { cacheDtype: env.cacheDtype, numHeads, numKvHeads, headDim, rotaryDim };
        scratchBuf = runner.createBuffer(Math.max(16, attentionScratchBytes(o, { T: maxT, base: env.capacity - maxT, capacity: env.capacity, scale: 1, splits: prefillAttnSplits() })), 'attention-scratch');
        owned.push(scratchBuf);
      }
      return scratchBuf;
    },
    keyRot: () => {
      keyRotBuf ??= stageBuf(Math.max(16, rotatedKeysBytes(g.dims, env.capacity)), 'attention-rotated-keys');
      return keyRotBuf;
    },
    normedHalf,
    kvStage: () => {
      const { numKvHeads: KV, headDim: D } = g.dims;
      stage ??= { k: stageBuf(KV * maxT * D * 4, 'kv-stage-k'), v: stageBuf(KV * maxT * D * 4, 'kv-stage-v'), kpos: stageBuf(KV * maxT * 4, 'kv-stage-pos') };
      return stage;
    },
  };
  const reuse = !envFlag('LOCRET_NO_STEP_MEMO'); // A/B and tests: every decode step builds its dispatches afresh
  for (const n of g.nodes) {
    const e = (lowerings[n.op] as Lowering<Op>)(n as never, ctx);
    const memo = reuse ? (decodeMemos[n.op] as ((n: Node, c: Ctx) => DecodeMemo) | undefined)?.(n, ctx) : undefined;
    if (e) steps.push({ node: n, emit: stepDependence[n.op] === 'rows' ? memoByRows(e) : memo ? memoDecode(e, memo) : e });
  }
  const activationBytes = placed.bytes();
  return {
    ids,
    kernelCount: steps.reduce((a, e) => a + (e.node.op === 'retaining_head' || e.node.op === 'norm_retaining_head' ? 2 : 1), 0),
    ops: steps.map((e) => e.node.op),
    activationBytes,
    dispatches: (s, only, after) =>
      steps.filter((e) => !only || only(e.node.op)).flatMap((e) => (after ? [...e.emit(s), ...after(e.node)] : e.emit(s))),
    dispatchesByNode: (s) => steps.map((e) => ({ op: e.node.op, dispatches: e.emit(s) })),
    output: (id) => ctx.buf(id),
    release: () => owned.forEach((b) => runner.destroy(b)),
  };
}

export { assertNever };
