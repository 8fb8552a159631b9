import { describe, expect, it } from 'vitest';
import { columnSum, sumSquares } from '../../src/kernels/reduce.js';
import { expectClose, f32, freshRng, getGpu, poison, relErr } from '../helpers.js';

// f32 sums against float64: measured errors ~1e-7; the bound leaves room.
const BOUND = 1e-5;

function columnSumRef(x: Float64Array, C: number): Float64Array {
  const out = new Float64Array(C);
  x.forEach((v, i) => (out[i % C] += v));
  return out;
}

describe('columnSum', () => {
  const cases: [rows: number, C: number][] = [
    [1, 64],
    [17, 96],
    [129, 128],
    [1000, 768],
    [2000, 64],
    [20_000, 3],
  ];
  for (const [rows, C] of cases) {
    for (const accumulate of [false, true]) {
      it(`rows ${rows}, C ${C}${accumulate ? ', accumulating' : ''}`, async () => {
        const gpu = await getGpu();
        const rng = freshRng();
        // Gradients with a common offset per column, so partial sums do not cancel to noise.
        const offsets = rng.normals(C);
        const x = Float64Array.from(f32(rng.normals(rows * C).map((v, i) => v + offsets[i % C])));
        const init = accumulate ? Float64Array.from(f32(rng.normals(C, 10))) : new Float64Array(C);
        const tx = gpu.upload(f32(x), [rows, C], 'f32', 'x');
        const tout = gpu.upload(f32(init), [C], 'f32', 'out');
        if (!accumulate) poison(gpu, tout);
        columnSum(gpu, tx, tout, { accumulate });
        expectClose('columnSum', await gpu.readF32(tout), columnSumRef(x, C).map((v, i) => v + init[i]), BOUND, rng);
        gpu.free(tx);
        gpu.free(tout);
      });
    }
  }

  it('rejects mismatched shapes and dtypes', async () => {
    const gpu = await getGpu();
    const x = gpu.tensor([5, 8], 'f32', 'grad');
    expect(() => columnSum(gpu, x, gpu.tensor([7], 'f32', 'dBias'))).toThrow(/dBias has 7 elements, expected C = 8 \(the last dimension of grad\)/);
    expect(() => columnSum(gpu, gpu.tensor([40], 'f32', 'flat'), gpu.tensor([40], 'f32', 'o'))).toThrow(/flat\[40\]:f32 should be \[rows, C\]/);
    expect(() => columnSum(gpu, gpu.tensor([5, 8], 'bf16', 'half'), gpu.tensor([8], 'f32', 'o'))).toThrow(/half is bf16, expected f32/);
  });
});

describe('sumSquares', () => {
  it('adds the squares of every element of several tensors', async () => {
    const gpu = await getGpu();
    const rng = freshRng();
    // LoRA-like gradients: many small tensors, one large, sizes off the 2048-element chunk.
    const sizes = [1, 17, 129, 2047, 2049, 64 * 768, 300_001];
    const xs = sizes.map((n, k) => Float64Array.from(f32(rng.normals(n, 10 ** (k % 3 - 1)))));
    const ts = xs.map((x, k) => gpu.upload(f32(x), [x.length], 'f32', `grad${k}`));
    const out = gpu.tensor([1], 'f32', 'normSq');
    poison(gpu, out);
    sumSquares(gpu, ts, out);
    const ref = xs.reduce((s, x) => s + x.reduce((a, v) => a + v * v, 0), 0);
    const first = await gpu.readF32(out);
    expectClose('sumSquares', first, [ref], BOUND, rng);

    // Deterministic: the same bits again, even after the scratch buffer was used for less.
    sumSquares(gpu, ts.slice(0, 2), out);
    poison(gpu, out);
    sumSquares(gpu, ts, out);
    expect(relErr(await gpu.readF32(out), first)).toBe(0);
    for (const t of [...ts, out]) gpu.free(t);
  });

  it('is zero for no tensors or empty ones', async () => {
    const gpu = await getGpu();
    const out = gpu.tensor([1], 'f32', 'normSq');
    poison(gpu, out);
    sumSquares(gpu, [], out);
    expect(Array.from(await gpu.readF32(out))).toEqual([0]);
    poison(gpu, out);
    sumSquares(gpu, [gpu.tensor([0], 'f32', 'empty')], out);
    expect(Array.from(await gpu.readF32(out))).toEqual([0]);
  });

  it('rejects a bad output or input', async () => {
    const gpu = await getGpu();
    const g = gpu.tensor([4], 'f32', 'g');
    expect(() => sumSquares(gpu, [g], gpu.tensor([2], 'f32', 'norm2'))).toThrow(/norm2\[2\]:f32 should hold 1 element/);
    expect(() => sumSquares(gpu, [g, gpu.tensor([4], 'bf16', 'lora.B')], gpu.tensor([1], 'f32', 'n'))).toThrow(/lora.B is bf16, expected f32/);
  });
});
