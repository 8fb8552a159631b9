/**
 * The RWKV-7 layouts the benchmark covers and every matrix product one LoRA training
 * step of them records (src/model/rwkv7.ts), with how often per step.
 */
import { RWKV7_LORA_TARGETS, targetDims } from '../src/lora/lora.js';
import type { Rwkv7Dims } from '../src/model/rwkv7_config.js';
import { rwkv7DefaultDims } from '../src/model/rwkv7_init.js';

export const VOCAB = 65536;

export const LAYOUTS: Record<string, { nLayer: number; nEmbd: number; vocab: number }> = {
  '0.1B': { nLayer: 12, nEmbd: 768, vocab: VOCAB },
  '0.4B': { nLayer: 24, nEmbd: 1024, vocab: VOCAB },
  '1.5B': { nLayer: 24, nEmbd: 2048, vocab: VOCAB },
  '2.9B': { nLayer: 32, nEmbd: 2560, vocab: VOCAB },
  // Not a model: small enough to check the benchmark itself on a CPU adapter.
  tiny: { nLayer: 2, nEmbd: 128, vocab: 1024 },
};

export function layoutDims(name: string): Rwkv7Dims {
  const l = LAYOUTS[name];
  if (!l) throw new Error(`unknown layout ${name}: expected one of ${Object.keys(LAYOUTS).join(', ')}`);
  return rwkv7DefaultDims(l.nLayer, l.nEmbd, l.vocab);
}

/** One matrix product C[m,n] = op(A)·op(B): frozen bf16 B ('bf16') or f32 LoRA operands ('f32'). */
export interface MatmulShape {
  /** Where it occurs, e.g. 'fwd att.key' or 'bwd lora dA ffn.key'. */
  what: string;
  dtype: 'bf16' | 'f32';
  m: number;
  n: number;
  k: number;
  transA: boolean;
  transB: boolean;
  /** Occurrences in one step without activation checkpointing. */
  perStep: number;
  /** Of which in the forward (repeated once more with grad_cp). */
  forwardPerStep: number;
}

export function shapeKey(s: Pick<MatmulShape, 'dtype' | 'm' | 'n' | 'k' | 'transA' | 'transB'>): string {
  return `${s.dtype} ${s.transA ? 'T' : 'N'}${s.transB ? 'T' : 'N'} ${s.m}x${s.n}x${s.k}`;
}

export function flops(s: Pick<MatmulShape, 'm' | 'n' | 'k'>): number {
  return 2 * s.m * s.n * s.k;
}

/**
 * Every product of one training step at M = B·T tokens with LoRA rank r on all six
 * targets, merged by shape (first description kept).
 */
export function stepMatmuls(d: Rwkv7Dims, M: number, r: number): MatmulShape[] {
  const { nEmbd: C, ffnHidden: F, vocab: V, nLayer: L } = d;
  const out = new Map<string, MatmulShape>();
  const add = (what: string, dtype: 'bf16' | 'f32', m: number, n: number, k: number, transA: boolean, transB: boolean, count: number, fwd: boolean): void => {
    const s = { what, dtype, m, n, k, transA, transB };
    const key = shapeKey(s);
    const e = out.get(key) ?? { ...s, perStep: 0, forwardPerStep: 0 };
    e.perStep += count;
    if (fwd) e.forwardPerStep += count;
    out.set(key, e);
  };
  for (const t of RWKV7_LORA_TARGETS) {
    const [fin, fout] = targetDims(t, C, F);
    // y = x·Wᵀ + s·(x·Aᵀ)·Bᵀ
    add(`fwd ${t}`, 'bf16', M, fout, fin, false, true, L, true);
    add(`fwd lora x·Aᵀ ${t}`, 'f32', M, r, fin, false, true, L, true);
    add(`fwd lora h·Bᵀ ${t}`, 'f32', M, fout, r, false, true, L, true);
    // dx = dy·W + s·(dy·B)·A; dB += s·dyᵀ·h; dA += dhᵀ·x
    add(`bwd dx ${t}`, 'bf16', M, fin, fout, false, false, L, false);
    add(`bwd lora dB ${t}`, 'f32', fout, r, M, true, false, L, false);
    add(`bwd lora dh ${t}`, 'f32', M, r, fout, false, false, L, false);
    add(`bwd lora dA ${t}`, 'f32', r, fin, M, true, false, L, false);
    add(`bwd lora dx ${t}`, 'f32', M, fin, r, false, false, L, false);
  }
  // The low-rank w/a/v/g projections: x·W1 then ·W2 (v only past layer 0); backward by W2ᵀ, W1ᵀ.
  for (const [name, dim, layers] of [['w', d.dW, L], ['a', d.dA, L], ['v', d.dV, L - 1], ['g', d.dG, L]] as const) {
    add(`fwd ${name}1`, 'bf16', M, dim, C, false, false, layers, true);
    add(`fwd ${name}2`, 'bf16', M, C, dim, false, false, layers, true);
    add(`bwd ${name}2ᵀ`, 'bf16', M, dim, C, false, true, layers, false);
    add(`bwd ${name}1ᵀ`, 'bf16', M, C, dim, false, true, layers, false);
  }
  add('fwd head', 'bf16', M, V, C, false, true, 1, true);
  add('bwd dx head', 'bf16', M, C, V, false, false, 1, false);
  return [...out.values()];
}

/** Training FLOPs of one step from its products (with grad_cp the forward runs twice, the head once). */
export function stepFlops(shapes: readonly MatmulShape[], gradCp: boolean): number {
  let f = 0;
  for (const s of shapes) f += flops(s) * (s.perStep + (gradCp && !s.what.includes('head') ? s.forwardPerStep : 0));
  return f;
}
