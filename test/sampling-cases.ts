/**
 * Logits and option sets shared by the host sampler's tests (sampling.test.ts) and the GPU sampler's
 * (kernels-sample.test.ts).
 */
import { rng } from '../runtime/sampling.js';

/** Logits of a few shapes: Gaussian, rounded (many ties), with −∞ entries, with NaN entries, one dominant token, flat. */
export function logitsOf(kind: string, V: number, seed: number): Float32Array {
  const r = rng(seed);
  const gauss = () => Math.sqrt(-2 * Math.log(1 - r())) * Math.cos(2 * Math.PI * r());
  const x = Float32Array.from({ length: V }, () => 3 * gauss());
  if (kind === 'ties') for (let i = 0; i < V; i++) x[i] = Math.round(x[i]!);
  if (kind === 'masked') for (let i = 0; i < V; i += 3) x[i] = -Infinity;
  if (kind === 'nan') for (let i = 1; i < V; i += 5) x[i] = NaN;
  if (kind === 'peaked') x[Math.floor(r() * V)] = 40;
  if (kind === 'flat') x.fill(0.25);
  return x;
}

export const SAMPLING_CASES: readonly { readonly temperature: number; readonly topK?: number; readonly topP?: number }[] = [
  { temperature: 1 },
  { temperature: 0.6, topP: 0.9 },
  { temperature: 0.3, topK: 5 },
  { temperature: 2.5, topK: 50, topP: 0.95 },
  { temperature: 1, topK: 1 },
  { temperature: 0.8, topP: 0.1 },
  { temperature: 1.3, topP: 1, topK: 100000 },
  { temperature: 0.7, topK: 40, topP: 0.5 },
];
