/**
 * The frozen base model of a run: read from a checkpoint and checked to be an
 * RWKV-7 (x070) model, or created with random weights (RWKV-PEFT's behaviour
 * when load_model is empty, and the `init` command).
 */
import { existsSync } from 'node:fs';
import { describeModel } from '../io/describe_model.js';
import { hostFromF32, type FloatDType } from '../io/host_tensor.js';
import { loadCheckpoint, writeCheckpoint } from '../io/model_file.js';
import type { Rwkv7Dims } from '../model/rwkv7_config.js';
import { randomRwkv7Weights, rwkv7DefaultDims } from '../model/rwkv7_init.js';
import { hostToF32, type HostTensor } from '../model/weights.js';

export interface RandomModelSpec {
  nLayer: number;
  nEmbd: number;
  vocab: number;
  seed: number;
}

/** Writes a random RWKV-7 model in the layout of the official checkpoints (bf16, every x070 key); returns its dims. */
export function writeRandomModel(path: string, s: RandomModelSpec, overwrite = false): Rwkv7Dims {
  for (const [k, v] of [['n_layer', s.nLayer], ['n_embd', s.nEmbd], ['vocab_size', s.vocab]] as const) {
    if (!Number.isInteger(v) || v < 1) throw new Error(`${k}: expected a positive integer, found ${v}`);
  }
  if (s.nEmbd % 64 !== 0) throw new Error(`n_embd: expected a multiple of the head size 64, found ${s.nEmbd}`);
  const dims = rwkv7DefaultDims(s.nLayer, s.nEmbd, s.vocab);
  const w = randomRwkv7Weights(dims, s.seed);
  writeCheckpoint(path, [...w].map(([name, t]) => ({ name, ...t })), { overwrite });
  return dims;
}

/** Every tensor of a model file, refused with a clear message unless it is a full x070 model. */
export function readBaseModel(path: string, expectVersion = ''): Map<string, HostTensor> {
  if (!existsSync(path)) throw new Error(`load_model: ${path} does not exist`);
  const weights = loadCheckpoint(path);
  const d = describeModel(weights.values());
  if (d.architecture === 'x060') throw new Error(`${path} is an RWKV-6 (x060) model; RWKV-6 is not supported yet, only RWKV-7 (x070)`);
  if (d.architecture !== 'x070') throw new Error(`${path} is not an RWKV-7 (x070) model (no x070 time-mix tensors such as blocks.0.att.r_k)`);
  if (d.kind !== 'model') throw new Error(`${path} is a ${d.kind} checkpoint, not a full model (pass it as an adapter, not as the base model)`);
  if (expectVersion && expectVersion !== 'x070') throw new Error(`my_testing is ${expectVersion} but ${path} is an x070 model`);
  return weights;
}

/**
 * The base model with the adapter's values merged in: W + (alpha/r)·B·A for each
 * adapted Linear (in f32, rounded once to `dtype`: bf16 by default, f16 for the
 * Ai00 .st), trained LayerNorm weights replaced (in `dtype`, by default the base
 * tensor's), every other tensor unchanged. `trained` holds f32 values by checkpoint key.
 */
export function mergeWeights(base: ReadonlyMap<string, HostTensor>, trained: ReadonlyMap<string, Float32Array>, alpha: number, dtype?: FloatDType): Map<string, HostTensor> {
  const out = new Map<string, HostTensor>();
  for (const [name, t] of base) {
    const prefix = name.replace(/\.weight$/, '');
    const A = trained.get(`${prefix}.lora_A`);
    const B = trained.get(`${prefix}.lora_B`);
    const replaced = trained.get(name);
    if (A && B && name.endsWith('.weight')) {
      const [nOut, nIn] = t.shape;
      const r = A.length / nIn;
      if (!Number.isInteger(r) || B.length !== nOut * r) throw new Error(`${prefix}: LoRA A/B sizes ${A.length}/${B.length} do not fit the weight [${nOut},${nIn}]`);
      const w = hostToF32(t);
      const s = alpha / r;
      for (let o = 0; o < nOut; o++) {
        for (let k = 0; k < r; k++) {
          const b = s * B[o * r + k];
          if (b === 0) continue;
          const row = o * nIn;
          const arow = k * nIn;
          for (let i = 0; i < nIn; i++) w[row + i] += b * A[arow + i];
        }
      }
      out.set(name, hostFromF32(name, t.shape, w, dtype ?? 'bf16'));
    } else if (replaced) {
      out.set(name, hostFromF32(name, t.shape, replaced, dtype ?? t.dtype));
    } else {
      out.set(name, t);
    }
  }
  return out;
}
