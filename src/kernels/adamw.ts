/**
 * AdamW as DeepSpeed's FusedAdam runs it for RWKV-PEFT (spec §1.6): bias-corrected moments,
 * eps outside the square root, decoupled weight decay, with DeepSpeed's global-norm gradient
 * clipping folded in. One dispatch updates one flat f32 buffer of parameters in place.
 *
 * Per-step scalars live in a small f32 storage tensor, `stepState`, not in uniforms: uniform
 * buffers are cached by content, and these values change every step. Layout (ADAMW_STATE):
 *   [0] lr                    learning rate of this step (schedule and group scale applied)
 *   [1] beta1, [2] beta2      moment decay rates
 *   [3] eps                   added to √v̂ (outside the sqrt)
 *   [4] weightDecay           decoupled: p ← p − lr·wd·p; 0 turns it off
 *   [5] 1 − beta1^t           bias corrections for the 1-based step t, computed on the host
 *   [6] 1 − beta2^t           in float64 so that 0.999^t does not lose digits in f32
 */
import type { GpuRuntime } from '../gpu/device.js';
import { describe, numel, type Tensor } from '../gpu/tensor.js';
import { ceilDiv, grid1d, uniforms, WGSL_LINEAR_WG } from './common.js';

const WG = 256;

/** Index of each field in stepState. */
export const ADAMW_STATE = { lr: 0, beta1: 1, beta2: 2, eps: 3, weightDecay: 4, biasCorrection1: 5, biasCorrection2: 6 } as const;
export const ADAMW_STATE_LEN = 7;

export interface AdamwHyper {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
}

/** The stepState contents for step t (1-based, the number of updates including this one). */
export function adamwStepState(t: number, h: AdamwHyper): Float32Array {
  if (!Number.isInteger(t) || t < 1) throw new Error(`adamwStepState: step must be an integer >= 1, found ${t}`);
  for (const [k, x] of Object.entries(h)) if (!Number.isFinite(x)) throw new Error(`adamwStepState: ${k} must be finite, found ${x}`);
  if (!(h.beta1 >= 0 && h.beta1 < 1 && h.beta2 >= 0 && h.beta2 < 1)) throw new Error(`adamwStepState: betas must lie in [0, 1), found (${h.beta1}, ${h.beta2})`);
  const s = new Float32Array(ADAMW_STATE_LEN);
  s[ADAMW_STATE.lr] = h.lr;
  s[ADAMW_STATE.beta1] = h.beta1;
  s[ADAMW_STATE.beta2] = h.beta2;
  s[ADAMW_STATE.eps] = h.eps;
  s[ADAMW_STATE.weightDecay] = h.weightDecay;
  s[ADAMW_STATE.biasCorrection1] = 1 - h.beta1 ** t;
  s[ADAMW_STATE.biasCorrection2] = 1 - h.beta2 ** t;
  return s;
}

/**
 * Writes step t's state into `stepState` (f32 [ADAMW_STATE_LEN]). gpu.write goes onto the
 * queue at once, ahead of anything recorded but not yet submitted: submit the previous
 * step's adamwStep before writing the next step's state.
 */
export function writeAdamwStepState(gpu: GpuRuntime, stepState: Tensor, t: number, h: AdamwHyper): void {
  expectStepState(stepState);
  gpu.write(stepState, adamwStepState(t, h));
}

function expectStepState(t: Tensor): void {
  if (t.dtype !== 'f32' || numel(t.shape) !== ADAMW_STATE_LEN) {
    throw new Error(`adamw: ${t.label} must be f32 [${ADAMW_STATE_LEN}] (the step state), found ${describe(t)}`);
  }
}

export interface AdamwArgs {
  /** f32, updated in place. */
  param: Tensor;
  /** f32, same size as param; read, and zeroed afterwards when zeroGrad. */
  grad: Tensor;
  /** f32 first and second moments, same size, updated in place (zero them before step 1). */
  m: Tensor;
  v: Tensor;
  /** f32 [ADAMW_STATE_LEN], see the file comment and writeAdamwStepState. */
  stepState: Tensor;
  /** f32 [1]: Σ g² over every parameter clipped together; with maxNorm turns clipping on. */
  sqNorm?: Tensor;
  /** Global-norm clip: grads are scaled by min(1, maxNorm/(√sqNorm + 1e-6)) as DeepSpeed does. */
  maxNorm?: number;
  /** Write 0 into grad after reading it, ready for the next step's accumulation. */
  zeroGrad?: boolean;
}

