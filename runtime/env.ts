/**
 * Environment switches (LOCRET_*) read the same way everywhere: from `process.env` in Node, and as unset in a
 * browser, where `process` does not exist. Library code never touches `process` directly, so the compiler and
 * runtime bundle for the web unchanged.
 */
type NodeLike = { env?: Record<string, string | undefined>; getBuiltinModule?: (id: string) => unknown };

const proc = (): NodeLike | undefined => (globalThis as { process?: NodeLike }).process;

export function env(name: string): string | undefined {
  return proc()?.env?.[name];
}

/** The `key=value` entries of a comma-separated tuning switch (`LOCRET_GEMV="wg=256,r=4"`); empty entries skipped. */
export function envPairs(spec: string | undefined): [string, string | undefined][] {
  return (spec ?? '').split(',').filter(Boolean).map((s) => s.split('=') as [string, string | undefined]);
}

/**
 * `parse` of a switch's value, redone only when the value changes: kernels that plan every layer of every decode
 * step ask for their tuning each time.
 */
export function parsedOnce<T>(parse: (spec: string | undefined) => T): (spec: string | undefined) => T {
  let last: { spec: string | undefined; value: T } | undefined;
  return (spec) => {
    if (!last || last.spec !== spec) last = { spec, value: parse(spec) };
    return last.value;
  };
}

/** A switch that is on when set to `1`. */
export function envFlag(name: string): boolean {
  return env(name) === '1';
}

/** A Node built-in module when running in Node (e.g. `node:fs` for kernel dumps), else undefined. */
export function nodeModule<T>(id: string): T | undefined {
  return proc()?.getBuiltinModule?.(id) as T | undefined;
}
