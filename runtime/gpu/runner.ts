/**
 * Executes generated kernels: pipeline cache (by kernel name), buffer allocation with live/peak accounting, and
 * command encoding. A prefill chunk or decode step records all of its dispatches into one encoder and submits once.
 */
import { packParams, type KernelSpec } from '../../compiler/wgsl.js';
import type { GpuContext } from './device.js';

export type Workgroups = readonly [number, number?, number?];

export interface Dispatch {
  readonly kernel: KernelSpec;
  /** one buffer (or buffer slice) per binding, in the kernel's binding order, looked up by binding name */
  readonly buffers: Readonly<Record<string, GPUBuffer | GPUBufferBinding>>;
  readonly params?: Readonly<Record<string, number>>;
  readonly workgroups: Workgroups;
}

export class GpuRunner {
  private readonly pipelines = new Map<string, GPUComputePipeline>();
  private live = 0;
  private peak = 0;
  private readonly sizes = new WeakMap<GPUBuffer, number>();
  /** number of dispatches recorded since construction (kernel-count checks) */
  dispatchCount = 0;

  constructor(readonly gpu: GpuContext) {}

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
    const buf = this.device.createBuffer({ size: bytes, usage, label });
    this.sizes.set(buf, bytes);
    this.live += bytes;
    this.peak = Math.max(this.peak, this.live);
    return buf;
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
    let p = this.pipelines.get(k.name);
    if (!p) {
      if (k.enables.includes('f16') && !this.gpu.f16) throw new Error(`kernel ${k.name} needs shader-f16, which this device lacks`);
      const module = this.device.createShaderModule({ code: k.code, label: k.name });
      p = this.device.createComputePipeline({ layout: 'auto', compute: { module, entryPoint: 'main' }, label: k.name });
      this.pipelines.set(k.name, p);
    }
    return p;
  }

  /** Records dispatches into a pass of `enc` (uniform buffers are created per dispatch and freed after submit). */
  record(enc: GPUCommandEncoder, dispatches: readonly Dispatch[], transient: GPUBuffer[]): void {
    const pass = enc.beginComputePass();
    for (const d of dispatches) {
      const p = this.pipeline(d.kernel);
      const entries: GPUBindGroupEntry[] = d.kernel.bindings.map((b, i) => {
        const r = d.buffers[b.name];
        if (!r) throw new Error(`kernel ${d.kernel.name}: no buffer for binding '${b.name}'`);
        const res = 'buffer' in r ? r : { buffer: r };
        this.checkBinding(d.kernel.name, b.name, res);
        return { binding: i, resource: res };
      });
      if (d.kernel.params.length) {
        const data = packParams(d.kernel.params, d.params ?? {});
        const ub = this.device.createBuffer({ size: data.byteLength, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
        this.device.queue.writeBuffer(ub, 0, data);
        transient.push(ub);
        entries.push({ binding: d.kernel.bindings.length, resource: { buffer: ub } });
      }
      pass.setPipeline(p);
      pass.setBindGroup(0, this.device.createBindGroup({ layout: p.getBindGroupLayout(0), entries }));
      const [x, y = 1, z = 1] = d.workgroups;
      pass.dispatchWorkgroups(x, y, z);
      this.dispatchCount++;
    }
    pass.end();
  }

  /**
   * A storage binding over the device limit would only surface as a WebGPU validation error on an unnamed bind
   * group; fail here instead, naming the kernel, binding and buffer (large weights are split by runtime/weights.ts).
   */
  private checkBinding(kernel: string, name: string, r: GPUBufferBinding): void {
    const bytes = r.size ?? r.buffer.size - (r.offset ?? 0);
    if (bytes > this.gpu.maxBinding)
      throw new Error(`kernel ${kernel}: binding '${name}' (buffer '${r.buffer.label}', ${bytes} bytes) exceeds the storage-binding limit of ${this.gpu.maxBinding} bytes`);
  }

  /** One submission for a list of dispatches. */
  run(dispatches: readonly Dispatch[]): void {
    const enc = this.device.createCommandEncoder();
    const transient: GPUBuffer[] = [];
    this.record(enc, dispatches, transient);
    this.device.queue.submit([enc.finish()]);
    for (const b of transient) b.destroy();
  }

  async read(buf: GPUBuffer, bytes: number, offset = 0): Promise<ArrayBuffer> {
    const size = Math.ceil(bytes / 4) * 4;
    const staging = this.device.createBuffer({ size, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    const enc = this.device.createCommandEncoder();
    enc.copyBufferToBuffer(buf, offset, staging, 0, size);
    this.device.queue.submit([enc.finish()]);
    await staging.mapAsync(GPUMapMode.READ);
    const out = staging.getMappedRange().slice(0, bytes);
    staging.unmap();
    staging.destroy();
    return out;
  }

  async readF32(buf: GPUBuffer, count: number, offset = 0): Promise<Float32Array> {
    return new Float32Array(await this.read(buf, count * 4, offset));
  }
  async readU32(buf: GPUBuffer, count: number, offset = 0): Promise<Uint32Array> {
    return new Uint32Array(await this.read(buf, count * 4, offset));
  }
}
