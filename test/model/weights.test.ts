import { describe, expect, it } from 'vitest';
import { bf16BitsToF32, f16BitsToF32, f32ToBf16Bits } from '../../src/gpu/tensor.js';
import { bf16ToF16 } from '../../src/model/weights.js';
import { freshRng } from '../helpers.js';

const bits = (xs: number[]): Uint16Array => Uint16Array.from(xs, f32ToBf16Bits);

describe('bf16ToF16 (weights stored for tensor cores)', () => {
  it('is exact in f16 normal range, both signs, and keeps zeros', () => {
    const rng = freshRng();
    const xs = Array.from({ length: 5000 }, () => (rng.uniform(0, 1) < 0.5 ? -1 : 1) * 2 ** rng.uniform(-14, 15.99));
    const b = bits([0, -0, 65280, -65280, 2 ** -14, ...xs]);
    const h = bf16ToF16(b)!;
    expect(h).toBeDefined();
    for (let i = 0; i < b.length; i++) {
      if (f16BitsToF32(h[i]) !== bf16BitsToF32(b[i])) throw new Error(`element ${i}: bf16 ${bf16BitsToF32(b[i])} became ${f16BitsToF32(h[i])} [seed ${rng.seed}]`);
    }
    expect(h[1]).toBe(0x8000);
  });

  it('rounds below the normal range to the nearest f16 subnormal (spacing 2^-24)', () => {
    const b = bits([1e-6, -3e-7, 2 ** -26, 1e-9]);
    const h = bf16ToF16(b)!;
    for (let i = 0; i < b.length; i++) expect(Math.abs(f16BitsToF32(h[i]) - bf16BitsToF32(b[i]))).toBeLessThanOrEqual(2 ** -25);
    expect(f16BitsToF32(h[3])).toBe(0);
  });

  it('refuses a matrix with a value beyond f16 range or not finite', () => {
    for (const bad of [65536, -1e5, 3e38, Infinity, -Infinity, NaN]) expect(bf16ToF16(bits([0.5, bad, 1]))).toBeUndefined();
  });
});
