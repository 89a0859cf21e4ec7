/**
 * The tensor-core prefill skeleton: the contract of `tiledSource` (mm-core.ts: the same CoreFamily plug-ins, the
 * same bindings, params and epilogue pairs), computed with Dawn's `chromium-experimental-subgroup-matrix` on
 * f16×f16→f32 16×16×16 fragments instead of f32 FMAs.
 *
 *   per workgroup (e.g. m128n128): BM tokens × BN logical columns, SG = SGM × SGN subgroups of ≤ 32 lanes, each owning
 *   FM × FN result fragments (16×16 f32) per stream:
 *
 *            BN columns ─────────────▶
 *      BM   ┌─────────┬─────────┐        subgroup (sm, sn) owns tokens sm·FM·16 ..  and columns sn·FN·16 ..
 *    tokens │ sg 0    │ sg 1    │        K loop: BK-deep slabs (32 or 64) staged in workgroup memory as f16
 *      │    ├─────────┼─────────┤          xs (BM, BK)  x · normW, token-major         → left operands
 *      ▼    │ sg 2    │ sg 3    │          ws (BN, BK)  weight rows as f16             → right operands (column-major)
 *           │   …     │   …     │        epilogue: one 16-token fragment row at a time is stored (f32) to `os`,
 *           └─────────┴─────────┘        then every thread runs the family's `epi` on pairs read from there
 *
 * The tile shape, the slab depth, the x staging layout, whether the next slab is prefetched into registers and
 * whether two slab sets alternate (one barrier per slab instead of two) are a named variant (SGMAT_VARIANTS below);
 * SGMAT_PICK chooses one per matmul kind among those the device's workgroup memory holds, and
 * bench/kernel-check.ts times them all.
 * The staging code itself is generated in mm-sgmat-stage.ts.
 *
 * Weights are f16 (read natively) or q8 / q4 (mm-common.ts `WeightDtype`: dequantized to f16 while staging by
 * `w_ldh`, `quantHalfLoader`, which stages the same f16 values as the tiled skeleton's `w_ld` rounded to f16), so
 * the slabs and the tensor-core part do not depend on the weight dtype.
 *
 * Tokens ≥ T and columns ≥ NC are zero in staging (and never reach `epi`), so any T and N work; K must be a
 * multiple of 16 (a partial last slab is zero-padded to BK), of 32 for q8 / q4. The rmsnorm prologue accumulates
 * Σx² in f32 from the f32 x while staging it and scales by rinv in the epilogue, exactly like the tiled skeleton;
 * x · normW is rounded to f16 for the tensor cores (|x · normW| must stay below 65504).
 *
 * WGSL notes (Dawn's extension): `subgroup_matrix_left<T, K, M>` is M rows × K columns, `_right<T, N, K>` is
 * K rows × N columns, `_result<T, N, M>` is M rows × N columns; `subgroupMatrixLoad<Type, row_major|col_major>(&arr,
 * offset, stride)` (and `subgroupMatrixStore<row_major|col_major>(&arr, offset, value, stride)`, the current spelling:
 * the first releases' bool-argument form still compiles but warns per call) counts offset and stride in elements of
 * `arr` (whose element type must be the matrix's scalar type).
 * The calls take subgroup-uniform operands that Tint can only prove workgroup-uniform, hence the diagnostic off.
 * Vulkan wants fragment pointers and strides 16-byte aligned: every offset here is a multiple of 8 halves / 4 f32.
 */
import { wgsl, type KernelSource } from '../wgsl.js';
import type { Workgroups } from '../../runtime/gpu/runner.js';
import { builtins, isQuantized, MAX_WG_PER_DIM, QGROUP, quantHalfLoader, type WeightDtype } from './mm-common.js';
import { coreBindings, coreParams, type CoreFamily, type CoreOpts } from './mm-core.js';
import { stagePlan } from './mm-sgmat-stage.js';
import { env, envPairs } from '../../runtime/env.js';

