/**
 * The subgroup-matrix operations a tensor-core kernel uses, written once for two targets: Dawn's
 * `chromium-experimental-subgroup-matrix` builtins, or a plain-WGSL emulation for devices without them (CPU Vulkan
 * drivers in CI), so a kernel's indexing, masking and softmax can be checked anywhere and only the few builtin calls
 * need the real GPU.
 *
 * Emulation (groups of 32 invocations by local index play the subgroups; lane = index % 32):
 * - a left/right fragment is a handle (source array, offset, layout, stride) read when it is multiplied, so the
 *   kernel must not overwrite its source between load and use (true of the kernels here; persistent fragments need
 *   a source of their own in emulation);
 * - a result fragment is distributed: lane l holds row l/2, columns (l%2)·8 .. +8, as f32;
 * - loads and stores follow the extension's mapping: row-major [r, c] at offset + stride·r + c, column-major at
 *   offset + stride·c + r (offset and stride in elements of the array).
 * Operands are f16 in memory and products are summed in f32, as on the tensor cores (up to summation order).
 */

export type FragKind = 'L' | 'R' | 'A';
const TYPE: Record<FragKind, string> = { L: 'LeftM', R: 'RightM', A: 'AccM' };

export interface SgArray {
  /** a `var<workgroup>` array of f16 (left/right fragments) or f32 (result fragments) */
  readonly name: string;
  readonly loads: readonly FragKind[];
  readonly store: boolean;
}

export interface SgOps {
  /** type aliases / structs (LeftM, RightM, AccM: 16×16, f16 × f16 → f32) and, when emulated, the helper functions */
  readonly prelude: string;
  /** first statement of the entry point, given its local index expression (emulation: the lane) */
  init(lid: string): string;
  /** WGSL expression loading a fragment */
  load(kind: FragKind, arr: string, offset: string, colMajor: boolean, stride: string): string;
  /** WGSL statement storing a result fragment */
  store(arr: string, offset: string, value: string, colMajor: boolean, stride: string): string;
  /** WGSL expression a · b + c */
  mma(a: string, b: string, c: string): string;
}

export function sgOps(emulate: boolean, arrays: readonly SgArray[]): SgOps {
  if (!emulate) {
    // Dawn's current spelling, majorness as a template argument (the first releases' bool argument warns per call)
    const mj = (cm: boolean) => (cm ? 'col_major' : 'row_major');
    return {
      prelude: `alias LeftM = subgroup_matrix_left<f16, 16, 16>;
alias RightM = subgroup_matrix_right<f16, 16, 16>;
alias AccM = subgroup_matrix_result<f32, 16, 16>;`,
      init: () => '',
      load: (k, arr, off, cm, st) => `subgroupMatrixLoad<${TYPE[k]}, ${mj(cm)}>(&${arr}, ${off}, ${st})`,
      store: (arr, off, v, cm, st) => `subgroupMatrixStore<${mj(cm)}>(&${arr}, ${off}, ${v}, ${st});`,
      mma: (a, b, c) => `subgroupMatrixMultiplyAccumulate(${a}, ${b}, ${c})`,
    };
  }
  const srcs = arrays.filter((a) => a.loads.some((k) => k !== 'A'));
  const src = (arr: string) => {
    const i = srcs.findIndex((a) => a.name === arr);
    if (i < 0) throw new Error(`emulated fragment source ${arr} not declared`);
    return i;
  };
  const at = 'select(off + r * stride + c, off + c * stride + r, cm)';
  const fns = arrays.flatMap((a) => [
    ...(a.loads.includes('A') ? [`fn emuLdA_${a.name}(off: u32, cm: bool, stride: u32) -> AccM {
  var m = AccM();
  let r = emuLane / 2u;
  for (var i = 0u; i < 8u; i++) { let c = (emuLane % 2u) * 8u + i; m.v[i] = ${a.name}[${at}]; }
  return m;
}`] : []),
    ...(a.store ? [`fn emuSt_${a.name}(off: u32, m: AccM, cm: bool, stride: u32) {
  let r = emuLane / 2u;
  for (var i = 0u; i < 8u; i++) { let c = (emuLane % 2u) * 8u + i; ${a.name}[${at}] = m.v[i]; }
}`] : []),
  ]);
  return {
    prelude: `struct LeftM { src: u32, off: u32, cm: u32, stride: u32 }
struct RightM { src: u32, off: u32, cm: u32, stride: u32 }
struct AccM { v: array<f32, 8> }
var<private> emuLane: u32 = 0u;
var<private> emuK: u32 = 16u; // 16, but opaque to the compiler: CPU drivers would unroll every inlined product
fn emuRd(s: u32, i: u32) -> f32 {
${srcs.map((a, i) => `  if (s == ${i}u) { return f32(${a.name}[i]); }`).join('\n')}
  return 0.0;
}
fn emuAt(off: u32, cm: u32, stride: u32, r: u32, c: u32) -> u32 { return select(off + r * stride + c, off + c * stride + r, cm != 0u); }
fn emuMma(a: LeftM, b: RightM, acc: AccM) -> AccM {
  var o = acc;
  let r = emuLane / 2u;
  for (var i = 0u; i < 8u; i++) {
    let c = (emuLane % 2u) * 8u + i;
    var s = o.v[i];
    for (var k = 0u; k < emuK; k++) {
      s += emuRd(a.src, emuAt(a.off, a.cm, a.stride, r, k)) * emuRd(b.src, emuAt(b.off, b.cm, b.stride, k, c));
    }
    o.v[i] = s;
  }
  return o;
}
${fns.join('\n')}`,
    init: (lid) => `emuLane = ${lid} % 32u;
  emuK = select(16u, 0u, params.T == 0xffffffffu);`,
    load: (k, arr, off, cm, st) =>
      k === 'A' ? `emuLdA_${arr}(${off}, ${cm}, ${st})` : `${TYPE[k]}(${src(arr)}u, ${off}, ${cm ? 1 : 0}u, ${st})`,
    store: (arr, off, v, cm, st) => `emuSt_${arr}(${off}, ${v}, ${cm}, ${st});`,
    mma: (a, b, c) => `emuMma(${a}, ${b}, ${c})`,
  };
}
