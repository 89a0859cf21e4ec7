/**
 * Random weights generated on the GPU (benchmarks of 8B-shaped models with no checkpoint and no 16 GB upload):
 * uniform values in [-scale, scale) from a per-element hash, written as f32 or as packed f16 pairs; or raw random
 * bits (quantized weights' quants).
 */
import type { Dispatch } from '../../runtime/gpu/runner.js';
import { kernel, ro, rw, wgsl } from '../wgsl.js';
import { grid } from './cache-store.js';

const WG = 256;

export function fillRandom(o: { half: boolean }, d: { words: number; seed: number; scale: number; offset?: number }, b: { buf: GPUBuffer }): Dispatch {
  const k = kernel({ op: 'fill_random', half: o.half }, () => ({
    bindings: [rw('buf', 'array<u32>')], // (words) f32 bits, or two f16 per word
    params: [['words', 'u32'], ['seed', 'u32'], ['scale', 'f32'], ['offset', 'f32']],
    workgroupSize: [WG, 1, 1],
    body: wgsl`
fn hash(x: u32) -> u32 {
  var h = x * 747796405u + 2891336453u;
  h = ((h >> ((h >> 28u) + 4u)) ^ h) * 277803737u;
  return (h >> 22u) ^ h;
}
fn uni(i: u32) -> f32 { return params.offset + params.scale * (f32(hash(i ^ params.seed) >> 8u) / 8388608.0 - 1.0); }
@compute @workgroup_size(${WG}) fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nw: vec3u) {
  let i = gid.x + gid.y * nw.x * ${WG}u;
  if (i >= params.words) { return; }
  ${o.half ? 'buf[i] = pack2x16float(vec2f(uni(2u * i), uni(2u * i + 1u)));' : 'buf[i] = bitcast<u32>(uni(i));'}
}`,
  }));
  return { kernel: k, buffers: b, params: { words: d.words, seed: d.seed, scale: d.scale, offset: d.offset ?? 0 }, workgroups: grid(Math.ceil(d.words / WG)) };
}

/** Uniformly random u32 words (every bit a coin flip): the quants of random q8 / q4 weights. */
export function fillBits(d: { words: number; seed: number }, b: { buf: GPUBuffer }): Dispatch {
  const k = kernel({ op: 'fill_bits' }, () => ({
    bindings: [rw('buf', 'array<u32>')], // (words) random bits
    params: [['words', 'u32'], ['seed', 'u32']],
    workgroupSize: [WG, 1, 1],
    body: wgsl`
fn hash(x: u32) -> u32 {
  var h = x * 747796405u + 2891336453u;
  h = ((h >> ((h >> 28u) + 4u)) ^ h) * 277803737u;
  return (h >> 22u) ^ h;
}
@compute @workgroup_size(${WG}) fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nw: vec3u) {
  let i = gid.x + gid.y * nw.x * ${WG}u;
  if (i >= params.words) { return; }
  buf[i] = hash(hash(i ^ params.seed) + params.seed); // two rounds: one round's low bits are weak
}`,
  }));
  return { kernel: k, buffers: b, params: { words: d.words, seed: d.seed }, workgroups: grid(Math.ceil(d.words / WG)) };
}

/** dst = src, 16 bytes per thread and a grid-stride loop: the device's streaming read+write rate (bench ceiling). */
export function streamCopy(d: { vec4s: number }, b: { src: GPUBuffer; dst: GPUBuffer }): Dispatch {
  const k = kernel({ op: 'stream_copy' }, () => ({
    bindings: [ro('src', 'array<vec4<u32>>'), rw('dst', 'array<vec4<u32>>')], // (vec4s), (vec4s)
    params: [['n', 'u32'], ['stride', 'u32']],
    workgroupSize: [WG, 1, 1],
    body: wgsl`
@compute @workgroup_size(${WG}) fn main(@builtin(global_invocation_id) gid: vec3u) {
  for (var i = gid.x; i < params.n; i += params.stride) { dst[i] = src[i]; }
}`,
  }));
  const groups = Math.min(65535, Math.ceil(d.vec4s / WG), 4096);
  return { kernel: k, buffers: b, params: { n: d.vec4s, stride: groups * WG }, workgroups: [groups] };
}
