/**
 * Uniform parameters of a whole submission in one buffer: every dispatch's `Params` struct packed at
 * `minUniformBufferOffsetAlignment`-aligned offsets, written with one writeBuffer, bound with a dynamic offset.
 *
 *   buffer: | params of dispatch 0 | pad | params of dispatch 1 | pad | ... |      (stride = aligned slot)
 *
 * Buffers come from a pool and go back to it only once the queue reports the submission that read them done, so
 * no pending submission ever sees its parameters overwritten. A decode step awaits its readback, so steady-state
 * decoding keeps reusing the same buffer, which keeps bind groups (which name the buffer) cacheable.
 */
import type { Param } from '../../compiler/wgsl.js';

/** Bytes of a kernel's Params struct as bound (4-byte scalars, rounded up to 16 like packParams). */
export const paramBytes = (params: readonly Param[]): number => Math.max(16, Math.ceil((params.length * 4) / 16) * 16);

/** Idle buffers kept for reuse; more are destroyed when returned. */
const KEEP = 4;
const MIN_BYTES = 64 * 1024;

export class UniformPool {
  private readonly idle: GPUBuffer[] = [];
  private bytes = MIN_BYTES;
  private scratch = new ArrayBuffer(MIN_BYTES);
  /** buffers handed out so far (tests and benchmarks: checks that decode reuses them) */
  created = 0;

  constructor(
    private readonly device: GPUDevice,
    readonly align: number,
  ) {}

  /** The aligned slot size of a params struct of `bytes`. */
  slot(bytes: number): number {
    return Math.ceil(bytes / this.align) * this.align;
  }

  /** A host staging area of at least `bytes` (zeroed where a previous submission left values is not needed). */
  stage(bytes: number): ArrayBuffer {
    if (this.scratch.byteLength < bytes) this.scratch = new ArrayBuffer(Math.max(bytes, 2 * this.scratch.byteLength));
    return this.scratch;
  }

  /** A buffer of at least `bytes` that no pending submission reads, holding the first `bytes` of the stage. */
  upload(bytes: number): GPUBuffer {
    if (bytes > this.bytes) {
      this.bytes = Math.max(bytes, 2 * this.bytes);
      for (const b of this.idle.splice(0)) b.destroy();
    }
    let buf = this.idle.pop();
    if (!buf) {
      buf = this.device.createBuffer({ size: this.bytes, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST, label: 'params' });
      this.created++;
    }
    this.device.queue.writeBuffer(buf, 0, this.scratch, 0, Math.ceil(bytes / 4) * 4);
    return buf;
  }

  /** Call after submitting the work that reads `buf`: it is reused once that work has finished. */
  release(buf: GPUBuffer): void {
    this.device.queue.onSubmittedWorkDone().then(
      () => {
        if (buf.size >= this.bytes && this.idle.length < KEEP) this.idle.push(buf);
        else buf.destroy();
      },
      () => buf.destroy(),
    );
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
