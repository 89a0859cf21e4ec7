/**
 * Environment switches for tests. Kernel and plan choices read their switches when a call is planned, so the body
 * must plan (build the kernel, lower the session) inside; every switch gets its previous value back afterwards, set
 * or unset, also when the body throws or its promise rejects.
 */
export function withEnv<T>(vars: Readonly<Record<string, string | undefined>>, body: () => T): T {
  const saved = Object.keys(vars).map((k) => [k, process.env[k]] as const);
  const put = (k: string, v: string | undefined) => {
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  };
  for (const [k, v] of Object.entries(vars)) put(k, v);
  const restore = () => saved.forEach(([k, v]) => put(k, v));
  let out: T;
  try {
    out = body();
  } catch (e) {
    restore();
    throw e;
  }
  if (out instanceof Promise) return out.finally(restore) as T;
  restore();
  return out;
}
