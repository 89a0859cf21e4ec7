/**
 * Executes generated kernels: pipeline cache (by kernel name), buffer allocation with live/peak accounting, and
 * command encoding. A prefill chunk or decode step records all of its dispatches into one encoder and submits once.
 *
 * Host cost per dispatch is kept small because a decode step is ~230 dispatches that each move little data: the
 * submission's parameters share one uniform buffer (uniforms.ts) bound at a dynamic offset, so a dispatch's bind
 * group depends only on its buffers and is cached across steps; pipelines use explicit layouts for that offset.
 */
import type { KernelSpec } from '../../compiler/wgsl.js';
import type { GpuContext } from './device.js';
import { packInto, paramBytes, ParamsBuffer } from './uniforms.js';
import { envFlag } from '../env.js';

export type Workgroups = readonly [number, number?, number?];

export interface Dispatch {
  readonly kernel: KernelSpec;
  /** one buffer (or buffer slice) per binding, in the kernel's binding order, looked up by binding name */
  readonly buffers: Readonly<Record<string, GPUBuffer | GPUBufferBinding>>;
  readonly params?: Readonly<Record<string, number>>;
  readonly workgroups: Workgroups;
}

interface Compiled {
  readonly pipeline: GPUComputePipeline;
  readonly layout: GPUBindGroupLayout;
  /** bytes of the params struct (0: none) */
  readonly paramBytes: number;
}

/**
 * Test mode (LOCRET_GUARD_BUFFERS=1): every buffer is followed by GUARD_BYTES of words that read as NaN in f32 and as
 * two NaNs in packed f16, bound with it when a whole buffer is bound. Shaders run without bound checks in Node
 * (device.ts), so a kernel that reads past its data, or relied on a clamped index, meets NaN in its outputs,
 * whichever way robustness is set.
 */
const GUARD_BYTES = 65536;
const GUARD_WORD = 0x7fff7fff;
let guardFill: Uint32Array<ArrayBuffer> | undefined; // one array of guard words, written after every buffer
const guardWords = () => (guardFill ??= new Uint32Array(new ArrayBuffer(GUARD_BYTES)).fill(GUARD_WORD));

/** Cached bind groups before the cache is dropped (entries naming destroyed buffers are never hit again). */
const MAX_BIND_GROUPS = 8192;

export class GpuRunner {
  private readonly pipelines = new Map<string, Compiled>();
  private readonly bindGroups = new Map<string, GPUBindGroup>();
  /**
   * The last bind group made for a dispatch's buffers record: memoized dispatches (compiler/lower.ts, step-memo.ts)
   * hand the same record to every decode step, so the identity check skips building the string key.
   */
  private readonly byRecord = new WeakMap<object, { kernel: KernelSpec; ub: GPUBuffer | null; bg: GPUBindGroup }>();
  private readonly bufIds = new WeakMap<GPUBuffer, number>();
  private nextBufId = 1;
  private readonly uniforms: ParamsBuffer;
  private live = 0;
  private peak = 0;
  private readonly sizes = new WeakMap<GPUBuffer, number>();
  /** number of dispatches recorded since construction (kernel-count checks) */
  dispatchCount = 0;
  /** NaN words after every buffer (LOCRET_GUARD_BUFFERS=1); not counted in live / peak bytes */
  private readonly guarded = envFlag('LOCRET_GUARD_BUFFERS');

  constructor(readonly gpu: GpuContext) {
    this.uniforms = new ParamsBuffer(gpu.device, Math.max(16, gpu.limits.minUniformBufferOffsetAlignment));
  }

  /** uniform buffers created so far (benchmarks: steady-state steps should create none) */
  get uniformBuffersCreated(): number {
    return this.uniforms.created;
  }

  get device(): GPUDevice {
    return this.gpu.device;
  }
  get liveBytes(): number {
    return this.live;
  }
  get peakBytes(): number {
    return this.peak;
  }
  resetPeak(): void {
    this.peak = this.live;
  }

  createBuffer(size: number, label: string, usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST): GPUBuffer {
    const bytes = Math.max(16, Math.ceil(size / 16) * 16);
    const guard = this.guarded && usage & GPUBufferUsage.COPY_DST ? GUARD_BYTES : 0;
    const buf = this.device.createBuffer({ size: bytes + guard, usage, label });
    if (guard) this.device.queue.writeBuffer(buf, bytes, guardWords());
    this.sizes.set(buf, bytes);
    this.live += bytes;
    this.peak = Math.max(this.peak, this.live);
    return buf;
  }

  /** Bytes a buffer was created for (its GPU size less the test guard). */
  bufferBytes(buf: GPUBuffer): number {
    return this.sizes.get(buf) ?? buf.size;
  }

