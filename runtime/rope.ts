/**
 * Rotary tables, computed on the CPU exactly as Hugging Face transformers does in f32: inverse frequencies per
 * rope variant, angle = f32(position · inv_freq), then cos/sin (rounded to f32) times the attention factor.
 * The GPU reads `(positions, rotaryDim/2)` pairs of `vec2<f32>(cos, sin)`; rotation is HF's rotate_half
 * convention (element i pairs with i + rotaryDim/2).
 */
import type { RopeConfig } from '../ir/config.js';

const fr = Math.fround;

/** f32 inverse frequencies, length rotaryDim/2. `long` picks Phi-3 longrope's long factors. */
export function ropeInvFreq(rope: RopeConfig, long = false): Float32Array {
  const half = rope.rotaryDim / 2;
  const out = new Float32Array(half);
  for (let i = 0; i < half; i++) {
    const expo = fr((2 * i) / rope.rotaryDim);
    const basePow = fr(Math.pow(fr(rope.theta), expo));
    out[i] = fr(1 / basePow);
  }
  switch (rope.kind) {
    case 'default':
      return out;
    case 'llama3': {
      // transformers _compute_llama3_parameters op by op in f32; torch evaluates `c / t` as `t.reciprocal() * c`
      const lowWavelen = rope.originalMaxPositions / rope.lowFreqFactor;
      const highWavelen = rope.originalMaxPositions / rope.highFreqFactor;
      const factor = fr(rope.factor);
      for (let i = 0; i < half; i++) {
        const f = out[i]!;
        const wavelen = fr(fr(1 / f) * fr(2 * Math.PI));
        let v = wavelen > lowWavelen ? fr(f / factor) : f;
        const medium = !(wavelen < highWavelen) && !(wavelen > lowWavelen);
        if (medium) {
          const smooth = fr(fr(fr(fr(1 / wavelen) * fr(rope.originalMaxPositions)) - fr(rope.lowFreqFactor)) / fr(rope.highFreqFactor - rope.lowFreqFactor));
          v = fr(fr(fr(fr(1 - smooth) * v) / factor) + fr(smooth * v));
        }
        out[i] = v;
      }
      return out;
    }
    case 'longrope': {
      const factors = long ? rope.longFactor : rope.shortFactor;
      if (factors.length !== half) throw new Error(`longrope factors have ${factors.length} entries, expected ${half}`);
      for (let i = 0; i < half; i++) {
        const expo = fr((2 * i) / rope.rotaryDim);
        out[i] = fr(1 / fr(fr(factors[i]!) * fr(Math.pow(fr(rope.theta), expo))));
      }
      return out;
    }
    default: {
      const never: never = rope;
      throw new Error(`unknown rope ${(never as { kind: string }).kind}`);
    }
  }
}

/** Multiplier on cos/sin (Phi-3 longrope's attention factor; 1 elsewhere). */
export function ropeAttentionFactor(rope: RopeConfig): number {
  return rope.kind === 'longrope' ? rope.attentionFactor : 1;
}

/** Whether a forward whose largest position is `maxPos` uses longrope's long factors (as HF decides it). */
export function useLongFactors(rope: RopeConfig, maxPos: number, forceLong = false): boolean {
  return rope.kind === 'longrope' && (forceLong || maxPos + 1 > rope.originalMaxPositions);
}

/** (positions, rotaryDim/2) interleaved (cos, sin) pairs, f32. */
export function ropeTable(rope: RopeConfig, positions: number, long = false): Float32Array {
  const inv = ropeInvFreq(rope, long);
  const half = inv.length;
  const af = fr(ropeAttentionFactor(rope));
  const out = new Float32Array(positions * half * 2);
  for (let p = 0; p < positions; p++) {
    for (let i = 0; i < half; i++) {
      const angle = fr(p * inv[i]!);
      out[(p * half + i) * 2] = fr(fr(Math.cos(angle)) * af);
      out[(p * half + i) * 2 + 1] = fr(fr(Math.sin(angle)) * af);
    }
  }
  return out;
}
