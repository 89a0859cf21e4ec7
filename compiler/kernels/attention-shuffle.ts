/**
 * The FMA prefill attention (attention.ts: same grid, tiles, causal rule, outputs and split scratch) with each row's
 * partial dots summed by subgroup shuffles, for devices with `subgroups` whose narrowest subgroup holds a row's lanes.
 *
 * attention.ts sums the TPR lanes' partial dots of a tile through workgroup memory and runs the softmax as separate
 * stages: three barriers per 8-key tile, and every key's logit stored and read back twice. Here a thread group of
 * TPR adjacent lanes owns RT rows (heads of one query that sit next to each other in the GQA group, so they share
 * one causal limit) and walks the tile's keys one at a time:
 *
 *   key kk:  k quads of the lane (NQ = D/4/TPR)  → RT partial dots → log2(TPR) subgroupShuffleXor steps (every lane of
 *            the group now holds the RT logits) → per row: move the max lazily (rescale only when the key beats it),
 *            weight w = e^(s - m) → v quads of the lane: a_r += w · v
 *
 * One barrier pair per tile (load, then use). RT > 1 lets each K and V quad read from workgroup memory serve RT rows
 * (RT = 2, TPR = 4: 8 + 8 quads per key for 128 multiply-adds, half of RT = 1's), but measured slower: H100, 8B
 * shape, a 1024-token chunk at a 16K cache, attention 409.6 ms (RT = 1, TPR = 2) vs 427.0 (RT = 2) vs 460.6 (RT = 4)
 * vs 521.2 for attention.ts (`LOCRET_FMA_ATTN=rt=…|sg=0`). So RT = 1 by default: the gain is the stages and
 * barriers, not the reads. Registers: RT · NQ quads of q and as many of the output (16 + 16 at D = 128).
 */
import { kernel, wgsl } from '../wgsl.js';
import { NEG, attentionBindings, FMA_THREADS as W, FMA_TILE_KEYS as BK, tileLoad } from './attn-common.js';
import type { AttentionOpts, Plan } from './attention.js';
import { env, envPairs, parsedOnce } from '../../runtime/env.js';

/**
 * `LOCRET_FMA_ATTN=sg=0` keeps the workgroup-memory sums, `rt=1|2|4` sets the rows per thread group, `bq=N` the
 * queries per workgroup (fmaBlockQueries), `pf=0` loads each K / V tile in turn instead of the next one while the
 * current one is used, `bk=16` takes tiles of 16 keys (A/B timing). H100, 8B shape, a 1024-token chunk at a 16K
 * cache: 390.7 ms with the prefetch vs 409.4 without, 453.5 with 16-key tiles, 408.5 with two rows per group and the
 * prefetch.
 */
const knobs = parsedOnce((spec) => Object.fromEntries(envPairs(spec)) as { sg?: string; rt?: string; pf?: string; bk?: string; bq?: string });

/**
 * `LOCRET_FMA_ATTN=bq=N`: N queries per workgroup instead of attention.ts's ~32 rows (fewer rows: more lanes per
 * row, fewer registers per lane, more workgroups); undefined unless asked and N · G ≤ 32.
 */
export function fmaBlockQueries(G: number): number | undefined {
  const n = Number(knobs(env('LOCRET_FMA_ATTN')).bq);
  return Number.isInteger(n) && n >= 1 && n * G <= 32 ? n : undefined;
}

/**
 * Keys per K / V tile: FMA_TILE_KEYS, or 16 when asked (`bk=16`) and the two tiles still fit WebGPU's default 16 KiB
 * of workgroup memory.
 */
function tileKeys(bk: string | undefined, headDim: number): number {
  return bk === '16' && 2 * 16 * headDim * 4 <= 16384 ? 16 : BK;
}

/**
 * Rows per thread group and lanes per group for R rows of GQA groups of G heads, or null where the shuffle kernel does
 * not apply: no subgroups, a subgroup narrower than 2 lanes, or more q / output registers than attention.ts keeps.
 */
export function shuffleRows(o: AttentionOpts, G: number, R: number): { RT: number; TPR: number } | null {
  const min = o.subgroupMin ?? 0;
  const k = knobs(env('LOCRET_FMA_ATTN'));
  if (min < 2 || k.sg === '0') return null;
  const DQ = o.headDim / 4;
  const RT = k.rt !== undefined && G % Number(k.rt) === 0 ? Number(k.rt) : 1;
  const groups = Math.ceil(R / RT);
  let TPR = 1;
  while (TPR * 2 <= Math.min(min, 32) && groups * TPR * 2 <= W && DQ % (TPR * 2) === 0) TPR *= 2;
  if (TPR < 2 || (RT * DQ) / TPR > 16) return null;
  return { RT, TPR };
}

