// KV cache bookkeeping and chunk planning for the Locret method (compiled to runtime/wasm/cache.wasm).
//
// All state lives in module globals plus one manually allocated i32 array (per layer, per KV head cache length).
// Only numbers cross the boundary. Errors call `abort(message)`; the host turns them into exceptions, so every
// function validates its input before it changes any state.
//
// Lifecycle:
//   configure(...)            -> capacity (slots per layer and KV head)
//   planPrompt(n)             -> number of steps; stepKind/stepStart/stepLength(i) describe them
//   for each step i in order:  beginStep(i) -> slot (+ firstPosition()), run attention, endStep(i) -> evict?
//                              (+ endKeep(), endForcedFrom())
//   appendDecode()            -> slot (+ firstPosition()), once per generated token
//
// Steps: the prompt minus its last `local` tokens (the context) is split into chunks of `chunk` tokens.
//   KIND_CHUNK       every context chunk but the last: evict to top-`budget` with the newest `stabilizer` forced
//   KIND_LAST_CHUNK  the last context chunk: evict to top-`budget`, no stabilizer forcing
//   KIND_LOCAL       the last `local` tokens: appended, never evicted
// Eviction happens only when the policy evicts and the length after the append exceeds the budget.

import { KIND_CHUNK, KIND_LAST_CHUNK, KIND_LOCAL, MAX_SLOTS } from "./constants";

// ---- configuration ----
let cfgLayers: i32 = 0;
let cfgHeads: i32 = 0;
let cfgBudget: i32 = 0;
let cfgChunk: i32 = 0;
let cfgStabilizer: i32 = 0;
let cfgLocal: i32 = 0;
let cfgMaxNew: i32 = 0;
let cfgEvicts: bool = false;
let cfgCompact: bool = true;
let cfgCapacity: i32 = 0;
let configured: bool = false;

// ---- lengths: i32[layers * kvHeads], row-major (layer, head) ----
let lens: usize = 0;

// ---- plan ----
let planned: bool = false;
let promptLen: i32 = 0;
let contextLen: i32 = 0;
let numChunks: i32 = 0;
let localLen: i32 = 0;
let numSteps: i32 = 0;

// ---- progress ----
let nextStep: i32 = 0;
let inStep: bool = false;
let decoded: i32 = 0;
let processed: i32 = 0;
let evicted: i32 = 0;
let lastPosition: i32 = 0;
let lastKeep: i32 = 0;
let lastForcedFrom: i32 = 0;

function fail(message: string): void {
  abort(message);
}

// @ts-ignore: decorator
@inline function lenAt(index: i32): i32 {
  return load<i32>(lens + (<usize>index << 2));
}

// @ts-ignore: decorator
@inline function setLenAt(index: i32, value: i32): void {
  store<i32>(lens + (<usize>index << 2), value);
}

/** The common length of all (layer, head) streams; traps if they differ (the method keeps them equal). */
function uniformLength(): i32 {
  const n = cfgLayers * cfgHeads;
  const first = lenAt(0);
  for (let i = 1; i < n; i++) {
    if (lenAt(i) != first) fail("cache lengths diverged between layers/heads");
  }
  return first;
}

function setAll(value: i32): void {
  const n = cfgLayers * cfgHeads;
  for (let i = 0; i < n; i++) setLenAt(i, value);
}

function addAll(delta: i32): void {
  const n = cfgLayers * cfgHeads;
  for (let i = 0; i < n; i++) setLenAt(i, lenAt(i) + delta);
}

function requireConfigured(): void {
  if (!configured) fail("cache book is not configured");
}

function requirePlanned(): void {
  requireConfigured();
  if (!planned) fail("no prompt planned (call planPrompt first)");
}

function requireStep(i: i32): void {
  requirePlanned();
  if (i < 0 || i >= numSteps) fail("step " + i.toString() + " out of range [0, " + numSteps.toString() + ")");
}

/**
 * Sets the cache geometry and method parameters; returns the capacity (slots per layer and KV head).
 * Evicting policy: capacity = budget + chunk + local + maxNew.
 * Non-evicting policy (`full`): `budget` is the largest prompt accepted; capacity = budget + maxNew.
 * `compact`: RoPE positions are cache ranks; otherwise original token positions.
 */
