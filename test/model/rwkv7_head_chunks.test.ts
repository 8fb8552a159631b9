/**
 * The chunked head and cross-entropy: any headChunk gives the loss, gradients and logits
 * of one whole chunk, with the mean over the batch's valid targets (some chunks have
 * none) and L2Wrap over the batch's B·T; a batch whose logits exceed one chunk trains;
 * the memory report covers exactly what the model holds.
 */
import { describe, expect, it } from 'vitest';
import { RWKV7_LORA_TARGETS } from '../../src/lora/lora.js';
import { Rwkv7Model, type Rwkv7Options } from '../../src/model/rwkv7.js';
import { f32Host, type HostTensor } from '../../src/model/weights.js';
import { tinyX070Weights, type TinyX070Config } from '../reference/tiny_model.js';
import { expectClose, freshRng, getGpu, type Rng } from '../helpers.js';
import type { GpuRuntime } from '../../src/gpu/device.js';

const CFG: TinyX070Config = { nLayer: 2, C: 64, headSize: 64, vocab: 96, dW: 16, dA: 16, dV: 8, dG: 24 };
const [B, T] = [3, 13];
const M = B * T;

function hostWeights(rng: Rng, cfg: TinyX070Config): Map<string, HostTensor> {
  return new Map([...tinyX070Weights(rng, cfg)].map(([k, t]) => [k, f32Host(t.shape, t.data)]));
}

/** A nonzero LoRA B, so every adapter path carries gradient. */
function setLoraB(model: Rwkv7Model): void {
  for (const e of model.layout.entries) {
    if (e.name.endsWith('lora_B')) model.writeParam(e.name, Float32Array.from({ length: e.size }, (_, i) => Math.sin(i + e.offset) * 0.05));
  }
}

interface Run {
  model: Rwkv7Model;
  logits: Float32Array;
  loss: number;
  grads: Float32Array;
}

async function run(gpu: GpuRuntime, host: Map<string, HostTensor>, ids: number[], labels: number[], o: Partial<Rwkv7Options>): Promise<Run> {
  const model = new Rwkv7Model(gpu, host, {
    B, T, seed: 5, trainLn: true,
    lora: { r: 4, alpha: 16, dropout: 0.1, targets: RWKV7_LORA_TARGETS },
    ...o,
  });
  setLoraB(model);
  model.setBatch(ids, labels, 77);
  model.forward();
  const logits = await model.readLogits();
  model.forwardBackward(0.5);
  return { model, logits, loss: await model.readLoss(), grads: await gpu.readF32(model.grads) };
}

