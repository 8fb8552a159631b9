/**
 * mergeLora(): base model + LoRA adapter → one model file: a .pth (bf16, the
 * RWKV-LM layout) or an .st/.safetensors in the Ai00/web-rwkv layout (f16).
 * Alpha and rank come from the adapter, so RWKV-PEFT's classic mistake (merging
 * with a different lora_alpha than the one trained with) cannot happen
 * silently; an explicit alpha that disagrees with the recorded one is used,
 * with a warning.
 */
import { writeAi00Model } from '../io/ai00.js';
import { isSafetensorsPath, writeCheckpoint } from '../io/model_file.js';
import { readAdapter } from './adapter.js';
import { mergeWeights, readBaseModel } from './base_model.js';

export interface MergeOptions {
  base: string;
  lora: string;
  /** .pth (bf16) or .st/.safetensors (Ai00 layout, f16), by the extension. */
  out: string;
  /** Overrides the adapter's recorded lora_alpha; required when the adapter records none. */
  alpha?: number;
  overwrite?: boolean;
}

export interface MergeResult {
  out: string;
  alpha: number;
  r: number;
  warnings: string[];
}

export function mergeLora(o: MergeOptions): MergeResult {
  const base = readBaseModel(o.base);
  const adapter = readAdapter(o.lora);
  const warnings: string[] = [];
  if (o.alpha !== undefined && !(o.alpha > 0)) throw new Error(`alpha: expected a positive number, found ${o.alpha}`);
  const alpha = o.alpha ?? adapter.alpha;
  if (alpha === undefined) throw new Error(`${o.lora} does not record the lora_alpha it was trained with; pass it (--alpha)`);
  if (o.alpha !== undefined && adapter.alpha !== undefined && o.alpha !== adapter.alpha) {
    warnings.push(`merging with alpha ${o.alpha}, but ${o.lora} was trained with lora_alpha ${adapter.alpha}`);
  }
  for (const name of adapter.tensors.keys()) {
    const target = name.replace(/\.lora_[AB]$/, '.weight');
    if (!base.has(target)) throw new Error(`${o.lora}: ${name} has no ${target} in the base model ${o.base}`);
  }
  // The Ai00 file is rounded once, f32 to f16, not through bf16.
  const st = isSafetensorsPath(o.out);
  const merged = [...mergeWeights(base, adapter.tensors, alpha, st ? 'f16' : undefined)].map(([name, t]) => ({ name, ...t }));
  if (st) writeAi00Model(o.out, merged, { overwrite: o.overwrite });
  else writeCheckpoint(o.out, merged, { overwrite: o.overwrite });
  return { out: o.out, alpha, r: adapter.r!, warnings };
}
