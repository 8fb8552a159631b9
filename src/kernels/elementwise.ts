/** Elementwise kernels over f32 tensors. */
import type { GpuRuntime } from '../gpu/device.js';
import { numel, type Tensor } from '../gpu/tensor.js';
import { ceilDiv, grid1d, uniforms, WGSL_LINEAR_WG } from './common.js';

const WG = 256;

function assertSameSize(op: string, ...ts: Tensor[]): number {
  const n = numel(ts[0].shape);
  for (const t of ts) {
    if (t.dtype !== 'f32') throw new Error(`${op}: ${t.label} is ${t.dtype}, expected f32`);
    if (numel(t.shape) !== n) throw new Error(`${op}: ${t.label} has ${numel(t.shape)} elements, expected ${n}`);
  }
  return n;
}

const AXPBY = /* wgsl */ `
struct P { n: u32, alpha: f32, beta: f32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) li: u32) {
  let i = ${WGSL_LINEAR_WG} * ${WG}u + li;
  if (i >= p.n) { return; }
  y[i] = p.alpha * x[i] + p.beta * y[i];
}`;

/** y = alpha·x + beta·y, in place on y. */
export function axpby(gpu: GpuRuntime, x: Tensor, y: Tensor, alpha: number, beta: number): void {
  const n = assertSameSize('axpby', x, y);
  const p = gpu.pipeline('axpby', '', ['uniform', 'read', 'rw'], () => AXPBY);
  gpu.dispatch(p, [uniforms([['u32', n], ['f32', alpha], ['f32', beta]]), x, y], grid1d(ceilDiv(n, WG)));
}
