import { Option, type Command } from 'commander';
import { runBench, randomWeights } from '../runtime/bench.js';
import { defaultGpu } from '../runtime/gpu/device.js';
import { GpuRunner } from '../runtime/gpu/runner.js';
import { openModel } from '../runtime/model-source.js';
import { shapeConfig, SHAPES } from '../runtime/shapes.js';
import { uploadWeights } from '../runtime/weights.js';
import { int, kvDtypeOption, run } from './options.js';

interface Flags {
  shape?: string;
  dtype: 'f16' | 'f32' | 'q8' | 'q4';
  kvDtype?: 'f32' | 'f16' | 'int8';
  context: number;
  chunks: string;
  budget: number;
  stabilizer: number;
  decodeTokens: number;
  heads?: string;
  json?: boolean;
}

export function benchCommand(program: Command): void {
  program
    .command('bench')
    .description('prefill and decode speed under the Locret policy, with the device ceilings measured in the same run')
    .argument('[model]', 'bundle or Hugging Face directory (or use --shape)')
    .addOption(new Option('--shape <name>', 'random weights of a published shape, generated on the GPU').choices(Object.keys(SHAPES)))
    .addOption(new Option('--dtype <dtype>', 'weight storage (q8 / q4: block-quantized backbone matrices)').choices(['f16', 'f32', 'q8', 'q4']).default('f16'))
    .addOption(kvDtypeOption())
    .option('--context <n>', 'cache length at which decode is timed', int('context', 1), 16384)
    .option('--chunks <list>', 'prefill chunk sizes, comma separated', '1024,4096')
    .option('--budget <n>', 'cache budget b', int('budget', 1), 16384)
    .option('--stabilizer <n>', 'stabilizer n_s', int('stabilizer', 0), 2500)
    .option('--decode-tokens <n>', 'decode steps timed', int('decode-tokens', 2), 32)
    .option('--heads <file>', 'retaining heads for an HF directory')
    .option('--json', 'print one JSON object')
    .action((model: string | undefined, f: Flags) =>
      run(async () => {
        if (!!model === !!f.shape) throw new Error('give a model directory or --shape, not both');
        const chunks = f.chunks.split(',').map((x) => int('chunks', 1)(x.trim()));
        const runner = new GpuRunner(await defaultGpu());
        let cfg;
        let weights;
        if (f.shape) {
          cfg = shapeConfig(f.shape);
          weights = randomWeights(runner, cfg, f.dtype);
        } else {
          const src = openModel(model!, { heads: f.heads });
          if (!src.hasHeads) throw new Error(`${model} has no retaining heads: pass --heads`);
          cfg = src.config;
          weights = uploadWeights(runner, src, f.dtype);
        }
        const r = await runBench(runner, cfg, weights, f.shape ?? model!, {
          chunks, budget: f.budget, stabilizer: Math.min(f.stabilizer, f.budget), context: f.context, decodeTokens: f.decodeTokens, kvDtype: f.kvDtype,
          log: (s) => process.stderr.write(`bench: ${s}\n`),
        });
        if (f.json) {
          process.stdout.write(`${JSON.stringify(r)}\n`);
          return;
        }
        const gib = (n: number) => `${(n / 2 ** 30).toFixed(2)} GiB`;
        const dec = r.breakdown?.decode;
        const rows: [string, string][] = [
          ['device', `${r.device}${r.shader_bound_checks ? '' : ' (shaders without bound checks)'}`],
          ['model', `${r.model} (${r.weight_dtype}, ${gib(r.weight_bytes)} weights, ${r.kv_dtype} KV cache)`],
          ...Object.entries(r.prefill_tokens_per_s).map(([k, v]): [string, string] => [`prefill ${k.replace('_', ' ')}`, `${v.toFixed(0)} tokens/s`]),
          ['prefill / matmul ceiling', `${(100 * r.prefill_matmul_ratio).toFixed(1)}% of ${r.matmul_tflops.toFixed(1)} TFLOP/s`],
          ['decode (greedy, queued)', `${r.decode_ms_per_token.toFixed(2)} ms/token at cache ${r.decode_cache_len}${r.decode_keys_rotated ? ', keys rotated once' : ''}${r.decode_int8_dot ? ', int8 dot products' : ''}`],
          ['decode (readback per token)', `${r.decode_roundtrip_ms_per_token.toFixed(2)} ms/token`],
          ['decode (sampled: T 0.6, top-p 0.9)', `${r.decode_sampled_ms_per_token.toFixed(2)} ms/token`],
          ['decode / bandwidth floor', `${(100 * r.decode_bandwidth_ratio).toFixed(1)}% of ${r.copy_gb_per_s.toFixed(0)} GB/s copy`],
          ['eviction (select + compact)', `${(100 * r.eviction_share).toFixed(2)}% of a chunk`],
          ['scoring (retaining heads)', `${(100 * r.scoring_share).toFixed(2)}% of a chunk`],
          ['peak GPU memory', gib(r.peak_gpu_bytes)],
          ...(dec ? [[
            'decode step host encoding',
            `${dec.encode_ms.toFixed(2)} ms vs ${dec.total_ms.toFixed(2)} ms of GPU time${dec.encode_ms > dec.total_ms ? ': decode is limited by the host here' : ''}`,
          ] as [string, string]] : []),
          ...(['prefill', 'decode'] as const).flatMap((k): [string, string][] => {
            const g = r.breakdown?.[k].gpu;
            if (!g) return [];
            const ops = Object.entries(g.by_group_ms).sort((a, b) => b[1] - a[1]).map(([op, ms]) => `${op} ${ms.toFixed(3)}`);
            return [[`${k === 'prefill' ? 'chunk' : 'decode step'} GPU profile (ms)`, `kernels ${g.kernels_ms.toFixed(3)} + gaps ${g.gaps_ms.toFixed(3)}: ${ops.join(', ')}`]];
          }),
        ];
        const w = Math.max(...rows.map(([k]) => k.length));
        process.stdout.write(rows.map(([k, v]) => `${k.padEnd(w)}  ${v}`).join('\n') + '\n');
      }),
    );
}