/** fragment edge: the f16×f16→f32 16×16×16 configuration */
const FR = 16;
/** staged row padding in halves: a 32-deep slab's rows are 80 bytes (64-deep: 144), 16-byte aligned, spread over banks */
const PAD = 8;
/** lanes per subgroup the layout assumes at most (NVIDIA 32; smaller subgroups leave the extra ones idle) */
export const SGMAT_MAX_SUBGROUP = 32;
/** workgroup memory the device must offer for the tensor-core path; variants above it need `SGMAT_WG_BYTES_MAX` */
export const SGMAT_WG_BYTES = 32768;
/** workgroup memory every variant fits in (checked when generating; picked only where the device offers it) */
export const SGMAT_WG_BYTES_MAX = 49152;

export interface SgmatVariant {
  readonly streams: 1 | 2;
  /** tokens per workgroup */
  readonly BM: number;
  /** logical columns per workgroup (per stream) */
  readonly BN: number;
  /** subgroups along tokens and along columns */
  readonly SGM: number;
  readonly SGN: number;
  /** x staged one token row per thread: one Σx² register, weight-row indices recomputed (mm-sgmat-stage.ts) */
  readonly lean: boolean;
  /** the next K slab's global loads are issued before the current slab's products (register double buffering) */
  readonly prefetch: boolean;
  /** K elements per staged slab: 32 (two 16-deep steps per slab) or 64 (four: half the barriers per product) */
  readonly BK: 32 | 64;
  /**
   * Two slab sets in workgroup memory: slab i + 1 is fetched before slab i's products and staged into the other set
   * after them, so one barrier per slab instead of two (implies the prefetch order)
   */
  readonly double: boolean;
}

const v = (streams: 1 | 2, BM: number, BN: number, SGM: number, SGN: number, lean = false, prefetch = false, BK: 32 | 64 = 32, double = false): SgmatVariant =>
  ({ streams, BM, BN, SGM, SGN, lean, prefetch, BK, double });

/**
 * Every generated shape; bench/kernel-check.ts times each at the Llama-3.1-8B projections. Names: m<BM>n<BN>,
 * s<subgroups> when not 8, then l (lean), p (prefetch); the swiglu ones start with `sw` (BN per stream).
 * Accumulators per subgroup: streams · (BM/SGM/16) · (BN/SGN/16).
 */