export function configure(
  layers: i32,
  kvHeads: i32,
  budget: i32,
  chunk: i32,
  stabilizer: i32,
  local: i32,
  maxNew: i32,
  policyEvicts: bool,
  compact: bool,
): i32 {
  if (layers <= 0) fail("layers must be > 0, got " + layers.toString());
  if (kvHeads <= 0) fail("kvHeads must be > 0, got " + kvHeads.toString());
  if (budget <= 0) fail("budget must be > 0, got " + budget.toString());
  if (chunk <= 0) fail("chunk must be > 0, got " + chunk.toString());
  if (stabilizer < 0) fail("stabilizer must be >= 0, got " + stabilizer.toString());
  if (policyEvicts && stabilizer > budget) {
    fail("stabilizer (" + stabilizer.toString() + ") must not exceed budget (" + budget.toString() + ")");
  }
  if (local < 0) fail("local must be >= 0, got " + local.toString());
  if (maxNew < 0) fail("maxNew must be >= 0, got " + maxNew.toString());
  const cap: i64 = policyEvicts
    ? <i64>budget + <i64>chunk + <i64>local + <i64>maxNew
    : <i64>budget + <i64>maxNew;
  if (cap > <i64>MAX_SLOTS) fail("capacity " + cap.toString() + " exceeds the limit " + MAX_SLOTS.toString());
  const streams: i64 = <i64>layers * <i64>kvHeads;
  if (streams > 1 << 24) fail("too many layer/head streams: " + streams.toString());

  if (lens != 0) heap.free(lens);
  lens = heap.alloc(<usize>streams << 2);

  cfgLayers = layers;
  cfgHeads = kvHeads;
  cfgBudget = budget;
  cfgChunk = chunk;
  cfgStabilizer = stabilizer;
  cfgLocal = local;
  cfgMaxNew = maxNew;
  cfgEvicts = policyEvicts;
  cfgCompact = compact;
  cfgCapacity = <i32>cap;
  configured = true;
  planned = false;
  resetProgress();
  return cfgCapacity;
}

function resetProgress(): void {
  setAll(0);
  nextStep = 0;
  inStep = false;
  decoded = 0;
  processed = 0;
  evicted = 0;
  lastPosition = 0;
  lastKeep = 0;
  lastForcedFrom = 0;
}

function kindOf(i: i32): i32 {
  if (i < numChunks) return i == numChunks - 1 ? KIND_LAST_CHUNK : KIND_CHUNK;
  return KIND_LOCAL;
}

function startOf(i: i32): i32 {
  return i < numChunks ? i * cfgChunk : contextLen;
}

function lengthOf(i: i32): i32 {
  if (i < numChunks) return min(cfgChunk, contextLen - i * cfgChunk);
  return localLen;
}

function evictsAfter(kind: i32, lenAfter: i32): bool {
  return cfgEvicts && kind != KIND_LOCAL && lenAfter > cfgBudget;
}

/** Plans the prefill of a prompt and resets the cache to empty; returns the number of steps. */
export function planPrompt(n: i32): i32 {
  requireConfigured();
  if (n <= 0) fail("prompt length must be > 0, got " + n.toString());
  const loc = min(n, cfgLocal);
  const ctx = n - loc;
  const chunks = ctx / cfgChunk + (ctx % cfgChunk != 0 ? 1 : 0);
  const steps = chunks + (loc > 0 ? 1 : 0);

  // Simulate the lengths so a plan that cannot fit is refused before anything runs.
  let len: i64 = 0;
  let peak: i64 = 0;
  for (let i = 0; i < chunks; i++) {
    const t = min(cfgChunk, ctx - i * cfgChunk);
    len += t;
    if (len > peak) peak = len;
    if (cfgEvicts && len > <i64>cfgBudget) len = cfgBudget;
  }
  len += loc;
  if (len > peak) peak = len;
  if (peak > <i64>cfgCapacity) {
    fail(
      "prompt of " + n.toString() + " tokens needs " + peak.toString() + " cache slots, capacity is " +
        cfgCapacity.toString(),
    );
  }

  promptLen = n;
  contextLen = ctx;
  numChunks = chunks;
  localLen = loc;
  numSteps = steps;
  planned = true;
  resetProgress();
  return steps;
}

export function stepCount(): i32 {
  requirePlanned();
  return numSteps;
}

