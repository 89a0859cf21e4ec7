import * as fs from 'node:fs';
import { Option, type Command } from 'commander';
import { Engine } from '../runtime/engine.js';
import { runEval } from '../runtime/eval/run-eval.js';
import { readTaskFile } from '../runtime/eval/task-file.js';
import { generateTasks, tasksToJsonl, TASK_KINDS, type TaskKind } from '../runtime/eval/tasks.js';
import { readCorpus } from '../runtime/eval/corpus.js';
import { renderTraceFile, validateTrace } from '../runtime/eval/trace-view.js';
import { TextTokenizer } from '../runtime/io/tokenizer.js';
import { addCacheFlags, cacheOptions, int, run, type CacheFlags } from './options.js';

export function evalCommands(program: Command, defaultModel: string): void {
  addCacheFlags(
    program
      .command('eval')
      .description('accuracy on a task set: a row is correct when its answer appears in the first 12 generated tokens')
      .argument('[model]', 'bundle or Hugging Face directory', defaultModel)
      .requiredOption('--data <file>', 'tasks, one {"prompt", "answer"} JSON object per line')
      .option('--limit <n>', 'only the first n rows', int('limit', 1))
      .option('--json', 'print one JSON object')
      .option('--rows', 'with --json: include every row'),
  ).action((model: string, f: CacheFlags & { data: string; limit?: number; json?: boolean; rows?: boolean }) =>
    run(async () => {
      const rows = readTaskFile(f.data);
      const engine = await Engine.load(model, { heads: f.heads, dtype: f.dtype });
      const r = await runEval(engine, rows, { ...cacheOptions(f), limit: f.limit });
      const { rows: perRow, ...summary } = r;
      if (f.json) process.stdout.write(`${JSON.stringify(f.rows ? r : summary)}\n`);
      else
        process.stdout.write(
          `${r.policy} b=${r.budget}: ${r.correct}/${r.total} correct (${(100 * r.accuracy).toFixed(1)}%), ` +
            `${r.mean_prompt_tokens.toFixed(0)} prompt tokens on average, prefill ${r.prefill_tokens_per_s.toFixed(0)} tokens/s, ` +
            `peak GPU ${(r.peak_gpu_bytes / 2 ** 20).toFixed(1)} MiB (cache ${(r.cache_peak_bytes / 2 ** 20).toFixed(1)} MiB)\n`,
        );
      void perRow;
    }),
  );

  program
    .command('tasks')
    .description('generate a long-context retrieval task set (JSONL on stdout or -o)')
    .addOption(new Option('--kind <kind>', 'task kind').choices([...TASK_KINDS]).makeOptionMandatory())
    .requiredOption('--tokens <n>', 'prompt length in tokens', int('tokens', 16))
    .option('--n <k>', 'rows', int('n', 1), 10)
    .option('--seed <s>', 'seed', int('seed', 0), 0)
    .requiredOption('--corpus <file>', 'haystack text (.jsonl or .jsonl.xz of {"text"})')
    .option('--tokenizer <dir>', 'count tokens with this model directory or bundle (default: ~4 characters per token)')
    .option('-o, --out <file>', 'output file')
    .action((f: { kind: TaskKind; tokens: number; n: number; seed: number; corpus: string; tokenizer?: string; out?: string }) =>
      run(async () => {
        const tok = f.tokenizer ? TextTokenizer.fromDir(f.tokenizer) : null;
        const rows = generateTasks({ kind: f.kind, tokens: f.tokens, n: f.n, seed: f.seed, corpus: readCorpus(f.corpus), countTokens: tok ? (t: string) => tok.encode(t).length : undefined });
        const text = tasksToJsonl(rows);
        if (f.out) fs.writeFileSync(f.out, text);
        else process.stdout.write(text);
      }),
    );

  program
    .command('trace-view')
    .description('render an eviction trace (from --trace) as an HTML or SVG heatmap')
    .argument('<trace>', 'trace JSON')
    .requiredOption('-o, --out <file>', 'output .html or .svg')
    .action((file: string, f: { out: string }) =>
      run(async () => {
        const trace = validateTrace(JSON.parse(fs.readFileSync(file, 'utf8')));
        fs.writeFileSync(f.out, renderTraceFile(trace, f.out));
        process.stderr.write(`wrote ${f.out}\n`);
      }),
    );
}
