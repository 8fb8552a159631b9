import { describe, expect, it, vi } from 'vitest';
import { packBf16, unpackBf16 } from '../../src/gpu/tensor.js';
import { matmulWeight, matmulF32, setMatmulMode, TC_MIN_MACS } from '../../src/kernels/matmul.js';
import { NARROW_TC_TILING, parseTcTiling, setTcTiling, SMALL_TC_TILING, stagingBankConflicts, TC_TILING, tcSupport, tcTilingName } from '../../src/kernels/matmul_tc.js';
import { appendInputs, expectClose, f32, freshRng, getGpu, poison, weight, type Rng } from '../helpers.js';
import { refMatmul, refMatmulAppend } from '../reference/matmul.js';

// Tensor cores are reachable only where Dawn exposes chromium-experimental-subgroup-matrix
// with an f16 configuration (NVIDIA through Vulkan, not lavapipe). Elsewhere these tests
// are reported skipped, unless RWKV_REQUIRE_TC=1 says this machine must have them.
const gpu = await getGpu();
const tc = tcSupport(gpu);
const required = process.env.RWKV_REQUIRE_TC === '1';

/**
 * The rounding bound of a product whose operands were rounded to f16 (`rounded` of them,
 * 2^-11 relative each) and summed over K in f32 (K·2^-24 at worst), relative to the
 * magnitude scale Σ|a||b|; an f32 epilogue adds 2^-23.
 */
function roundingBound(k: number, rounded: 1 | 2): number {
  return rounded * 2 ** -11 * 1.01 + k * 2 ** -24 + 2 ** -23;
}

/**
 * Row by row, ‖gpu − ref‖ <= bound·‖mag‖: the classical error bound of dot products of
 * rounded operands. Unlike ‖gpu − ref‖/‖ref‖ it is not inflated when a row's products
 * cancel, which f16 operands would otherwise be blamed for on short rows.
 */
function expectRounding(what: string, out: Float32Array, r: { ref: Float64Array; mag: Float64Array }, m: number, n: number, bound: number, rng: Rng): void {
  for (let i = 0; i < m; i++) {
    let err = 0;
    let scale = 0;
    for (let j = i * n; j < (i + 1) * n; j++) {
      if (!Number.isFinite(out[j])) throw new Error(`${what}: element ${j} is ${out[j]} (unwritten?) [seed ${rng.seed}]`);
      err += (out[j] - r.ref[j]) ** 2;
      scale += r.mag[j] ** 2;
    }
    if (!(Math.sqrt(err) <= bound * Math.sqrt(scale))) {
      throw new Error(`${what}: row ${i} error ${Math.sqrt(err / scale).toExponential(3)} of its magnitude scale > bound ${bound.toExponential(2)} [seed ${rng.seed}; rerun with RWKV_TEST_SEED=${rng.seed}]`);
    }
  }
}

/** op(A) rows with magnitudes from 1e-9 (gradients) to 1e4: each row's f16 scale must cope. */
function wideRows(rng: Rng, m: number, k: number, transA: boolean): Float32Array {
  const a = new Float32Array(m * k);
  for (let i = 0; i < m; i++) {
    const s = 10 ** rng.uniform(-9, 4);
    for (let l = 0; l < k; l++) a[transA ? l * m + i : i * k + l] = rng.normal() * s;
  }
  return a;
}

// [M, K, N]: single elements, partial tiles on every side (tiles are 128x256, K steps 32),
// K and N both multiples of 8 (vector loads) and not (element loads), and a real layer.
const SHAPES: [number, number, number][] = [
  [1, 1, 1],
  [17, 129, 1],
  [1, 17, 129],
  [1000, 33, 70],
  [129, 300, 17],
  [200, 96, 264],
  [1024, 768, 768],
];

// Weights are f16 or bf16 (which converts to f16 exactly in f16's normal range), so only
// the activations round there; with two f32 operands both do.

describe('tensor-core staging stores', () => {
  // The tilings in use with 16×16 matrices and warps of 32 (the H200's): A's and an [N, K]
  // weight's rows are BK/8 chunks long (padded by 8 f16), a [K, N] weight's BN/8.
  for (const t of [TC_TILING, SMALL_TC_TILING, NARROW_TC_TILING]) {
    it(`tiling ${tcTilingName(t)}: no bank conflicts`, () => {
      const threads = t.wm * t.wn * 32;
      const [bm, bn] = [t.wm * t.tm * 16, t.wn * t.tn * 16];
      const layouts = [
        ['A', t.bk / 8, t.bk + 8, (bm * t.bk) / 8 / threads],
        ['B [N, K]', t.bk / 8, t.bk + 8, (bn * t.bk) / 8 / threads],
        ['B [K, N]', bn / 8, bn + 8, (bn * t.bk) / 8 / threads],
      ] as const;
      for (const [what, chunks, ld, units] of layouts) expect(stagingBankConflicts(chunks, ld, threads, units), what).toBe(1);
    });
  }
});

