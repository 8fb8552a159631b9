/**
 * Training-level properties of the GPU RWKV-7 model: activation checkpointing
 * gives the same gradients, a replayed step gives what running it gives, a step
 * allocates nothing, and AdamW steps on LoRA memorise a short text.
 */
import { describe, expect, it, vi } from 'vitest';
import type { GpuRuntime } from '../../src/gpu/device.js';
import { RWKV7_LORA_TARGETS } from '../../src/lora/lora.js';
import { Rwkv7Model } from '../../src/model/rwkv7.js';
import { f32Host, type HostTensor } from '../../src/model/weights.js';
import { AdamW } from '../../src/train/optimizer.js';
import { tinyX070Weights, type TinyX070Config } from '../reference/tiny_model.js';
import { expectClose, freshRng, getGpu, Rng } from '../helpers.js';

const CFG: TinyX070Config = { nLayer: 2, C: 64, headSize: 64, vocab: 256, dW: 16, dA: 16, dV: 8, dG: 24 };

function hostWeights(seed: number): Map<string, HostTensor> {
  const w = tinyX070Weights(new Rng(seed), CFG);
  return new Map([...w].map(([k, t]) => [k, f32Host(t.shape, t.data)]));
}

const B = 2;
const T = 20;

/** A B×T model on `host` with LoRA dropout on, LN trained and a nonzero LoRA B, so that every LoRA path carries gradient. */
function dropoutModel(gpu: GpuRuntime, host: Map<string, HostTensor>, gradCp: boolean): Rwkv7Model {
  const model = new Rwkv7Model(gpu, host, { B, T, gradCp, trainLn: true, seed: 5, lora: { r: 4, alpha: 16, dropout: 0.2, targets: RWKV7_LORA_TARGETS } });
  for (const e of model.layout.entries) {
    if (e.name.endsWith('lora_B')) model.writeParam(e.name, Float32Array.from({ length: e.size }, (_, i) => Math.sin(i + e.offset) * 0.05));
  }
  return model;
}

/** Random token ids and labels for one B×T batch. */
const batch = (rng: Rng): [number[], number[]] => [0, 1].map(() => Array.from({ length: B * T }, () => rng.int(CFG.vocab))) as [number[], number[]];

describe('RWKV-7 training step', () => {
  it('grad_cp on and off give the same gradients (LoRA dropout on, LN trained)', async () => {
    const gpu = await getGpu();
    const rng = freshRng();
    const host = hostWeights(rng.u32());
    const [ids, labels] = batch(rng);
    const grads: Float32Array[] = [];
    // Runtime caches (uniforms, staging, reduction scratch) stay; everything the model owns goes back.
    let inUseAfterFirst = -1;
    for (const gradCp of [false, true]) {
      const model = dropoutModel(gpu, host, gradCp);
      model.setBatch(ids, labels, 1234);
      model.forwardBackward();
      grads.push(await gpu.readF32(model.grads));
      model.dispose();
      if (inUseAfterFirst < 0) inUseAfterFirst = gpu.memory().inUseBytes;
      else expect(gpu.memory().inUseBytes).toBe(inUseAfterFirst);
    }
    expect(grads[0].some((g) => g !== 0)).toBe(true);
    expectClose('grad_cp gradients', grads[1], grads[0], 1e-6, rng);
  });

  // forwardBackward records its first step on a tape and replays it after (GpuRuntime.taped).
  it('a replayed step gives what running the step gives, on a new batch and dropout seed', async () => {
    const gpu = await getGpu();
    const rng = freshRng();
    const host = hostWeights(rng.u32());
    const [ids1, labels1] = batch(rng);
    const [ids2, labels2] = batch(rng);
    for (const gradCp of [false, true]) {
      const taped = dropoutModel(gpu, host, gradCp);
      taped.setBatch(ids1, labels1, 11);
      taped.forwardBackward(0.5);
      taped.zeroGrads();
      taped.setBatch(ids2, labels2, 22);
      const lookups = vi.spyOn(gpu, 'pipeline');
      taped.forwardBackward(0.5);
      expect(lookups).not.toHaveBeenCalled();
      lookups.mockRestore();
      const fresh = dropoutModel(gpu, host, gradCp);
      fresh.setBatch(ids2, labels2, 22);
      fresh.forwardBackward(0.5);
      const got = await gpu.readF32(taped.grads);
      expect(got.some((g) => g !== 0)).toBe(true);
      expect(got).toEqual(await gpu.readF32(fresh.grads));
      expect(await taped.readLoss()).toBe(await fresh.readLoss());
      taped.dispose();
      fresh.dispose();
    }
  });

  it('60 AdamW steps on LoRA memorise a short text (loss < 0.05); steps allocate nothing', async () => {
    const gpu = await getGpu();
    const text = 'RWKV is an RNN with transformer-level performance.';
    const bytes = Array.from(new TextEncoder().encode(text));
    const T = bytes.length - 1;
    const model = new Rwkv7Model(gpu, hostWeights(7), {
      B: 1, T, seed: 3, trainLn: true,
      lora: { r: 8, alpha: 16, dropout: 0, targets: RWKV7_LORA_TARGETS },
    });
    const opt = new AdamW(gpu, model.params, model.grads, model.layout, { beta1: 0.9, beta2: 0.99, eps: 1e-8, weightDecay: 0, gradClip: 1 });
    model.setBatch(bytes.slice(0, T), bytes.slice(1));
    const losses: number[] = [];
    let memAfterFirst = 0;
    let cachesAfterFirst = '';
    const steps = 60;
    for (let t = 1; t <= steps; t++) {
      model.forwardBackward();
      opt.step(t, 1e-2);
      if (t === 1 || t % 20 === 0) losses.push(await model.readLoss());
      if (t === 1) {
        memAfterFirst = gpu.memory().currentBytes;
        cachesAfterFirst = JSON.stringify(gpu.pipelines.stats());
      }
    }
    expect(gpu.memory().currentBytes).toBe(memAfterFirst);
    expect(JSON.stringify(gpu.pipelines.stats())).toBe(cachesAfterFirst);
    expect(losses[0]).toBeGreaterThan(4); // ~ln(256) from a random model
    console.log(`memorisation losses every 20 steps: ${losses.map((l) => l.toFixed(3)).join(' ')}`);
    expect(losses[losses.length - 1]).toBeLessThan(0.05);
  });
});
