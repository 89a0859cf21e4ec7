/**
 * Sizes of a shader's `var<workgroup>` declarations, and the layout rule the subgroup-matrix kernels need.
 *
 * Drivers place workgroup variables at their types' natural alignment (2 bytes for an f16 array, 4 for a u32) in an
 * order of their choosing, while a fragment load or store from workgroup memory reads 16-byte vectors and assumes
 * its array starts on a 16-byte boundary. One 4-byte variable placed ahead of the f16 arrays therefore shifts every
 * fragment by a few elements, silently (NVIDIA, Vulkan). Keeping every workgroup variable a multiple of 16 bytes
 * keeps every start aligned whatever the order.
 */

export interface WorkgroupVar {
  readonly name: string;
  readonly type: string;
  /** bytes, the WGSL size of the type (array stride × count) */
  readonly bytes: number;
}

const SCALAR: Readonly<Record<string, number>> = { f16: 2, f32: 4, u32: 4, i32: 4, bool: 4 };

/** [size, alignment] of a WGSL type made of scalars, vectors and fixed-size arrays; undefined if not one of those */
function layout(t: string): [number, number] | undefined {
  t = t.trim();
  const s = SCALAR[t];
  if (s !== undefined) return [s, s];
  const v = /^vec([234])<(\w+)>$/.exec(t);
  if (v) {
    const e = SCALAR[v[2]!];
    if (e === undefined) return undefined;
    const n = Number(v[1]);
    return [n * e, (n === 3 ? 4 : n) * e];
  }
  const a = /^array<(.+),\s*(\d+)u?>$/.exec(t);
  if (a) {
    const el = layout(a[1]!);
    if (!el) return undefined;
    const stride = Math.ceil(el[0] / el[1]) * el[1];
    return [stride * Number(a[2]), el[1]];
  }
  return undefined;
}

/** Every `var<workgroup>` of a shader with its size; a type this cannot size throws (name and type in the message). */
export function workgroupVars(code: string): WorkgroupVar[] {
  const out: WorkgroupVar[] = [];
  for (const m of code.matchAll(/var<workgroup>\s+(\w+)\s*:\s*([^;]+);/g)) {
    const l = layout(m[2]!);
    if (!l) throw new Error(`workgroup variable ${m[1]}: cannot size type ${m[2]}`);
    out.push({ name: m[1]!, type: m[2]!.trim(), bytes: l[0] });
  }
  return out;
}

/** Throws unless every workgroup variable of a subgroup-matrix kernel is a multiple of 16 bytes (see above). */
export function checkFragmentAlignment(kernelName: string, code: string): void {
  const bad = workgroupVars(code).filter((v) => v.bytes % 16 !== 0);
  if (bad.length)
    throw new Error(`${kernelName}: workgroup variables of a subgroup-matrix kernel must be multiples of 16 bytes, ` +
      `${bad.map((v) => `${v.name}: ${v.type} is ${v.bytes}`).join(', ')}`);
}
