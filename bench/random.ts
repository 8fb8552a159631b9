/**
 * Random data for benchmarks, fast enough for the 2.9B layout: each tensor draws a
 * block of values (for weights, from the same distributions as rwkv7_init.ts) and
 * repeats it. Speed does not depend on the values as long as they are realistic and
 * nonzero; drawing 2.9 G values one by one would take minutes.
 */
import { f32ToBf16Bits } from '../src/gpu/tensor.js';
import { rwkv7Shapes, type Rwkv7Dims } from '../src/model/rwkv7_config.js';
import { rwkv7InitDraw } from '../src/model/rwkv7_init.js';
import type { HostTensor } from '../src/model/weights.js';
import { Rng } from '../src/util/rng.js';

/** Values drawn per tensor; a prime, so the repeats do not line up with rows. */
const BLOCK = 65521;

/** `out` filled with draws of `draw`, a block of them repeated. */
export function tiled<T extends Float32Array | Uint16Array>(out: T, draw: () => number): T {
  const first = Math.min(out.length, BLOCK);
  for (let i = 0; i < first; i++) out[i] = draw();
  for (let filled = first; filled < out.length; filled *= 2) out.copyWithin(filled, 0, Math.min(filled, out.length - filled));
  return out;
}

export function tiledRandomWeights(dims: Rwkv7Dims, seed: number): Map<string, HostTensor> {
  const rng = new Rng(seed);
  const out = new Map<string, HostTensor>();
  for (const [key, shape] of rwkv7Shapes(dims)) {
    const n = shape.reduce((a, b) => a * b, 1);
    const draw = rwkv7InitDraw(key, shape);
    const bits = tiled(new Uint16Array(n), () => f32ToBf16Bits(draw(rng)));
    out.set(key, { dtype: 'bf16', shape, data: new Uint8Array(bits.buffer) });
  }
  return out;
}