export const SGMAT_VARIANTS = {
  m128n128: v(1, 128, 128, 4, 2), //             8 subgroups of 32×64: 8 accumulators (the first shape)
  m128n128l: v(1, 128, 128, 4, 2, true),
  m128n128p: v(1, 128, 128, 4, 2, false, true),
  m128n128lp: v(1, 128, 128, 4, 2, true, true),
  m128n128s16l: v(1, 128, 128, 4, 4, true), //   16 subgroups of 32×32: 4 accumulators, 512 threads
  m64n128l: v(1, 64, 128, 2, 4, true), //        half the token tile: twice the workgroups for small grids
  m64n128lp: v(1, 64, 128, 2, 4, true, true),
  sw128n64: v(2, 128, 64, 4, 2), //              8 subgroups of 32×32 per stream: 8 accumulators (the first shape)
  sw128n64l: v(2, 128, 64, 4, 2, true),
  sw128n64lp: v(2, 128, 64, 4, 2, true, true),
  sw128n64s16l: v(2, 128, 64, 4, 4, true), //    16 subgroups of 32×16 per stream: 4 accumulators, 512 threads
  sw64n64l: v(2, 64, 64, 2, 2, true), //         4 subgroups of 32×32 per stream, 128 threads: more resident tiles
  sw64n64lp: v(2, 64, 64, 2, 2, true, true),
  m64n64l: v(1, 64, 64, 2, 2, true), //          the same small tile for one stream: 4 accumulators
  m64n64lp: v(1, 64, 64, 2, 2, true, true),
  m64n64: v(1, 64, 64, 2, 2),
  // 64-deep slabs (k64) and double-buffered slab sets (d): fewer barriers per product, up to 48 KB of workgroup memory
  m64n128lk64: v(1, 64, 128, 2, 4, true, true, 64),
  m64n128ld: v(1, 64, 128, 2, 4, true, true, 32, true),
  m128n128lk64: v(1, 128, 128, 4, 2, true, true, 64),
  m64n64ld: v(1, 64, 64, 2, 2, true, true, 32, true), //  these two fit 32 KB (the CPU driver's limit: tested there)
  m64n64lk64: v(1, 64, 64, 2, 2, true, true, 64),
  m64n64lk64d: v(1, 64, 64, 2, 2, true, true, 64, true),
  m64n64k64d: v(1, 64, 64, 2, 2, false, true, 64, true),
  // the one-stream twin of sw128n64s16lk64's staging: 128 x rows and 128 weight rows per 64-deep slab, 512 threads
  // (a 128×64 tile on 64-deep slabs, m128n64lk64, which fits 32 KB, ran prefill at 4,175 tokens/s against 5,251–5,368)
  m128n128s16lk64: v(1, 128, 128, 4, 4, true, true, 64),
  sw128n64s16lk64: v(2, 128, 64, 4, 4, true, true, 64),
  // wide column tiles: x is re-read once per column tile, so 128 columns per stream (256 for one stream) halve the
  // x slabs a matmul streams from L2. m128n256s16lp for o and down lost on the H100 (prefill 5,906 vs 6,051–6,094
  // tokens/s: 128 workgroups for 4,096 columns at chunk 1024)
  sw128n128s16lp: v(2, 128, 128, 4, 4, true, true, 32),
  sw128n128lp: v(2, 128, 128, 4, 2, true, true, 32),
  m128n256s16lp: v(1, 128, 256, 4, 4, true, true, 32),
  sw64n64lk64: v(2, 64, 64, 2, 2, true, true, 64),
  sw64n64ld: v(2, 64, 64, 2, 2, true, true, 32, true),
} as const satisfies Record<string, SgmatVariant>;
export type SgmatVariantName = keyof typeof SGMAT_VARIANTS;

export interface SgmatRule {
  readonly streams: 1 | 2;
  /** only matmuls with (true) / without (false) the rmsnorm prologue; any when absent */
  readonly norm?: boolean;
  /** only when T · NC (outputs per stream) is at most this: small grids, where a 128-token tile leaves SMs idle */
  readonly maxOutputs?: number;
  /** only matmuls with (true) / without (false) the silu epilogue (a retaining head's fc1); any when absent */
  readonly silu?: boolean;
  readonly variant: SgmatVariantName;
}

/**
 * Which variant runs, first matching rule wins. Flip the names after a `node dist/bench/kernel-check.js` run
 * (its "sgmat variants" table prints each one's TFLOP/s at the 8B shapes: qkv and gate_up have norm, o and down
 * not; qkv at T=1024 has 6.3M outputs, o and down 4.2M).
 */
