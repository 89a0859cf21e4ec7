import * as fs from 'node:fs';
import { Option, type Command } from 'commander';
import { Engine } from '../runtime/engine.js';
import { progress } from '../runtime/progress.js';
import { loadCheckpoint, saveCheckpoint } from '../runtime/train/checkpoint.js';
import { openTrainData } from '../runtime/train/data.js';
import { headDimsOf, writeHeads } from '../runtime/train/heads.js';
import { HeadTrainer, TRAIN_DEFAULTS } from '../runtime/train/trainer.js';
import { int, num, run } from './options.js';

interface Flags {
  data: string;
  steps: number;
  output: string;
  lr: number;
  maxTokens: number;
  resume?: string;
  seed: number;
  checkpointEvery: number;
  chunk: number;
  weightDecay: number;
  outDtype: 'bf16' | 'f32';
  dtype: 'f16' | 'f32';
}

const fmt = (x: number, d = 4) => (Number.isFinite(x) ? x.toFixed(d) : '-');

export function trainCommand(program: Command, defaultModel: string): void {
  program
    .command('train-heads')
    .description('train Locret retaining heads on a frozen model (the paper recipe) and write them as safetensors')
    .argument('[model]', 'bundle or Hugging Face directory', defaultModel)
    .requiredOption('--data <source>', "'synthetic:<corpus.jsonl[.xz]>' (retrieval tasks) or a ShareGPT .jsonl file")
    .requiredOption('--steps <n>', 'optimizer steps (one sample each)', int('steps', 1))
    .requiredOption('-o, --output <file>', 'heads file to write (.safetensors); checkpoints go to <file>.ckpt')
    .option('--lr <lr>', 'peak learning rate (linear warm-up over 2/3 of the steps, then linear decay)', num('lr'), TRAIN_DEFAULTS.lr)
    .option('--max-tokens <n>', 'prompt + answer tokens per sample, at most', int('max-tokens', 128), TRAIN_DEFAULTS.maxTokens)
    .option('--resume <ckpt>', 'continue from a checkpoint written by an earlier run')
    .option('--seed <s>', 'seed of the head initialization and the sample order', int('seed', 0), 0)
    .option('--checkpoint-every <n>', 'write <output>.ckpt every n steps (0: only at the end)', int('checkpoint-every', 0), 100)
    .option('--chunk <n>', 'forward chunk (rows per submission)', int('chunk', 1), TRAIN_DEFAULTS.chunk)
    .option('--weight-decay <wd>', 'AdamW weight decay (torch default, as the official trainer)', num('weight-decay'), TRAIN_DEFAULTS.weightDecay)
    .addOption(new Option('--out-dtype <dtype>', 'dtype of the written heads').choices(['bf16', 'f32']).default('bf16'))
    .addOption(new Option('--dtype <dtype>', 'backbone weight storage on the GPU').choices(['f16', 'f32']).default('f16'))
    .action((model: string, f: Flags) =>
      run(async () => {
        const t0 = performance.now();
        const lbar = progress({ label: 'loading', total: 0 });
        const engine = await Engine.load(model, { dtype: f.dtype, onProgress: (d, t) => lbar.tick(0, `${d}/${t} tensors`) });
        lbar.done();
        const tok = engine.model.tokenizer;
        if (!tok) throw new Error(`${model} has no tokenizer.json: training data is text`);
        const data = openTrainData(f.data, { maxTokens: f.maxTokens, seed: f.seed, tokenizer: tok, bos: engine.config.bosTokenId });
        const opts = { steps: f.steps, lr: f.lr, maxTokens: f.maxTokens, seed: f.seed, chunk: f.chunk, weightDecay: f.weightDecay };
        const ckptFile = `${f.output}.ckpt`;
        let init;
        if (f.resume) {
          const c = loadCheckpoint(f.resume, headDimsOf(engine.config));
          if (c.meta.steps !== f.steps) throw new Error(`${f.resume} belongs to a run of ${c.meta.steps} steps (the schedule depends on it); pass --steps ${c.meta.steps}`);
          if (c.meta.seed !== f.seed || c.meta.maxTokens !== f.maxTokens)
            process.stderr.write(`locret: note: checkpoint was trained with seed ${c.meta.seed}, max-tokens ${c.meta.maxTokens}\n`);
          init = { tensors: c.tensors, step: c.meta.step };
        }
        engine.runner.resetPeak();
        const trainer = new HeadTrainer(engine.runner, engine.config, engine.weights, opts, init);
        process.stderr.write(`training ${engine.config.numLayers} heads on ${data.describe}, steps ${trainer.step}..${f.steps}\n`);
        const bar = progress({ label: 'train', total: f.steps - trainer.step, unit: 'step' });
        let last = { loss: NaN, overlap: NaN };
        const recent: number[] = []; // losses of the last 10 steps: single steps see single samples
        let tokens = 0;
        const tTrain = performance.now();
        const save = async () => saveCheckpoint(ckptFile, trainer.headDims, await trainer.heads.download(), trainer.checkpointMeta(f.data));
        while (trainer.step < f.steps) {
          const r = await trainer.train(data.sample(trainer.step));
          tokens += r.tokens;
          last = r;
          recent.push(r.loss);
          if (recent.length > 10) recent.shift();
          bar.tick(1, `loss ${fmt(r.loss)}  top10% ${fmt(r.overlap, 3)}  lr ${r.lr.toExponential(2)}`);
          if (f.checkpointEvery > 0 && trainer.step % f.checkpointEvery === 0 && trainer.step < f.steps) await save();
        }
        bar.done();
        const trainSecs = (performance.now() - tTrain) / 1000;
        await save();
        const t = await trainer.heads.download();
        writeHeads(f.output, trainer.headDims, t, f.outDtype, { steps: String(f.steps), lr: String(f.lr), data: f.data });
        const peak = engine.runner.peakBytes;
        trainer.release();
        const summary = {
          output: f.output,
          checkpoint: ckptFile,
          steps: f.steps,
          final_loss: last.loss,
          mean_loss_last_10: recent.length ? recent.reduce((a, b) => a + b, 0) / recent.length : null,
          final_top10_overlap: last.overlap,
          wall_s: Number(((performance.now() - t0) / 1000).toFixed(1)),
          train_tokens_per_s: trainSecs > 0 ? Number((tokens / trainSecs).toFixed(1)) : null,
          peak_gpu_bytes: peak,
        };
        process.stdout.write(`${JSON.stringify(summary, null, 2)}\n`);
        if (!fs.existsSync(f.output)) throw new Error(`${f.output} was not written`);
      }),
    );
}
