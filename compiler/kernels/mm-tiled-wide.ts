/**
 * The FMA prefill skeleton for large steps (devices without tensor cores): the contract of mm-core.ts `tiledSource`
 * (CoreFamily plug-ins, bindings, params, epilogue pairs), with 128 tokens × 128 logical columns per workgroup (two
 * streams: 64 per stream) and an 8 × 8 register block per thread instead of 4 × 4, so each vec4 read from workgroup
 * memory feeds twice the FMAs (the 64 × 64 tile is bound by those reads). K slabs are 16 deep: the two slabs fill
 * 16 KiB, WebGPU's default workgroup storage, so the skeleton runs on every device. Each slab's global loads are
 * issued a slab ahead into registers (fmaPrefetch) and stored after the current slab's FMAs.
 *
 *   thread (tx, ty) of 16 × 16:   tokens   ty·4 .. ty·4+3   and 64 + ty·4 .. 64 + ty·4+3     (a0, a1)
 *                                 columns  tx·4 .. tx·4+3   and 64 + tx·4 .. 64 + tx·4+3     (b0, b1)
 *                                 (two streams: columns tx·4 .. tx·4+3 of the gate slab and of the up slab)
 *   so the 16 threads of a row read 16 adjacent vec4s of a slab row: no bank conflicts, one broadcast per half-warp.
 *
 * Accumulators are named registers (c{r}_{h}: token r of the thread's 8, column quad h; u{r} the up stream), never
 * dynamically indexed arrays, which drivers may place in local memory. K must be a multiple of 4 (f32 x as vec4).
 */
import { kernel, wgsl, type KernelSource, type KernelSpec, type VariantKey } from '../wgsl.js';
import type { Workgroups } from '../../runtime/gpu/runner.js';
import { builtins, vdot } from './mm-common.js';
import { coreBindings, coreParams, rmsScales, tiledGrid, tiledSource, type CoreFamily, type CoreOpts } from './mm-core.js';
import { env, envPairs } from '../../runtime/env.js';

const BM = 128; // tokens per tile
const BK = 16; // K elements per slab
const WG = 256;
/** logical columns per tile and stream */
const bn = (streams: 1 | 2) => (streams === 2 ? 64 : 128);

/**
 * Workgroups the wide grid must have, else the 64 × 64 tiles (four times as many) keep more SMs busy: two per SM of
 * a 132-SM GPU. H100, 8B prefill without tensor cores: a retaining head's fc1 (1024 columns, 64 wide tiles) took
 * 31.7 ms per chunk against 19.6 with the small tiles, while o + down (256 wide tiles) took 145 ms against 218.
 */
const MIN_WIDE_WORKGROUPS = 256;

/**
 * Whether a tiled matmul takes this skeleton: vec4 rows, at least one full tile of tokens, and a grid big enough
 * (MIN_WIDE_WORKGROUPS). `LOCRET_TILED=base|wide` forces one (A/B timing).
 */
export function tiledWide(U: number, T: number, NC: number, streams: 1 | 2): boolean {
  const force = env('LOCRET_TILED');
  if (U !== 4) return false;
  if (force === 'wide' || force === 'base') return force === 'wide';
  const [x, y] = wideGrid(NC, T, streams) as [number, number];
  return T >= BM && x * y >= MIN_WIDE_WORKGROUPS;
}

export function wideGrid(NC: number, T: number, streams: 1 | 2): Workgroups {
  const x = Math.ceil(NC / bn(streams));
  const y = Math.ceil(T / BM);
  if (x > 65535 || y > 65535) throw new Error(`tiled matmul grid too large: ${x}×${y}`);
  return [x, y];
}

/**
 * The FMA prefill kernel of a matmul-like op keyed by `base`: the wide tiles where `tiledWide` takes them, else the
 * 64 × 64 ones (mm-core.ts). `family` is called only when the kernel is generated.
 */
export function fmaKernel(base: VariantKey, core: CoreOpts, family: () => CoreFamily, NC: number, T: number): { kernel: KernelSpec; workgroups: Workgroups } {
  if (tiledWide(core.U, T, NC, core.streams)) {
    const key = { ...base, path: 'tiledw', ...(fmaPrefetch() ? {} : { pf: 0 }) };
    return { kernel: kernel(key, () => wideSource(core, family())), workgroups: wideGrid(NC, T, core.streams) };
  }
  return { kernel: kernel({ ...base, path: 'tiled' }, () => tiledSource(core, family())), workgroups: tiledGrid(NC, T) };
}

