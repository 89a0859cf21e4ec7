import * as fs from 'node:fs';
import type { Command } from 'commander';
import { Engine } from '../runtime/engine.js';
import { progress } from '../runtime/progress.js';
import { writeTrace } from '../runtime/trace.js';
import { addCacheFlags, cacheOptions, int, num, run, type CacheFlags } from './options.js';

interface Flags extends CacheFlags {
  prompt?: string;
  promptFile?: string;
  inputIds?: string;
  chat?: string;
  maxNewTokens: number;
  temperature?: number;
  topK?: number;
  topP?: number;
  seed?: number;
  json?: boolean;
  trace?: string;
}

function readIds(file: string): number[] {
  const v = JSON.parse(fs.readFileSync(file, 'utf8'));
  if (!Array.isArray(v) || !v.every((x) => Number.isInteger(x) && x >= 0)) throw new Error(`${file}: expected a JSON array of token ids`);
  return v;
}

export function generateCommand(program: Command, defaultModel: string): void {
  addCacheFlags(
    program
      .command('generate')
      .description('generate text from a prompt (greedy by default), streaming to stdout')
      .argument('[model]', 'bundle or Hugging Face directory', defaultModel)
      .option('--prompt <text>', 'prompt text')
      .option('--prompt-file <file>', 'read the prompt from a file')
      .option('--input-ids <file>', 'a JSON array of token ids (models without a tokenizer)')
      .option('--chat <file>', 'a JSON file of chat messages [{role, content}], rendered with the chat template')
      .option('--max-new-tokens <n>', 'tokens to generate', int('max-new-tokens', 1), 64)
      .option('--temperature <t>', 'sampling temperature (0 = greedy)', num('temperature'))
      .option('--top-k <k>', 'sample among the k most likely tokens', int('top-k', 1))
      .option('--top-p <p>', 'nucleus sampling mass', num('top-p'))
      .option('--seed <s>', 'sampling seed', int('seed', 0))
      .option('--json', 'print one JSON object instead of streaming text')
      .option('--trace <file>', 'record which prompt positions each layer and KV head kept'),
  ).action((model: string, f: Flags) =>
    run(async () => {
      const sources = [f.prompt !== undefined, !!f.promptFile, !!f.inputIds, !!f.chat].filter(Boolean).length;
      if (sources !== 1) throw new Error('give exactly one of --prompt, --prompt-file, --input-ids, --chat');
      const c = cacheOptions(f); // validated before the model loads
      const bar = progress({ label: 'loading', total: 0 });
      const engine = await Engine.load(model, { heads: f.heads, dtype: f.dtype, onProgress: (d, t) => bar.tick(0, `${d}/${t} tensors`) });
      bar.done();
      let prompt = f.prompt ?? (f.promptFile ? fs.readFileSync(f.promptFile, 'utf8') : undefined);
      let inputIds = f.inputIds ? readIds(f.inputIds) : undefined;
      if (f.chat) {
        if (!engine.model.tokenizer) throw new Error('--chat needs a tokenizer');
        prompt = engine.model.tokenizer.renderChat(JSON.parse(fs.readFileSync(f.chat, 'utf8')), { addGenerationPrompt: true });
        inputIds = engine.model.tokenizer.encode(prompt, { addSpecialTokens: false }); // the template places BOS itself
      }
      const pbar = progress({ label: 'prefill', total: 0, unit: 'chunk' });
      const r = await engine.generate({
        ...c,
        prompt,
        inputIds,
        maxNewTokens: f.maxNewTokens,
        temperature: f.temperature,
        topK: f.topK,
        topP: f.topP,
        seed: f.seed,
        keepSession: !!f.trace,
        onPrefillStep: (d, t) => pbar.tick(1, `${d}/${t}`),
        onText: f.json ? undefined : (t) => process.stdout.write(t),
      });
      pbar.done();
      if (f.trace && r.session) await writeTrace(f.trace, r.session, engine, prompt ?? '', r);
      r.session?.release();
      const { session: _s, ...out } = r;
      if (f.json) process.stdout.write(`${JSON.stringify(out)}\n`);
      else process.stdout.write(engine.model.tokenizer ? '\n' : `${JSON.stringify(r.tokens)}\n`);
    }),
  );
}
