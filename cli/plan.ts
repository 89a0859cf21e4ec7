import * as fs from 'node:fs';
import * as path from 'node:path';
import { Option, type Command } from 'commander';
import { normalizeConfig } from '../runtime/io/hf-config.js';
import { formatPlan, KV_DTYPES, planMemoryFromJson, POLICIES, WEIGHT_DTYPES } from '../runtime/plan-memory.js';
import { int, run } from './options.js';

export function planCommand(program: Command): void {
  program
    .command('plan')
    .description('memory needed for a model at a context length: weights, cache, activations, and whether it fits')
    .argument('<model>', 'Hugging Face directory or its config.json')
    .requiredOption('--context <n>', 'prompt tokens', int('context', 1))
    .addOption(new Option('--policy <name>', 'eviction policy').choices([...POLICIES]).default('locret'))
    .option('--budget <n>', 'cache budget b', int('budget', 1), 16384)
    .option('--chunk <n>', 'prefill chunk B', int('chunk', 1), 1024)
    .option('--local <n>', 'question tokens', int('local', 0), 100)
    .option('--max-new <n>', 'generated tokens', int('max-new', 0), 256)
    .addOption(new Option('--dtype <d>', 'weights').choices([...WEIGHT_DTYPES]).default('f16'))
    .addOption(new Option('--kv-dtype <d>', 'cache').choices([...KV_DTYPES]).default('f16'))
    .option('--gpu-memory <size>', 'memory to fit in, e.g. 24GB')
    .option('--json', 'print JSON')
    .action((model: string, f: Record<string, string | number | boolean | undefined>) =>
      run(async () => {
        const file = fs.existsSync(model) && fs.statSync(model).isDirectory() ? path.join(model, 'config.json') : model;
        if (!fs.existsSync(file)) throw new Error(`${file}: not found`);
        const json = JSON.parse(fs.readFileSync(file, 'utf8'));
        const p = planMemoryFromJson(json, {
          context: f.context as number, policy: f.policy as never, budget: f.budget as number, chunk: f.chunk as number,
          local: f.local as number, maxNew: f.maxNew as number, dtype: f.dtype as never, kvDtype: f.kvDtype as never,
          gpuMemory: f.gpuMemory as string | undefined,
        }, (j) => normalizeConfig(j as never));
        if (f.json) process.stdout.write(`${JSON.stringify(p)}\n`);
        else process.stdout.write(`${formatPlan(p)}\n`);
      }),
    );
}
