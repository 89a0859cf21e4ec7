/**
 * Training checkpoints (`<out>.ckpt`): one safetensors file holding, per layer, the f32 master weights under the
 * official head names plus their AdamW moments (`….fc1.exp_avg`, `….fc1.exp_avg_sq`, as torch names them), and
 * in the metadata the number of optimizer steps taken and the run's settings.
 */
import { renameSync } from 'node:fs';
import { openSafetensors, writeSafetensors } from '../io/safetensors.js';
import { headKey, type HeadDims, type HeadTensors } from './heads.js';

export interface CheckpointMeta {
  /** optimizer steps already taken */
  readonly step: number;
  /** the run's total steps (the schedule depends on it) */
  readonly steps: number;
  readonly seed: number;
  readonly lr: number;
  readonly maxTokens: number;
  readonly data: string;
}

const moment = (name: string, which: 'exp_avg' | 'exp_avg_sq') => name.replace(/\.weight$/, `.${which}`);
const bytes = (a: Float32Array) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

export function saveCheckpoint(file: string, d: HeadDims, t: HeadTensors, meta: CheckpointMeta): void {
  const tensors = [];
  for (let l = 0; l < d.layers; l++) {
    const s1 = [d.hidden, d.W];
    const s2 = [d.KV, d.hidden];
    tensors.push(
      { name: headKey.fc1(l), dtype: 'f32' as const, shape: s1, data: bytes(t.fc1[l]!) },
      { name: moment(headKey.fc1(l), 'exp_avg'), dtype: 'f32' as const, shape: s1, data: bytes(t.m1[l]!) },
      { name: moment(headKey.fc1(l), 'exp_avg_sq'), dtype: 'f32' as const, shape: s1, data: bytes(t.v1[l]!) },
      { name: headKey.fc2(l), dtype: 'f32' as const, shape: s2, data: bytes(t.fc2[l]!) },
      { name: moment(headKey.fc2(l), 'exp_avg'), dtype: 'f32' as const, shape: s2, data: bytes(t.m2[l]!) },
      { name: moment(headKey.fc2(l), 'exp_avg_sq'), dtype: 'f32' as const, shape: s2, data: bytes(t.v2[l]!) },
    );
  }
  const md: Record<string, string> = { format: 'locret-train-checkpoint', layers: String(d.layers), width: String(d.W), hidden: String(d.hidden), kv: String(d.KV) };
  for (const [k, v] of Object.entries(meta)) md[k] = String(v);
  // write then rename, so an interrupted save never leaves a truncated checkpoint behind
  writeSafetensors(`${file}.tmp`, tensors, md);
  renameSync(`${file}.tmp`, file);
}

export function loadCheckpoint(file: string, d: HeadDims): { tensors: HeadTensors; meta: CheckpointMeta } {
  const store = openSafetensors(file);
  const md = (store as unknown as { metadata?: Record<string, string> }).metadata ?? {};
  if (md.format !== 'locret-train-checkpoint') throw new Error(`${file}: not a locret training checkpoint`);
  const want = { layers: d.layers, width: d.W, hidden: d.hidden, kv: d.KV };
  for (const [k, v] of Object.entries(want))
    if (Number(md[k]) !== v) throw new Error(`${file}: checkpoint has ${k} ${md[k]}, this model needs ${v}`);
  const t: HeadTensors = { fc1: [], fc2: [], m1: [], v1: [], m2: [], v2: [] };
  for (let l = 0; l < d.layers; l++) {
    t.fc1.push(store.readF32(headKey.fc1(l)));
    t.m1.push(store.readF32(moment(headKey.fc1(l), 'exp_avg')));
    t.v1.push(store.readF32(moment(headKey.fc1(l), 'exp_avg_sq')));
    t.fc2.push(store.readF32(headKey.fc2(l)));
    t.m2.push(store.readF32(moment(headKey.fc2(l), 'exp_avg')));
    t.v2.push(store.readF32(moment(headKey.fc2(l), 'exp_avg_sq')));
  }
  const num = (k: string) => {
    const v = Number(md[k]);
    if (!Number.isFinite(v)) throw new Error(`${file}: metadata ${k} is missing`);
    return v;
  };
  const meta = { step: num('step'), steps: num('steps'), seed: num('seed'), lr: num('lr'), maxTokens: num('maxTokens'), data: md.data ?? '' };
  return { tensors: t, meta };
}
