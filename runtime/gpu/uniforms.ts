/**
 * Uniform parameters of a whole submission in one buffer: every dispatch's `Params` struct packed at
 * `minUniformBufferOffsetAlignment`-aligned offsets, written with one writeBuffer, bound with a dynamic offset.
 *
 *   buffer: | params of dispatch 0 | pad | params of dispatch 1 | pad | ... |      (stride = aligned slot)
 *
 * One buffer serves every submission: WebGPU orders `queue.writeBuffer` with submissions on the queue timeline, so
 * a submission reads the parameters written before it was submitted even when the next step's write follows at
 * once. Steps can then be queued back to back (greedy decoding queues dozens) while every dispatch keeps the same
 * bind group, which names the buffer: no bind group is created after the first step of each kind.
 */
import type { Param } from '../../compiler/wgsl.js';

/** Bytes of a kernel's Params struct as bound (4-byte scalars, rounded up to 16 like packParams). */
export const paramBytes = (params: readonly Param[]): number => Math.max(16, Math.ceil((params.length * 4) / 16) * 16);

const MIN_BYTES = 64 * 1024;

export class ParamsBuffer {
  private buf: GPUBuffer | null = null;
  private bytes = 0;
  private scratch = new ArrayBuffer(MIN_BYTES);
  /** buffers created so far (benchmarks: steady-state steps create none) */
  created = 0;

  constructor(
    private readonly device: GPUDevice,
    readonly align: number,
  ) {}

  /** The aligned slot size of a params struct of `bytes`. */
  slot(bytes: number): number {
    return Math.ceil(bytes / this.align) * this.align;
  }

  /** A host staging area of at least `bytes`. */
  stage(bytes: number): ArrayBuffer {
    if (this.scratch.byteLength < bytes) this.scratch = new ArrayBuffer(Math.max(bytes, 2 * this.scratch.byteLength));
    return this.scratch;
  }

  /** The params buffer, grown to at least `bytes`, holding the first `bytes` of the stage for the next submission. */
  upload(bytes: number): GPUBuffer {
    if (!this.buf || bytes > this.bytes) {
      const old = this.buf;
      this.bytes = Math.max(bytes, 2 * this.bytes, MIN_BYTES);
      this.buf = this.device.createBuffer({ size: this.bytes, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST, label: 'params' });
      this.created++;
      // submissions already queued still read the old buffer
      if (old) this.device.queue.onSubmittedWorkDone().then(() => old.destroy(), () => old.destroy());
    }
    this.device.queue.writeBuffer(this.buf, 0, this.scratch, 0, Math.ceil(bytes / 4) * 4);
    return this.buf;
  }
}

/** Writes `values` of `params` at byte `offset` of `dv` (the layout of packParams in compiler/wgsl.ts). */
export function packInto(dv: DataView, offset: number, kernel: string, params: readonly Param[], values: Readonly<Record<string, number>>): void {
  for (let i = 0; i < params.length; i++) {
    const [n, t] = params[i]!;
    const v = values[n];
    if (v === undefined) throw new Error(`kernel ${kernel}: missing param '${n}'`);
    if (t === 'f32') dv.setFloat32(offset + i * 4, v, true);
    else if (t === 'i32') dv.setInt32(offset + i * 4, v, true);
    else dv.setUint32(offset + i * 4, v, true);
  }
}
