#!/usr/bin/env node
import { Command, Option } from 'commander';
import { compileModel, type CompileOptions } from '../runtime/compile.js';
import { progress, type ProgressBar } from '../runtime/progress.js';
import { run } from './options.js';

const program = new Command('locret-compile')
  .description('compile a Hugging Face model directory into a self-contained locret bundle')
  .argument('<hf-dir>', 'directory with config.json, *.safetensors, tokenizer.json')
  .requiredOption('-o, --out <dir>', 'bundle directory to write')
  .addOption(new Option('--dtype <dtype>', 'weight storage (q8 / q4: block-quantized backbone matrices, groups of 32)').choices(['f16', 'f32', 'q8', 'q4']).default('f16'))
  .option('--heads <file>', 'Locret retaining heads (.safetensors, or the official torch .bin)')
  .action((dir: string, f: { out: string; dtype: CompileOptions['dtype']; heads?: string }) =>
    run(async () => {
      let bar: ProgressBar | null = null;
      const m = compileModel(dir, f.out, {
        dtype: f.dtype,
        heads: f.heads,
        onNote: (n) => process.stderr.write(`locret-compile: ${n}\n`),
        onProgress: (_d, total, name) => {
          bar ??= progress({ label: 'compile', unit: 'tensor', total });
          bar.tick(1, name);
        },
      });
      (bar as ProgressBar | null)?.done();
      const bytes = m.tensors.reduce((a, t) => a + t.byteLength, 0);
      process.stderr.write(`wrote ${f.out}: ${m.tensors.length} tensors, ${(bytes / 2 ** 20).toFixed(1)} MiB (${f.dtype})${m.heads ? ', retaining heads' : ''}\n`);
    }),
  );

await program.parseAsync();
