import { it } from 'vitest';
import { matmul } from '../compiler/kernels/matmul.js';
import { qkvRope } from '../compiler/kernels/qkv-rope.js';
import { retainingHead } from '../compiler/kernels/retaining.js';
import * as ew from '../compiler/kernels/elementwise.js';
it('gen', () => {
  const B = {} as GPUBuffer;
  const sel = (process.env.GEN ?? 'all');
  for (const T of [1, 3, 67]) for (const K of [64, 67]) for (const epilogue of ['store', 'residual', 'swiglu'] as const) for (const norm of [false, true]) for (const bias of [false, true])
    if (sel === 'all' || sel === 'mm') matmul({ wdtype: 'f16', norm, bias, epilogue }, { T, N: 67, K }, { x: B, w: B, y: B, normW: B, bias: B });
  for (const T of [1, 67]) if (sel === 'all' || sel === 'qkv') qkvRope({ wdtype: 'f16p', bias: true, cacheDtype: 'f16', numHeads: 4, numKvHeads: 2, headDim: 16, rotaryDim: 16, writePre: true }, { T, K: 64, eps: 1e-5, slot0: 0, pos0: 0, capacity: 200 }, { x: B, normW: B, w: B, bias: B, rope: B, q: B, kCache: B, vCache: B, kpos: B, pre: B });
  if (sel === 'all' || sel === 'ret') { retainingHead({ wdtype: 'f16' }, { T: 3, W: 64, KV: 2, slot0: 0, capacity: 10 }, { pre: B, fc1: B, fc2: B, scores: B }); retainingHead({ wdtype: 'f16' }, { T: 2000, W: 67, KV: 2, slot0: 0, capacity: 2000 }, { pre: B, fc1: B, fc2: B, scores: B }); }
  if (sel === 'all' || sel === 'ew') { ew.argmax({ rows: 2, n: 5 }, { x: B, out: B }); ew.rmsnorm({ T: 2, N: 8, eps: 1e-5 }, { x: B, w: B, y: B }); ew.embedding({ wdtype: 'f16p' }, { T: 2, hidden: 8 }, { ids: B, table: B, y: B }); }
});
