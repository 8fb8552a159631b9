import { describe, expect, it } from 'vitest';
import { axpby } from '../../src/kernels/elementwise.js';
import { expectClose, f32, freshRng, getGpu, poison } from '../helpers.js';

describe('axpby', () => {
  for (const n of [1, 17, 255, 1000, 70_001]) {
    it(`n=${n}`, async () => {
      const gpu = await getGpu();
      const rng = freshRng();
      const x = rng.normals(n);
      const y = rng.normals(n);
      const tx = gpu.upload(f32(x), [n], 'f32', 'x');
      const ty = gpu.upload(f32(y), [n], 'f32', 'y');
      axpby(gpu, tx, ty, 0.5, -2);
      const out = await gpu.readF32(ty);
      const ref = x.map((v, i) => 0.5 * v - 2 * y[i]);
      expectClose('axpby', out, ref, 1e-6, rng);
      gpu.free(tx);
      gpu.free(ty);
    });
  }
  it('rejects mismatched sizes', async () => {
    const gpu = await getGpu();
    const a = gpu.tensor([3], 'f32', 'a');
    const b = gpu.tensor([4], 'f32', 'b');
    poison(gpu, b);
    expect(() => axpby(gpu, a, b, 1, 1)).toThrow(/b has 4 elements, expected 3/);
  });
});
