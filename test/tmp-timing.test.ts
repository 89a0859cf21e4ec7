import { it } from 'vitest';
import { attention, attentionScratchBytes, type AttentionOpts } from '../compiler/kernels/attention.js';
import { gpuRunner } from './gpu-harness.js';
it('timing', async () => {
  const r = await gpuRunner();
  for (const [T, base, splits, D, H, KV] of [[67, 0, 1, 64, 6, 2], [67, 130, undefined, 64, 6, 2], [1, 130, undefined, 64, 6, 2]] as const) {
    const o: AttentionOpts = { cacheDtype: 'f32', numHeads: H, numKvHeads: KV, headDim: D, rotaryDim: D };
    const cap = base + T + 7;
    const d = { T, base, capacity: cap, scale: 0.1, splits };
    const b = { q: r.createBuffer(T * H * D * 4, 'q'), kCache: r.createBuffer(KV * cap * D * 4, 'k'), vCache: r.createBuffer(KV * cap * D * 4, 'v'),
      kpos: r.createBuffer(KV * cap * 4, 'p'), rope: r.createBuffer(400 * D * 4, 'r'), out: r.createBuffer(T * H * D * 4, 'o'), lse: r.createBuffer(T * H * 4, 'l'),
      scratch: r.createBuffer(Math.max(16, attentionScratchBytes(o, d)), 's') };
    const ds = attention(o, d, b);
    let t0 = performance.now();
    for (const x of ds) r.pipeline(x.kernel);
    await r.device.queue.onSubmittedWorkDone();
    const tc = performance.now() - t0;
    t0 = performance.now();
    r.run(ds); await r.device.queue.onSubmittedWorkDone();
    const t1 = performance.now() - t0;
    t0 = performance.now();
    r.run(ds); await r.device.queue.onSubmittedWorkDone();
    console.log(`T=${T} base=${base} compile ${tc.toFixed(0)}ms run1 ${t1.toFixed(0)}ms run2 ${(performance.now() - t0).toFixed(0)}ms`);
  }
});
