import { describe, expect, it } from 'vitest';
import { bf16BitsToF32, f16BitsToF32, f32ToBf16Bits } from '../../src/gpu/tensor.js';
import { bf16ToF16, GpuWeights, type HostTensor } from '../../src/model/weights.js';
import { freshRng, getGpu } from '../helpers.js';

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
    expect(h.length).toBe(b.length + 1);
    expect(h[b.length]).toBe(0);
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

describe('GpuWeights.uploadMatrix', () => {
  const host = (dtype: 'bf16' | 'f32', values: number[]): HostTensor => {
    const data = dtype === 'f32' ? new Uint8Array(Float32Array.from(values).buffer) : new Uint8Array(bits(values).buffer);
    return { dtype, shape: [values.length], data };
  };

  it('stores f16 when asked, from bf16 or f32 checkpoints (odd lengths padded), and bf16 for a matrix beyond f16', async () => {
    const gpu = await getGpu();
    const w = new GpuWeights(gpu, 'f16');
    const values = [0.5, -1.25, 3e-3, 1000, -7];
    for (const dtype of ['bf16', 'f32'] as const) {
      const t = w.uploadMatrix(`m_${dtype}`, host(dtype, values));
      expect(t.dtype).toBe('f16');
      const got = new Uint16Array(await gpu.read(t)).subarray(0, values.length);
      expect(Array.from(got, f16BitsToF32)).toEqual(values.map((v) => bf16BitsToF32(f32ToBf16Bits(v))));
    }
    const big = w.uploadMatrix('big', host('bf16', [1, 70000, 2]));
    expect(big.dtype).toBe('bf16');
    expect(Array.from(new Uint16Array(await gpu.read(big)).subarray(0, 3), bf16BitsToF32)).toEqual([1, bf16BitsToF32(f32ToBf16Bits(70000)), 2]);
    w.free();
  });
});
