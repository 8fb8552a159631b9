import { describe, expect, it } from 'vitest';
import { view, type Tensor } from '../../src/gpu/tensor.js';
import { matmulF32, matmulWeight } from '../../src/kernels/matmul.js';
import { appendInputs, expectClose, f32, freshRng, getGpu, poison, weight, type Rng } from '../helpers.js';
import { refMatmul, refMatmulAppend } from '../reference/matmul.js';

interface Case {
  m: number;
  k: number;
  n: number;
  transA: boolean;
  transB: boolean;
  accumulate: boolean;
  alpha: number;
}

/** Uploads A and C (random start when accumulating, NaN otherwise), runs `mm`, compares with the reference. */
async function check(
  rng: Rng,
  c: Case,
  bStored: ArrayLike<number>,
  mm: (ta: Tensor, tc: Tensor) => void,
  bound: number,
): Promise<void> {
  const gpu = await getGpu();
  const a = f32(rng.normals(c.m * c.k));
  const ta = gpu.upload(a, c.transA ? [c.k, c.m] : [c.m, c.k], 'f32', 'a');
  const tc = gpu.tensor([c.m, c.n], 'f32', 'c');
  const c0 = c.accumulate ? f32(rng.normals(c.m * c.n)) : undefined;
  if (c0) gpu.write(tc, c0);
  else poison(gpu, tc);
  mm(ta, tc);
  const out = await gpu.readF32(tc);
  // Relative to the terms' size: with K = 1 and accumulate, alpha·a·b and c0 can cancel.
  const { ref, mag } = refMatmul(a, bStored, c.m, c.k, c.n, c.transA, c.transB, c.alpha, c0);
  expectClose(`matmul ${JSON.stringify(c)}`, out, ref, bound, rng, mag);
  gpu.free(ta);
  gpu.free(tc);
}

// [M, K, N]: single elements, partial tiles on every side, long thin and wide shapes,
// several tiles both ways in the tall (128x64) and the wide (64x128) tiling.
const SHAPES: [number, number, number][] = [
  [1, 1, 1],
  [17, 129, 1],
  [1, 17, 129],
  [1000, 33, 70],
  [129, 300, 17],
  [65, 16, 64],
  [130, 20, 260],
];

// f32 accumulation over K terms of unit normals: the error is O(u·sqrt(K)), u = 6e-8.
const BOUND = 1e-5;

describe('matmulF32', () => {
  for (const transA of [false, true]) {
    for (const transB of [false, true]) {
      for (const [m, k, n] of SHAPES) {
        for (const [accumulate, alpha] of [
          [false, 1],
          [true, -0.75],
        ] as const) {
          const c: Case = { m, k, n, transA, transB, accumulate, alpha };
          it(`${transA ? 'Aᵀ' : 'A'}·${transB ? 'Bᵀ' : 'B'} M=${m} K=${k} N=${n} accumulate=${accumulate} alpha=${alpha}`, async () => {
            const gpu = await getGpu();
            const rng = freshRng();
            const b = f32(rng.normals(k * n));
            const tb = gpu.upload(b, transB ? [n, k] : [k, n], 'f32', 'b');
            await check(rng, c, b, (ta, tc) => matmulF32(gpu, ta, tb, tc, { transA, transB, accumulate, alpha }), BOUND);
            gpu.free(tb);
          });
        }
      }
    }
  }

  // LoRA weight gradients: dyᵀ·h over every token of a micro-batch.
  it('Aᵀ·B with K=8192 tokens, M=17, N=33, accumulate, alpha=0.5', async () => {
    const gpu = await getGpu();
    const rng = freshRng();
    const [m, k, n] = [17, 8192, 33];
    const b = f32(rng.normals(k * n));
    const tb = gpu.upload(b, [k, n], 'f32', 'b');
    const c: Case = { m, k, n, transA: true, transB: false, accumulate: true, alpha: 0.5 };
    await check(rng, c, b, (ta, tc) => matmulF32(gpu, ta, tb, tc, { transA: true, accumulate: true, alpha: 0.5 }), BOUND);
    gpu.free(tb);
  });

  // Split-K: K cut into slices summed by a second pass; slices that end mid-tile, more
  // slices asked for than K has tiles, every layout, accumulate and alpha.
  for (const transA of [false, true]) {
    for (const transB of [false, true]) {
      for (const [m, k, n, splitK] of [
        [70, 1000, 33, 3],
        [17, 1000, 129, 7],
        [5, 33, 3, 200],
      ] as const) {
        it(`split-K ${splitK}: ${transA ? 'Aᵀ' : 'A'}·${transB ? 'Bᵀ' : 'B'} M=${m} K=${k} N=${n}, accumulate, alpha=-0.5`, async () => {
          const gpu = await getGpu();
          const rng = freshRng();
          const b = f32(rng.normals(k * n));
          const tb = gpu.upload(b, transB ? [n, k] : [k, n], 'f32', 'b');
          const c: Case = { m, k, n, transA, transB, accumulate: true, alpha: -0.5 };
          await check(rng, c, b, (ta, tc) => matmulF32(gpu, ta, tb, tc, { transA, transB, accumulate: true, alpha: -0.5, splitK }), BOUND);
          gpu.free(tb);
        });
      }
    }
  }

  it('rejects a split-K that is not a positive integer', async () => {
    const gpu = await getGpu();
    const x = gpu.tensor([4, 8], 'f32', 'x');
    const y = gpu.tensor([4, 4], 'f32', 'y');
    expect(() => matmulF32(gpu, x, x, y, { transB: true, splitK: 0 })).toThrow(/splitK = 0, expected a positive integer/);
    expect(() => matmulF32(gpu, x, x, y, { transB: true, splitK: 1.5 })).toThrow(/splitK = 1.5/);
    gpu.free(x);
    gpu.free(y);
  });
});