/** 0 = evicting chunk, 1 = last context chunk (eviction without stabilizer), 2 = local (no eviction). */
export function stepKind(i: i32): i32 {
  requireStep(i);
  return kindOf(i);
}

/** Index of the step's first token in the prompt. */
export function stepStart(i: i32): i32 {
  requireStep(i);
  return startOf(i);
}

/** Number of tokens the step appends. */
export function stepLength(i: i32): i32 {
  requireStep(i);
  return lengthOf(i);
}

/** Appends step i's tokens; returns their first slot (= cache length before). See firstPosition(). */
export function beginStep(i: i32): i32 {
  requireStep(i);
  if (inStep) fail("step " + (nextStep).toString() + " is still open (call endStep first)");
  if (i != nextStep) fail("steps run in order: expected step " + nextStep.toString() + ", got " + i.toString());
  const t = lengthOf(i);
  const slot = uniformLength();
  if (<i64>slot + <i64>t > <i64>cfgCapacity) {
    fail("step " + i.toString() + " overflows the cache: " + slot.toString() + " + " + t.toString() + " > " +
      cfgCapacity.toString());
  }
  addAll(t);
  processed += t;
  lastPosition = cfgCompact ? slot : startOf(i);
  inStep = true;
  return slot;
}

/** RoPE position of the first query of the last begun step or decode token (the rest follow consecutively). */
export function firstPosition(): i32 {
  requireConfigured();
  return lastPosition;
}

/**
 * Closes step i; returns 1 when the cache must be evicted now. Then endKeep() is the number of entries kept per
 * (layer, KV head) (= the new length) and endForcedFrom() the first slot forced kept (stabilizer; equal to the
 * length before eviction when nothing is forced).
 */
export function endStep(i: i32): i32 {
  requireStep(i);
  if (!inStep || i != nextStep) fail("endStep(" + i.toString() + ") without a matching beginStep");
  const kind = kindOf(i);
  const lenAfter = uniformLength();
  let evict = false;
  let keep = lenAfter;
  let forcedFrom = lenAfter;
  if (evictsAfter(kind, lenAfter)) {
    evict = true;
    keep = cfgBudget;
    if (kind == KIND_CHUNK) forcedFrom = max(0, lenAfter - cfgStabilizer);
    setAll(keep);
    evicted += lenAfter - keep;
  }
  lastKeep = keep;
  lastForcedFrom = forcedFrom;
  inStep = false;
  nextStep++;
  return evict ? 1 : 0;
}

export function endKeep(): i32 {
  requireConfigured();
  return lastKeep;
}

export function endForcedFrom(): i32 {
  requireConfigured();
  return lastForcedFrom;
}

/** True once every step of the planned prompt has ended. */
export function prefillDone(): bool {
  return configured && planned && !inStep && nextStep == numSteps;
}

/** Appends one generated token; returns its slot. See firstPosition() for its RoPE position. */
export function appendDecode(): i32 {
  requirePlanned();
  if (!prefillDone()) fail("decode before the prompt's prefill finished");
  const slot = uniformLength();
  if (slot >= cfgCapacity) {
    fail("KV cache full: " + cfgCapacity.toString() + " slots used after " + decoded.toString() + " decoded tokens");
  }
  addAll(1);
  lastPosition = cfgCompact ? slot : promptLen + decoded;
  decoded++;
  processed++;
  return slot;
}

/** Cache length of a layer (equal for all of its KV heads). */
export function length(layer: i32): i32 {
  requireConfigured();
  if (layer < 0 || layer >= cfgLayers) {
    fail("layer " + layer.toString() + " out of range [0, " + cfgLayers.toString() + ")");
  }
  const base = layer * cfgHeads;
  const first = lenAt(base);
  for (let h = 1; h < cfgHeads; h++) {
    if (lenAt(base + h) != first) fail("cache lengths diverged between KV heads of layer " + layer.toString());
  }
  return first;
}

/** Tokens evicted so far, per (layer, KV head) stream (= processed tokens - length). */
export function evictedTokens(): i32 {
  requireConfigured();
  return evicted;
}

/** Tokens appended so far (prompt steps begun + decoded tokens). */
export function processedTokens(): i32 {
  requireConfigured();
  return processed;
}

export function decodedTokens(): i32 {
  requireConfigured();
  return decoded;
}

export function capacity(): i32 {
  requireConfigured();
  return cfgCapacity;
}
