/**
 * Tiny random RWKV-7 (x070) weight maps and LoRA adapters for tests, keyed by
 * the real checkpoint names (§2.2's table, via x070KeyShapes). Ranges follow
 * what trained checkpoints and RWKV-LM's init hold, so every nonlinearity works
 * in its usual regime: lerp coefficients in [0,1], decays spanning slow to
 * fast, a/v gates away from saturation, LayerNorm gains near 1.
 */
import { rwkv7InitDraw } from '../../src/model/rwkv7_init.js';
import type { Rng } from '../helpers.js';
import { X070_LORA_TARGETS, x070KeyShapes, type RefLora, type RefTensor, type RefWeights, type X070Dims } from './rwkv7_model.js';

export interface TinyX070Config {
  nLayer: number;
  C: number;
  headSize: number;
  vocab: number;
  dW: number;
  dA: number;
  dV: number;
  dG: number;
}

export interface TinyLoraConfig {
  rank: number;
  alpha: number;
  /** Module kinds per block (default all six of X070_LORA_TARGETS). */
  targets?: readonly string[];
  /** Layers to adapt (default all). */
  layers?: readonly number[];
}

function filled(rng: Rng, n: number, draw: (rng: Rng) => number): Float64Array {
  const a = new Float64Array(n);
  for (let i = 0; i < n; i++) a[i] = draw(rng);
  return a;
}

export function tinyX070Dims(cfg: TinyX070Config): X070Dims {
  if (cfg.C % cfg.headSize !== 0) throw new Error(`tiny x070: C = ${cfg.C} is not a multiple of headSize = ${cfg.headSize}`);
  return {
    nLayer: cfg.nLayer,
    C: cfg.C,
    H: cfg.C / cfg.headSize,
    N: cfg.headSize,
    V: cfg.vocab,
    hidden: 4 * cfg.C,
    dW: cfg.dW,
    dA: cfg.dA,
    dV: cfg.dV,
    dG: cfg.dG,
  };
}

/** A random x070 weight map with every checkpoint key of §2.2. */
export function tinyX070Weights(rng: Rng, cfg: TinyX070Config): RefWeights {
  const weights: RefWeights = new Map();
  for (const [key, shape] of x070KeyShapes(tinyX070Dims(cfg))) {
    const n = shape.reduce((p, d) => p * d, 1);
    weights.set(key, { shape, data: filled(rng, n, rwkv7InitDraw(key, shape)) });
  }
  return weights;
}

/**
 * Random LoRA pairs with NONZERO B (unlike training's B = 0 init) so the
 * adapter path carries signal in both directions.
 */
export function tinyLora(rng: Rng, weights: RefWeights, cfg: TinyLoraConfig): RefLora {
  const tensors = new Map<string, RefTensor>();
  const targets = cfg.targets ?? X070_LORA_TARGETS;
  let nLayer = 0;
  while (weights.has(`blocks.${nLayer}.att.r_k`)) nLayer++;
  const layers = cfg.layers ?? Array.from({ length: nLayer }, (_, i) => i);
  for (const n of layers) {
    for (const t of targets) {
      const module = `blocks.${n}.${t}`;
      const W = weights.get(`${module}.weight`);
      if (!W) throw new Error(`tinyLora: no ${module}.weight in the weight map`);
      const [out, inp] = W.shape;
      tensors.set(`${module}.lora_A`, { shape: [cfg.rank, inp], data: filled(rng, cfg.rank * inp, (r) => r.uniform(-1, 1) / Math.sqrt(inp)) });
      tensors.set(`${module}.lora_B`, { shape: [out, cfg.rank], data: filled(rng, out * cfg.rank, (r) => r.normal() * 0.5 / Math.sqrt(cfg.rank)) });
    }
  }
  return { alpha: cfg.alpha, tensors };
}