export function shuffleKernel(o: AttentionOpts, p: Plan, split: boolean, withLse: boolean, rk: boolean) {
  const { G, BQ, TPR, RT } = p;
  const H = o.numHeads;
  const DQ = o.headDim / 4;
  const R = BQ * G;
  const NQ = DQ / TPR;
  const key = { op: 'attention_shuffle', cache: o.cacheDtype, H, G, D: o.headDim, BQ, TPR, RT, split, lse: withLse, rk };
  const qs = Array.from({ length: NQ }, (_, j) => j);
  const rs = Array.from({ length: RT }, (_, i) => i);
  const steps = Array.from({ length: Math.log2(TPR) }, (_, b) => 1 << b);
  const k = knobs(env('LOCRET_FMA_ATTN'));
  const TK = tileKeys(k.bk, o.headDim);
  const tile = tileLoad(o, rk, TK);
  // with rotated keys over an f16 cache the next tile's loads fly while the current one is used
  const pf = k.pf === '0' ? undefined : tile.prefetch;
  return kernel({ ...key, ...(pf ? { pf: 1 } : {}), ...(TK !== BK ? { bk: TK } : {}) }, () => ({
    bindings: attentionBindings(o.cacheDtype, split, withLse, 'vec4<f32>', rk),
    params: [['T', 'u32'], ['base', 'u32'], ['capacity', 'u32'], ['rot', 'u32'], ['splitKeys', 'u32'], ['splits', 'u32'], ['tpr', 'u32'], ['scale', 'f32']],
    workgroupSize: [W, 1, 1],
    enables: ['subgroups'],
    body: wgsl`
const DQ = ${DQ}u;
const H = ${H}u;
const G = ${G}u;
const BQ = ${BQ}u;
const NEG = ${NEG};
${tile.decls}

@compute @workgroup_size(${W})
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>) {
  let g = wg.y;
  let grp = lid / ${TPR}u; // thread group: rows grp·RT .. grp·RT + RT - 1 of the block
  let lane = lid % ${TPR}u;
  let r0 = grp * ${RT}u;
  let t = wg.x * BQ + r0 / G; // the group's rows are heads of one query (RT divides G)
  let rowOk = r0 < ${R}u && t < params.T;
  let rowEnd = params.base + t + 1u; // keys the rows may see: [0, rowEnd)
${rs.map((i) => `  let row${i} = t * H + g * G + (r0 + ${i}u) % G; // (query, head) of the row in q, out, lse
  let qAt${i} = row${i} * DQ + lane;
${qs.map((j) => `  var q${i}_${j} = vec4<f32>(0.0);
  var a${i}_${j} = vec4<f32>(0.0);`).join('\n')}
  var m${i} = NEG;
  var l${i} = 0.0;`)}
  if (rowOk) {
    // scale folded into q once instead of once per logit
${rs.map((i) => qs.map((j) => `    q${i}_${j} = q[qAt${i} + ${j * TPR}u] * params.scale;`).join('\n'))}
  }

  // keys of this split that the block's last query can see (uniform: from workgroup id and params only)
  let blockEnd = params.base + min(wg.x * BQ + BQ, params.T);
  let k0 = wg.z * params.splitKeys;
  let k1 = min(k0 + params.splitKeys, blockEnd);
${pf ? `${pf.vars}
  if (k0 < k1) {
${pf.fetch('k0')}
  }` : ''}
  for (var kb = k0; kb < k1; kb += ${TK}u) {
${pf ? pf.stage : tile.load}
    workgroupBarrier();
${pf ? `    // the next tile's loads fly while this one is used (past k1 they clamp to its last key, unused)
${pf.fetch(`kb + ${TK}u`)}` : ''}
    // every lane runs the key loop (shuffles need the whole subgroup); rows that are not there meet q = 0 and a mask
    let nk = min(${TK}u, k1 - kb);
    for (var kk = 0u; kk < nk; kk++) {
      let kAt = kk * DQ + lane;
${qs.map((j) => `      let k${j} = kT[kAt + ${j * TPR}u];`).join('\n')}
${rs.map((i) => `      var z${i} = ${qs.map((j) => `dot(q${i}_${j}, k${j})`).join(' + ')};
${steps.map((b) => `      z${i} += subgroupShuffleXor(z${i}, ${b}u);`).join('\n')}`)}
      let vis = rowOk && kb + kk < rowEnd;
${qs.map((j) => `      let v${j} = vT[kAt + ${j * TPR}u];`).join('\n')}
${rs.map((i) => `      {
        let e = select(NEG, z${i}, vis);
        if (e > m${i}) { // lazy max: the output is rescaled only when a key beats the row's max
          let al = exp(m${i} - e);
          l${i} *= al;
${qs.map((j) => `          a${i}_${j} *= al;`).join('\n')}
          m${i} = e;
        }
        let w = select(0.0, exp(e - m${i}), vis); // masked keys weigh 0 (exp(NEG - NEG) would be 1)
        l${i} += w;
${qs.map((j) => `        a${i}_${j} += w * v${j};`).join('\n')}
      }`)}
    }
    workgroupBarrier();
  }
  if (!rowOk) { return; }
${
  split
    ? `  let TH = params.T * H;
${rs.map((i) => `  {
    let oAt = (wg.z * TH + row${i}) * DQ + lane;
${qs.map((j) => `    scratch[oAt + ${j * TPR}u] = a${i}_${j};`).join('\n')}
    // (max, sum) after all splits' outputs: the combine kernel weighs split s by exp(m_s - M)
    if (lane == 0u) { scratch[params.splits * TH * DQ + wg.z * TH + row${i}] = vec4<f32>(m${i}, l${i}, 0.0, 0.0); }
  }`).join('\n')}`
    : rs.map((i) => `  {
    let inv = 1.0 / l${i};
${qs.map((j) => `    out[qAt${i} + ${j * TPR}u] = a${i}_${j} * inv;`).join('\n')}
${withLse ? `    if (lane == 0u) { lse[row${i}] = m${i} + log(l${i}); }` : ''}
  }`).join('\n')
}
}`,
  }));
}
