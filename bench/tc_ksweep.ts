/**
 * The tensor-core product kernel alone against K, at M 8192 and N 2048 (and N 8192 at K
 * 2048), f16 weights in both layouts: `node --import tsx bench/tc_ksweep.ts`. Time that
 * does not grow with K is each workgroup's fixed cost (its first loads and its epilogue);
 * this is how the epilogue's ldexp was found (bench/RESULTS.md, ninth pass).
 */
import { acquireGpu } from '../src/gpu/device.js';
import { f32ToF16Bits } from '../src/gpu/tensor.js';
import { matmulTcWeight, tcSupport } from '../src/kernels/matmul_tc.js';
import { Rng } from '../src/util/rng.js';
import { gpuTime, kernelMs } from './gpu_timing.js';
import { tiled } from './random.js';

const gpu = await acquireGpu({ profile: true });
if (!tcSupport(gpu)) throw new Error('tc_ksweep: this adapter has no f16 subgroup matrices');
const rng = new Rng(5);
const shapes: [number, number, number][] = [1024, 2048, 4096, 8192].map((k) => [8192, 2048, k]);
shapes.push([8192, 8192, 2048]);
for (const [m, n, k] of shapes) {
  const a = gpu.upload(tiled(new Float32Array(m * k), () => rng.normal()), [m, k], 'f32', 'A');
  const bits = tiled(new Uint16Array(n * k), () => f32ToF16Bits(rng.normal() / Math.sqrt(k)));
  const c = gpu.tensor([m, n], 'f32', 'C');
  for (const transW of [true, false]) {
    const w = gpu.upload(bits, transW ? [n, k] : [k, n], 'f16', 'W');
    // A long warm-up: the clocks drop while the host builds the inputs.
    const t = await gpuTime(gpu, () => matmulTcWeight(gpu, a, w, c, { m, n, k, alpha: 1, accumulate: false, transA: false, transW }), 150, 200, 800);
    const ms = kernelMs(t, 'matmulTc');
    console.log(`${m}x${n}x${k} ${transW ? 'nk' : 'kn'}: ${(ms * 1000).toFixed(1)} us, ${((2 * m * n * k) / ms / 1e9).toFixed(0)} TFLOP/s`);
    gpu.free(w);
  }
  for (const x of [a, c]) gpu.free(x);
  gpu.submit();
  gpu.pool.trim();
}
process.exit(0);
