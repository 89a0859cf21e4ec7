/**
 * The command-line tools as a user runs them (built `dist/`, as `npm install` leaves it): generation with JSON
 * output, eviction traces and their heatmap, the memory planner, and clear one-line errors for bad input.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { fixture, ROOT, TINY_LLAMA } from './paths.js';

const CLI = path.join(ROOT, 'dist/cli/locret.js');
const COMPILE = path.join(ROOT, 'dist/cli/locret-compile.js');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'locret-cli-'));
const run = (args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', cwd: ROOT });

// a prompt long enough that a budget of 64 evicts: haystack lines, a needle, the question
const prompt = [
  ...Array.from({ length: 30 }, (_, i) => `Line ${i} of the notes says nothing in particular about the weather.`),
  ' The pass key of Alice is 48213. Remember it. 48213 is the pass key of Alice.',
  ...Array.from({ length: 10 }, (_, i) => `More filler text number ${i} follows here.`),
  'What is the pass key of Alice? The pass key of Alice is',
].join('\n');

describe('locret CLI', () => {
  it('generate --json reports the run; --trace records what each layer kept; trace-view renders it', () => {
    expect(fs.existsSync(CLI), 'dist/ is built by npm install').toBe(true);
    const trace = path.join(tmp, 'trace.json');
    const heads = fixture('models/tiny-llama/retaining_heads.safetensors');
    const r = run(['generate', TINY_LLAMA, '--heads', heads, '--prompt', prompt, '--max-new-tokens', '4', '--policy', 'locret',
      '--budget', '64', '--chunk', '64', '--local', 'question', '--json', '--trace', trace]);
    expect(r.status, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout.trim().split('\n').at(-1)!);
    expect(out.tokens).toHaveLength(4);
    expect(out.policy).toBe('locret');
    expect(out.budget).toBe(64);
    expect(out.evicted_tokens).toBeGreaterThan(0);
    expect(out.peak_gpu_bytes).toBeGreaterThan(out.cache_peak_bytes);
    const t = JSON.parse(fs.readFileSync(trace, 'utf8'));
    expect(t.layers).toBe(8);
    expect(t.kept).toHaveLength(8);
    for (const layer of t.kept)
      for (const head of layer) {
        // the budget, plus the question appended without eviction
        expect(head.length).toBeGreaterThanOrEqual(64);
        expect(head.length).toBeLessThan(64 + 30);
        expect([...head].sort((a: number, b: number) => a - b)).toEqual(head); // original order preserved
      }
    expect(t.marks.length).toBe(1);
    const html = path.join(tmp, 'trace.html');
    const v = run(['trace-view', trace, '-o', html]);
    expect(v.status, v.stderr).toBe(0);
    expect(fs.readFileSync(html, 'utf8')).toContain('<svg');
  });

  it('bench --json on a small model: every field of the report, measured on this device', () => {
    const heads = fixture('models/tiny-llama/retaining_heads.safetensors');
    const r = run(['bench', TINY_LLAMA, '--heads', heads, '--json', '--chunks', '64', '--context', '256', '--budget', '128',
      '--stabilizer', '32', '--decode-tokens', '4']);
    expect(r.status, r.stderr).toBe(0);
    const b = JSON.parse(r.stdout.trim().split('\n').at(-1)!);
    expect(b.device).toEqual(expect.any(String));
    expect(b.shader_bound_checks, 'Node drops the bound checks by default').toBe(false);
    expect(b.decode_keys_rotated, 'an f16 cache decodes on keys rotated once').toBe(true);
    expect(b.weight_dtype).toBe('f16');
    expect(b.decode_int8_dot, 'f16 weights take no int8 dot products').toBe(false);
    expect(Object.keys(b.prefill_tokens_per_s)).toEqual(['chunk_64']);
    for (const k of ['decode_ms_per_token', 'decode_roundtrip_ms_per_token', 'decode_sampled_ms_per_token', 'copy_gb_per_s', 'matmul_tflops', 'decode_bandwidth_ratio', 'prefill_matmul_ratio'])
      expect(b[k], k).toBeGreaterThan(0);
    expect(b.prefill_tokens_per_s.chunk_64).toBeGreaterThan(0);
    // the cache holds the budget plus a chunk; decode is timed at the budget (the context is evicted down to it)
    expect(b.decode_cache_len).toBe(128);
    for (const k of ['eviction_share', 'scoring_share']) {
      expect(b[k], k).toBeGreaterThan(0);
      expect(b[k], k).toBeLessThan(1);
    }
    expect(b.peak_gpu_bytes).toBeGreaterThan(b.weight_bytes);
    expect(Object.keys(b.breakdown.decode.by_op)).toEqual(expect.arrayContaining(['qkv_rope', 'attention', 'linear_residual']));
    // the timestamp profile of the step (the CPU driver has timestamp queries): every op of the step, times that add up
    for (const step of ['prefill', 'decode']) {
      const g = b.breakdown[step].gpu;
      expect(Object.keys(g.by_group_ms).sort(), step).toEqual(Object.keys(b.breakdown[step].by_op).sort());
      for (const v of Object.values(g.by_group_ms)) expect(v).toBeGreaterThan(0);
      const sum = Object.values(g.by_group_ms).reduce((x: number, y) => x + (y as number), 0);
      expect(sum).toBeCloseTo(g.kernels_ms, 6);
      expect(g.gaps_ms).toBeGreaterThanOrEqual(0);
      expect(g.span_ms).toBeCloseTo(g.kernels_ms + g.gaps_ms, 6);
    }
  }, 300_000);

  it('plan --json: Llama-3.1-8B at 128K fits 24GB with Locret, not with the full cache', () => {
    const cfg = path.join(tmp, 'config.json');
    fs.writeFileSync(cfg, JSON.stringify({
      architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_size: 4096, intermediate_size: 14336, num_hidden_layers: 32,
      num_attention_heads: 32, num_key_value_heads: 8, vocab_size: 128256, rms_norm_eps: 1e-5, max_position_embeddings: 131072,
      rope_theta: 500000, rope_scaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 },
      tie_word_embeddings: false, torch_dtype: 'bfloat16', bos_token_id: 128000, eos_token_id: [128001, 128008, 128009], hidden_act: 'silu',
    }));
    const a = JSON.parse(execFileSync(process.execPath, [CLI, 'plan', cfg, '--context', '131072', '--budget', '16384', '--chunk', '1024', '--gpu-memory', '24GB', '--json'], { encoding: 'utf8' }));
    expect(a.fits).toBe(true);
    expect(a.total_bytes).toBeLessThan(24e9);
    const b = JSON.parse(execFileSync(process.execPath, [CLI, 'plan', cfg, '--context', '131072', '--policy', 'full', '--gpu-memory', '24GB', '--json'], { encoding: 'utf8' }));
    expect(b.fits).toBe(false);
  });

  it('perplexity --json: f32 weights against f16 ones, a small KL that is not zero; a tail after an evicted context', () => {
    const text = path.join(tmp, 'text.txt');
    fs.writeFileSync(text, `${prompt}\n\n${prompt.split('\n').reverse().join('\n')}\n`);
    const r = run(['perplexity', TINY_LLAMA, '--text', text, '--tokens', '48', '--windows', '2', '--dtype', 'f32', '--against', TINY_LLAMA, '--against-dtype', 'f16', '--json']);
    expect(r.status, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout.trim().split('\n').at(-1)!);
    expect(out.windows).toBe(2);
    expect(out.predictions).toBe(2 * 47);
    expect(out.perplexity).toBeCloseTo(Math.exp(out.nll), 6);
    // f16 weights and cache move this model's predictions by ~1e-3 nats: not zero (the flag took), far below q4's
    expect(out.against.kl_mean).toBeGreaterThan(1e-6);
    expect(out.against.kl_mean).toBeLessThan(0.02);
    expect(out.against.top1_agreement).toBeGreaterThan(0.9);
    expect(Math.abs(out.against.nll - out.nll)).toBeLessThan(0.05);
    // a scored tail after a context evicted by the streaming policy: the tail's predictions, moved by the eviction
    const t = run(['perplexity', TINY_LLAMA, '--text', text, '--tokens', '64', '--windows', '1', '--scored', '8', '--policy', 'streaming',
      '--budget', '16', '--chunk', '16', '--against', TINY_LLAMA, '--json']);
    expect(t.status, t.stderr).toBe(0);
    const tail = JSON.parse(t.stdout.trim().split('\n').at(-1)!);
    expect(tail.scored_per_window).toBe(8);
    expect(tail.predictions).toBe(7);
    expect(tail.against.kl_mean).toBeGreaterThan(1e-3);
  });

  it('bad input gives one clear line and a non-zero exit', () => {
    const cases: [string[], RegExp][] = [
      [['generate', path.join(tmp, 'nope'), '--prompt', 'x'], /no such model directory/],
      [['generate', TINY_LLAMA], /exactly one of --prompt/],
      [['generate', TINY_LLAMA, '--prompt', 'x', '--budget', 'lots'], /--budget must be an integer/],
      [['generate', TINY_LLAMA, '--prompt', 'x', '--policy', 'locret'], /needs retaining heads/],
      [['generate', TINY_LLAMA, '--prompt', 'x', '--policy', 'lru'], /unknown policy 'lru'/],
      [['generate', TINY_LLAMA, '--prompt', 'x', '--kv-dtype', 'int4'], /--kv-dtype.*'int4' is invalid/],
      [['perplexity', TINY_LLAMA, '--text', path.join(tmp, 'nope.txt')], /cannot read .*nope\.txt/],
      [['perplexity', TINY_LLAMA, '--text', path.join(tmp, 'nope.txt'), '--tokens', '1'], /--tokens must be an integer >= 2/],
    ];
    for (const [args, re] of cases) {
      const r = run(args);
      expect(r.status, args.join(' ')).not.toBe(0);
      expect(r.stderr, args.join(' ')).toMatch(re);
      expect(r.stderr).not.toMatch(/\n\s+at /); // no stack trace
    }
  });

  it('locret-compile writes a bundle that generates the same tokens as the HF directory', () => {
    const bundle = path.join(tmp, 'bundle');
    const c = spawnSync(process.execPath, [COMPILE, TINY_LLAMA, '-o', bundle, '--dtype', 'f16'], { encoding: 'utf8' });
    expect(c.status, c.stderr).toBe(0);
    const a = run(['generate', bundle, '--prompt', 'The kernel schedules tasks', '--max-new-tokens', '6', '--json']);
    const b = run(['generate', TINY_LLAMA, '--prompt', 'The kernel schedules tasks', '--max-new-tokens', '6', '--json']);
    expect(a.status, a.stderr).toBe(0);
    expect(JSON.parse(a.stdout).tokens).toEqual(JSON.parse(b.stdout).tokens);
    // a corrupted blob is caught by the per-tensor hash
    const blob = fs.readdirSync(bundle).find((f) => f.startsWith('weights-'))!;
    const fd = fs.openSync(path.join(bundle, blob), 'r+');
    fs.writeSync(fd, Buffer.from([1, 2, 3, 4]), 0, 4, 300);
    fs.closeSync(fd);
    const bad = run(['generate', bundle, '--prompt', 'x', '--max-new-tokens', '1']);
    expect(bad.status).not.toBe(0);
    expect(bad.stderr).toMatch(/corrupt/);
  });
});