  destroy(buf: GPUBuffer): void {
    const n = this.sizes.get(buf);
    if (n !== undefined) {
      this.live -= n;
      this.sizes.delete(buf);
    }
    buf.destroy();
  }

  upload(data: ArrayBufferView, label: string): GPUBuffer {
    const buf = this.createBuffer(data.byteLength, label);
    this.write(buf, data);
    return buf;
  }

  write(buf: GPUBuffer, data: ArrayBufferView, offset = 0): void {
    // writeBuffer needs a multiple of 4 bytes
    const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    if (bytes.byteLength % 4 === 0) this.device.queue.writeBuffer(buf, offset, bytes as Uint8Array<ArrayBuffer>);
    else {
      const pad = new Uint8Array(Math.ceil(bytes.byteLength / 4) * 4);
      pad.set(bytes);
      this.device.queue.writeBuffer(buf, offset, pad);
    }
  }

  pipeline(k: KernelSpec): GPUComputePipeline {
    return this.compiled(k).pipeline;
  }

  private compiled(k: KernelSpec): Compiled {
    let c = this.pipelines.get(k.name);
    if (!c) {
      if (k.enables.includes('f16') && !this.gpu.f16) throw new Error(`kernel ${k.name} needs shader-f16, which this device lacks`);
      if (k.enables.includes('subgroups') && !this.gpu.subgroups) throw new Error(`kernel ${k.name} needs subgroups, which this device lacks`);
      const pb = k.params.length ? paramBytes(k.params) : 0;
      const entries: GPUBindGroupLayoutEntry[] = k.bindings.map((b, i) => ({
        binding: i,
        visibility: GPUShaderStage.COMPUTE,
        buffer: { type: b.access === 'read' ? 'read-only-storage' : 'storage' },
      }));
      // the params struct sits at a per-dispatch offset of the submission's uniform buffer
      if (pb) entries.push({ binding: k.bindings.length, visibility: GPUShaderStage.COMPUTE, buffer: { type: 'uniform', hasDynamicOffset: true, minBindingSize: pb } });
      const layout = this.device.createBindGroupLayout({ entries, label: k.name });
      const module = this.device.createShaderModule({ code: k.code, label: k.name });
      const pipeline = this.device.createComputePipeline({
        layout: this.device.createPipelineLayout({ bindGroupLayouts: [layout], label: k.name }),
        compute: { module, entryPoint: 'main' },
        label: k.name,
      });
      c = { pipeline, layout, paramBytes: pb };
      this.pipelines.set(k.name, c);
    }
    return c;
  }

  private bufId(b: GPUBuffer): number {
    let id = this.bufIds.get(b);
    if (id === undefined) this.bufIds.set(b, (id = this.nextBufId++));
    return id;
  }

  /** The bind group of a dispatch's buffers (+ the params buffer), cached by kernel and buffer identities. */
  private bindGroup(d: Dispatch, c: Compiled, ub: GPUBuffer | null): GPUBindGroup {
    const k = d.kernel;
    const last = this.byRecord.get(d.buffers);
    if (last && last.kernel === k && last.ub === ub) return last.bg;
    const bg = this.bindGroupByKey(d, c, ub);
    this.byRecord.set(d.buffers, { kernel: k, ub, bg });
    return bg;
  }

  private bindGroupByKey(d: Dispatch, c: Compiled, ub: GPUBuffer | null): GPUBindGroup {
    const k = d.kernel;
    let key = k.name;
    for (const b of k.bindings) {
      const r = d.buffers[b.name];
      if (!r) throw new Error(`kernel ${k.name}: no buffer for binding '${b.name}'`);
      key += 'buffer' in r ? `|${this.bufId(r.buffer)}@${r.offset ?? 0}+${r.size ?? ''}` : `|${this.bufId(r)}`;
    }
    if (ub) key += `|u${this.bufId(ub)}`;
    let bg = this.bindGroups.get(key);
    if (bg) return bg;
    const entries: GPUBindGroupEntry[] = k.bindings.map((b, i) => {
      const r = d.buffers[b.name]!;
      const res = 'buffer' in r ? r : { buffer: r };
      this.checkBinding(k.name, b.name, res);
      // a guarded buffer (test mode) can pass the device's binding limit by its guard words alone: bind what fits,
      // which always covers its data (checkBinding)
      const limit = this.device.limits.maxStorageBufferBindingSize;
      if (res.size === undefined && res.buffer.size - (res.offset ?? 0) > limit) return { binding: i, resource: { ...res, size: limit & ~3 } };
      return { binding: i, resource: res };
    });
    if (ub) entries.push({ binding: k.bindings.length, resource: { buffer: ub, offset: 0, size: c.paramBytes } });
    bg = this.device.createBindGroup({ layout: c.layout, entries, label: k.name });
    if (this.bindGroups.size >= MAX_BIND_GROUPS) this.bindGroups.clear();
    this.bindGroups.set(key, bg);
    return bg;
  }