export const SGMAT_PICK: readonly SgmatRule[] = [
  // 128 columns per stream where the device offers 47 KB of workgroup memory: half the x slabs per product. H100,
  // gate_up of the 8B model per 1024-token chunk with f16 activations (locret bench by op, three runs against four):
  // 53.7–53.8 ms vs 55.5–55.8, prefill 6,136–6,155 vs 6,051–6,094 tokens/s
  { streams: 2, variant: 'sw128n128s16lp' },
  // 64-deep slabs where the device offers 45 KB of workgroup memory. H100, gate_up of the 8B model per 1024-token
  // chunk (locret bench by op, two A/B pairs): 71.5 / 71.3 ms vs 77.0 / 76.9, prefill 5,302 / 5,295 vs 5,201 / 5,197
  // tokens/s; q4 65.6 vs 78.2 ms, 5,242 vs 4,896 tokens/s (kernel-check: 108 vs 90.5 TFLOP/s, same errors)
  { streams: 2, variant: 'sw128n64s16lk64' },
  // H200 without shader bound checks, gate_up of the 8B model per 1024-token chunk (locret bench by op, two runs
  // each): 83.2 / 86.9 ms vs 91.9 / 83.3 for sw64n64l; prefill 5,071 / 5,035 vs 4,839 / 4,925 tokens/s
  { streams: 2, variant: 'sw128n64s16l' },
  // a retaining head's fc1 (1024 columns, silu epilogue). H100, the folded fc1 (1024 × 4096) over f16 rows at chunk
  // 1024 (kernel-check --variants-only --shapes fc1f): m64n128lk64 86.2 TFLOP/s where the device offers 36 KB of
  // workgroup memory, m64n64l 69.2, m64n64 (the small-grid pick it had) 57.3
  { streams: 1, silu: true, variant: 'm64n128lk64' },
  { streams: 1, silu: true, variant: 'm64n64l' },
  // other small grids: 1024 columns at chunk 1024 are 64 tiles of 128×128 on a 132-SM GPU
  { streams: 1, maxOutputs: 1 << 21, variant: 'm64n64' },
  // H200 without shader bound checks, per 1024-token chunk of the 8B model (locret bench by op): qkv 16.4 vs 17.9 ms,
  // o + down 44.2 vs 50.8 ms for m128n128 (64-row tiles: twice the workgroups, still 128-column weight slabs)
  { streams: 1, norm: true, variant: 'm64n128l' },
  // o and down on 64-deep slabs where the device offers 45 KB (H100, per 1024-token chunk of the 8B model, two A/B
  // pairs): o + down 37.0 / 37.0 ms vs 42.7 / 42.8, prefill 5,490 / 5,488 vs 5,368 / 5,251 tokens/s; qkv gained
  // nothing (15.4 vs 15.2 ms), so it keeps m64n128l
  { streams: 1, variant: 'm128n128s16lk64' },
  { streams: 1, variant: 'm64n128l' },
];

/** Names of the rules for `LOCRET_SGMAT` overrides: two-stream, retaining head, small grid, with norm, any other one-stream. */
type RuleName = 'swiglu' | 'head' | 'small' | 'norm' | 'plain';
const ruleName = (r: SgmatRule): RuleName => (r.streams === 2 ? 'swiglu' : r.silu ? 'head' : r.maxOutputs !== undefined ? 'small' : r.norm ? 'norm' : 'plain');

/**
 * `LOCRET_SGMAT="plain=m64n128l,norm=m64n64,small=m64n64,head=m64n64,swiglu=sw128n64s16l"`: a rule's variant instead of its own
 * (A/B timing in the full model; results unchanged). Names of the wrong stream count, or needing more workgroup
 * memory than the device offers, are ignored.
 */
function override(rule: SgmatRule, wgBytes: number, norm: boolean): SgmatVariantName | undefined {
  for (const [k, v] of envPairs(env('LOCRET_SGMAT'))) {
    if (k !== ruleName(rule) || !v || !(v in SGMAT_VARIANTS)) continue;
    const V = SGMAT_VARIANTS[v as SgmatVariantName];
    if (V.streams === rule.streams && sgmatWorkgroupBytes(V, norm) <= wgBytes) return v as SgmatVariantName;
  }
  return undefined;
}

/**
 * The variant for a matmul: the first matching rule whose variant fits the device's workgroup memory (`wgBytes`,
 * its maxComputeWorkgroupStorageSize; the tensor-core path needs SGMAT_WG_BYTES, which every rule's last resort fits).
 */