describe('matmulWeight', () => {
  for (const dtype of ['bf16', 'f16'] as const) {
    for (const transW of [true, false]) {
      for (const [m, k, n] of SHAPES) {
        for (const [accumulate, alpha] of [
          [false, 1],
          [true, 1.5],
        ] as const) {
          const c: Case = { m, k, n, transA: false, transB: transW, accumulate, alpha };
          it(`A·${transW ? 'Wᵀ' : 'W'} (${dtype}) M=${m} K=${k} N=${n} accumulate=${accumulate} alpha=${alpha}`, async () => {
            const gpu = await getGpu();
            const rng = freshRng();
            const w = weight(rng, k * n, dtype, 1 / Math.sqrt(k));
            const tw = gpu.upload(w.bits, transW ? [n, k] : [k, n], dtype, 'w');
            await check(rng, c, w.values, (ta, tc) => matmulWeight(gpu, ta, tw, tc, { transW, accumulate, alpha }), BOUND);
            gpu.free(tw);
          });
        }
      }
      it(`split-K 5: A·${transW ? 'Wᵀ' : 'W'} (${dtype}) M=33 K=1000 N=65, no accumulate`, async () => {
        const gpu = await getGpu();
        const rng = freshRng();
        const [m, k, n] = [33, 1000, 65];
        const w = weight(rng, k * n, dtype, 1 / Math.sqrt(k));
        const tw = gpu.upload(w.bits, transW ? [n, k] : [k, n], dtype, 'w');
        const c: Case = { m, k, n, transA: false, transB: transW, accumulate: false, alpha: 1 };
        await check(rng, c, w.values, (ta, tc) => matmulWeight(gpu, ta, tw, tc, { transW, splitK: 5 }), BOUND);
        gpu.free(tw);
      });
    }
  }
});