describe('RWKV-7 chunked head and cross-entropy', () => {
  for (const l2wrap of [false, true]) {
    it(`chunks of 16, 7 (grad_cp) and 1 rows give one chunk's loss, gradients and logits (l2wrap=${l2wrap})`, async () => {
      const gpu = await getGpu();
      const rng = freshRng();
      const host = hostWeights(rng, CFG);
      const ids = Array.from({ length: M }, () => rng.int(CFG.vocab));
      // -100 spread over the batch, and rows 14..31 all ignored: whole chunks of 7 and 16 rows
      // without a valid target, so a per-chunk count would change the gradient.
      const labels = ids.map((_, i) => (i % 5 === 2 || (i >= 14 && i < 32) ? -100 : rng.int(CFG.vocab)));
      const whole = await run(gpu, host, ids, labels, { l2wrap, headChunk: M });
      expect(whole.model.headChunk).toBe(M);
      expect(whole.grads.some((g) => g !== 0)).toBe(true);
      const wholeLogitsBytes = whole.model.memory().logits;
      whole.model.dispose();
      // 39 rows: 16 + 16 + 7, 5·7 + 4, 39·1.
      for (const [headChunk, gradCp] of [[16, false], [7, true], [1, false]] as const) {
        const c = await run(gpu, host, ids, labels, { l2wrap, headChunk, gradCp });
        expect(c.model.headChunk).toBe(headChunk);
        // Rows are independent through the head, so only f32 rounding may differ.
        expect(Math.abs(c.loss - whole.loss) / Math.abs(whole.loss)).toBeLessThan(1e-6);
        expectClose(`headChunk ${headChunk}: gradients`, c.grads, whole.grads, 1e-6, rng);
        expectClose(`headChunk ${headChunk}: logits`, c.logits, whole.logits, 1e-6, rng);
        // The head's rows can be read in any window, before and after the backward.
        expectClose(`headChunk ${headChunk}: rows 5..24`, await c.model.readLogits(5, 20), whole.logits.subarray(5 * CFG.vocab, 25 * CFG.vocab), 1e-6, rng);
        expect(c.model.memory().logits).toBeLessThan(wholeLogitsBytes);
        c.model.dispose();
      }
    });
  }

  it('headLogits gives one row for sampling; bad row ranges and chunk sizes are refused', async () => {
    const gpu = await getGpu();
    const rng = freshRng();
    const host = hostWeights(rng, CFG);
    const model = new Rwkv7Model(gpu, host, { B, T, seed: 1, headChunk: 8, lora: { r: 2, alpha: 2, dropout: 0, targets: RWKV7_LORA_TARGETS } });
    model.setBatch(Array.from({ length: M }, () => rng.int(CFG.vocab)), new Array<number>(M).fill(-100));
    model.forward();
    const all = await model.readLogits();
    for (const row of [0, 17, M - 1]) {
      expectClose(`row ${row}`, await gpu.readF32(model.headLogits(row, 1)), all.subarray(row * CFG.vocab, (row + 1) * CFG.vocab), 1e-6, rng);
    }
    expect(() => model.headLogits(0, 9)).toThrow(/at most headChunk = 8/);
    expect(() => model.headLogits(M - 1, 2)).toThrow(/must lie in 0\.\.38/);
    await expect(model.readLogits(30, 10)).rejects.toThrow(/must lie in 0\.\.38/);
    model.dispose();
    expect(() => new Rwkv7Model(gpu, host, { B, T, seed: 1, headChunk: 2.5, lora: { r: 2, alpha: 2, dropout: 0, targets: RWKV7_LORA_TARGETS } })).toThrow(/headChunk must be a positive integer/);
  });

  it('the memory report counts exactly the buffers the model holds; steps allocate nothing', async () => {
    const gpu = await getGpu();
    const rng = freshRng();
    const host = hostWeights(rng, CFG);
    for (const gradCp of [false, true]) {
      const model = new Rwkv7Model(gpu, host, { B, T, seed: 1, gradCp, headChunk: 7, lora: { r: 4, alpha: 8, dropout: 0, targets: RWKV7_LORA_TARGETS } });
      const labels = Array.from({ length: M }, () => rng.int(CFG.vocab));
      model.setBatch(labels, labels);
      model.forwardBackward();
      await gpu.sync();
      const held = gpu.memory().currentBytes;
      model.forwardBackward();
      await gpu.sync();
      expect(gpu.memory().currentBytes).toBe(held);
      const m = model.memory();
      for (const v of Object.values(m)) expect(v).toBeGreaterThan(0);
      const inUse = gpu.memory().inUseBytes;
      model.dispose();
      expect(inUse - gpu.memory().inUseBytes).toBe(m.total);
    }
  });

  it('a batch whose logits exceed one chunk (and on lavapipe one binding) trains, and its loss is the cross-entropy of its logits', async () => {
    const gpu = await getGpu();
    const rng = freshRng();
    const cfg: TinyX070Config = { ...CFG, nLayer: 1, vocab: 65536 };
    // Just more rows than one chunk's logits can hold (256 MiB, or less where a binding
    // is smaller: lavapipe's 128 MiB makes it 520 rows there, 1040 on an H200).
    const chunkRows = Math.floor(Math.min(2 ** 28, gpu.limits.maxStorageBufferBindingSize) / (cfg.vocab * 4));
    const t = 130;
    const b = Math.floor(chunkRows / t) + 1;
    const m = b * t;
    const model = new Rwkv7Model(gpu, hostWeights(rng, cfg), { B: b, T: t, seed: 2, lora: { r: 2, alpha: 4, dropout: 0, targets: RWKV7_LORA_TARGETS } });
    expect(model.headChunk).toBeLessThan(m);
    expect(model.memory().logits).toBeLessThanOrEqual(gpu.limits.maxStorageBufferBindingSize + 2 ** 20);
    setLoraB(model);
    const ids = Array.from({ length: m }, () => rng.int(cfg.vocab));
    const labels = ids.map((_, i) => (i % 3 === 0 ? -100 : rng.int(cfg.vocab)));
    model.setBatch(ids, labels);
    model.forwardBackward();
    const loss = await model.readLoss();
    const logits = await model.readLogits();
    let sum = 0;
    let valid = 0;
    for (let r = 0; r < m; r++) {
      if (labels[r] < 0) continue;
      const row = logits.subarray(r * cfg.vocab, (r + 1) * cfg.vocab);
      let mx = -Infinity;
      for (const v of row) mx = Math.max(mx, v);
      let z = 0;
      for (const v of row) z += Math.exp(v - mx);
      sum += Math.log(z) + mx - row[labels[r]];
      valid++;
    }
    expect(Math.abs(loss - sum / valid) / (sum / valid)).toBeLessThan(1e-5);
    const grads = await gpu.readF32(model.grads);
    expect(grads.every(Number.isFinite) && grads.some((g) => g !== 0)).toBe(true);
    model.dispose();
  });
});
