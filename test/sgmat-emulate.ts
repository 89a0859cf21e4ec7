/**
 * Runs a tensor-core (subgroup-matrix) kernel on a device without the extension by rewriting its matrix operations
 * into plain WGSL with Dawn's semantics:
 *
 *   left / right operands  a handle (offset, majorness, stride) into the workgroup array they were loaded from:
 *                          element [r, c] at offset + stride·r + c (row-major) or offset + stride·c + r (col-major)
 *   result fragments       16×16 f32 spread over the subgroup's lanes (element e on lane e % size), like hardware
 *   multiply-accumulate    each lane sums its elements' 16 products straight from the operands' workgroup arrays
 *
 * Reading operands at multiply time instead of load time is exact only if the arrays do not change in between,
 * which holds for kernels that load and multiply between the same pair of barriers (mm-sgmat.ts does). Everything
 * else of the generated shader (staging, indices, barriers, norm, epilogues) runs as written, so the CPU driver
 * checks the kernel's numerics; only the extension's own syntax stays untested here.
 */
import type { KernelSpec } from '../compiler/wgsl.js';

const EXT = 'chromium_experimental_subgroup_matrix';
/** result elements per lane for subgroups of ≥ 4 lanes */
const PER_LANE = 64;

export function emulateSubgroupMatrix(k: KernelSpec): KernelSpec {
  const arrayOf = new Map<string, string>(); // operand type → the one workgroup array it is loaded from
  const stores = new Set<string>();
  let code = k.code
    .replace(`enable ${EXT};\n`, '')
    .replace('diagnostic(off, chromium.subgroup_matrix_uniformity);\n', '')
    .replace(/alias (LeftM|RightM) = subgroup_matrix_\w+<[^>]*>;/g, 'struct $1 { off: u32, cm: u32, s: u32 }')
    .replace(/alias AccM = subgroup_matrix_result<f32, 16, 16>;/, `struct AccM { m: array<f32, ${PER_LANE}> }`)
    .replace(/subgroupMatrixLoad<(\w+), (row_major|col_major)>\(&(\w+), ([^;]*), (\w+)\);/g, (_, t: string, mj: string, a: string, off: string, s: string) => {
      if (arrayOf.has(t) && arrayOf.get(t) !== a) throw new Error(`emulateSubgroupMatrix: ${t} loaded from several arrays`);
      arrayOf.set(t, a);
      return `${t}(${off}, ${mj === 'col_major' ? 1 : 0}u, ${s});`;
    })
    .replace(/subgroupMatrixStore<(row_major|col_major)>\(&(\w+), ([^;]*), (\w+), (\w+)\);/g, (_, mj: string, a: string, off: string, v: string, s: string) => {
      stores.add(a);
      return `emuStore_${a}(${off}, ${v}, ${mj === 'col_major'}, ${s});`;
    })
    .replace(/subgroupMatrixMultiplyAccumulate\(/g, 'emuMma(')
    .replace(/fn main\((.*)\) \{/, (_, params: string) =>
      `fn main(${params}, @builtin(subgroup_invocation_id) emuLane_: u32, @builtin(subgroup_size) emuSize_: u32) {\n  emuLane = emuLane_;\n  emuSize = emuSize_;`);
  if (!code.includes('emuLane = emuLane_;')) throw new Error(`emulateSubgroupMatrix: no entry point found in ${k.name}`);
  if (/subgroup_?[mM]atrix/.test(code)) throw new Error(`emulateSubgroupMatrix: unhandled construct in ${k.name}`);
  const L = arrayOf.get('LeftM');
  const R = arrayOf.get('RightM');
  const at = (h: string, r: string, c: string) => `select(${h}.off + ${h}.s * ${r} + ${c}, ${h}.off + ${h}.s * ${c} + ${r}, ${h}.cm == 1u)`;
  const fns = [
    'var<private> emuLane: u32;',
    'var<private> emuSize: u32;',
    L && R && `fn emuMma(a: LeftM, b: RightM, acc: AccM) -> AccM {
  var R = acc;
  for (var e = emuLane; e < 256u; e += emuSize) {
    let r = e / 16u;
    let c = e % 16u;
    // element [r, k] of a and [k, c] of b, stepping along k
    let ia = ${at('a', 'r', '0u')};
    let da = select(1u, a.s, a.cm == 1u);
    let ib = ${at('b', '0u', 'c')};
    let db = select(b.s, 1u, b.cm == 1u);
    var v = 0.0;
    for (var k = 0u; k < 16u; k++) { v += f32(${L}[ia + k * da]) * f32(${R}[ib + k * db]); }
    R.m[e / emuSize] += v;
  }
  return R;
}`,
    ...[...stores].map((a) => `fn emuStore_${a}(off: u32, v: AccM, cm: bool, s: u32) {
  var M = v;
  for (var e = emuLane; e < 256u; e += emuSize) {
    let r = e / 16u;
    let c = e % 16u;
    ${a}[select(off + s * r + c, off + s * c + r, cm)] = M.m[e / emuSize];
  }
}`),
  ].filter(Boolean);
  code = `${code}\n${fns.join('\n')}\n`;
  return { ...k, key: `emulated;${k.key}`, name: `emulated_${k.name}`, code, enables: k.enables.filter((e) => e !== EXT) };
}
