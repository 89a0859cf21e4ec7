/**
 * The LOCRET_* tuning switches: `key=value` entries, a parse redone only when the value changes, and the kernels'
 * switches read through them (LOCRET_SGMAT picks a variant of the right stream count, anything else is ignored).
 */
import { describe, expect, it } from 'vitest';
import { envPairs, parsedOnce } from '../runtime/env.js';
import { sgmatPick } from '../compiler/kernels/mm-sgmat.js';
import { withEnv } from './with-env.js';

describe('tuning switches', () => {
  it('envPairs splits entries and keys from values, skipping empty entries', () => {
    expect(envPairs(undefined)).toEqual([]);
    expect(envPairs('v2,,kl=16,pf=')).toEqual([['v2'], ['kl', '16'], ['pf', '']]);
  });

  it('parsedOnce parses a value once, and again when it changes', () => {
    let calls = 0;
    const parse = parsedOnce((s) => ({ s, n: ++calls }));
    const a = parse('x=1');
    expect(parse('x=1')).toBe(a);
    expect(parse('x=2')).toEqual({ s: 'x=2', n: 2 });
    expect(parse(undefined)).toEqual({ s: undefined, n: 3 });
    expect(calls).toBe(3);
  });

  it('LOCRET_SGMAT overrides a rule with a variant of its stream count only', () => {
    const [plain, swiglu] = withEnv({ LOCRET_SGMAT: undefined }, () => [sgmatPick(1, false, 1 << 20, 1024), sgmatPick(2, true, 1 << 20, 1024)]);
    withEnv({ LOCRET_SGMAT: 'plain=m64n64,swiglu=m64n64' }, () => {
      expect(sgmatPick(1, false, 1 << 20, 1024)).toBe('m64n64');
      expect(sgmatPick(2, true, 1 << 20, 1024)).toBe(swiglu); // one-stream variant for the two-stream rule: ignored
    });
    expect(withEnv({ LOCRET_SGMAT: 'plain=nope,,plain' }, () => sgmatPick(1, false, 1 << 20, 1024))).toBe(plain);
  });
});
