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

/** A switch that is on when set to `1`. */
export function envFlag(name: string): boolean {
  return env(name) === '1';
}

/** A Node built-in module when running in Node (e.g. `node:fs` for kernel dumps), else undefined. */
export function nodeModule<T>(id: string): T | undefined {
  return proc()?.getBuiltinModule?.(id) as T | undefined;
}
