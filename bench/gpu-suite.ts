/**
 * The GPU acceptance run, one process: tiny-llama goldens on the device (f32 and f16), the dev-tasks accuracy
 * table for every policy, and the 8B-shaped benchmark. Writes markdown and JSON to the output directory.
 *
 *   node dist/bench/gpu-suite.js --fixtures ../shared --out out/ [--skip-eval] [--skip-bench] [--sets a,b] [--kv-dtype int8]
 *
 * --kv-dtype f32|f16|int8 sets the KV cache storage of every run (default: follows the weights); --dtype f16|q8|q4
 * the tiny-llama weights of the accuracy table; --configs 'full,locret b=512' keeps some of its columns.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Engine } from '../runtime/engine.js';
import { runEval } from '../runtime/eval/run-eval.js';
import { readTaskFile } from '../runtime/eval/task-file.js';
import { argmaxOf } from '../runtime/sampling.js';
import { defaultGpu } from '../runtime/gpu/device.js';
import { GpuRunner } from '../runtime/gpu/runner.js';
import { randomWeights, runBench } from '../runtime/bench.js';
import { shapeConfig } from '../runtime/shapes.js';
import type { Policy } from '../runtime/policies.js';

const arg = (name: string, def?: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : def;
};
const flag = (name: string) => process.argv.includes(`--${name}`);
const kvDtype = arg('kv-dtype') as 'f32' | 'f16' | 'int8' | undefined;
if (kvDtype !== undefined && !['f32', 'f16', 'int8'].includes(kvDtype)) throw new Error(`--kv-dtype must be f32, f16 or int8, got '${kvDtype}'`);
const wdtype = (arg('dtype') ?? 'f16') as 'f16' | 'q8' | 'q4';
if (!['f16', 'q8', 'q4'].includes(wdtype)) throw new Error(`--dtype must be f16, q8 or q4, got '${wdtype}'`);
const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../..');
const fixtures = path.resolve(arg('fixtures', path.join(root, '../shared'))!);
const out = path.resolve(arg('out', 'out')!);
fs.mkdirSync(out, { recursive: true });
const report: string[] = [];
const log = (s: string) => {
  console.log(s);
  report.push(s);
  fs.writeFileSync(path.join(out, 'report.md'), report.join('\n') + '\n');
};

const golden = JSON.parse(fs.readFileSync(path.join(root, 'models/tiny-llama/golden.json'), 'utf8'));

async function goldens() {
  for (const dtype of ['f32', 'f16'] as const) {
    const e = await Engine.load(path.join(root, 'models/tiny-llama'), { dtype });
    const s = e.session({ policy: 'full', allLogits: true, maxNew: 1, kvDtype });
    const r = await s.prefill(golden.input_ids, 0);
    s.release();
    const T = golden.input_ids.length;
    let mism = 0;
    for (let t = 0; t < T; t++) if (argmaxOf(r.logits, t * 4096, 4096) !== golden.argmax[t]) mism++;
    const g = await e.generate({ inputIds: golden.input_ids, maxNewTokens: 24, policy: 'full', stopAtEos: false, kvDtype });
    const eq = JSON.stringify(g.tokens) === JSON.stringify(golden.greedy_24);
    log(`| golden tiny-llama ${dtype}${kvDtype ? ` kv ${kvDtype}` : ''} | argmax mismatches ${mism}/${T} | greedy_24 ${eq ? 'equal' : 'DIFFERENT'} |`);
  }
}

/** Folded retaining heads (on tensor cores: fc1 over qkv's normalized rows) against the heads as loaded. */
async function foldedHeads() {
  const heads = path.join(fixtures, 'models/tiny-llama/retaining_heads.safetensors');
  for (const dtype of ['f32', 'f16'] as const) {
    const e = await Engine.load(path.join(root, 'models/tiny-llama'), { dtype, heads, keepUnfoldedHeads: true });
    const scores = async (unfoldedHeads: boolean) => {
      const s = e.session({ policy: 'locret', budget: 64, chunk: 16, stabilizer: 4, maxNew: 1, unfoldedHeads, kvDtype });
      await s.prefill(golden.input_ids, 0); // within the budget: every token's score stays in the cache
      const got = (await s.cachedScores()).flat();
      s.release();
      return got;
    };
    const a = await scores(false), b = await scores(true);
    let worst = 0, scale = 0;
    a.forEach((row, i) => row.forEach((v, j) => {
      worst = Math.max(worst, Math.abs(v - b[i]![j]!));
      scale = Math.max(scale, Math.abs(b[i]![j]!));
    }));
    log(`| heads tiny-llama ${dtype} | folded vs loaded: max abs diff ${worst.toExponential(2)} of max |score| ${scale.toFixed(3)} |`);
  }
}