  /**
   * Records dispatches into one compute pass of `enc`; their parameters go to the shared params buffer. With
   * a query set `timing` (profile.ts), each dispatch takes a pass of its own that writes timestamps 2i and 2i + 1 of
   * the set at its start and end.
   */
  record(enc: GPUCommandEncoder, dispatches: readonly Dispatch[], timing?: GPUQuerySet): void {
    const compiled = dispatches.map((d) => this.compiled(d.kernel));
    const offsets: number[] = [];
    let bytes = 0;
    for (const c of compiled) {
      offsets.push(bytes);
      if (c.paramBytes) bytes += this.uniforms.slot(c.paramBytes);
    }
    let ub: GPUBuffer | null = null;
    if (bytes) {
      const dv = new DataView(this.uniforms.stage(bytes));
      dispatches.forEach((d, i) => {
        if (compiled[i]!.paramBytes) packInto(dv, offsets[i]!, d.kernel.name, d.kernel.params, d.params ?? {});
      });
      ub = this.uniforms.upload(bytes);
    }
    const shared = timing ? null : enc.beginComputePass();
    const timed = (i: number, querySet: GPUQuerySet) =>
      enc.beginComputePass({ timestampWrites: { querySet, beginningOfPassWriteIndex: 2 * i, endOfPassWriteIndex: 2 * i + 1 } });
    dispatches.forEach((d, i) => {
      const c = compiled[i]!;
      const pass = shared ?? timed(i, timing!);
      pass.setPipeline(c.pipeline);
      if (c.paramBytes) pass.setBindGroup(0, this.bindGroup(d, c, ub), [offsets[i]!]);
      else pass.setBindGroup(0, this.bindGroup(d, c, null));
      const [x, y = 1, z = 1] = d.workgroups;
      pass.dispatchWorkgroups(x, y, z);
      this.dispatchCount++;
      if (!shared) pass.end();
    });
    shared?.end();
  }

  /**
   * A storage binding over the device limit would only surface as a WebGPU validation error on an unnamed bind
   * group; fail here instead, naming the kernel, binding and buffer (large weights are split by runtime/weights.ts).
   */
  private checkBinding(kernel: string, name: string, r: GPUBufferBinding): void {
    const bytes = r.size ?? this.bufferBytes(r.buffer) - (r.offset ?? 0);
    if (bytes > this.gpu.maxBinding)
      throw new Error(`kernel ${kernel}: binding '${name}' (buffer '${r.buffer.label}', ${bytes} bytes) exceeds the storage-binding limit of ${this.gpu.maxBinding} bytes`);
  }

  /** One submission for a list of dispatches. */
  run(dispatches: readonly Dispatch[]): void {
    const enc = this.device.createCommandEncoder();
    this.record(enc, dispatches);
    this.device.queue.submit([enc.finish()]);
  }

  async read(buf: GPUBuffer, bytes: number, offset = 0): Promise<ArrayBuffer> {
    return (await this.readMany([{ buf, bytes, offset }]))[0]!;
  }

  /** Several ranges read back through one staging buffer: one submission and one map for all of them. */
  async readMany(ranges: readonly { buf: GPUBuffer; bytes: number; offset?: number }[]): Promise<ArrayBuffer[]> {
    const at: number[] = [];
    let size = 0;
    for (const r of ranges) {
      at.push(size);
      size += Math.ceil(r.bytes / 4) * 4; // copies move whole words
    }
    const staging = this.device.createBuffer({ size: Math.max(4, size), usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    const enc = this.device.createCommandEncoder();
    ranges.forEach((r, i) => enc.copyBufferToBuffer(r.buf, r.offset ?? 0, staging, at[i]!, Math.ceil(r.bytes / 4) * 4));
    this.device.queue.submit([enc.finish()]);
    await staging.mapAsync(GPUMapMode.READ);
    const mapped = staging.getMappedRange();
    const out = ranges.map((r, i) => mapped.slice(at[i]!, at[i]! + r.bytes));
    staging.unmap();
    staging.destroy();
    // the data may come from work the device rejected (an invalid shader, a dispatch past a limit): say so
    const errors = this.gpu.takeErrors();
    if (errors.length) throw new Error(`the GPU reported ${errors.length === 1 ? 'an error' : 'errors'} before this read: ${errors.join(' | ')}`);
    return out;
  }

  async readF32(buf: GPUBuffer, count: number, offset = 0): Promise<Float32Array> {
    return new Float32Array(await this.read(buf, count * 4, offset));
  }
  async readU32(buf: GPUBuffer, count: number, offset = 0): Promise<Uint32Array> {
    return new Uint32Array(await this.read(buf, count * 4, offset));
  }
}
