import { describe, expect, it } from 'vitest';
import { dropout, dropoutKeep } from '../../src/kernels/dropout.js';
import { expectClose, f32, freshRng, getGpu, poison } from '../helpers.js';

describe('dropout', () => {
  for (const [n, p] of [[1, 0.5], [1000, 0.1], [70_001, 0.3]] as const) {
    it(`n=${n} p=${p} matches the host mask, and accumulates`, async () => {
      const gpu = await getGpu();
      const rng = freshRng();
      const seed = rng.u32();
      const salt = rng.int(1000);
      const x = rng.normals(n);
      const base = rng.normals(n);
      const tx = gpu.upload(f32(x), [n], 'f32', 'x');
      const ty = gpu.tensor([n], 'f32', 'y');
      const ts = gpu.upload(Uint32Array.of(seed), [1], 'u32', 'seed');
      poison(gpu, ty);
      dropout(gpu, tx, ty, ts, p, salt);
      const y = await gpu.readF32(ty);
      const ref = x.map((v, i) => (dropoutKeep(seed, salt, i, p) ? v / (1 - p) : 0));
      expectClose('dropout', y, ref, 1e-6, rng);
      const tz = gpu.upload(f32(base), [n], 'f32', 'z');
      dropout(gpu, tx, tz, ts, p, salt, { accumulate: true });
      expectClose('dropout accumulate', await gpu.readF32(tz), ref.map((v, i) => v + base[i]), 1e-6, rng);
      if (n > 100) {
        const kept = ref.filter((v) => v !== 0).length / n;
        expect(Math.abs(kept - (1 - p))).toBeLessThan(0.05);
      }
      for (const t of [tx, ty, ts, tz]) gpu.free(t);
    });
  }
  it('a different seed or salt gives a different mask', () => {
    const a = Array.from({ length: 256 }, (_, i) => dropoutKeep(1, 2, i, 0.5));
    const b = Array.from({ length: 256 }, (_, i) => dropoutKeep(3, 2, i, 0.5));
    const c = Array.from({ length: 256 }, (_, i) => dropoutKeep(1, 4, i, 0.5));
    expect(a).not.toEqual(b);
    expect(a).not.toEqual(c);
  });
});