async function evalTable() {
  const sets = (arg('sets', 'passkey-4k,passkey-8k,multikey-8k,kv-8k,magic-8k')!).split(',');
  const configs: [string, Policy, number][] = [
    ['full', 'full', 512], ['locret b=256', 'locret', 256], ['locret b=512', 'locret', 512], ['locret b=1024', 'locret', 1024],
    ['streaming b=512', 'streaming', 512], ['h2o b=512', 'h2o', 512], ['snapkv b=512', 'snapkv', 512], ['random b=512', 'random', 512],
  ];
  const heads = path.join(fixtures, 'models/tiny-llama/retaining_heads.safetensors');
  const e = await Engine.load(path.join(root, 'models/tiny-llama'), { dtype: wdtype, heads });
  const keep = arg('configs')?.split(',');
  if (keep) configs.splice(0, configs.length, ...configs.filter((c) => keep.includes(c[0])));
  log(`\n| set (weights ${wdtype}${kvDtype ? `, kv ${kvDtype}` : ''}) | ${configs.map((c) => c[0]).join(' | ')} |`);
  log(`| --- | ${configs.map(() => '---').join(' | ')} |`);
  const json: Record<string, Record<string, unknown>> = {};
  for (const set of sets) {
    const rows = readTaskFile(path.join(fixtures, `data/dev-tasks/${set}.jsonl`));
    const cells: string[] = [];
    json[set] = {};
    for (const [name, policy, budget] of configs) {
      const t0 = performance.now();
      const limit = arg('limit') ? Number(arg('limit')) : undefined;
      const r = await runEval(e, rows, { policy, budget, chunk: 512, stabilizer: budget / 4, local: 'question', positions: 'compact', quiet: true, limit, kvDtype });
      cells.push(`${r.correct}/${r.total}`);
      const { rows: _r, ...summary } = r;
      json[set]![name] = { ...summary, wall_s: (performance.now() - t0) / 1000 };
      console.log(set, name, r.correct, r.total, `${r.prefill_tokens_per_s.toFixed(0)} tok/s`);
    }
    log(`| ${set} (${rows.length}) | ${cells.join(' | ')} |`);
    fs.writeFileSync(path.join(out, 'eval.json'), JSON.stringify(json, null, 1));
  }
}

async function bench() {
  const runner = new GpuRunner(await defaultGpu());
  const shape = arg('shape', 'llama-3.1-8b')!;
  const cfg = shape === 'tiny' ? { ...shapeConfig('llama-3.1-8b'), hiddenSize: 128, intermediateSize: 256, numLayers: 2, numHeads: 4, numKvHeads: 2, headDim: 32, vocabSize: 1024, rope: { kind: 'default' as const, theta: 10000, rotaryDim: 32 } } : shapeConfig(shape);
  const weights = randomWeights(runner, cfg, true);
  const budget = Number(arg('budget', '16384'));
  const r = await runBench(runner, cfg, weights, shape, {
    chunks: (arg('chunks', '1024,4096')!).split(',').map(Number), budget, stabilizer: Math.min(2500, budget / 4), context: Number(arg('context', '16384')), decodeTokens: 32, kvDtype,
    log: (s) => console.log(`bench: ${s}`),
  });
  fs.writeFileSync(path.join(out, 'bench.json'), JSON.stringify(r, null, 1));
  log(`\n\`\`\`\n${JSON.stringify(r, null, 1)}\n\`\`\``);
}

const gpu = await defaultGpu();
log(`device: ${gpu.adapterName}; f16 ${gpu.f16}; subgroup-matrix ${gpu.subgroupMatrix}; max binding ${gpu.maxBinding}`);
if (!flag('skip-golden')) {
  await goldens();
  await foldedHeads();
}
if (!flag('skip-eval')) await evalTable();
if (!flag('skip-bench')) await bench();
process.exit(0);