export function sgmatPick(streams: 1 | 2, norm: boolean, NC: number, T: number, wgBytes = SGMAT_WG_BYTES, silu = false): SgmatVariantName {
  const r = SGMAT_PICK.find((r) => r.streams === streams && (r.norm === undefined || r.norm === norm) && (r.maxOutputs === undefined || T * NC <= r.maxOutputs) &&
    (r.silu === undefined || r.silu === silu) &&
    sgmatWorkgroupBytes(SGMAT_VARIANTS[r.variant], norm) <= wgBytes);
  if (!r) throw new Error(`sgmat: no variant picked for ${streams} stream(s), norm ${norm}, ${wgBytes} bytes of workgroup memory`);
  return override(r, wgBytes, norm) ?? r.variant;
}

export function sgmatVariant(name: string, streams: 1 | 2): SgmatVariant {
  const s = (SGMAT_VARIANTS as Record<string, SgmatVariant>)[name];
  if (!s) throw new Error(`sgmat: unknown variant ${name}`);
  if (s.streams !== streams) throw new Error(`sgmat: variant ${name} is for ${s.streams} stream(s), not ${streams}`);
  return s;
}

/**
 * Whether the tensor-core skeleton can run this matmul: prefill-sized T (decode, T ≤ 8, stays on the gemv path),
 * native f16 or q8 / q4 weights (staged as f16 either way), K a multiple of the fragment depth (quantized weights:
 * of the group size, which their loaders need anyway). The device must also have it (GpuContext.tensorCores).
 */
export function sgmatUsable(wdtype: WeightDtype, T: number, K: number): boolean {
  const quant = isQuantized(wdtype);
  return (wdtype === 'f16' || quant) && T > 8 && K % (quant ? QGROUP : FR) === 0;
}

export function sgmatGrid(NC: number, T: number, s: SgmatVariant): Workgroups {
  const x = Math.ceil(NC / s.BN);
  const y = Math.ceil(T / s.BM);
  if (x > MAX_WG_PER_DIM || y > MAX_WG_PER_DIM) throw new Error(`sgmat matmul grid too large: ${x}×${y}`);
  return [x, y];
}

/** Workgroup memory of a variant: its slab set(s), the result staging, the rms scales with the norm prologue. */
export function sgmatWorkgroupBytes(V: SgmatVariant, norm: boolean): number {
  const XS = V.BK + PAD;
  return (V.double ? 2 : 1) * (2 * V.BM * XS + 2 * V.streams * V.BN * XS) + 4 * V.streams * FR * V.BN + (norm ? 4 * V.BM : 0);
}

