/**
 * End-to-end LoRA training steps (forward, loss, backward, AdamW) of the RWKV-7 model on
 * random weights: tokens/s, wall and host time per step, and peak GPU memory from the
 * runtime's pool and from nvidia-smi. Each configuration gets a device of its own, so
 * the driver's memory reading covers that configuration alone.
 */
import { acquireGpu, type DawnSaving, type GpuRuntime } from '../src/gpu/device.js';
import { setMatmulMode, type MatmulMode } from '../src/kernels/matmul.js';
import { setTcTiling, type TcTiling } from '../src/kernels/matmul_tc.js';
import { RWKV7_LORA_TARGETS } from '../src/lora/lora.js';
import { Rwkv7Model, type Rwkv7Memory } from '../src/model/rwkv7.js';
import type { HostTensor } from '../src/model/weights.js';
import { AdamW } from '../src/train/optimizer.js';
import { Rng } from '../src/util/rng.js';
import { gpuMemoryUsedMiB, MemoryPoller } from './gpu_memory.js';

export interface TrainConfig {
  layout: string;
  /** micro_bsz */
  B: number;
  /** ctx_len */
  T: number;
  r: number;
  gradCp: boolean;
  steps: number;
  /** Name of the Dawn check setting (bench/run.ts --dawn) and the savings it turns on. */
  dawn: string;
  savings: readonly DawnSaving[];
  matmul: MatmulMode;
  /** Tensor-core tiling (src/kernels/matmul_tc.ts); the default when absent. */
  tcTiling?: TcTiling;
  /** Per-kernel timestamps (each dispatch in a pass of its own: slower, for the breakdown only). */
  profile: boolean;
  /** Rows per head chunk; the model's default when absent. */
  headChunk?: number;
}

export interface TrainResult extends TrainConfig {
  tokensPerStep: number;
  tokensPerSec?: number;
  /** Wall time per step, steps recorded back to back with no read-back until the end. */
  msPerStep?: number;
  /** Host time per step spent recording and submitting (the CPU side of a step). */
  hostMsPerStep?: number;
  /** Process CPU time per step (all threads, Dawn's included). */
  cpuMsPerStep?: number;
  dispatchesPerStep?: number;
  submitsPerStep?: number;
  loss?: number;
  /** Highest bytes the runtime's buffer pool held. */
  poolPeakBytes?: number;
  /** What the model holds, by category, and AdamW's two moments. */
  modelMemory?: Rwkv7Memory;
  optimizerBytes?: number;
  /** Highest nvidia-smi memory.used while this configuration ran, and before it started. */
  smiPeakMiB?: number;
  smiBaselineMiB?: number;
  setupSeconds?: number;
  topKernels?: { kernel: string; msPerStep: number }[];
  /** With the profile: every kernel's GPU time per step, summed (the step's time less the gaps between dispatches). */
  kernelMsPerStep?: number;
  error?: string;
}

export async function benchTrain(cfg: TrainConfig, weights: ReadonlyMap<string, HostTensor>, vocab: number): Promise<TrainResult> {
  const M = cfg.B * cfg.T;
  const res: TrainResult = { ...cfg, tokensPerStep: M };
  res.smiBaselineMiB = gpuMemoryUsedMiB();
  const poller = new MemoryPoller();
  poller.start();
  let gpu: GpuRuntime | undefined;
  try {
    const t0 = performance.now();
    gpu = await acquireGpu({ savings: cfg.savings, profile: cfg.profile });
    setMatmulMode(gpu, cfg.matmul);
    if (cfg.tcTiling) setTcTiling(gpu, cfg.tcTiling);
    const model = await Rwkv7Model.create(gpu, weights, {
      B: cfg.B,
      T: cfg.T,
      lora: { r: cfg.r, alpha: 2 * cfg.r, dropout: 0, targets: RWKV7_LORA_TARGETS },
      gradCp: cfg.gradCp,
      headChunk: cfg.headChunk,
      seed: 1,
    });
    const opt = new AdamW(gpu, model.params, model.grads, model.layout, { beta1: 0.9, beta2: 0.99, eps: 1e-8, weightDecay: 0, gradClip: 1 });
    const rng = new Rng(3);
    const ids = Int32Array.from({ length: M }, () => rng.int(vocab));
    const labels = Int32Array.from({ length: M }, () => rng.int(vocab));
    const g = gpu;
    const step = (i: number): void => {
      model.setBatch(ids, labels, i);
      model.forwardBackward();
      opt.step(i + 1, 1e-4);
      g.submit();
    };
    // Two warm-up steps: the first compiles every pipeline.
    step(0);
    await gpu.sync();
    step(1);
    await gpu.sync();
    res.setupSeconds = (performance.now() - t0) / 1000;
    if (cfg.profile) await gpu.profile();
    const before = await (cfg.profile ? gpu.profile() : Promise.resolve([]));
    const d0 = gpu.dispatchCount;
    const s0 = gpu.submitCount;
    const cpu0 = process.cpuUsage();
    let host = 0;
    const w0 = performance.now();
    for (let i = 0; i < cfg.steps; i++) {
      const h0 = performance.now();
      step(2 + i);
      host += performance.now() - h0;
    }
    await gpu.sync();
    const wall = performance.now() - w0;
    const cpu = process.cpuUsage(cpu0);
    res.msPerStep = wall / cfg.steps;
    res.tokensPerSec = (M * cfg.steps) / (wall / 1000);
    res.hostMsPerStep = host / cfg.steps;
    res.cpuMsPerStep = (cpu.user + cpu.system) / 1000 / cfg.steps;
    res.dispatchesPerStep = (gpu.dispatchCount - d0) / cfg.steps;
    res.submitsPerStep = (gpu.submitCount - s0) / cfg.steps;
    res.loss = await model.readLoss();
    if (cfg.profile) {
      const prior = new Map(before.map((k) => [k.kernel, k.totalMs]));
      const kernels = (await gpu.profile())
        .map((k) => ({ kernel: k.kernel, msPerStep: (k.totalMs - (prior.get(k.kernel) ?? 0)) / cfg.steps }))
        .sort((a, b) => b.msPerStep - a.msPerStep);
      res.kernelMsPerStep = kernels.reduce((s, k) => s + k.msPerStep, 0);
      res.topKernels = kernels.slice(0, 25);
    }
    res.poolPeakBytes = gpu.memory().peakBytes;
    res.modelMemory = model.memory();
    res.optimizerBytes = opt.m.byteLength + opt.v.byteLength;
    model.dispose();
  } catch (e) {
    res.error = (e as Error).message.split('\n')[0];
  } finally {
    gpu?.destroy();
    res.smiPeakMiB = poller.stop();
  }
  return res;
}
