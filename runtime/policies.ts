/**
 * Eviction policies. All share one budget semantics (keep the top-b scored entries per layer and KV head after each
 * prefill chunk, newest n_s forced); they differ only in where an entry's score comes from.
 */
export const POLICIES = ['locret', 'full', 'streaming', 'h2o', 'snapkv', 'random'] as const;
export type Policy = (typeof POLICIES)[number];

export interface PolicyTraits {
  /** entries are evicted at all */
  readonly evicts: boolean;
  /** scores come from the retaining heads inside the graph */
  readonly retainingHeads: boolean;
  /** scores come from the attention the entries receive (computed in the graph) */
  readonly attentionScores: 'h2o' | 'snapkv' | null;
  /** scores written by a fill kernel at insertion */
  readonly fill: 'streaming' | 'random' | null;
  /** scores read slot neighbours as time neighbours (pooling), so eviction must keep the cache in original order */
  readonly slotOrder: boolean;
  readonly describe: string;
}

export const POLICY_TRAITS: Record<Policy, PolicyTraits> = {
  locret: { evicts: true, retainingHeads: true, attentionScores: null, fill: null, slotOrder: false, describe: 'trained retaining heads score each entry at insertion' },
  full: { evicts: false, retainingHeads: false, attentionScores: null, fill: null, slotOrder: false, describe: 'no eviction: the cache grows with the prompt' },
  streaming: { evicts: true, retainingHeads: false, attentionScores: null, fill: 'streaming', slotOrder: false, describe: '4 sink tokens + the most recent' },
  h2o: { evicts: true, retainingHeads: false, attentionScores: 'h2o', fill: null, slotOrder: false, describe: 'attention received, accumulated over all queries so far' },
  snapkv: { evicts: true, retainingHeads: false, attentionScores: 'snapkv', fill: null, slotOrder: true, describe: "attention from the chunk's last 32 queries, pooled (kernel 5)" },
  random: { evicts: true, retainingHeads: false, attentionScores: null, fill: 'random', slotOrder: false, describe: 'uniform random scores' },
};

export function parsePolicy(s: string): Policy {
  if ((POLICIES as readonly string[]).includes(s)) return s as Policy;
  throw new Error(`unknown policy '${s}' (choose one of ${POLICIES.join(', ')})`);
}
