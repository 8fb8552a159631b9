/** WKV7 forward and backward time per layer at B sequences of T tokens, H heads of 64. */
import type { GpuRuntime } from '../src/gpu/device.js';
import type { Tensor } from '../src/gpu/tensor.js';
import { allocWkv7Saved, wkv7Backward, wkv7Forward, wkv7Plan, type Wkv7Plan } from '../src/kernels/wkv7.js';
import { Rng } from '../src/util/rng.js';
import { smClockMHz } from './gpu_memory.js';
import { gpuTime, warmUp } from './gpu_timing.js';
import { tiled } from './random.js';

export interface WkvResult {
  layout: string;
  B: number;
  T: number;
  H: number;
  /** lanes×groups/colLanes/colChunks (src/kernels/wkv7.ts's Wkv7Plan). */
  plan: string;
  forwardMs: number;
  backwardMs: number;
  /** GPU ms per kernel: the backward's dS scan and column pass apart. */
  byKernel: Record<string, number>;
  /** SM clock right after timing (nvidia-smi), to tell a slow kernel from a clocked-down card. */
  smClockMHz?: number;
}

/** A plan written lanes×groups/colLanes/colChunks, e.g. 4x1/4/1; 'auto' for wkv7Plan's choice. */
export function parseWkvPlan(s: string): Partial<Wkv7Plan> {
  if (s === 'auto') return {};
  const m = /^(\d+)x(\d+)\/(\d+)\/(\d+)$/.exec(s);
  if (!m) throw new Error(`WKV plan ${s}: expected auto or lanes x groups / colLanes / colChunks, e.g. 4x1/4/1`);
  return { lanes: Number(m[1]), groups: Number(m[2]), colLanes: Number(m[3]), colChunks: Number(m[4]) };
}

/** The plan in parseWkvPlan's syntax. */
export function formatWkvPlan(plan: Wkv7Plan): string {
  return `${plan.lanes}x${plan.groups}/${plan.colLanes}/${plan.colChunks}`;
}

/**
 * Inputs in the model's ranges (r, k, v ~ N(0,1), w_raw in (−6, 5), a = −kk and b = kk·α
 * with kk of norm 1 per head): the kernels' time does not depend on them, but NaNs would
 * hide nothing while being unrealistic.
 */
export async function benchWkv(gpu: GpuRuntime, layout: string, B: number, T: number, H: number, want: Partial<Wkv7Plan> = {}): Promise<WkvResult> {
  const N = 64;
  const plan = wkv7Plan(gpu, { B, T, H, N }, want);
  const shape = [B, T, H, N];
  const n = B * T * H * N;
  const rng = new Rng(13);
  const t = (label: string, draw: () => number): Tensor => gpu.upload(tiled(new Float32Array(n), draw), shape, 'f32', label);
  const normal = (): number => rng.normal();
  const x = {
    B, T, H, N, plan,
    r: t('r', normal),
    w: t('w', () => rng.uniform(-6, 5)),
    k: t('k', normal),
    v: t('v', normal),
    a: t('a', () => -rng.normal() / 8),
    b: t('b', () => (rng.normal() / 8) * rng.uniform(0, 1)),
  };
  const y = gpu.tensor(shape, 'f32', 'y');
  const dy = t('dy', normal);
  const grads = ['dr', 'dw', 'dk', 'dv', 'da', 'db'].map((g) => gpu.tensor(shape, 'f32', g));
  const saved = allocWkv7Saved(gpu, { B, T, H, N });
  const [dr, dw, dk, dv, da, db] = grads;
  const forward = (): void => wkv7Forward(gpu, { ...x, y, saved });
  const backward = (): void => wkv7Backward(gpu, { ...x, dy, saved, dr, dw, dk, dv, da, db });
  await warmUp(gpu, () => (forward(), backward()), 700);
  const fwd = await gpuTime(gpu, forward, 50, 50);
  const bwd = await gpuTime(gpu, backward, 50, 50);
  const clock = smClockMHz();
  for (const tensor of [x.r, x.w, x.k, x.v, x.a, x.b, y, dy, ...grads, saved.states, saved.sa]) gpu.free(tensor);
  gpu.submit();
  gpu.pool.trim();
  return { layout, B, T, H, plan: formatWkvPlan(plan), forwardMs: fwd.ms, backwardMs: bwd.ms, byKernel: { ...fwd.byKernel, ...bwd.byKernel }, smClockMHz: clock };
}
