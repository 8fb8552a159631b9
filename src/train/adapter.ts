/**
 * LoRA adapter files in RWKV-PEFT's layout: `blocks.N.<module>.lora_A` [r, in],
 * `.lora_B` [out, r] and any trained LayerNorm weights under their model names,
 * plus the alpha and rank they were trained with (src/io/lora_meta.ts). The
 * reader also takes an Ai00 LoRA .st, which comes back in these names.
 */
import type { FloatDType } from '../io/host_tensor.js';
import { hostFromF32, type CheckpointTensor } from '../io/host_tensor.js';
import { isLoraMetaKey, loraMetaTensors, readLoraMeta } from '../io/lora_meta.js';
import { loadCheckpoint, writeCheckpoint } from '../io/model_file.js';
import type { TrainableLayout } from '../lora/lora.js';
import { hostToF32 } from '../model/weights.js';

export interface Adapter {
  /** f32 values by checkpoint key. */
  tensors: Map<string, Float32Array>;
  shapes: Map<string, readonly number[]>;
  /** Recorded in the file; undefined for a file without the records (e.g. one RWKV-PEFT wrote). */
  alpha?: number;
  r?: number;
}

/** The tensors of `layout` from the flat trainable buffer. */
export function layoutTensors(layout: TrainableLayout, params: Float32Array): Map<string, Float32Array> {
  return new Map(layout.entries.map((e) => [e.name, params.slice(e.offset, e.offset + e.size)]));
}

/** The adapter's tensors from the flat trainable buffer, in `dtype`, with the alpha and r records. */
export function adapterTensors(layout: TrainableLayout, params: Float32Array, o: { alpha: number; r: number; dtype: FloatDType }): CheckpointTensor[] {
  const tensors = layout.entries.map((e) => hostFromF32(e.name, e.shape, params.subarray(e.offset, e.offset + e.size), o.dtype));
  return [...tensors, ...loraMetaTensors(o.alpha, o.r)];
}

export function writeAdapter(path: string, layout: TrainableLayout, params: Float32Array, o: { alpha: number; r: number; dtype: FloatDType }): void {
  writeCheckpoint(path, adapterTensors(layout, params, o), { overwrite: true });
}

export function readAdapter(path: string): Adapter {
  const all = loadCheckpoint(path);
  const meta = readLoraMeta(all);
  const tensors = new Map<string, Float32Array>();
  const shapes = new Map<string, readonly number[]>();
  for (const [name, t] of all) {
    if (isLoraMetaKey(name)) continue;
    tensors.set(name, hostToF32(t));
    shapes.set(name, t.shape);
  }
  const a = [...all.keys()].find((k) => k.endsWith('.lora_A'));
  if (!a) throw new Error(`${path}: not a LoRA adapter (no *.lora_A tensors)`);
  return { tensors, shapes, alpha: meta?.alpha, r: meta?.r ?? all.get(a)!.shape[0] };
}

/**
 * Copies an adapter's values into a layout's flat buffer; every tensor of the
 * adapter must exist in the layout with the same shape (the rank included).
 */
export function applyAdapter(adapter: Adapter, layout: TrainableLayout, params: Float32Array, source: string): void {
  for (const [name, values] of adapter.tensors) {
    const e = layout.byName.get(name);
    const shape = adapter.shapes.get(name)!;
    if (!e) throw new Error(`${source}: tensor ${name} is not trained by this configuration (LoRA targets, train_parts)`);
    if (e.shape.join(',') !== shape.join(',')) throw new Error(`${source}: ${name} has shape [${shape.join(',')}], this run trains [${e.shape.join(',')}] (a different LoRA rank?)`);
    params.set(values, e.offset);
  }
}
