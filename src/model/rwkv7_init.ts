/**
 * Random RWKV-7 (x070) weights with realistic ranges, for demos, benchmarks and
 * tests: lerp coefficients in [0,1], decays spanning slow to fast, a/v gates
 * away from saturation, LayerNorm gains near 1, Linear weights ~ N(0, 1/in).
 */
import { f32ToBf16Bits } from '../gpu/tensor.js';
import type { Rng } from '../util/rng.js';
import { Rng as SeededRng } from '../util/rng.js';
import { rwkv7Shapes, type Rwkv7Dims } from './rwkv7_config.js';
import type { HostTensor } from './weights.js';

/** The distribution of a checkpoint tensor, by its key. */
export function rwkv7InitDraw(key: string, shape: readonly number[]): (rng: Rng) => number {
  const last = key.replace(/\.(weight|bias)$/, '').split('.').pop()!;
  const fanIn = shape[shape.length - 1];
  const normal = (std: number) => (r: Rng) => r.normal() * std;
  const uniform = (lo: number, hi: number) => (r: Rng) => r.uniform(lo, hi);
  if (key.endsWith('.bias')) return uniform(-0.2, 0.2);
  if (/^ln/.test(last)) return uniform(0.6, 1.4);
  switch (last) {
    case 'emb':
      return uniform(-1, 1);
    case 'head':
      return normal(2 / Math.sqrt(fanIn));
    case 'x_r': case 'x_w': case 'x_k': case 'x_v': case 'x_a': case 'x_g':
      return uniform(0, 1);
    case 'w0':
      return uniform(-4, 1);
    case 'a0':
      return uniform(-1, 1);
    case 'v0':
      return uniform(-0.5, 1.5);
    case 'k_k':
      return uniform(0.5, 1.2);
    case 'k_a':
      return uniform(0.5, 1.5);
    case 'r_k':
      return uniform(-0.5, 0.5);
    case 'w1': case 'a1': case 'v1': case 'g1':
      return normal(1 / Math.sqrt(shape[0]));
    case 'w2': case 'a2': case 'v2': case 'g2':
      return normal(0.5 / Math.sqrt(shape[0]));
    default:
      // The Linear weights [out, in]; relu²'s output scale is kept moderate.
      return normal(1 / Math.sqrt(fanIn));
  }
}

/** A random bf16 checkpoint with every x070 key, like an official `.pth`. */
export function randomRwkv7Weights(dims: Rwkv7Dims, seed: number): Map<string, HostTensor> {
  const rng = new SeededRng(seed);
  const out = new Map<string, HostTensor>();
  for (const [key, shape] of rwkv7Shapes(dims)) {
    const n = shape.reduce((a, b) => a * b, 1);
    const draw = rwkv7InitDraw(key, shape);
    const bits = new Uint16Array(n);
    for (let i = 0; i < n; i++) bits[i] = f32ToBf16Bits(draw(rng));
    out.set(key, { dtype: 'bf16', shape, data: new Uint8Array(bits.buffer) });
  }
  return out;
}

/** RWKV-PEFT's low-rank sizes for an x070 model of n_embd C (spec §2.2). */
export function rwkv7DefaultDims(nLayer: number, C: number, vocab: number, headSize = 64): Rwkv7Dims {
  const r32 = (x: number): number => Math.max(32, Math.round(x / 32) * 32);
  return {
    nLayer,
    nEmbd: C,
    headSize,
    nHead: C / headSize,
    vocab,
    ffnHidden: 4 * C,
    dW: r32(1.8 * Math.sqrt(C)),
    dA: r32(1.8 * Math.sqrt(C)),
    dV: r32(1.3 * Math.sqrt(C)),
    dG: C === 1024 ? 128 : r32(0.6 * C ** 0.8),
  };
}