// A LoRA segment appended to the weight's product: here (no tensor cores) an f32 product
// added after the frozen one; test/gpu/matmul_tc.test.ts checks the fused form.
describe('matmulWeight with a segment appended', () => {
  for (const transW of [true, false]) {
    for (const dims of [[1, 1, 1, 1], [70, 96, 64, 130], [129, 33, 8, 17]] as const) {
      it(`A·${transW ? 'Wᵀ' : 'W'} + s·A2·${transW ? 'Fᵀ' : 'F'}, [M,K1,K2,N] = [${dims.join(',')}], accumulate alpha=-1.5 s=0.5`, async () => {
        const gpu = await getGpu();
        const rng = freshRng();
        const [m, k1, k2, n] = dims;
        const { a, w, a2, f } = appendInputs(rng, dims, 'f16');
        const ta = gpu.upload(a, [m, k1], 'f32', 'a');
        const tw = gpu.upload(w.bits, transW ? [n, k1] : [k1, n], 'f16', 'w');
        const ta2 = gpu.upload(a2, [m, k2], 'f32', 'a2');
        const tf = gpu.upload(f, transW ? [n, k2] : [k2, n], 'f32', 'f');
        const c0 = f32(rng.normals(m * n));
        const out = gpu.upload(c0, [m, n], 'f32', 'c');
        matmulWeight(gpu, ta, tw, out, { transW, accumulate: true, alpha: -1.5, append: { a: ta2, scale: 0.5, w: tf } });
        const { ref, mag } = refMatmulAppend(a, w.values, a2, f, dims, transW, -1.5, 0.5, c0);
        expectClose('append', await gpu.readF32(out), ref, BOUND, rng, mag);
        for (const t of [ta, tw, ta2, tf, out]) gpu.free(t);
      });
    }
  }

  it('names the appended tensors whose shapes do not fit', async () => {
    const gpu = await getGpu();
    const x = gpu.tensor([5, 8], 'f32', 'x');
    const w = gpu.tensor([3, 8], 'f16', 'wq');
    const h = gpu.tensor([5, 4], 'f32', 'h');
    const fb = gpu.tensor([3, 5], 'f32', 'lora_b');
    const y = gpu.tensor([5, 3], 'f32', 'y');
    expect(() => matmulWeight(gpu, x, w, y, { transW: true, append: { a: h, scale: 1, w: fb } })).toThrow(
      /appended h\[5,4\]:f32 and lora_b\[3,5\]:f32 should be \[5,K2\] and \[3,K2\] with one K2/,
    );
    const fb4 = gpu.tensor([3, 4], 'f32', 'lora_b4');
    const inH = view(h, 0, [5, 3], 'in_h');
    expect(() => matmulWeight(gpu, x, w, inH, { transW: true, append: { a: h, scale: 1, w: fb4 } })).toThrow(/output in_h\[5,3\]:f32 overlaps input h\[5,4\]:f32/);
    for (const t of [x, w, h, fb, fb4, y]) gpu.free(t);
  });
});

describe('matmul shape errors', () => {
  it('names the tensors whose shapes or dtypes do not fit', async () => {
    const gpu = await getGpu();
    const x = gpu.tensor([5, 7], 'f32', 'x');
    const w = gpu.tensor([3, 7], 'bf16', 'wq');
    const wf = gpu.tensor([7, 3], 'f32', 'lora_a');
    const y = gpu.tensor([5, 3], 'f32', 'y');
    const bad = gpu.tensor([5, 4], 'f32', 'y_bad');
    expect(() => matmulWeight(gpu, x, w, y, { transW: false })).toThrow(
      /matmulWeight: inner dimensions differ: x\[5,7\]:f32 has K=7, but wq\[3,7\]:bf16 has K=3/,
    );
    expect(() => matmulWeight(gpu, x, w, bad, { transW: true })).toThrow(/y_bad\[5,4\]:f32 should be \[5,3\]/);
    expect(() => matmulWeight(gpu, x, wf, y, { transW: false })).toThrow(/lora_a\[7,3\]:f32 has dtype f32, expected bf16 or f16/);
    expect(() => matmulF32(gpu, x, w, y)).toThrow(/wq\[3,7\]:bf16 has dtype bf16, expected f32/);
    expect(() => matmulF32(gpu, x, wf, y, { transA: true })).toThrow(/x\[5,7\]:f32 \(read as its transpose \[7,5\]\) has K=5, but lora_a/);
    const sq = gpu.tensor([7, 7], 'f32', 'sq');
    expect(() => matmulF32(gpu, x, sq, x)).toThrow(/output x\[5,7\]:f32 overlaps input x\[5,7\]:f32/);
    const flat = gpu.tensor([35], 'f32', 'flat');
    expect(() => matmulF32(gpu, flat, wf, y)).toThrow(/flat\[35\]:f32 has rank 1, expected a 2-D matrix/);
    for (const t of [x, w, wf, y, bad, sq, flat]) gpu.free(t);
  });
});
