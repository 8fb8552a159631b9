/**
 * Test harness: one real GPU per test file, seeded random inputs (the seed is
 * fresh each run and printed on failure), relative-error comparison and
 * NaN poisoning of outputs.
 */
import { afterAll } from 'vitest';
import { acquireGpu, type GpuRuntime } from '../src/gpu/device.js';
import { f16BitsToF32, f32ToF16Bits, packBf16, unpackBf16, type Tensor } from '../src/gpu/tensor.js';
import type { WeightDtype } from '../src/kernels/matmul.js';
import { Rng as BaseRng } from '../src/util/rng.js';

let gpuPromise: Promise<GpuRuntime> | undefined;

/** The GPU for this test file. A machine without an adapter fails here; it never skips. */
export function getGpu(): Promise<GpuRuntime> {
  if (!gpuPromise) {
    gpuPromise = acquireGpu();
    afterAll(async () => (await gpuPromise!).destroy());
  }
  return gpuPromise;
}

/** The project's PRNG with helpers for arrays of test inputs. */
export class Rng extends BaseRng {
  array(n: number, lo: number, hi: number): Float64Array {
    const a = new Float64Array(n);
    for (let i = 0; i < n; i++) a[i] = this.uniform(lo, hi);
    return a;
  }
  normals(n: number, std = 1): Float64Array {
    const a = new Float64Array(n);
    for (let i = 0; i < n; i++) a[i] = this.normal() * std;
    return a;
  }
}

/** A fresh seed for this run (override with RWKV_TEST_SEED to reproduce a failure). */
export function freshRng(): Rng {
  const env = process.env.RWKV_TEST_SEED;
  return new Rng(env ? Number(env) : (Math.random() * 2 ** 32) >>> 0);
}

/** ‖a − b‖ / ‖scale‖ (scale: b unless given) over all elements; NaN anywhere gives Infinity. */
export function relErr(a: ArrayLike<number>, b: ArrayLike<number>, scale: ArrayLike<number> = b): number {
  if (a.length !== b.length || scale.length !== b.length) throw new Error(`relErr: lengths ${a.length}, ${b.length} and ${scale.length}`);
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) {
    const d = a[i] - b[i];
    if (!Number.isFinite(a[i]) || !Number.isFinite(b[i])) return Infinity;
    num += d * d;
    den += scale[i] * scale[i];
  }
  if (den === 0) return num === 0 ? 0 : Infinity;
  return Math.sqrt(num / den);
}

/**
 * Asserts relErr(gpu, ref, scale) <= bound with a message naming the seed. `scale`, for
 * outputs that one short sum multiplies (and so can cancel to near zero, leaving only the
 * rounding of its terms): the reference on the inputs' absolute values, the size of those
 * terms.
 */
export function expectClose(what: string, gpu: ArrayLike<number>, ref: ArrayLike<number>, bound: number, rng?: Rng, scale?: ArrayLike<number>): void {
  const e = relErr(gpu, ref, scale);
  if (!(e <= bound)) {
    let firstBad = -1;
    for (let i = 0; i < gpu.length; i++) if (!Number.isFinite(gpu[i])) { firstBad = i; break; }
    throw new Error(
      `${what}: relative error${scale ? " (to the terms' size)" : ''} ${e.toExponential(3)} > bound ${bound.toExponential(1)}` +
        (firstBad >= 0 ? ` (non-finite at index ${firstBad}: an unwritten output?)` : '') +
        (rng ? ` [seed ${rng.seed}; rerun with RWKV_TEST_SEED=${rng.seed}]` : ''),
    );
  }
}

/** Fills output tensors with NaN so an element the kernel never writes fails the comparison. */
export function poison(gpu: GpuRuntime, ...outs: Tensor[]): void {
  for (const t of outs) gpu.fill(t, 0x7fc00000, true);
}

export function f32(a: ArrayLike<number>): Float32Array {
  return Float32Array.from(a);
}

/**
 * Five-point central differences of a scalar function, for checking reference backwards:
 * truncation O(h⁴), where the three-point form's O(h²) reached 1e-6 on steep paths.
 */
export function finiteDiff(f: (x: Float64Array) => number, x: Float64Array, indices: number[], h = 1e-6): number[] {
  return indices.map((i) => {
    const save = x[i];
    const at = (d: number): number => {
      x[i] = save + d;
      return f(x);
    };
    const g = (8 * (at(h) - at(-h)) - (at(2 * h) - at(-2 * h))) / (12 * h);
    x[i] = save;
    return g;
  });
}

/**
 * Weights at a Linear's scale, rounded to the stored dtype on the host (an odd count
 * padded to whole u32s): the reference uses the rounded values, so the product is
 * f32-exact up to summation order.
 */
export function weight(rng: Rng, count: number, dtype: WeightDtype, scale: number): { bits: Uint16Array; values: Float32Array } {
  const normals = rng.normals(count, scale);
  if (dtype === 'bf16') {
    const bits = packBf16(normals);
    return { bits, values: unpackBf16(bits, count) };
  }
  const bits = new Uint16Array(count + (count & 1));
  normals.forEach((v, i) => (bits[i] = f32ToF16Bits(v)));
  return { bits, values: Float32Array.from(bits.subarray(0, count), f16BitsToF32) };
}

/**
 * Inputs of a weight product with a LoRA segment appended (matmulWeight's `append`):
 * A [M,K1] rows of magnitudes 1e-6..1e3, W [N,K1] or [K1,N] (`dtype`, ±1/√K1), and A2
 * [M,K2] at A's row scale ×10^±2 against F (f32, W's layout, 1e-2: LoRA's factors), so
 * both segments weigh in the result and a segment left out cannot pass.
 */
export function appendInputs(
  rng: Rng,
  [m, k1, k2, n]: readonly [number, number, number, number],
  dtype: WeightDtype,
): { a: Float32Array; w: { bits: Uint16Array; values: Float32Array }; a2: Float32Array; f: Float32Array } {
  const a = new Float32Array(m * k1);
  const a2 = new Float32Array(m * k2);
  for (let i = 0; i < m; i++) {
    const s = 10 ** rng.uniform(-6, 3);
    const t = s * 10 ** rng.uniform(-2, 2);
    for (let j = 0; j < k1; j++) a[i * k1 + j] = rng.normal() * s;
    for (let j = 0; j < k2; j++) a2[i * k2 + j] = rng.normal() * t;
  }
  return { a, w: weight(rng, k1 * n, dtype, 1 / Math.sqrt(k1)), a2, f: f32(rng.normals(k2 * n, 1e-2)) };
}
