/**
 * Scaled f16 copies of f32 matrices, the operands of the tensor-core matmul.
 *
 * Each row of op(X) [R, K] is multiplied by its own power of two 2^e, chosen so the
 * row's largest magnitude lands in [2^14, 2^15): f16's range is narrow (gradients of
 * 1e-9 would flush to zero, activations above 65504 would overflow) but a
 * power-of-two scale is exact, and the matmul undoes it on its f32 result.
 * The copy is [Rp, Kp] row-major (padding rows and columns written as zero) with
 * exponents e [Rp] (0 on padding rows).
 */
import type { GpuRuntime } from '../gpu/device.js';
import { describe, type Tensor } from '../gpu/tensor.js';
import { ceilDiv, grid1d, uniforms, WGSL_LINEAR_WG } from './common.js';

/** How op(X) [R, K] is stored: 'rows' is X [R, K]; 'cols' is X [K, R] (op(X) = Xᵀ). */
export type F16Layout = 'rows' | 'cols';

const WG = 256;
/** Columns of X per workgroup in the 'cols' kernel, and k-rows per staged tile. */
const CB = 32;
const KT = 64;
/** Bounds on the exponent: 2^±60 stays exact in f32 whatever the data. */
const E_MAX = 60;

// Exponent e with max·2^e in [2^14, 2^15), from max's f32 exponent bits; 0 for an all-zero row.
const WGSL_EXPONENT = /* wgsl */ `
fn rowExponent(mx: f32) -> i32 {
  if (mx == 0.0) { return 0; }
  let p = i32((bitcast<u32>(mx) >> 23u) & 0xffu) - 127;
  return clamp(14 - p, -${E_MAX}, ${E_MAX});
}`;

// The bindings both copies share: X [r, k] in, the f16 pairs and the exponents out.
const WGSL_IO = /* wgsl */ `
struct P { r: u32, k: u32, rp: u32, kp: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<u32>;
@group(0) @binding(3) var<storage, read_write> e: array<i32>;
var<workgroup> red: array<f32, ${WG}>;`;

const ROWS_WGSL = /* wgsl */ `
${WGSL_IO}
${WGSL_EXPONENT}
fn at(row: u32, k: u32) -> f32 {
  if (row >= p.r || k >= p.k) { return 0.0; }
  return x[row * p.k + k];
}

// One workgroup per row: the row's max magnitude, then the scaled copy, two values per word.
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) li: u32) {
  let row = ${WGSL_LINEAR_WG};
  if (row >= p.rp) { return; }
  var m = 0.0;
  if (row < p.r) {
    for (var k = li; k < p.k; k += ${WG}u) { m = max(m, abs(x[row * p.k + k])); }
  }
  red[li] = m;
  workgroupBarrier();
  for (var s = ${WG / 2}u; s > 0u; s >>= 1u) {
    if (li < s) { red[li] = max(red[li], red[li + s]); }
    workgroupBarrier();
  }
  let ex = rowExponent(red[0]);
  if (li == 0u) { e[row] = ex; }
  let half = p.kp / 2u;
  for (var j = li; j < half; j += ${WG}u) {
    out[row * half + j] = pack2x16float(vec2f(ldexp(at(row, 2u * j), ex), ldexp(at(row, 2u * j + 1u), ex)));
  }
}`;

const COLS_WGSL = /* wgsl */ `
${WGSL_IO}
var<workgroup> ex: array<i32, ${CB}>;
// k-major tile of X, padded by one column against bank conflicts.
var<workgroup> tile: array<f32, ${KT * (CB + 1)}>;
${WGSL_EXPONENT}
fn at(k: u32, col: u32) -> f32 {
  if (col >= p.r || k >= p.k) { return 0.0; }
  return x[k * p.r + col];
}

// ${CB} columns of X (rows of op(X)) per workgroup: reads run along X's rows, and a tile
// staged in workgroup memory turns them into writes along the copy's rows.
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) li: u32) {
  let r0 = ${WGSL_LINEAR_WG} * ${CB}u;
  if (r0 >= p.rp) { return; }
  let c = li % ${CB}u;
  let q = li / ${CB}u;
  var m = 0.0;
  if (r0 + c < p.r) {
    for (var k = q; k < p.k; k += ${WG / CB}u) { m = max(m, abs(x[k * p.r + r0 + c])); }
  }
  red[li] = m;
  workgroupBarrier();
  if (li < ${CB}u) {
    var mx = 0.0;
    for (var j = 0u; j < ${WG / CB}u; j++) { mx = max(mx, red[li + j * ${CB}u]); }
    ex[li] = rowExponent(mx);
    if (r0 + li < p.rp) { e[r0 + li] = ex[li]; }
  }
  let half = p.kp / 2u;
  for (var k0 = 0u; k0 < p.kp; k0 += ${KT}u) {
    workgroupBarrier();
    for (var j = 0u; j < ${KT / (WG / CB)}u; j++) {
      let kk = q + j * ${WG / CB}u;
      tile[kk * ${CB + 1}u + c] = at(k0 + kk, r0 + c);
    }
    workgroupBarrier();
    for (var j = 0u; j < ${(CB * KT) / 2 / WG}u; j++) {
      let idx = li + j * ${WG}u;
      let rr = idx / ${KT / 2}u;
      let pp = idx % ${KT / 2}u;
      let w = k0 / 2u + pp;
      if (r0 + rr < p.rp && w < half) {
        let s = ex[rr];
        let v = vec2f(ldexp(tile[2u * pp * ${CB + 1}u + rr], s), ldexp(tile[(2u * pp + 1u) * ${CB + 1}u + rr], s));
        out[(r0 + rr) * half + w] = pack2x16float(v);
      }
    }
  }
}`;

/**
 * out [Rp, Kp] (f16) = op(x) · 2^e row by row, e [Rp] (i32) the per-row exponents.
 * Kp must be even; Rp >= R and Kp >= K, the padding written as zero.
 */
export function f16Rows(gpu: GpuRuntime, x: Tensor, layout: F16Layout, out: Tensor, exps: Tensor): void {
  const op = 'f16Rows';
  if (x.dtype !== 'f32' || x.shape.length !== 2) throw new Error(`${op}: ${describe(x)} should be a 2-D f32 matrix`);
  const [r, k] = layout === 'rows' ? x.shape : [x.shape[1], x.shape[0]];
  if (out.dtype !== 'f16' || out.shape.length !== 2) throw new Error(`${op}: ${describe(out)} should be a 2-D f16 matrix`);
  const [rp, kp] = out.shape;
  if (rp < r || kp < k || kp % 2 !== 0) {
    throw new Error(`${op}: ${describe(out)} should be [Rp >= ${r}, even Kp >= ${k}] for op(${describe(x)}) read as ${layout}`);
  }
  if (exps.dtype !== 'i32' || exps.shape.length !== 1 || exps.shape[0] !== rp) {
    throw new Error(`${op}: ${describe(exps)} should be i32 [${rp}]`);
  }
  const u = uniforms([
    ['u32', r],
    ['u32', k],
    ['u32', rp],
    ['u32', kp],
  ]);
  const p = gpu.pipeline('f16Rows', layout, ['uniform', 'read', 'rw', 'rw'], () => (layout === 'rows' ? ROWS_WGSL : COLS_WGSL));
  gpu.dispatch(p, [u, x, out, exps], grid1d(layout === 'rows' ? rp : ceilDiv(rp, CB)));
}
