/**
 * RWKV-PEFT's learning-rate schedules, exactly as its trainer computes them
 * (rwkvt/trick/lrs.py and on_train_batch_start). "wsd" there is warmup then a
 * cosine to 0 (lr_final is ignored), not warmup-stable-decay.
 */

/** Cosine from `init` at step 0 to `final` at `total`, then `final`. No warmup. */
export function cosDecay(init: number, final: number, step: number, total: number): number {
  if (step >= total) return final;
  return final + 0.5 * (init - final) * (1 + Math.cos((Math.PI * step) / total));
}

/** Linear warmup from 0 over `warmup` steps (<= 0 means 100), then a cosine to `final`. */
export function wsd(init: number, final: number, step: number, total: number, warmup: number): number {
  const w = warmup <= 0 ? 100 : warmup;
  if (step < w) return (init * step) / Math.max(1, w);
  if (step - w >= total - w) return final;
  return final + (init - final) * 0.5 * (1 + Math.cos((Math.PI * (step - w)) / (total - w)));
}

export interface LrSettings {
  lr_init: number;
  lr_final: number;
  lr_schedule: 'cos_decay' | 'wsd';
  warmup_steps: number;
  epoch_steps: number;
  epoch_count: number;
  epoch_begin: number;
}

/**
 * The LR of the optimizer step taken after `globalStep` steps of this run
 * (RWKV-PEFT's trainer.global_step). An epoch is epoch_steps optimizer steps, so
 * the schedule spans epoch_steps·epoch_count steps; epoch_begin shifts the position.
 */
export function learningRate(s: LrSettings, globalStep: number): number {
  const realStep = globalStep + s.epoch_begin * s.epoch_steps;
  const total = s.epoch_steps * s.epoch_count;
  if (s.lr_final === s.lr_init || s.epoch_count === 0) return s.lr_init;
  if (s.lr_schedule === 'wsd') return wsd(s.lr_init, 0, realStep, total, s.warmup_steps);
  return cosDecay(s.lr_init, s.lr_final, realStep, total);
}
