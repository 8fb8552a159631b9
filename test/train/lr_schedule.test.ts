/** RWKV-PEFT's LR schedules (spec §1.9), at hand-computed points. */
import { describe, expect, it } from 'vitest';
import { cosDecay, learningRate, wsd, type LrSettings } from '../../src/train/lr_schedule.js';

const close = (a: number, b: number): void => expect(Math.abs(a - b)).toBeLessThanOrEqual(1e-15 + 1e-12 * Math.abs(b));

describe('cos_decay', () => {
  it('runs from lr_init to lr_final along half a cosine, then stays', () => {
    close(cosDecay(1e-3, 1e-5, 0, 100), 1e-3);
    close(cosDecay(1e-3, 1e-5, 50, 100), 1e-5 + 0.5 * (1e-3 - 1e-5));
    close(cosDecay(1e-3, 1e-5, 25, 100), 1e-5 + 0.5 * (1e-3 - 1e-5) * (1 + Math.SQRT1_2));
    close(cosDecay(1e-3, 1e-5, 100, 100), 1e-5);
    close(cosDecay(1e-3, 1e-5, 150, 100), 1e-5);
  });
});

describe('wsd (warmup, then cosine to the final value)', () => {
  it('warms up linearly from 0, peaks at the end of warmup, reaches the final value at total', () => {
    close(wsd(1e-3, 0, 0, 100, 10), 0);
    close(wsd(1e-3, 0, 5, 100, 10), 5e-4);
    close(wsd(1e-3, 0, 10, 100, 10), 1e-3);
    close(wsd(1e-3, 0, 55, 100, 10), 5e-4);
    close(wsd(1e-3, 0, 100, 100, 10), 0);
    close(wsd(1e-3, 0, 120, 100, 10), 0);
  });
  it('warmup <= 0 means 100 steps', () => {
    close(wsd(1e-3, 0, 50, 1000, -1), 5e-4);
    close(wsd(1e-3, 0, 50, 1000, 0), 5e-4);
  });
});

describe('learningRate (the trainer)', () => {
  const s: LrSettings = { lr_init: 1e-3, lr_final: 1e-5, lr_schedule: 'cos_decay', warmup_steps: -1, epoch_steps: 10, epoch_count: 10, epoch_begin: 0 };
  it('spans epoch_steps·epoch_count optimizer steps', () => {
    close(learningRate(s, 0), 1e-3);
    close(learningRate(s, 50), cosDecay(1e-3, 1e-5, 50, 100));
    close(learningRate(s, 100), 1e-5);
  });
  it('epoch_begin shifts the position, as RWKV-PEFT does', () => {
    close(learningRate({ ...s, epoch_begin: 2 }, 30), cosDecay(1e-3, 1e-5, 50, 100));
  });
  it('is constant when lr_final equals lr_init (no warmup either)', () => {
    for (const schedule of ['cos_decay', 'wsd'] as const) close(learningRate({ ...s, lr_final: 1e-3, lr_schedule: schedule }, 0), 1e-3);
  });
  it('wsd ignores lr_final (RWKV-PEFT calls it with 0)', () => {
    close(learningRate({ ...s, lr_schedule: 'wsd', warmup_steps: 20 }, 10), 5e-4);
    close(learningRate({ ...s, lr_schedule: 'wsd', warmup_steps: 20 }, 100), 0);
  });
});
