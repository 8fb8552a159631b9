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

/** Warms up (pipeline compilation), then repeats `record` until about `minMs` of GPU time. */
export async function gpuTime(gpu: GpuRuntime, record: () => void, minMs = 40, maxReps = 50): Promise<GpuTime> {
  record();
  await gpu.sync();
  const one = await measure(gpu, record, 1);
  const reps = Math.max(1, Math.min(maxReps, Math.ceil(minMs / Math.max(one.ms, 1e-3))));
  return measure(gpu, record, reps);
}
