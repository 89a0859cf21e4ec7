import { orderKey } from './gpu-attention.js';

/**
 * Eviction with layout 'holes' (compiler/kernels/evict-holes.ts), one layer. Per KV head, kpos over [0, len) is a
 * permutation of ranks; ranks >= forcedFrom count as +inf; the `keep` best (key desc, rank asc) survive and take
 * their rank among the survivors as position. Survivors below keep stay put; survivors at or above keep fill the
 * evicted slots below keep, the i-th such survivor going to the i-th evicted slot, both counted in rank order.
 * Returns new copies of the arrays (K/V as raw 32-bit words, `words` per slot; `orig` moved along when given).
 */
export function refEvictHoles(
  d: { KV: number; len: number; keep: number; forcedFrom: number; capacity: number; words: number },
  k: Uint32Array,
  v: Uint32Array,
  scores: Float32Array,
  kpos: Uint32Array,
  orig?: Uint32Array,
): { k: Uint32Array; v: Uint32Array; scores: Float32Array; kpos: Uint32Array; orig?: Uint32Array } {
  const r = { k: k.slice(), v: v.slice(), scores: scores.slice(), kpos: kpos.slice(), orig: orig?.slice() };
  if (d.keep >= d.len || d.keep === 0) return r;
  const W = d.words;
  for (let g = 0; g < d.KV; g++) {
    const at = (s: number) => g * d.capacity + s;
    const slotOf: number[] = [];
    for (let s = 0; s < d.len; s++) slotOf[kpos[at(s)]!] = s;
    if (slotOf.length !== d.len || slotOf.some((s) => s === undefined)) throw new Error(`refEvictHoles: head ${g} positions are not a permutation of [0, ${d.len})`);
    const key = (rank: number) => (rank >= d.forcedFrom ? orderKey(Infinity) : orderKey(scores[at(slotOf[rank]!)]!));
    const ranks = Array.from({ length: d.len }, (_, i) => i);
    const survivors = ranks.sort((a, b) => key(b) - key(a) || a - b).slice(0, d.keep).sort((a, b) => a - b);
    const newRank = new Map(survivors.map((rank, i) => [slotOf[rank]!, i]));
    const byRank = slotOf.slice(0, d.len);
    const holes = byRank.filter((s) => s < d.keep && !newRank.has(s));
    const fillers = byRank.filter((s) => s >= d.keep && newRank.has(s));
    if (holes.length !== fillers.length) throw new Error('refEvictHoles: holes and fillers differ in number');
    for (const [s, nr] of newRank) if (s < d.keep) r.kpos[at(s)] = nr;
    fillers.forEach((src, i) => {
      const from = at(src), to = at(holes[i]!);
      r.k.set(k.subarray(from * W, from * W + W), to * W);
      r.v.set(v.subarray(from * W, from * W + W), to * W);
      r.scores[to] = scores[from]!;
      r.kpos[to] = newRank.get(src)!;
      if (orig && r.orig) r.orig[to] = orig[from]!;
    });
  }
  return r;
}
