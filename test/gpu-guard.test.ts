/**
 * The device flags (shader bound checks dropped in Node unless asked for) and the test guard after every buffer:
 * a kernel that reads past its data must see NaN, so the kernel tests, which all run with the guard, would fail.
 */
import { describe, expect, it } from 'vitest';
import { dawnFlags } from '../runtime/gpu/device.js';
import { kernel, ro, rw, wgsl } from '../compiler/wgsl.js';
import { gpuRunner } from './gpu-harness.js';

describe('dawnFlags', () => {
  const f16 = 'enable-dawn-features=allow_unsafe_apis,vulkan_enable_f16_on_nvidia';
  const noQuant = 'disable-dawn-features=timestamp_quantization';
  it('adds disable_robustness to the one enable list, or starts one', () => {
    expect(dawnFlags(f16, false)).toEqual([`${f16},disable_robustness`, noQuant]);
    expect(dawnFlags(`backend=vulkan ${f16},`, false)).toEqual(['backend=vulkan', `${f16},disable_robustness`, noQuant]);
    expect(dawnFlags(undefined, false)).toEqual([noQuant, 'enable-dawn-features=disable_robustness']);
    expect(dawnFlags('enable-dawn-features=', false)).toEqual(['enable-dawn-features=disable_robustness', noQuant]);
  });
  it('keeps bound checks when asked, or when the user disables the toggle, and never repeats it', () => {
    expect(dawnFlags(f16, true)).toEqual([f16, noQuant]);
    expect(dawnFlags(`${f16} disable-dawn-features=disable_robustness`, false)).toEqual([f16, 'disable-dawn-features=disable_robustness,timestamp_quantization']);
    expect(dawnFlags('enable-dawn-features=disable_robustness', false)).toEqual(['enable-dawn-features=disable_robustness', noQuant]);
  });
  it('asks for unquantized timestamps unless the user names that toggle', () => {
    expect(dawnFlags('enable-dawn-features=timestamp_quantization', true)).toEqual(['enable-dawn-features=timestamp_quantization']);
    expect(dawnFlags(noQuant, true)).toEqual([noQuant]);
  });
});

describe('buffer guard (LOCRET_GUARD_BUFFERS=1 in every test run)', () => {
  it('is on, drops the bound checks in Node, and turns a read past the data into NaN', async () => {
    expect(process.env.LOCRET_GUARD_BUFFERS).toBe('1');
    const r = await gpuRunner();
    expect(r.gpu.robustness, 'Node drops the bound checks by default').toBe(false);
    // y[i] = x[i + shift]: shift 0 stays inside, shift 1 reads one word past the last element
    const k = (shift: number) =>
      kernel({ op: 'test_guard_read', shift }, () => ({
        bindings: [ro('x', 'array<f32>'), rw('y', 'array<f32>')],
        params: [],
        workgroupSize: [4, 1, 1],
        body: wgsl`
@compute @workgroup_size(4)
fn main(@builtin(global_invocation_id) g: vec3<u32>) {
  y[g.x] = x[g.x + ${shift}u];
}`,
      }));
    const n = 16;
    const x = r.upload(Float32Array.from({ length: n }, (_, i) => i + 1), 'x');
    expect(r.bufferBytes(x)).toBe(n * 4);
    for (const shift of [0, 1]) {
      const y = r.createBuffer(n * 4, 'y');
      r.run([{ kernel: k(shift), buffers: { x, y }, workgroups: [n / 4] }]);
      const got = await r.readF32(y, n);
      expect(Array.from(got.subarray(0, n - 1)), `shift ${shift}`).toEqual(Array.from({ length: n - 1 }, (_, i) => i + 1 + shift));
      if (shift === 0) expect(got[n - 1]).toBe(n);
      else expect(got[n - 1], 'the word after the data').toBeNaN();
    }
  });
});

describe('GPU errors nobody captured', () => {
  it('make the next read throw with the message, once; reads after it work again', async () => {
    const r = await gpuRunner();
    // `meta` is a reserved word in WGSL: the shader does not compile, the dispatch never runs
    const bad = kernel({ op: 'test_invalid_shader' }, () => ({
      bindings: [rw('meta', 'array<f32>')],
      params: [],
      workgroupSize: [1, 1, 1],
      body: wgsl`
@compute @workgroup_size(1)
fn main() {
  meta[0] = 1.0;
}`,
    }));
    const buf = r.upload(new Float32Array([7]), 'y');
    const errors = console.error;
    console.error = () => {}; // the device also logs it
    try {
      r.run([{ kernel: bad, buffers: { meta: buf }, params: {}, workgroups: [1] }]);
      await expect(r.readF32(buf, 1)).rejects.toThrow(/the GPU reported .*meta/);
    } finally {
      console.error = errors;
    }
    expect(Array.from(await r.readF32(buf, 1)), 'the buffer kept its value').toEqual([7]);
    r.destroy(buf);
  });
});

describe('readMany', () => {
  it('reads several ranges (odd byte counts, offsets) in one map, each as read() would', async () => {
    const r = await gpuRunner();
    const a = r.upload(Uint32Array.from({ length: 37 }, (_, i) => i * 7 + 1), 'a');
    const b = r.upload(Float32Array.from({ length: 11 }, (_, i) => i / 3), 'b');
    const ranges = [{ buf: a, bytes: 37 * 4 }, { buf: b, bytes: 6, offset: 8 }, { buf: a, bytes: 12, offset: 100 }];
    const many = await r.readMany(ranges);
    expect(many.map((x) => x.byteLength)).toEqual([148, 6, 12]);
    for (const [i, x] of ranges.entries()) expect(new Uint8Array(many[i]!)).toEqual(new Uint8Array(await r.read(x.buf, x.bytes, x.offset)));
    expect(Array.from(new Uint32Array(many[2]!))).toEqual([176, 183, 190]); // words 25..27
    expect(await r.readMany([])).toEqual([]);
    r.destroy(a);
    r.destroy(b);
  });
});
