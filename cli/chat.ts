import * as readline from 'node:readline/promises';
import type { Command } from 'commander';
import { Engine } from '../runtime/engine.js';
import type { ChatMessage } from '../runtime/io/tokenizer.js';
import { addCacheFlags, cacheOptions, int, run, type CacheFlags } from './options.js';

export function chatCommand(program: Command, defaultModel: string): void {
  addCacheFlags(
    program
      .command('chat')
      .description("interactive chat with the model's chat template, streaming replies (Ctrl-D to quit)")
      .argument('[model]', 'bundle or Hugging Face directory', defaultModel)
      .option('--system <text>', 'system message')
      .option('--max-new-tokens <n>', 'tokens per reply', int('max-new-tokens', 1), 512),
  ).action((model: string, f: CacheFlags & { system?: string; maxNewTokens: number }) =>
    run(async () => {
      const engine = await Engine.load(model, { heads: f.heads, dtype: f.dtype });
      const tok = engine.model.tokenizer;
      if (!tok) throw new Error(`${model} has no tokenizer`);
      if (!tok.chatTemplate) throw new Error(`${model} has no chat template (tokenizer_config.json "chat_template")`);
      const messages: ChatMessage[] = f.system ? [{ role: 'system', content: f.system }] : [];
      const rl = readline.createInterface({ input: process.stdin, output: process.stdout, terminal: process.stdin.isTTY });
      for (;;) {
        let line: string;
        try {
          line = await rl.question('> ');
        } catch {
          break; // stdin closed
        }
        if (!line.trim()) continue;
        messages.push({ role: 'user', content: line });
        const prompt = tok.renderChat(messages, { addGenerationPrompt: true });
        // the template already holds BOS where the model wants it
        const ids = tok.encode(prompt, { addSpecialTokens: false });
        const r = await engine.generate({ ...cacheOptions(f), inputIds: ids, maxNewTokens: f.maxNewTokens, onText: (t) => process.stdout.write(t) });
        process.stdout.write('\n');
        messages.push({ role: 'assistant', content: r.text });
      }
      rl.close();
    }),
  );
}
