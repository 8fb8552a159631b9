/**
 * LoRA alpha and rank recorded inside a LoRA checkpoint, as two 0-d tensors
 * `lora_alpha` and `lora_r` (what `torch.tensor(32.0)` saves). Why this form:
 * - torch.load (weights_only too) takes them like any tensor, and RWKV-PEFT
 *   resumes LoRA files with strict=False, which ignores unknown keys;
 * - RWKV-PEFT's and RWKV Runner's merge_lora.py drop every key containing
 *   "lora" that is not a lora_A/lora_B pair, so merged models never carry them;
 * - web-rwkv's converter (.pth → .st) calls .half() on every value, which a
 *   tensor survives and a plain Python number would not, and web-rwkv/Ai00 look
 *   LoRA tensors up by model names, so unknown names are never read.
 * Default dtype f32 keeps any alpha exact; the Rust web-rwkv-converter insists
 * on bf16 input, so pass 'bf16' when the file is meant for it.
 */
import { hostFromF32, hostToF32, type CheckpointTensor, type FloatDType } from './host_tensor.js';
import type { HostTensor } from '../model/weights.js';

export const LORA_ALPHA_KEY = 'lora_alpha';
export const LORA_R_KEY = 'lora_r';

export function isLoraMetaKey(name: string): boolean {
  return name === LORA_ALPHA_KEY || name === LORA_R_KEY;
}

export function loraMetaTensors(alpha: number, r: number, dtype: FloatDType = 'f32'): CheckpointTensor[] {
  return [hostFromF32(LORA_ALPHA_KEY, [], [alpha], dtype), hostFromF32(LORA_R_KEY, [], [r], dtype)];
}

/** The recorded alpha and r, or undefined for a file that has none (e.g. one RWKV-PEFT wrote). */
export function readLoraMeta(tensors: ReadonlyMap<string, HostTensor>): { alpha: number; r: number } | undefined {
  const a = tensors.get(LORA_ALPHA_KEY);
  const r = tensors.get(LORA_R_KEY);
  if (!a || !r) return undefined;
  return { alpha: hostToF32(a)[0], r: hostToF32(r)[0] };
}
