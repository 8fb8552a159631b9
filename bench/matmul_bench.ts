/**
 * TFLOP/s of every matrix product of a training step (bench/layouts.ts) through
 * matmulWeight/matmulF32, on the f32 kernel and on tensor cores, and of alternative
 * tensor-core tilings on the dominant products.
 */
import type { GpuRuntime } from '../src/gpu/device.js';
import { f32ToBf16Bits, numel, type Tensor } from '../src/gpu/tensor.js';
import { matmulF32, matmulWeight, preferredWeightDtype, setMatmulMode, type MatmulMode, type WeightDtype } from '../src/kernels/matmul.js';
import { widenBf16 } from '../src/kernels/elementwise.js';
import { matmulTcF32, matmulTcWeight, parseTcTiling } from '../src/kernels/matmul_tc.js';
import { bf16ToF16 } from '../src/model/weights.js';
import { Rng } from '../src/util/rng.js';
import { gpuTime, kernelMs } from './gpu_timing.js';
import { flops, type MatmulShape } from './layouts.js';
import { tiled } from './random.js';

export interface PathTime {
  ms?: number;
  tflops?: number;
  /** Of ms, the f16 copies of the operands (tensor-core path). */
  convertMs?: number;
  skipped?: string;
}

export interface MatmulResult extends MatmulShape {
  layout: string;
  tokens: number;
  paths: Partial<Record<MatmulMode, PathTime>>;
}

interface Operands {
  a: Tensor;
  b: Tensor;
  c: Tensor;
  /** A frozen weight's bf16 bits on the host, whatever B's dtype on the GPU. */
  wBits?: Uint16Array;
}

/** Random operands in their stored layouts (a frozen weight as wDtype), or why they cannot be bound. */
function operands(gpu: GpuRuntime, s: MatmulShape, rng: Rng, wDtype: WeightDtype = preferredWeightDtype(gpu)): Operands | string {
  const aShape = s.transA ? [s.k, s.m] : [s.m, s.k];
  const bShape = s.transB ? [s.n, s.k] : [s.k, s.n];
  const max = gpu.limits.maxStorageBufferBindingSize;
  for (const [name, shape, bytes] of [['A', aShape, 4], ['B', bShape, s.dtype === 'bf16' ? 2 : 4], ['C', [s.m, s.n], 4]] as const) {
    if (numel(shape) * bytes > max) return `${name} [${shape.join(',')}] exceeds one binding (${(max / 2 ** 30).toFixed(1)} GiB)`;
  }
  const normal = (std: number) => () => rng.normal() * std;
  const a = gpu.upload(tiled(new Float32Array(numel(aShape)), normal(1)), aShape, 'f32', 'A');
  const c = gpu.tensor([s.m, s.n], 'f32', 'C');
  gpu.fill(c, 0);
  if (s.dtype !== 'bf16') return { a, b: gpu.upload(tiled(new Float32Array(numel(bShape)), normal(0.1)), bShape, 'f32', 'B'), c };
  const wBits = tiled(new Uint16Array(numel(bShape) + 1), () => f32ToBf16Bits(rng.normal() / Math.sqrt(s.k)));
  const w16 = wDtype === 'f16' ? bf16ToF16(wBits) : undefined;
  return { a, b: w16 ? gpu.upload(w16, bShape, 'f16', 'W') : gpu.upload(wBits, bShape, 'bf16', 'W'), c, wBits };
}

function record(gpu: GpuRuntime, s: MatmulShape, o: Operands): void {
  if (s.dtype === 'bf16') matmulWeight(gpu, o.a, o.b, o.c, { transW: s.transB });
  else matmulF32(gpu, o.a, o.b, o.c, { transA: s.transA, transB: s.transB });
}

function free(gpu: GpuRuntime, o: Operands): void {
  for (const t of [o.a, o.b, o.c]) gpu.free(t);
  gpu.submit();
  gpu.pool.trim();
}