export function sgmatSource(o: CoreOpts, f: CoreFamily, variant: string): KernelSource {
  if ((o.wdtype !== 'f16' && !isQuantized(o.wdtype)) || o.U !== 4) throw new Error(`sgmat matmul reads f16, q8 or q4 weights with K % 16 == 0 (got ${o.wdtype}, U=${o.U})`);
  // w_ld goes unused: f16 weights are read as vec4<f16> straight into the slabs, q8 / q4 through w_ldh
  const { bindings, fns } = coreBindings(o, f);
  const wd = o.wdtype;
  const halfLoaders = isQuantized(wd) ? [quantHalfLoader('w', wd), ...(o.streams === 2 ? [quantHalfLoader('wu', wd)] : [])].join('\n') : '';
  const S = o.streams;
  const V = sgmatVariant(variant, S);
  const { BM, BN, SGM, SGN, BK } = V;
  const XS = BK + PAD;
  const NB = V.double ? 2 : 1; // slab sets in workgroup memory
  const SG = SGM * SGN;
  const WG = SG * SGMAT_MAX_SUBGROUP;
  const FM = BM / SGM / FR;
  const FN = BN / SGN / FR;
  const UPR = BK / 4; // vec4 loads per staged row
  const OS = S * FR * BN; // f32 result staging: one fragment row of the tile per stream
  if (!Number.isInteger(FM) || !Number.isInteger(FN) || FM < 1 || FN < 1)
    throw new Error(`sgmat shape ${BM}×${BN} does not split over ${SGM}×${SGN} subgroups`);
  const st = stagePlan({ BM, BN, WG, UPR, XS, streams: S, norm: o.norm, lean: V.lean, quant: isQuantized(o.wdtype), halfX: o.halfX === true });
  if (o.norm && st.scratchNeeded > OS) throw new Error('sgmat: Σx² partials do not fit the result staging');
  const bytes = sgmatWorkgroupBytes(V, o.norm);
  if (bytes > SGMAT_WG_BYTES_MAX) throw new Error(`sgmat: ${bytes} bytes of workgroup memory exceed ${SGMAT_WG_BYTES_MAX}`);
  const R = (n: number) => Array.from({ length: n }, (_, i) => i);
  const acc = (s: number, i: number, j: number) => `${s === 0 ? 'c' : 'u'}${i}_${j}`;
  const accs = R(S).flatMap((s) => R(FM).flatMap((i) => R(FN).map((j) => acc(s, i, j))));
  // the slab set the products read (double buffering: `cur`, a uniform register)
  const xo = NB === 2 ? ` + cur * ${BM * XS}u` : '';
  const wo = NB === 2 ? ` + cur * ${S * BN * XS}u` : '';
  // one 16-deep step of the K slab (its own block: each step declares a0.., b00..): FM left fragments shared by
  // FN right fragments per stream
  const step = (kk: number) => [
    '      {',
    ...R(FM).map((i) => `      let a${i} = subgroupMatrixLoad<LeftM, row_major>(&xs, (sm * ${FM * FR}u + ${i * FR}u) * XS + ${kk * FR}u${xo}, XS);`),
    ...R(S).flatMap((s) =>
      R(FN).flatMap((j) => [
        `      let b${s}${j} = subgroupMatrixLoad<RightM, col_major>(&ws, ${s * BN * XS}u + (sn * ${FN * FR}u + ${j * FR}u) * XS + ${kk * FR}u${wo}, XS);`,
        ...R(FM).map((i) => `      ${acc(s, i, j)} = subgroupMatrixMultiplyAccumulate(a${i}, b${s}${j}, ${acc(s, i, j)});`),
      ]),
    ),
    '      }',
  ];
  const products = `    if (sg < SG) { // subgroups narrower than ${SGMAT_MAX_SUBGROUP} lanes: the first SG cover the tile, the rest idle
${R(BK / FR).map((kk) => step(kk).join('\n')).join('\n')}
    }`;
  // fragment row i of this subgroup's block → os (row-major, stride BN), one branch per i: accumulators are
  // named variables, never indexed dynamically
  const storeRow = (i: number) =>
    R(S).flatMap((s) => R(FN).map((j) => `subgroupMatrixStore<row_major>(&os, ${s * FR * BN}u + sn * ${FN * FR}u + ${j * FR}u, ${acc(s, i, j)}, BN);`)).join('\n        ');
  const stores = R(FM).map((i) => `${i ? ' else ' : ''}if (fi == ${i}u) {\n        ${storeRow(i)}\n      }`).join('');
  const biasS = (s: number) => (o.bias ? ` + bias2(c, ${s}u)` : '');
  // without prefetch a slab is fetched and staged back to back; with it, slab k0 + UPR is fetched between the
  // barrier that publishes slab k0 and its products (fetch masks vec4s past K to zero, so the last one is harmless).
  // Double-buffered: slab k0 + UPR is fetched before slab k0's products and staged into the other set after them;
  // the one barrier per slab both publishes it and retires the set the next stage overwrites
  const loop = V.double
    ? wgsl`${st.fetch('0u')}
${st.stage('0u', '')}
  workgroupBarrier();
  var cur = 0u;
  for (var k0 = 0u; k0 < KU; k0 += UPR) {
${st.fetch('(k0 + UPR)')}
${products}
${st.stage('(k0 + UPR)', `(1u - cur)`)}
    workgroupBarrier();
    cur = 1u - cur;
  }`
    : wgsl`${V.prefetch && st.fetch('0u')}
  for (var k0 = 0u; k0 < KU; k0 += UPR) {
${!V.prefetch && st.fetch('k0')}
${st.stage('k0', '')}
    workgroupBarrier();
${V.prefetch && st.fetch('(k0 + UPR)')}
${products}
    workgroupBarrier();
  }`;
  const body = wgsl`
${fns}
${halfLoaders}
${f.helpers}

alias LeftM = subgroup_matrix_left<f16, ${FR}, ${FR}>;    // 16 tokens × 16 k
alias RightM = subgroup_matrix_right<f16, ${FR}, ${FR}>;  // 16 k × 16 columns
alias AccM = subgroup_matrix_result<f32, ${FR}, ${FR}>;   // 16 tokens × 16 columns

const WG = ${WG}u;
const SG = ${SG}u;   // subgroups that compute (${SGM} along tokens × ${SGN} along columns)
const BM = ${BM}u;  // tokens per tile
const BN = ${BN}u;  // logical columns per tile
const BK = ${BK}u;   // K elements per slab
const XS = ${XS}u;   // staged row stride (halves)
const UPR = ${UPR}u;  // vec4 loads per staged row
var<workgroup> xs: array<f16, ${NB * BM * XS}>;     // (${NB > 1 ? `${NB} sets, ` : ''}BM, XS) x · normW slab, token-major
var<workgroup> ws: array<f16, ${NB * S * BN * XS}>;     // (${NB > 1 ? `${NB} sets, ` : ''}streams, BN, XS) weight slabs, one row per column
var<workgroup> os: array<f32, ${OS}>;     // (streams, 16, BN) one fragment row of results; first the Σx² partials
${o.norm && `var<workgroup> rs: array<f32, ${BM}>;      // (BM) rms scale per token`}

@compute @workgroup_size(${WG})
fn main(${builtins}, @builtin(subgroup_id) sg: u32) {
  let n0 = wid.x * BN;
  let m0 = wid.y * BM;
  let KU = params.K / 4u;
  let sm = sg / ${SGN}u; // this subgroup's tokens: sm·${FM * FR} ..
  let sn = sg % ${SGN}u; // its columns: sn·${FN * FR} ..
${accs.map((a) => `  var ${a} = AccM();`)}
${st.decls}
${loop}
${o.norm && st.rms}
  // epilogue, one 16-token fragment row of the tile at a time (bounded workgroup memory)
  for (var r = 0u; r < BM / ${FR}u; r++) {
    workgroupBarrier(); // the previous round (or the rms pass) is done with os
    let fi = r % ${FM}u;
    if (sg < SG && sm == r / ${FM}u) {
      ${stores}
    }
    workgroupBarrier();
    for (var p = lid; p < ${FR}u * (BN / 2u); p += WG) {
      let rr = p / (BN / 2u);
      let cc = (p % (BN / 2u)) * 2u;
      let t = m0 + r * ${FR}u + rr;
      let c = n0 + cc;
      if (t < params.T && c < params.NC) {
        ${o.norm ? `let sc = rs[r * ${FR}u + rr];` : 'let sc = 1.0;'}
        let a = vec2<f32>(os[rr * BN + cc], os[rr * BN + cc + 1u]) * sc${biasS(0)};
        ${S === 2 && `let u = vec2<f32>(os[${FR * BN}u + rr * BN + cc], os[${FR * BN}u + rr * BN + cc + 1u]) * sc${biasS(1)};`}
        epi(t, c, a${S === 2 ? ', u' : ''});
      }
    }
  }
}`;
  const enables = [...new Set([...f.enables, 'f16', 'subgroups', 'chromium_experimental_subgroup_matrix'])];
  return {
    bindings,
    params: [...coreParams, ...f.params],
    workgroupSize: [WG, 1, 1],
    enables,
    directives: ['diagnostic(off, chromium.subgroup_matrix_uniformity)'],
    body,
  };
}