/**
 * Whether a wide tile loads its next slab from global memory into registers before multiplying the current one
 * (stored to the slabs after the loop's second barrier), so the loads' latency hides behind the slab's 16 × 64 FMAs
 * per thread instead of stalling every thread between slabs; `LOCRET_FMA_MM=pf=0` loads each slab in turn (A/B).
 */
export function fmaPrefetch(): boolean {
  return !envPairs(env('LOCRET_FMA_MM')).some(([k, v]) => k === 'pf' && v === '0');
}

const R = (n: number) => Array.from({ length: n }, (_, i) => i);

export function wideSource(o: CoreOpts, f: CoreFamily): KernelSource {
  if (o.U !== 4 || o.halfX) throw new Error(`wide tiled matmul: f32 x in vec4s only (U=${o.U}${o.halfX ? ', f16 x' : ''})`);
  const { bindings, fns } = coreBindings(o, f);
  const S = o.streams;
  const BN = bn(S);
  const UPR = BK / 4; // vec4 loads per slab row
  const A_PER = (BM * UPR) / WG;
  const B_PER = (BN * UPR) / WG;
  const H = BN / 64; // column quads per thread and stream
  const rows = R(8);
  const quads = R(H);
  // token r of the thread: quad a0 (rows ty·4 ..) or a1 (rows 64 + ty·4 ..), component r % 4
  const aOf = (r: number) => `a${r >> 2}.${'xyzw'[r & 3]}`;
  const accs = [...rows.flatMap((r) => quads.map((h) => `c${r}_${h}`)), ...(S === 2 ? rows.map((r) => `u${r}`) : [])];
  const fmas = rows.map((r) => [...quads.map((h) => `c${r}_${h} += ${aOf(r)} * b${h};`), ...(S === 2 ? [`u${r} += ${aOf(r)} * bu;`] : [])].join(' '));
  const d = (a: string, b: string) => vdot(4, a, b);
  const epilogue = rows.map((r) => {
    const t = r < 4 ? `ty * 4u + ${r}u` : `64u + ty * 4u + ${r - 4}u`;
    const pairs = quads.flatMap((h) => R(2).map((p) => {
      const c = `n0 + ${h * 64}u + tx * 4u + ${2 * p}u`;
      const v = (acc: string) => `vec2<f32>(${acc}[${2 * p}], ${acc}[${2 * p + 1}]) * sc`;
      const bias = (s: number) => (o.bias ? ` + bias2(c, ${s}u)` : '');
      return `    { let c = ${c}; if (c < params.NC) { epi(t, c, ${v(`c${r}_${h}`)}${bias(0)}${S === 2 ? `, ${v(`u${r}`)}${bias(1)}` : ''}); } }`;
    }));
    return `  { let t = m0 + ${t}; let sc = rin${r >> 2}[${r & 3}];
    if (t < params.T) {
${pairs.join('\n')}
    } }`;
  });
  const pf = fmaPrefetch();
  // a slab's global loads into registers (xv / nv / wv / uv per load slot), then those registers into the k-major
  // slabs: the rmsnorm's Σx² and weight multiply wait for the store, so nothing uses a load before the slab's FMAs
  const slabLoads = (k0: string) => [
    ...R(A_PER).map((i) => `    {
      let u = lid + ${i * WG}u;
      let m = u / UPR;
      let k = ${k0} + u % UPR;
      xv${i} = vec4<f32>(0.0);
      if (m0 + m < params.T && k < KU) {
        xv${i} = x_ld((params.xRow0 + m0 + m) * KU + k);${o.norm ? `\n        nv${i} = normW_ld(k);` : ''}
      }
    }`),
    ...R(B_PER).map((i) => `    {
      let u = lid + ${i * WG}u;
      let n = u / UPR;
      let k = ${k0} + u % UPR;
      wv${i} = vec4<f32>(0.0);${S === 2 ? `\n      uv${i} = vec4<f32>(0.0);` : ''}
      if (n0 + n < params.NC && k < KU) {
        wv${i} = w_ld(wrow(n0 + n) * KU + k);${S === 2 ? `\n        uv${i} = wu_ld(urow(n0 + n) * KU + k);` : ''}
      }
    }`),
  ].join('\n');
  const slabStores = [
    ...R(A_PER).map((i) => `    {
      let u = lid + ${i * WG}u;
      let m = u / UPR;
      let kc = u % UPR;${o.norm ? `\n      ssq${i} += ${d(`xv${i}`, `xv${i}`)};` : ''}
      let xs = xv${i}${o.norm ? ` * nv${i}` : ''};
${R(4).map((j) => `      As[(kc * 4u + ${j}u) * (BM / 4u) + m / 4u][m % 4u] = xs.${'xyzw'[j]};`).join('\n')}
    }`),
    ...R(B_PER).map((i) => `    {
      let u = lid + ${i * WG}u;
      let n = u / UPR;
      let kc = u % UPR;
      for (var j = 0u; j < 4u; j++) {
        Bs[(kc * 4u + j) * (BN / 4u) + n / 4u][n % 4u] = wv${i}[j];${S === 2 ? `\n        Bs[${(BK * BN) / 4}u + (kc * 4u + j) * (BN / 4u) + n / 4u][n % 4u] = uv${i}[j];` : ''}
      }
    }`),
  ].join('\n');
  const regs = [...R(A_PER).flatMap((i) => [`xv${i}`, ...(o.norm ? [`nv${i}`] : [])]), ...R(B_PER).flatMap((i) => [`wv${i}`, ...(S === 2 ? [`uv${i}`] : [])])];
  const body = wgsl`
${fns}
${f.helpers}

const WG = ${WG}u;
const BM = ${BM}u; // tokens per tile
const BN = ${BN}u; // logical columns per tile (per stream)
const BK = ${BK}u; // K elements per slab
const UPR = ${UPR}u; // vec4 loads per slab row
var<workgroup> As: array<vec4<f32>, ${(BK * BM) / 4}>;     // (BK, BM) x slab, k-major; Σx² scratch after the K loop
var<workgroup> Bs: array<vec4<f32>, ${(S * BK * BN) / 4}>; // (streams, BK, BN) weight slabs, k-major; rms scales after

@compute @workgroup_size(${WG})
fn main(${builtins}) {
  let tx = lid % 16u;
  let ty = lid / 16u;
  let n0 = wid.x * BN;
  let m0 = wid.y * BM;
  let KU = params.K / 4u;
${accs.map((a) => `  var ${a} = vec4<f32>(0.0);`)}
${o.norm && R(A_PER).map((i) => `  var ssq${i} = 0.0; // Σx² of x load slot ${i} (same row every slab)`)}
${regs.map((v) => `  var ${v} = vec4<f32>(0.0); // a load slot's slab piece in flight`)}
  ${pf ? `${slabLoads('0u')}\n  for (var k0 = 0u; k0 < KU; k0 += UPR) {\n${slabStores}` : `for (var k0 = 0u; k0 < KU; k0 += UPR) {\n${slabLoads('k0')}\n${slabStores}`}
    workgroupBarrier();
${pf ? `    // the next slab's global loads fly while this one is multiplied (past the row they load zeros)\n${slabLoads('k0 + UPR')}` : ''}
    for (var kk = 0u; kk < BK; kk++) {
      let a0 = As[kk * (BM / 4u) + ty];
      let a1 = As[kk * (BM / 4u) + 16u + ty];
${quads.map((h) => `      let b${h} = Bs[kk * (BN / 4u) + ${h * 16}u + tx];`)}
${S === 2 ? `      let bu = Bs[${(BK * BN) / 4}u + kk * (BN / 4u) + tx];` : ''}
${fmas.map((l) => `      ${l}`)}
    }
    workgroupBarrier();
  }
${o.norm ? wgsl`  // per-row Σx²: partials of load slot u = m · UPR + kc, then one thread per row; the scales land in Bs
${R(A_PER).map((i) => `  { let u = lid + ${i * WG}u; As[u / 4u][u % 4u] = ssq${i}; }`)}
${rmsScales}
  let rin0 = Bs[ty];
  let rin1 = Bs[16u + ty];` : '  let rin0 = vec4<f32>(1.0);\n  let rin1 = rin0;'}
${epilogue}
}`;
  return { bindings, params: [...coreParams, ...f.params], workgroupSize: [WG, 1, 1], enables: f.enables, body };
}
