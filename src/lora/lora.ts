/**
 * LoRA adapters as RWKV-PEFT defines them: for a frozen Linear W [out, in],
 * y = x·Wᵀ + (alpha/r)·(dropout(x)·Aᵀ)·Bᵀ with A [r, in] initialised uniform in
 * ±1/√in (kaiming_uniform with a = √5) and B [out, r] at zero.
 *
 * All trainable tensors of a model live in one flat f32 buffer (one optimizer
 * dispatch for everything); this module computes that layout and its initial values.
 */
import { Rng } from '../util/rng.js';

/** RWKV-PEFT's LoRA targets for x070 (§2.4 of the spec). */
export const RWKV7_LORA_TARGETS = ['att.receptance', 'att.key', 'att.value', 'att.output', 'ffn.key', 'ffn.value'] as const;
export type Rwkv7LoraTarget = (typeof RWKV7_LORA_TARGETS)[number];

export interface LoraConfig {
  r: number;
  alpha: number;
  dropout: number;
  targets: readonly Rwkv7LoraTarget[];
}

export interface TrainableEntry {
  /** Checkpoint key, e.g. blocks.3.att.key.lora_A or blocks.3.ln1.weight. */
  name: string;
  shape: number[];
  /** Offset in elements inside the flat buffer (a multiple of 64, so bindings stay aligned). */
  offset: number;
  size: number;
  /** Gets weight decay when weight_decay > 0 (2-D matrices, as RWKV-PEFT groups them). */
  decay: boolean;
}

export interface TrainableLayout {
  entries: TrainableEntry[];
  byName: Map<string, TrainableEntry>;
  /** Total elements of the flat buffer. */
  size: number;
}

const ALIGN = 64;

export function buildLayout(specs: readonly { name: string; shape: number[] }[]): TrainableLayout {
  const entries: TrainableEntry[] = [];
  let offset = 0;
  for (const s of specs) {
    const size = s.shape.reduce((a, b) => a * b, 1);
    entries.push({ name: s.name, shape: s.shape, offset, size, decay: s.shape.length === 2 });
    offset += Math.ceil(size / ALIGN) * ALIGN;
  }
  return { entries, byName: new Map(entries.map((e) => [e.name, e])), size: Math.max(offset, ALIGN) };
}

/** [in, out] of a LoRA target for a model with n_embd C and channel-mix hidden size F. */
export function targetDims(target: Rwkv7LoraTarget, C: number, F: number): [number, number] {
  if (target === 'ffn.key') return [C, F];
  if (target === 'ffn.value') return [F, C];
  return [C, C];
}

export function loraSpecs(nLayer: number, C: number, F: number, cfg: LoraConfig): { name: string; shape: number[] }[] {
  if (!Number.isInteger(cfg.r) || cfg.r < 1) throw new Error(`LoRA r must be a positive integer, got ${cfg.r}`);
  if (!(cfg.dropout >= 0 && cfg.dropout < 1)) throw new Error(`LoRA dropout must be in [0, 1), got ${cfg.dropout}`);
  const out: { name: string; shape: number[] }[] = [];
  for (let l = 0; l < nLayer; l++) {
    for (const t of cfg.targets) {
      const [fin, fout] = targetDims(t, C, F);
      out.push({ name: `blocks.${l}.${t}.lora_A`, shape: [cfg.r, fin] });
      out.push({ name: `blocks.${l}.${t}.lora_B`, shape: [fout, cfg.r] });
    }
  }
  return out;
}

/**
 * Initial values of the flat buffer: LoRA A uniform in ±1/√in, B zero; any other
 * entry (LayerNorm/GroupNorm weights trained with train_parts "ln") starts from
 * `base(name)`, the frozen model's value.
 */
export function initialValues(layout: TrainableLayout, seed: number, base: (name: string) => Float32Array): Float32Array {
  const v = new Float32Array(layout.size);
  const rng = new Rng(seed);
  for (const e of layout.entries) {
    if (e.name.endsWith('.lora_A')) {
      const bound = 1 / Math.sqrt(e.shape[1]);
      for (let i = 0; i < e.size; i++) v[e.offset + i] = rng.uniform(-bound, bound);
    } else if (!e.name.endsWith('.lora_B')) {
      const b = base(e.name);
      if (b.length !== e.size) throw new Error(`trainable ${e.name}: base tensor has ${b.length} values, expected ${e.size}`);
      v.set(b, e.offset);
    }
  }
  return v;
}
