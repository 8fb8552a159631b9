/**
 * The resume checkpoint: everything a run needs to continue exactly where it
 * stopped. The trainable values, both Adam moments (f32, flat, in the model's
 * trainable layout) and, in the safetensors metadata, the step, the epoch's
 * running loss and the settings that shaped the trajectory. The data position,
 * the dropout masks and the LR are functions of the step, so they need nothing.
 */
import { CheckpointError } from '../io/errors.js';
import { hostToF32 } from '../io/host_tensor.js';
import { openCheckpoint } from '../io/model_file.js';
import { writeSafetensors } from '../io/safetensors.js';
import type { TrainableLayout } from '../lora/lora.js';
import type { TrainConfig } from './config.js';

export interface TrainState {
  /** Optimizer steps done. */
  step: number;
  /** Sum and count of the micro-batch losses of the epoch in progress (RWKV-PEFT's epoch loss). */
  epochLossSum: number;
  epochLossCount: number;
  params: Float32Array;
  m: Float32Array;
  v: Float32Array;
}

/** Settings a resumed run must share with the run it continues (others, like epoch_count, may change). */
const TRAJECTORY_KEYS = [
  'load_model', 'data_file', 'data_type', 'tokenizer', 'ctx_len', 'micro_bsz', 'accumulate_grad_batches', 'epoch_steps',
  'epoch_begin', 'lr_init', 'lr_final', 'lr_schedule', 'warmup_steps', 'beta1', 'beta2', 'adam_eps', 'weight_decay',
  'grad_clip', 'peft_config', 'train_parts', 'random_seed', 'dataload', 'data_shuffle', 'magic_prime',
] as const satisfies readonly (keyof TrainConfig)[];

const f32Tensor = (name: string, a: Float32Array) => ({ name, dtype: 'f32' as const, shape: [a.length], data: new Uint8Array(a.buffer, a.byteOffset, a.byteLength) });

export function saveCheckpoint(path: string, config: TrainConfig, layout: TrainableLayout, s: TrainState): void {
  const meta = {
    step: s.step,
    epochLossSum: s.epochLossSum,
    epochLossCount: s.epochLossCount,
    layout: layout.entries.map((e) => [e.name, e.offset, ...e.shape]),
    config: Object.fromEntries(TRAJECTORY_KEYS.map((k) => [k, config[k]])),
  };
  writeSafetensors(path, [f32Tensor('params', s.params), f32Tensor('adam_m', s.m), f32Tensor('adam_v', s.v)], {
    overwrite: true,
    metadata: { 'rwkv-lora-gpu': JSON.stringify(meta) },
  });
}

/** The random_seed a checkpoint was trained with (so a resumed run with random_seed -1 reuses it). */
export function checkpointSeed(path: string): number | undefined {
  const r = openCheckpoint(path);
  try {
    const meta = JSON.parse(r.metadata['rwkv-lora-gpu'] ?? '{}') as { config?: { random_seed?: number } };
    return meta.config?.random_seed;
  } finally {
    r.close();
  }
}

export function loadCheckpoint(path: string, config: TrainConfig, layout: TrainableLayout): TrainState {
  const r = openCheckpoint(path);
  try {
    const raw = r.metadata['rwkv-lora-gpu'];
    if (!raw) throw new CheckpointError(path, 'not a rwkv-lora-gpu training checkpoint (no rwkv-lora-gpu metadata)');
    const meta = JSON.parse(raw) as { step: number; epochLossSum: number; epochLossCount: number; layout: unknown; config: Record<string, unknown> };
    const differ = TRAJECTORY_KEYS.filter((k) => JSON.stringify(meta.config[k]) !== JSON.stringify(config[k]));
    if (differ.length) {
      throw new Error(
        `cannot resume from ${path}: the run was made with different settings: ` +
          differ.map((k) => `${k} ${JSON.stringify(meta.config[k])} there, ${JSON.stringify(config[k])} now`).join('; '),
      );
    }
    const want = JSON.stringify(layout.entries.map((e) => [e.name, e.offset, ...e.shape]));
    if (JSON.stringify(meta.layout) !== want) throw new Error(`cannot resume from ${path}: its trainable tensors differ from this model's (another model or LoRA rank?)`);
    const get = (name: string): Float32Array => {
      const t = hostToF32(r.read(name));
      if (t.length !== layout.size) throw new CheckpointError(path, `${name} has ${t.length} values, expected ${layout.size}`);
      return t;
    };
    return { step: meta.step, epochLossSum: meta.epochLossSum, epochLossCount: meta.epochLossCount, params: get('params'), m: get('adam_m'), v: get('adam_v') };
  } finally {
    r.close();
  }
}
