import * as fs from 'node:fs';
import { Option, type Command } from 'commander';
import { Engine } from '../runtime/engine.js';
import { runEval } from '../runtime/eval/run-eval.js';
import { runPerplexity, textWindows } from '../runtime/eval/perplexity.js';
import { readTaskFile } from '../runtime/eval/task-file.js';
import { generateTasks, tasksToJsonl, TASK_KINDS, type TaskKind } from '../runtime/eval/tasks.js';
import { readCorpus } from '../runtime/eval/corpus.js';
import { renderTraceFile, validateTrace } from '../runtime/eval/trace-view.js';
import { TextTokenizer } from '../runtime/io/tokenizer.js';
import { addCacheFlags, addPolicyFlags, cacheOptions, int, kvDtypeOption, policyOptions, run, weightDtypeOption, type CacheDtypeFlag, type CacheFlags, type PolicyFlags, type WeightFlag } from './options.js';

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

  addPolicyFlags(
    program
      .command('perplexity')
      .description('perplexity on a text; with --against, the KL divergence of the predictions from a reference (e.g. q4 weights against f16, or an evicted cache against the full one)')
      .argument('[model]', 'bundle or Hugging Face directory', defaultModel)
      .requiredOption('--text <file>', 'text: plain (.txt), or .jsonl / .jsonl.xz of {"text"}')
      .option('--tokens <n>', 'tokens per window, each prefilled from an empty cache', int('tokens', 2), 512)
      .option('--windows <n>', 'windows, consecutive from the start of the text (fewer when it is shorter)', int('windows', 1), 8)
      .option('--scored <n>', "the last n tokens of each window are scored, the rest cached as the policy flags say (default: the whole window)", int('scored', 2)),
  )
    .addOption(weightDtypeOption())
    .addOption(kvDtypeOption())
    .option('--against <model>', 'reference model, run with its full cache (bundle or HF directory; the same path with another --against-dtype compares storage formats)')
    .addOption(weightDtypeOption('--against-dtype <dtype>', 'the reference\'s weight storage'))
    .addOption(kvDtypeOption('--against-kv-dtype <dtype>', "the reference's KV cache storage"))
    .option('--json', 'print one JSON object')
    .action((model: string, f: PerplexityFlags) =>
      run(async () => {
        const docs = readCorpus(f.text);
        const engine = await Engine.load(model, { heads: f.heads, dtype: f.dtype });
        const against = f.against ? await Engine.load(f.against, { dtype: f.againstDtype }) : undefined;
        const tok = engine.model.tokenizer;
        if (!tok) throw new Error(`${model} has no tokenizer.json: perplexity needs one to read the text`);
        const text = textWindows(docs, (t, special) => tok.encode(t, { addSpecialTokens: special }), f.tokens, f.windows);
        if (text.windows.length < f.windows) process.stderr.write(`the text holds ${text.windows.length} windows of ${f.tokens} tokens (${f.windows} asked for)\n`);
        const r = await runPerplexity(engine, text, { cache: policyOptions(f), scored: f.scored, kvDtype: f.kvDtype, againstKvDtype: f.againstKvDtype }, against);
        if (f.json) {
          process.stdout.write(`${JSON.stringify(r)}\n`);
          return;
        }
        const tail = r.scored_per_window < r.tokens_per_window ? ` (the last ${r.scored_per_window} of each scored)` : '';
        let line = `perplexity ${r.perplexity.toFixed(4)} (nll ${r.nll.toFixed(5)}) over ${r.predictions} predictions in ${r.windows} windows of ${r.tokens_per_window} tokens${tail}`;
        const a = r.against;
        if (a)
          line += `\nreference perplexity ${a.perplexity.toFixed(4)} (nll ${a.nll.toFixed(5)}); KL from it: mean ${a.kl_mean.toFixed(5)}, ` +
            `p99 ${a.kl_p99.toFixed(5)}, max ${a.kl_max.toFixed(5)} nats; same top token ${(100 * a.top1_agreement).toFixed(2)}%`;
        process.stdout.write(`${line}\n`);
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

interface PerplexityFlags extends PolicyFlags {
  text: string;
  scored?: number;
  tokens: number;
  windows: number;
  dtype?: WeightFlag;
  kvDtype?: CacheDtypeFlag;
  against?: string;
  againstDtype?: WeightFlag;
  againstKvDtype?: CacheDtypeFlag;
  json?: boolean;
}
