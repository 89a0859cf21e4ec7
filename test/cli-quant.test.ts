/**
 * `--dtype q8|q4` on the command line (built `dist/`): bad values are one clean line naming the choices, before any
 * model is loaded; locret-compile writes a q4 bundle (dtype per tensor in the manifest); plan counts q4 bytes.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ROOT, TINY_LLAMA } from './paths.js';

const CLI = path.join(ROOT, 'dist/cli/locret.js');
const COMPILE = path.join(ROOT, 'dist/cli/locret-compile.js');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'locret-cli-quant-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
const node = (args: string[]) => spawnSync(process.execPath, args, { encoding: 'utf8', cwd: ROOT });

describe('--dtype q8|q4 on the command line', () => {
  it('a bad value is one clean line listing f16, f32, q8, q4', () => {
    const cases = [
      [COMPILE, TINY_LLAMA, '-o', path.join(tmp, 'never'), '--dtype', 'q3'],
      [CLI, 'generate', TINY_LLAMA, '--prompt', 'x', '--dtype', 'q5'],
      [CLI, 'eval', TINY_LLAMA, '--data', 'none.jsonl', '--dtype', 'int4'],
      [CLI, 'bench', '--shape', 'llama-3.1-8b', '--dtype', 'q2'],
    ];
    for (const args of cases) {
      const r = node(args);
      const what = args.slice(1).join(' ');
      expect(r.status, what).not.toBe(0);
      expect(r.stderr.trim().split('\n'), what).toHaveLength(1);
      expect(r.stderr, what).toMatch(/--dtype.*invalid.*f16, f32, q8, q4/);
    }
    expect(fs.existsSync(path.join(tmp, 'never'))).toBe(false);
  });

  it('locret-compile --dtype q4 writes a q4 bundle; plan --dtype q4 counts 4.5 bits per backbone weight', () => {
    const out = path.join(tmp, 'q4');
    const c = node([COMPILE, TINY_LLAMA, '-o', out, '--dtype', 'q4']);
    expect(c.status, c.stderr).toBe(0);
    expect(c.stderr).toMatch(/wrote .*\(q4\)/);
    const m = JSON.parse(fs.readFileSync(path.join(out, 'bundle.json'), 'utf8'));
    expect(m.tensors.find((t: { name: string }) => t.name === 'L0.gate_up').dtype).toBe('q4');
    expect(m.tensors.find((t: { name: string }) => t.name === 'L0.attn_norm').dtype).toBe('f32');
    const p = node([CLI, 'plan', TINY_LLAMA, '--context', '1024', '--dtype', 'q4', '--json']);
    expect(p.status, p.stderr).toBe(0);
    const plan = JSON.parse(p.stdout);
    expect(plan.detail.bytes_per_param).toBe(0.5625);
  });
});
