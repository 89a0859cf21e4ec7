/**
 * Unfused building blocks the fused qkv_rope kernel replaces: splitting a qkv row block into Q and the layer's
 * K/V cache, and copying the last rows of a matrix. Kept simple: they exist so the unfused graph can be run and
 * compared with the fused one.
 */
import type { Dispatch } from '../../runtime/gpu/runner.js';
import { kernel, ro, rw, wgsl } from '../wgsl.js';
import type { CacheDtype } from './attn-common.js';
import { kvQuantize } from './kv-int8.js';

const WG = 64;

export interface KvStoreOpts {
  readonly cacheDtype: CacheDtype;
  readonly numHeads: number;
  readonly numKvHeads: number;
  readonly headDim: number;
}

/**
 * qkv (T, (H+2KV)·D) → q (T, H, D), K/V into cache slots slot0+t (KV, capacity, D), kpos[h, slot0+t] = pos0+t.
 * An int8 cache quantizes whole rows (kv-int8.ts), which needs a row's max: a different kernel shape.
 */
export function kvStore(
  o: KvStoreOpts,
  d: { T: number; slot0: number; pos0: number; capacity: number },
  b: { qkv: GPUBuffer; q: GPUBuffer; kCache: GPUBuffer; vCache: GPUBuffer; kpos: GPUBuffer },
): Dispatch {
  const { numHeads: H, numKvHeads: KV, headDim: D } = o;
  if (o.cacheDtype === 'int8') return kvQuantize({ ...o, mode: 'qkv' }, d, b);
  const ct = o.cacheDtype;
  const k = kernel({ op: 'kv_store', cache: ct, H, KV, D }, () => ({
    enables: ct === 'f16' ? ['f16'] : [],
    bindings: [
      ro('qkv', 'array<f32>'), // (T, (H+2KV)·D)
      rw('q', 'array<f32>'), // (T, H, D)
      rw('kc', `array<${ct}>`), // (KV, capacity, D)
      rw('vc', `array<${ct}>`), // (KV, capacity, D)
      rw('kpos', 'array<u32>'), // (KV, capacity)
    ],
    params: [['T', 'u32'], ['slot0', 'u32'], ['pos0', 'u32'], ['cap', 'u32']],
    workgroupSize: [WG, 1, 1],
    body: wgsl`
const H = ${H}u; const KV = ${KV}u; const D = ${D}u; const W = ${(H + 2 * KV) * D}u;
@compute @workgroup_size(${WG}) fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nw: vec3u) {
  let i = gid.x + gid.y * nw.x * ${WG}u;
  if (i >= params.T * W) { return; }
  let t = i / W; let c = i % W;
  let v = qkv[i];
  if (c < H * D) { q[t * H * D + c] = v; return; }
  let kvc = c - H * D;
  let isV = kvc >= KV * D;
  let hc = select(kvc, kvc - KV * D, isV);
  let h = hc / D; let e = hc % D;
  let at = (h * params.cap + params.slot0 + t) * D + e;
  if (isV) { vc[at] = ${ct}(v); } else {
    kc[at] = ${ct}(v);
    if (e == 0u) { kpos[h * params.cap + params.slot0 + t] = params.pos0 + t; }
  }
}`,
  }));
  return { kernel: k, buffers: { qkv: b.qkv, q: b.q, kc: b.kCache, vc: b.vCache, kpos: b.kpos }, params: { T: d.T, slot0: d.slot0, pos0: d.pos0, cap: d.capacity }, workgroups: grid(Math.ceil((d.T * (H + 2 * KV) * D) / WG)) };
}

/** y (R, N) = the last R rows of x (T, N). */
export function copyLastRows(d: { T: number; R: number; N: number }, b: { x: GPUBuffer; y: GPUBuffer }): Dispatch {
  const k = kernel({ op: 'copy_last_rows' }, () => ({
    bindings: [ro('x', 'array<f32>'), rw('y', 'array<f32>')], // x (T, N), y (R, N)
    params: [['n', 'u32'], ['row0', 'u32']],
    workgroupSize: [WG, 1, 1],
    body: wgsl`
@compute @workgroup_size(${WG}) fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nw: vec3u) {
  let i = gid.x + gid.y * nw.x * ${WG}u;
  if (i >= params.n) { return; }
  y[i] = x[params.row0 + i];
}`,
  }));
  return { kernel: k, buffers: b, params: { n: d.R * d.N, row0: (d.T - d.R) * d.N }, workgroups: grid(Math.ceil((d.R * d.N) / WG)) };
}

/** Folds a 1-D workgroup count into 2-D under the 65535 per-dimension limit. */
export function grid(n: number): readonly [number, number] {
  const x = Math.min(Math.max(n, 1), 65535);
  return [x, Math.ceil(Math.max(n, 1) / x)];
}

/** buf[h, slot0+t] = start + t for every KV head: the original prompt positions of a step's entries (traces). */
export function fillPositions(d: { T: number; KV: number; slot0: number; start: number; capacity: number }, b: { buf: GPUBuffer }): Dispatch {
  const k = kernel({ op: 'fill_positions' }, () => ({
    bindings: [rw('buf', 'array<u32>')], // (KV, capacity)
    params: [['T', 'u32'], ['KV', 'u32'], ['slot0', 'u32'], ['start', 'u32'], ['cap', 'u32']],
    workgroupSize: [WG, 1, 1],
    body: wgsl`
@compute @workgroup_size(${WG}) fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nw: vec3u) {
  let i = gid.x + gid.y * nw.x * ${WG}u;
  if (i >= params.T * params.KV) { return; }
  let h = i / params.T; let t = i % params.T;
  buf[h * params.cap + params.slot0 + t] = params.start + t;
}`,
  }));
  return { kernel: k, buffers: b, params: { T: d.T, KV: d.KV, slot0: d.slot0, start: d.start, cap: d.capacity }, workgroups: grid(Math.ceil((d.T * d.KV) / WG)) };
}
