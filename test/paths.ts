/** Where tests find models and data: the model shipped in the repo, and the fixture tree beside the checkout. */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const TINY_LLAMA = path.join(ROOT, 'models/tiny-llama');
/** the shared fixtures (other architectures, reference heads, task sets); LOCRET_FIXTURES overrides */
export const FIXTURES = process.env.LOCRET_FIXTURES ?? path.resolve(ROOT, '../shared');

/** A fixture path that must exist: a missing fixture fails the test with a clear message (never a silent skip). */
export function fixture(...parts: string[]): string {
  const p = path.join(FIXTURES, ...parts);
  if (!fs.existsSync(p)) throw new Error(`test fixture ${p} is missing (set LOCRET_FIXTURES to the fixture directory)`);
  return p;
}
