/** Option parsing shared by the CLIs: numbers checked here so a typo fails before a model is loaded. */
import { InvalidArgumentError, Option, type Command } from 'commander';
import { POLICIES, parsePolicy, type Policy } from '../runtime/policies.js';

export function int(name: string, min = 0) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min) throw new InvalidArgumentError(`--${name} must be an integer >= ${min}, got '${v}'`);
    return n;
  };
}
export function num(name: string) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isFinite(n)) throw new InvalidArgumentError(`--${name} must be a number, got '${v}'`);
    return n;
  };
}

/** commander reports InvalidArgumentError as one clean line; other errors would escape with a stack */
function policyArg(v: string): Policy {
  try {
    return parsePolicy(v);
  } catch (e) {
    throw new InvalidArgumentError((e as Error).message);
  }
}

/** How a prompt is cached: the eviction policy and its sizes. */
export interface PolicyFlags {
  policy?: Policy;
  budget: number;
  chunk: number;
  stabilizer?: number;
  positions: 'compact' | 'original';
  heads?: string;
  ropeLong?: boolean;
}

export interface CacheFlags extends PolicyFlags {
  local: string;
  /** undefined: f16, or as stored for a bundle compiled to q8 / q4 */
  dtype?: WeightFlag;
  kvDtype?: CacheDtypeFlag;
}

export function addPolicyFlags(c: Command): Command {
  return c
    .addOption(new Option('--policy <name>', `eviction policy (${POLICIES.join(', ')}); default locret when the model has retaining heads, else full`).argParser(policyArg))
    .option('--budget <n>', 'cache entries kept per layer and KV head (b)', int('budget', 1), 2048)
    .option('--chunk <n>', 'prefill chunk size (B)', int('chunk', 1), 512)
    .option('--stabilizer <n>', 'newest entries always kept after a chunk (n_s); default budget/4', int('stabilizer', 0))
    .addOption(new Option('--positions <mode>', 'RoPE positions of kept keys').choices(['compact', 'original']).default('compact'))
    .option('--heads <file>', 'retaining heads (.safetensors or official .bin) for an HF directory')
    .option('--rope-long', 'always use longrope long factors (Phi-3, as the official Locret code)');
}

export function addCacheFlags(c: Command): Command {
  return addPolicyFlags(c)
    .option('--local <n|question>', "prompt tokens appended without eviction: a count, or 'question' (text after the last newline)", '100')
    .addOption(weightDtypeOption())
    .addOption(kvDtypeOption());
}

export type WeightFlag = 'f16' | 'f32' | 'q8' | 'q4';
export type CacheDtypeFlag = 'f32' | 'f16' | 'int8';

/** --dtype: weight storage on the GPU */
export function weightDtypeOption(flags = '--dtype <dtype>', what = 'weight storage on the GPU'): Option {
  return new Option(flags, `${what} (q8 / q4: block-quantized backbone matrices); default f16, or as a bundle stores them`).choices(['f16', 'f32', 'q8', 'q4']);
}

/** --kv-dtype: K/V cache storage; int8 keeps one scale per row (about half the bytes of f16) */
export function kvDtypeOption(flags = '--kv-dtype <dtype>', what = 'KV cache storage'): Option {
  return new Option(flags, `${what} (int8: per-row scale, ~half of f16); default: f16 with f16 weights, else f32`).choices(['f32', 'f16', 'int8']);
}

export function policyOptions(f: PolicyFlags) {
  return {
    policy: f.policy,
    budget: f.budget,
    chunk: f.chunk,
    stabilizer: f.stabilizer ?? Math.floor(f.budget / 4),
    positions: f.positions,
    ropeLong: f.ropeLong,
  };
}

export function cacheOptions(f: CacheFlags) {
  const local = f.local === 'question' ? ('question' as const) : int('local', 0)(f.local);
  return { ...policyOptions(f), local, kvDtype: f.kvDtype };
}

/** Runs a command body, printing a clean one-line error (no stack) for expected failures. */
export async function run(body: () => Promise<void>): Promise<void> {
  try {
    await body();
  } catch (e) {
    const err = e as Error;
    process.stderr.write(`locret: ${err.message}\n`);
    if (process.env.LOCRET_DEBUG) process.stderr.write(`${err.stack}\n`);
    process.exitCode = 1;
  }
}
