/**
 * HF directory → locret bundle: canonical tensors (q/k/v and gate/up fused), matrices in the chosen dtype, norms
 * and biases in f32, retaining heads included when given. q8 / q4 quantize the backbone matrices here, once
 * (runtime/quant.ts; stored as quants + scales), and keep the retaining heads and any matrix whose row length is
 * not a multiple of 32 in f16; tokenizer and generation config copied along. The plan
 * itself is derived from the config at load time (it depends on the device's features), so a bundle stays portable
 * between a browser without `shader-f16` and a desktop GPU.
 */
import { openModel } from './model-source.js';
import type { TensorInput } from './io/bundle.js';
import { writeBundle, type BundleManifest } from './io/bundle.js';
import { f32ToF16 } from './io/dtype.js';
import { QGROUP, quantize, type QuantDtype } from './quant.js';
import { isQuantizable, quantDtypeFor } from './weights.js';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { decoderGraph } from '../ir/models/decoder.js';
import { verify } from '../ir/verify.js';
import { fuse } from '../compiler/fuse.js';

export interface CompileOptions {
  readonly dtype: 'f16' | 'f32' | QuantDtype;
  readonly heads?: string;
  /** matrices that stay f16 under q8 / q4 */
  readonly onNote?: (note: string) => void;
  readonly onProgress?: (done: number, total: number, name: string) => void;
}

export function compileModel(hfDir: string, outDir: string, o: CompileOptions): BundleManifest {
  const src = openModel(hfDir, { heads: o.heads });
  if (src.kind === 'bundle') throw new Error(`${hfDir} is already a locret bundle`);
  const names = [...src.tensors.keys()];
  const halfOnly: string[] = [];
  function* tensors(): Iterable<TensorInput> {
    for (const [i, name] of names.entries()) {
      const t = src.tensors.get(name)!;
      const matrix = t.shape.length === 2;
      const f = t.f32();
      const q = quantDtypeFor(name, o.dtype, names);
      if (matrix && q && t.shape[1]! % QGROUP === 0) {
        yield { name, shape: t.shape, dtype: q, data: quantize(f, t.shape[0]!, t.shape[1]!, q) };
      } else {
        if (matrix && o.dtype !== 'f16' && o.dtype !== 'f32' && isQuantizable(name)) halfOnly.push(`${name} [${t.shape}]`);
        const half = o.dtype !== 'f32' && matrix;
        yield { name, shape: t.shape, dtype: half ? 'f16' : 'f32', data: half ? f32ToF16(f) : f };
      }
      o.onProgress?.(i + 1, names.length, name);
    }
  }
  const manifest = writeBundle(outDir, { config: src.config, tensors: tensors(), tokenizerDir: hfDir });
  if (halfOnly.length) o.onNote?.(`${o.dtype} needs a row length that is a multiple of ${QGROUP}; kept f16: ${halfOnly.join(', ')}`);
  // the fused, verified graph of a generation step (IR is plain data): the plan the runtime lowers on load, once it
  // knows the device's features (f16, binding limits) that pick the kernel variants
  const g = fuse(decoderGraph(src.config, { retainingHeads: src.hasHeads, logitsRows: 1 }));
  verify(g);
  fs.writeFileSync(path.join(outDir, 'plan.json'), JSON.stringify({ kernelsPerStep: g.nodes.filter((n) => n.op !== 'weight' && n.op !== 'input_ids' && n.op !== 'pre_output').length, graph: g }));
  return manifest;
}
