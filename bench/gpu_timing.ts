/**
 * GPU time of recorded work from timestamp queries: the runtime must be acquired with
 * { profile: true }. Each dispatch is timed on its own, so the figure is the kernels'
 * time without the gaps between them; the split by kernel comes with it.
 */
import type { GpuRuntime } from '../src/gpu/device.js';

export interface GpuTime {
  /** Milliseconds per call of `record`. */
  ms: number;
  /** Milliseconds per call, by kernel label. */
  byKernel: Record<string, number>;
}

async function totals(gpu: GpuRuntime): Promise<Map<string, number>> {
  return new Map((await gpu.profile()).map((k) => [k.kernel, k.totalMs]));
}

async function measure(gpu: GpuRuntime, record: () => void, reps: number): Promise<GpuTime> {
  const before = await totals(gpu);
  for (let i = 0; i < reps; i++) record();
  await gpu.sync();
  const after = await totals(gpu);
  const byKernel: Record<string, number> = {};
  let ms = 0;
  for (const [k, t] of after) {
    const d = (t - (before.get(k) ?? 0)) / reps;
    if (d > 0) byKernel[k] = d;
    ms += d;
  }
  return { ms, byKernel };
}

/** Milliseconds per call spent in the kernels whose labels start with `prefix` (e.g. 'matmulTc'). */
export function kernelMs(t: GpuTime, prefix: string): number {
  return Object.entries(t.byKernel)
    .filter(([k]) => k.startsWith(prefix))
    .reduce((x, [, v]) => x + v, 0);
}

/**
 * Keeps the GPU busy with `record` for about `ms` of wall time: its clocks drop while the
 * host builds inputs, and without this a first H200 run read the same kernels up to 4×
 * slower from one configuration to the next.
 */
export async function warmUp(gpu: GpuRuntime, record: () => void, ms: number): Promise<void> {
  const t0 = performance.now();
  do {
    for (let i = 0; i < 10; i++) record();
    await gpu.sync();
  } while (performance.now() - t0 < ms);
}

/** Warms up (pipeline compilation, clocks), then repeats `record` until about `minMs` of GPU time. */
export async function gpuTime(gpu: GpuRuntime, record: () => void, minMs = 40, maxReps = 50, warmMs = 150): Promise<GpuTime> {
  record();
  await gpu.sync();
  await warmUp(gpu, record, warmMs);
  const one = await measure(gpu, record, 1);
  const reps = Math.max(1, Math.min(maxReps, Math.ceil(minMs / Math.max(one.ms, 1e-3))));
  return measure(gpu, record, reps);
}