describe('tensor-core matmul', () => {
  if (!tc) {
    if (required) {
      it('RWKV_REQUIRE_TC=1: this adapter must offer f16 subgroup matrices', () => {
        throw new Error(`adapter ${gpu.report().description} has no f16 subgroup-matrix configuration (features: ${gpu.report().features.join(', ')})`);
      });
    } else {
      it.skip(`skipped: adapter "${gpu.report().description}" has no chromium-experimental-subgroup-matrix f16 configuration`, () => {});
    }
    return;
  }

  for (const [m, k, n] of SHAPES) {
    for (const dtype of ['bf16', 'f16'] as const) {
      for (const transW of [true, false]) {
        for (const [accumulate, alpha] of [[false, 1], [true, -1.5]] as const) {
          it(`matmulWeight A·${transW ? 'Wᵀ' : 'W'} (${dtype}) M=${m} K=${k} N=${n} accumulate=${accumulate}`, async () => {
            setMatmulMode(gpu, 'tc');
            const rng = freshRng();
            const a = wideRows(rng, m, k, false);
            const w = weight(rng, k * n, dtype, 1 / Math.sqrt(k));
            const ta = gpu.upload(a, [m, k], 'f32', 'a');
            const tw = gpu.upload(w.bits, transW ? [n, k] : [k, n], dtype, 'w');
            const tcOut = gpu.tensor([m, n], 'f32', 'c');
            const c0 = accumulate ? f32(rng.normals(m * n, 1e-3)) : undefined;
            if (c0) gpu.write(tcOut, c0);
            else poison(gpu, tcOut);
            matmulWeight(gpu, ta, tw, tcOut, { transW, accumulate, alpha });
            const out = await gpu.readF32(tcOut);
            // Rows span 13 decades: compared row by row so small rows are checked too.
            expectRounding(`[${m},${k}]·[${k},${n}]`, out, refMatmul(a, w.values, m, k, n, false, transW, alpha, c0), m, n, roundingBound(k, 1), rng);
            for (const t of [ta, tw, tcOut]) gpu.free(t);
          });
        }
      }
    }
    for (const transA of [false, true]) {
      for (const transB of [false, true]) {
        if (m * k * n > 2 ** 26 && (transA || transB)) continue;
        it(`matmulF32 ${transA ? 'Aᵀ' : 'A'}·${transB ? 'Bᵀ' : 'B'} M=${m} K=${k} N=${n} accumulate, alpha=0.5`, async () => {
          setMatmulMode(gpu, 'tc');
          const rng = freshRng();
          const a = wideRows(rng, m, k, transA);
          // B's columns (of op(B)) scaled too: LoRA B and dh vary by orders of magnitude.
          const b = new Float32Array(k * n);
          for (let j = 0; j < n; j++) {
            const s = 10 ** rng.uniform(-6, 2);
            for (let l = 0; l < k; l++) b[transB ? j * k + l : l * n + j] = rng.normal() * s;
          }
          const ta = gpu.upload(a, transA ? [k, m] : [m, k], 'f32', 'a');
          const tb = gpu.upload(b, transB ? [n, k] : [k, n], 'f32', 'b');
          const tcOut = gpu.tensor([m, n], 'f32', 'c');
          const c0 = f32(rng.normals(m * n, 1e-12));
          gpu.write(tcOut, c0);
          matmulF32(gpu, ta, tb, tcOut, { transA, transB, accumulate: true, alpha: 0.5 });
          const out = await gpu.readF32(tcOut);
          expectRounding(`[${m},${k}]·[${k},${n}]`, out, refMatmul(a, b, m, k, n, transA, transB, 0.5, c0), m, n, roundingBound(k, 2), rng);
          for (const t of [ta, tb, tcOut]) gpu.free(t);
        });
      }
    }
  }

  // Every staging option on shapes with partial tiles and whole ones, vector and element B loads, both B layouts and dtypes.
  for (const name of ['2x2x4x4x32', '2x2x4x4x32d', '2x4x4x2x32d', '2x2x4x4x64', '4x2x4x4x16d', tcTilingName(SMALL_TC_TILING)]) {
    for (const [m, k, n] of [[200, 96, 264], [129, 300, 17], [200, 64, 512]] as const) {
      it(`tiling ${name}: matmulWeight both layouts and matmulF32 Aᵀ·B, M=${m} K=${k} N=${n}`, async () => {
        setMatmulMode(gpu, 'tc');
        setTcTiling(gpu, parseTcTiling(name));
        try {
          const rng = freshRng();
          const a = wideRows(rng, m, k, false);
          const ta = gpu.upload(a, [m, k], 'f32', 'a');
          const out = gpu.tensor([m, n], 'f32', 'c');
          for (const dtype of ['bf16', 'f16'] as const) {
            const w = weight(rng, k * n, dtype, 1 / Math.sqrt(k));
            for (const transW of [true, false]) {
              const tw = gpu.upload(w.bits, transW ? [n, k] : [k, n], dtype, 'w');
              poison(gpu, out);
              matmulWeight(gpu, ta, tw, out, { transW });
              expectRounding(`${name} ${dtype} transW=${transW}`, await gpu.readF32(out), refMatmul(a, w.values, m, k, n, false, transW, 1), m, n, roundingBound(k, 1), rng);
              gpu.free(tw);
            }
          }
          const at = wideRows(rng, m, k, true);
          const b = f32(rng.normals(k * n));
          const tat = gpu.upload(at, [k, m], 'f32', 'aT');
          const tb = gpu.upload(b, [k, n], 'f32', 'b');
          poison(gpu, out);
          matmulF32(gpu, tat, tb, out, { transA: true });
          expectRounding(`${name} f32 Aᵀ·B`, await gpu.readF32(out), refMatmul(at, b, m, k, n, true, false, 1), m, n, roundingBound(k, 2), rng);
          for (const t of [ta, out, tat, tb]) gpu.free(t);
        } finally {
          setTcTiling(gpu, undefined);
        }
      });
    }
  }

  // LoRA's up-projections as a second K segment of the frozen product: partial tiles, whole
  // ones (unbounded weight loads), K2 within one staging step, split-K, a real layer; both
  // layouts and weight dtypes; the default tiling and two that stage differently (double
  // buffers across the two segments' loops, A from storage, BK 16). Both operands of the
  // LoRA segment are rounded to f16.
  const appendCases = [
    ...[[200, 96, 64, 264], [1000, 256, 8, 256], [129, 64, 24, 512], [256, 2048, 64, 256], [1024, 768, 64, 768]].flatMap((dims) =>
      (['bf16', 'f16'] as const).map((dtype) => ({ dims, dtype, tiling: TC_TILING })),
    ),
    ...[[200, 96, 64, 264], [256, 2048, 24, 256]].flatMap((dims) => ['2x2x4x4x32d', '4x2x4x4x16d', '8x1x1x4x32'].map((name) => ({ dims, dtype: 'bf16' as const, tiling: parseTcTiling(name) }))),
  ];
  for (const { dims, dtype, tiling } of appendCases) {
    for (const transW of [true, false]) {
      it(`appended segment: A·${transW ? 'Wᵀ' : 'W'} + s·A2·${transW ? 'Fᵀ' : 'F'} (${dtype}) [M,K1,K2,N] = [${dims.join(',')}], tiling ${tcTilingName(tiling)}, accumulate alpha=-1.5 s=0.5`, async () => {
        setMatmulMode(gpu, 'tc');
        setTcTiling(gpu, tiling);
        try {
          const rng = freshRng();
          const [m, k1, k2, n] = dims;
          const { a, w, a2, f } = appendInputs(rng, [m, k1, k2, n], dtype);
          const ta = gpu.upload(a, [m, k1], 'f32', 'a');
          const tw = gpu.upload(w.bits, transW ? [n, k1] : [k1, n], dtype, 'w');
          const ta2 = gpu.upload(a2, [m, k2], 'f32', 'a2');
          const tf = gpu.upload(f, transW ? [n, k2] : [k2, n], 'f32', 'f');
          const c0 = f32(rng.normals(m * n, 1e-3));
          const out = gpu.upload(c0, [m, n], 'f32', 'c');
          const spy = vi.spyOn(gpu, 'dispatch');
          matmulWeight(gpu, ta, tw, out, { transW, accumulate: true, alpha: -1.5, append: { a: ta2, scale: 0.5, w: tf } });
          const kernels = spy.mock.calls.map(([p]) => p.label);
          spy.mockRestore();
          // One product on tensor cores, with the segment: no f32 product of its own.
          expect(kernels.filter((l) => l.startsWith('matmulTc<') && l.includes('_cat_')), kernels.join(', ')).toHaveLength(1);
          expect(kernels.filter((l) => l.startsWith('matmul<')), kernels.join(', ')).toHaveLength(0);
          const ref = refMatmulAppend(a, w.values, a2, f, [m, k1, k2, n], transW, -1.5, 0.5, c0);
          expectRounding('appended', await gpu.readF32(out), ref, m, n, roundingBound(k1 + k2, 2), rng);
          for (const t of [ta, tw, ta2, tf, out]) gpu.free(t);
        } finally {
          setTcTiling(gpu, undefined);
        }
      });
    }
  }

  it('appended segment where it cannot join (K1 not a multiple of BK): the f32 product after, same result', async () => {
    setMatmulMode(gpu, 'auto');
    const rng = freshRng();
    const dims = [512, 1000, 64, 512] as const;
    const [m, k1, k2, n] = dims;
    const { a, w, a2, f } = appendInputs(rng, dims, 'f16');
    const ta = gpu.upload(a, [m, k1], 'f32', 'a');
    const tw = gpu.upload(w.bits, [n, k1], 'f16', 'w');
    const ta2 = gpu.upload(a2, [m, k2], 'f32', 'a2');
    const tf = gpu.upload(f, [n, k2], 'f32', 'f');
    const out = gpu.tensor([m, n], 'f32', 'c');
    poison(gpu, out);
    const spy = vi.spyOn(gpu, 'dispatch');
    matmulWeight(gpu, ta, tw, out, { transW: true, append: { a: ta2, scale: 2, w: tf } });
    const kernels = spy.mock.calls.map(([p]) => p.label);
    spy.mockRestore();
    expect(kernels.some((l) => l.includes('_cat_')), kernels.join(', ')).toBe(false);
    expect(kernels.filter((l) => l.startsWith('matmul<')), kernels.join(', ')).toHaveLength(1);
    expectRounding('fallback', await gpu.readF32(out), refMatmulAppend(a, w.values, a2, f, dims, true, 1, 2), m, n, roundingBound(k1, 1), rng);
    for (const t of [ta, tw, ta2, tf, out]) gpu.free(t);
  });

  it('LoRA weight gradient shape: Aᵀ·B over K=8192 tokens, M=64, N=96, accumulate', async () => {
    setMatmulMode(gpu, 'tc');
    const rng = freshRng();
    const [m, k, n] = [64, 8192, 96];
    const a = f32(rng.normals(k * m, 1e-7));
    const b = f32(rng.normals(k * n));
    const ta = gpu.upload(a, [k, m], 'f32', 'dy');
    const tb = gpu.upload(b, [k, n], 'f32', 'h');
    const tcOut = gpu.tensor([m, n], 'f32', 'dB');
    const c0 = f32(rng.normals(m * n, 1e-6));
    gpu.write(tcOut, c0);
    matmulF32(gpu, ta, tb, tcOut, { transA: true, accumulate: true, alpha: 2 });
    expectRounding('dB', await gpu.readF32(tcOut), refMatmul(a, b, m, k, n, true, false, 2, c0), m, n, roundingBound(k, 2), rng);
    for (const t of [ta, tb, tcOut]) gpu.free(t);
  });

  // Few output tiles over a long K: the head's dx shape, split into K slices summed by a second pass.
  for (const [m, k, n] of [[256, 8192, 264], [100, 5000, 40]] as const) {
    for (const transW of [false, true]) {
      it(`split-K: matmulWeight A·${transW ? 'Wᵀ' : 'W'} M=${m} K=${k} N=${n}, as chosen and forced to 3 slices, accumulate alpha=-0.5`, async () => {
        setMatmulMode(gpu, 'tc');
        const rng = freshRng();
        const a = wideRows(rng, m, k, false);
        const bits = packBf16(rng.normals(k * n, 1 / Math.sqrt(k)));
        const ta = gpu.upload(a, [m, k], 'f32', 'a');
        const tw = gpu.upload(bits, transW ? [n, k] : [k, n], 'bf16', 'w');
        const out = gpu.tensor([m, n], 'f32', 'c');
        const c0 = f32(rng.normals(m * n, 1e-3));
        const ref = refMatmul(a, unpackBf16(bits, k * n), m, k, n, false, transW, -0.5, c0);
        for (const splitK of [undefined, 3]) {
          gpu.write(out, c0);
          const before = gpu.dispatchCount;
          matmulWeight(gpu, ta, tw, out, { transW, accumulate: true, alpha: -0.5, splitK });
          // The f16 copy, the product, and the sum of the slices.
          expect(gpu.dispatchCount - before, `dispatches with splitK ${splitK}`).toBe(3);
          expectRounding(`split ${splitK ?? 'auto'}`, await gpu.readF32(out), ref, m, n, roundingBound(k, 1), rng);
        }
        for (const t of [ta, tw, out]) gpu.free(t);
      });
    }
  }

  it('auto mode takes tensor cores for bf16 weights from TC_MIN_MACS on, never for f32 operands; f32 mode never does', async () => {
    const rng = freshRng();
    const [m, k, n] = [256, 256, 256];
    expect(m * k * n).toBeGreaterThanOrEqual(TC_MIN_MACS);
    const a = f32(rng.normals(m * k));
    const bits = packBf16(rng.normals(k * n, 1 / 16));
    const bf = f32(rng.normals(k * n));
    const ta = gpu.upload(a, [m, k], 'f32', 'a');
    const tw = gpu.upload(bits, [n, k], 'bf16', 'w');
    const tb = gpu.upload(bf, [n, k], 'f32', 'b');
    const out = gpu.tensor([m, n], 'f32', 'c');
    const refW = refMatmul(a, unpackBf16(bits, k * n), m, k, n, false, true, 1);
    const refB = refMatmul(a, bf, m, k, n, false, true, 1);
    const run = async (mode: 'auto' | 'f32', weights: boolean): Promise<number> => {
      setMatmulMode(gpu, mode);
      poison(gpu, out);
      const before = gpu.dispatchCount;
      // One K slice: the counts below are then the path's own dispatches, not split-K's sums.
      if (weights) matmulWeight(gpu, ta, tw, out, { transW: true, splitK: 1 });
      else matmulF32(gpu, ta, tb, out, { transB: true, splitK: 1 });
      const got = await gpu.readF32(out);
      const ref = weights ? refW : refB;
      if (mode === 'auto' && weights) expectRounding('auto, bf16 weight', got, ref, m, n, roundingBound(k, 1), rng);
      else expectClose(`${mode} mode`, got, ref.ref, 1e-5, rng);
      return gpu.dispatchCount - before;
    };
    expect(await run('auto', true)).toBe(2); // f16 copy of A, then the product
    expect(await run('f32', true)).toBe(1);
    expect(await run('auto', false)).toBe(1);
    for (const t of [ta, tw, tb, out]) gpu.free(t);
  });

  it("auto mode takes tensor cores for LoRA's down-projection A·Bᵀ with N <= 64 (narrow tiling), not for A·B", async () => {
    setMatmulMode(gpu, 'auto');
    const rng = freshRng();
    const [m, k, n] = [2048, 2048, 64];
    const a = wideRows(rng, m, k, false);
    const b = f32(rng.normals(k * n, 1 / 45));
    const ta = gpu.upload(a, [m, k], 'f32', 'x');
    const out = gpu.tensor([m, n], 'f32', 'h');
    for (const transB of [true, false]) {
      const tb = gpu.upload(b, transB ? [n, k] : [k, n], 'f32', 'lora_A');
      poison(gpu, out);
      const spy = vi.spyOn(gpu, 'dispatch');
      matmulF32(gpu, ta, tb, out, { transB });
      const kernels = spy.mock.calls.map(([p]) => p.label);
      spy.mockRestore();
      const ref = refMatmul(a, b, m, k, n, false, transB, 1);
      if (transB) {
        expect(kernels.filter((l) => l.startsWith('matmulTc<f16_8x1x1x4x32')), kernels.join(', ')).toHaveLength(1);
        expectRounding('x·Aᵀ', await gpu.readF32(out), ref, m, n, roundingBound(k, 2), rng);
      } else {
        expect(kernels.some((l) => l.startsWith('matmulTc<')), kernels.join(', ')).toBe(false);
        expectClose('x·A', await gpu.readF32(out), ref.ref, 1e-5, rng);
      }
      gpu.free(tb);
    }
    for (const t of [ta, out]) gpu.free(t);
  });
});
