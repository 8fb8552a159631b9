/**
 * Dropout on the LoRA branch's input, with the mask recomputed from a hash of
 * (seed, salt, element) rather than stored: the backward and activation
 * checkpointing regenerate exactly the same mask. The seed lives in a small
 * storage tensor written once per step, so the pipeline's uniforms stay constant.
 */
import type { GpuRuntime } from '../gpu/device.js';
import { describe, numel, type Tensor } from '../gpu/tensor.js';
import { ceilDiv, grid1d, uniforms, WGSL_LINEAR_WG } from './common.js';

const WG = 256;

/** The hash and keep test, shared by the shader and the host reference. */
export function dropoutKeep(seed: number, salt: number, i: number, p: number): boolean {
  let h = (Math.imul(i >>> 0, 0x9e3779b1) ^ Math.imul(salt >>> 0, 0x85ebca77) ^ (seed >>> 0)) >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x7feb352d) >>> 0;
  h = Math.imul(h ^ (h >>> 15), 0x846ca68b) >>> 0;
  h = (h ^ (h >>> 16)) >>> 0;
  return h >= Math.floor(p * 4294967296);
}

const SHADER = /* wgsl */ `
struct P { n: u32, salt: u32, threshold: u32, scale: f32, accumulate: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> seed: array<u32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) li: u32) {
  let i = ${WGSL_LINEAR_WG} * ${WG}u + li;
  if (i >= p.n) { return; }
  var h = (i * 0x9e3779b1u) ^ (p.salt * 0x85ebca77u) ^ seed[0];
  h = (h ^ (h >> 16u)) * 0x7feb352du;
  h = (h ^ (h >> 15u)) * 0x846ca68bu;
  h = h ^ (h >> 16u);
  let v = select(0.0, x[i] * p.scale, h >= p.threshold);
  if (p.accumulate != 0u) { y[i] = y[i] + v; } else { y[i] = v; }
}`;

/**
 * y (+)= dropout(x): each element kept with probability 1 − p and scaled by 1/(1 − p).
 * `seed` is a u32 [1] tensor (new each step); `salt` tells apart the call sites.
 * The backward is the same call on the incoming gradient (same seed and salt).
 */
export function dropout(gpu: GpuRuntime, x: Tensor, y: Tensor, seed: Tensor, p: number, salt: number, opts: { accumulate?: boolean } = {}): void {
  const n = numel(x.shape);
  if (x.dtype !== 'f32' || y.dtype !== 'f32' || numel(y.shape) !== n) {
    throw new Error(`dropout: ${describe(x)} and ${describe(y)} must be f32 of equal size`);
  }
  if (seed.dtype !== 'u32' || numel(seed.shape) !== 1) throw new Error(`dropout: seed ${describe(seed)} must be u32 [1]`);
  if (!(p >= 0 && p < 1)) throw new Error(`dropout: p must be in [0, 1), got ${p}`);
  const pipe = gpu.pipeline('dropout', '', ['uniform', 'read', 'read', 'rw'], () => SHADER);
  const u = uniforms([
    ['u32', n],
    ['u32', salt >>> 0],
    ['u32', Math.floor(p * 4294967296)],
    ['f32', 1 / (1 - p)],
    ['u32', opts.accumulate ? 1 : 0],
  ]);
  gpu.dispatch(pipe, [u, seed, x, y], grid1d(ceilDiv(n, WG)));
}
