/**
 * The tensor-core product kernel on three 1.5B products with B read three ways: the bf16
 * weight, the same values stored as f16, and the padded f16 copy that matmulF32 makes
 * (`node --import tsx bench/weight_loads_probe.ts`, on a GPU with tensor cores). It found
 * that the weight's bounded loads, not its dtype, made it slower than the copy.
 */
import { acquireGpu } from '../src/gpu/device.js';
import { matmulTcF32, matmulTcWeight, parseTcTiling } from '../src/kernels/matmul_tc.js';
import { widenBf16 } from '../src/kernels/elementwise.js';
import { bf16ToF16 } from '../src/model/weights.js';
import { f32ToBf16Bits } from '../src/gpu/tensor.js';
import { Rng } from '../src/util/rng.js';
import { gpuTime } from './gpu_timing.js';

const gpu = await acquireGpu({ profile: true });
const rng = new Rng(5);
const tiling = parseTcTiling('2x4x4x4x32');
for (const [what, m, n, k, transW] of [['fwd att', 8192, 2048, 2048, true], ['fwd ffn.key', 8192, 8192, 2048, true], ['dx ffn.key', 8192, 2048, 8192, false]] as const) {
  const a = gpu.upload(Float32Array.from({ length: m * k }, () => rng.normal()), [m, k], 'f32', 'A');
  const shape = transW ? [n, k] : [k, n];
  const bits = Uint16Array.from({ length: n * k }, () => f32ToBf16Bits(rng.normal() / Math.sqrt(k)));
  const wb = gpu.upload(bits, shape, 'bf16', 'Wbf16');
  const wh = gpu.upload(bf16ToF16(bits)!, shape, 'f16', 'Wf16');
  const wf = gpu.tensor(shape, 'f32', 'Wf32');
  widenBf16(gpu, wb, wf);
  const c = gpu.tensor([m, n], 'f32', 'C');
  const prod = { m, n, k, alpha: 1, accumulate: false, transA: false };
  const variants: [string, () => void][] = [
    ['bf16 weight', () => matmulTcWeight(gpu, a, wb, c, { ...prod, transW }, tiling)],
    ['f16 weight', () => matmulTcWeight(gpu, a, wh, c, { ...prod, transW }, tiling)],
    ['f16 copy', () => matmulTcF32(gpu, a, wf, c, { ...prod, transB: transW }, tiling)],
  ];
  for (const [name, rec] of variants) {
    const t = await gpuTime(gpu, rec, 100, 50, 300);
    const ms = Object.entries(t.byKernel).filter(([kk]) => kk.startsWith('matmulTc')).reduce((x, [, v]) => x + v, 0);
    console.log(`${what.padEnd(12)} ${name.padEnd(12)} ${((2 * m * n * k) / ms / 1e9).toFixed(1)} TFLOP/s (product kernel only) [${Object.keys(t.byKernel).join(' ')}]`);
  }
  for (const t of [a, wb, wh, wf, c]) gpu.free(t);
  gpu.submit();
  gpu.pool.trim();
}