/** Times each shape on each path (a profiling runtime); 'tc' is skipped where the adapter lacks it. */
export async function benchMatmuls(
  gpu: GpuRuntime,
  layout: string,
  tokens: number,
  shapes: readonly MatmulShape[],
  paths: readonly MatmulMode[],
  hasTc: boolean,
  log: (line: string) => void,
): Promise<MatmulResult[]> {
  const rng = new Rng(11);
  const out: MatmulResult[] = [];
  for (const s of shapes) {
    const res: MatmulResult = { ...s, layout, tokens, paths: {} };
    const o = operands(gpu, s, rng);
    for (const path of paths) {
      if (typeof o === 'string') res.paths[path] = { skipped: o };
      else if (path === 'tc' && !hasTc) res.paths[path] = { skipped: 'no tensor cores on this adapter' };
      else {
        setMatmulMode(gpu, path);
        try {
          const t = await gpuTime(gpu, () => record(gpu, s, o));
          const convertMs = kernelMs(t, 'f16Rows');
          res.paths[path] = { ms: t.ms, tflops: flops(s) / t.ms / 1e9, ...(convertMs > 0 ? { convertMs } : {}) };
        } catch (e) {
          res.paths[path] = { skipped: `failed: ${(e as Error).message.split('\n')[0]}` };
        }
      }
    }
    if (typeof o !== 'string') free(gpu, o);
    const cell = (p: PathTime | undefined): string => (p?.tflops !== undefined ? p.tflops.toFixed(1).padStart(6) : '     -');
    log(`  ${layout} M=${tokens} ${s.what.padEnd(26)} ${`${s.m}x${s.n}x${s.k}`.padEnd(18)} ${paths.map((p) => `${p} ${cell(res.paths[p])}`).join('  ')} TFLOP/s`);
    out.push(res);
  }
  setMatmulMode(gpu, 'auto');
  return out;
}

export interface TilingResult {
  shape: string;
  tiling: string;
  /**
   * How B is read: the weight stored as bf16 (rounded to f16 as it is staged) or f16, or
   * the padded, scaled f16 copy that matmulF32 makes (loads without bounds).
   */
  b: WeightDtype | 'copy';
  ms: number;
  tflops: number;
}

/**
 * The tensor-core product kernel alone (the f16 copies excluded) under each tiling, on the
 * frozen-weight shapes, with B the weight stored as bf16, the same values stored as f16,
 * and their padded f16 copy (the comparison that found the cost of bounded weight loads).
 */
export async function benchTilings(gpu: GpuRuntime, shapes: readonly MatmulShape[], tilings: readonly string[], log: (line: string) => void): Promise<TilingResult[]> {
  const rng = new Rng(12);
  const out: TilingResult[] = [];
  for (const s of shapes.filter((x) => x.dtype === 'bf16')) {
    const o = operands(gpu, s, rng, 'bf16');
    if (typeof o === 'string') continue;
    const w16 = gpu.upload(bf16ToF16(o.wBits!)!, o.b.shape, 'f16', 'W as f16');
    const w32 = gpu.tensor(o.b.shape, 'f32', 'W as f32');
    widenBf16(gpu, o.b, w32);
    for (const name of tilings) {
      const tiling = parseTcTiling(name);
      const prod = { m: s.m, n: s.n, k: s.k, alpha: 1, accumulate: false, transA: false };
      const records: [TilingResult['b'], () => void][] = [
        ['bf16', () => matmulTcWeight(gpu, o.a, o.b, o.c, { ...prod, transW: s.transB }, tiling)],
        ['f16', () => matmulTcWeight(gpu, o.a, w16, o.c, { ...prod, transW: s.transB }, tiling)],
        ['copy', () => matmulTcF32(gpu, o.a, w32, o.c, { ...prod, transB: s.transB }, tiling)],
      ];
      for (const [b, record] of records) {
        let t;
        try {
          t = await gpuTime(gpu, record);
        } catch (e) {
          log(`  tiling ${name} (B ${b}) failed: ${(e as Error).message.split('\n')[0]}`);
          continue;
        }
        const ms = kernelMs(t, 'matmulTc');
        const r = { shape: `${s.what} ${s.m}x${s.n}x${s.k}`, tiling: name, b, ms, tflops: flops(s) / ms / 1e9 };
        log(`  tiling ${name.padEnd(12)} B ${b.padEnd(4)} ${r.shape.padEnd(40)} ${r.tflops.toFixed(1)} TFLOP/s (product kernel only)`);
        out.push(r);
      }
    }
    gpu.free(w16);
    gpu.free(w32);
    free(gpu, o);
  }
  return out;
}