function adamwSource(clip: boolean, zeroGrad: boolean): string {
  const S = ADAMW_STATE;
  return /* wgsl */ `
struct P { n: u32, maxNorm: f32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> st: array<f32>;
@group(0) @binding(2) var<storage, read_write> param: array<f32>;
@group(0) @binding(3) var<storage, ${zeroGrad ? 'read_write' : 'read'}> grad: array<f32>;
@group(0) @binding(4) var<storage, read_write> m: array<f32>;
@group(0) @binding(5) var<storage, read_write> v: array<f32>;
${clip ? '@group(0) @binding(6) var<storage, read> sq: array<f32>;' : ''}
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) li: u32) {
  let i = ${WGSL_LINEAR_WG} * ${WG}u + li;
  if (i >= p.n) { return; }
  let b1 = st[${S.beta1}];
  let b2 = st[${S.beta2}];
  var g = grad[i];
  ${clip ? 'g *= min(1.0, p.maxNorm / (sqrt(sq[0]) + 1e-6));' : ''}
  let mi = b1 * m[i] + (1.0 - b1) * g;
  let vi = b2 * v[i] + (1.0 - b2) * g * g;
  m[i] = mi;
  v[i] = vi;
  let pi = param[i];
  let update = (mi / st[${S.biasCorrection1}]) / (sqrt(vi / st[${S.biasCorrection2}]) + st[${S.eps}]) + st[${S.weightDecay}] * pi;
  param[i] = pi - st[${S.lr}] * update;
  ${zeroGrad ? 'grad[i] = 0.0;' : ''}
}`;
}

/**
 * One AdamW step on a flat buffer:
 *   g ← clip·grad;  m ← β1·m + (1−β1)·g;  v ← β2·v + (1−β2)·g²
 *   param ← param − lr·( (m/(1−β1^t)) / (√(v/(1−β2^t)) + eps) + wd·param )
 * Every scalar except maxNorm comes from stepState, read when the dispatch runs.
 */
export function adamwStep(gpu: GpuRuntime, a: AdamwArgs): void {
  const n = numel(a.param.shape);
  for (const t of [a.param, a.grad, a.m, a.v]) {
    if (t.dtype !== 'f32' || numel(t.shape) !== n) {
      throw new Error(`adamw: ${t.label} must be f32 with ${n} elements (as ${a.param.label}), found ${describe(t)}`);
    }
  }
  expectStepState(a.stepState);
  const clip = a.sqNorm !== undefined;
  if (clip !== (a.maxNorm !== undefined)) throw new Error('adamw: sqNorm and maxNorm go together (give both to clip, neither not to)');
  if (a.sqNorm && (a.sqNorm.dtype !== 'f32' || numel(a.sqNorm.shape) !== 1)) {
    throw new Error(`adamw: ${a.sqNorm.label} must be f32 [1] (the squared gradient norm), found ${describe(a.sqNorm)}`);
  }
  const maxNorm = a.maxNorm ?? 0;
  if (clip && !(maxNorm > 0 && Number.isFinite(maxNorm))) throw new Error(`adamw: maxNorm must be a positive finite number, found ${maxNorm}`);
  const zeroGrad = a.zeroGrad ?? false;
  const kinds = ['uniform', 'read', 'rw', zeroGrad ? 'rw' : 'read', 'rw', 'rw', ...(clip ? ['read' as const] : [])] as const;
  const p = gpu.pipeline('adamw', `clip=${clip},zeroGrad=${zeroGrad}`, kinds, () => adamwSource(clip, zeroGrad));
  const args = [uniforms([['u32', n], ['f32', maxNorm]]), a.stepState, a.param, a.grad, a.m, a.v, ...(a.sqNorm ? [a.sqNorm] : [])];
  gpu.dispatch(p, args, grid1d(ceilDiv(n, WG)));
}
