/**
 * Group normalisation over the rows of an f32 [rows, C] tensor, forward and backward.
 * Each row splits into C/G groups of G consecutive channels, normalised with their own
 * mean and biased variance, then scaled and shifted per channel:
 *   y = (x − μ)·rstd·γ + β,  rstd = 1/√(σ² + eps).
 * LayerNorm is G = C (eps 1e-5); RWKV's per-head `ln_x` GroupNorm is G = 64 (eps 64e-5).
 *
 * Saved statistics: one f32 tensor [rows·C/G, 2] holding (mean, rstd) per group, in
 * row-major group order (row r, group k at index r·C/G + k).
 */
import type { GpuRuntime } from '../gpu/device.js';
import { describe, numel, type Tensor } from '../gpu/tensor.js';
import { ceilDiv, grid1d, uniforms, WGSL_LINEAR_WG } from './common.js';
import { COLUMN_WG, columnChunks, columnSum, scratch, wgslWorkgroupSum } from './reduce.js';

export interface GroupNormOptions {
  /** Channels per group G; must divide C. G = C is LayerNorm. */
  groupSize: number;
  eps: number;
  /** When given, receives (mean, rstd) per group for the backward: f32 [rows·C/G, 2]. */
  stats?: Tensor;
}

export interface GroupNormBackwardOptions {
  groupSize: number;
  /** Add into dx instead of overwriting it (the residual stream sums gradients). */
  accumulateDx?: boolean;
  /** When given, receives dγ[c] = Σ_rows dy·x̂ (f32 [C]). */
  dWeight?: Tensor;
  /** When given, receives dβ[c] = Σ_rows dy (f32 [C]). */
  dBias?: Tensor;
  /** Add into dWeight/dBias instead of overwriting them (micro-batch accumulation). */
  accumulateParams?: boolean;
}

interface Dims {
  rows: number;
  cols: number;
  groupSize: number;
  groups: number;
}

function f32Check(op: string, t: Tensor): void {
  if (t.dtype !== 'f32') throw new Error(`${op}: ${t.label} is ${t.dtype}, expected f32`);
}

function sizeCheck(op: string, t: Tensor, n: number, what: string): void {
  f32Check(op, t);
  if (numel(t.shape) !== n) throw new Error(`${op}: ${describe(t)} has ${numel(t.shape)} elements, expected ${n} (${what})`);
}

/** Rows and groups of x given the per-channel weight, with every check the kernels rely on. */
function dims(op: string, x: Tensor, weight: Tensor, groupSize: number): Dims {
  f32Check(op, x);
  f32Check(op, weight);
  const cols = numel(weight.shape);
  const last = x.shape[x.shape.length - 1];
  if (x.shape.length < 2 || last !== cols) {
    throw new Error(`${op}: ${describe(x)} should be [rows, C] with C = ${cols} (the size of ${weight.label})`);
  }
  if (!Number.isInteger(groupSize) || groupSize < 1 || cols % groupSize !== 0) {
    throw new Error(`${op}: group size ${groupSize} does not divide C = ${cols} of ${x.label}`);
  }
  const rows = numel(x.shape) / cols;
  return { rows, cols, groupSize, groups: (rows * cols) / groupSize };
}

function sameShape(op: string, t: Tensor, like: Tensor): void {
  f32Check(op, t);
  if (t.shape.join(',') !== like.shape.join(',')) throw new Error(`${op}: ${describe(t)} should have the shape of ${describe(like)}`);
}

/** One workgroup per group: a power of two covering G, within 32..256 invocations. */
function workgroupSize(groupSize: number): number {
  return Math.min(256, Math.max(32, 2 ** Math.ceil(Math.log2(groupSize))));
}

const forwardShader = (wg: number, saveStats: boolean): string => /* wgsl */ `
struct P { groups: u32, size: u32, groupsPerRow: u32, eps: f32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read> b: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
${saveStats ? '@group(0) @binding(5) var<storage, read_write> stats: array<f32>;' : ''}
${wgslWorkgroupSum('wgSum', 'f32', wg)}
@compute @workgroup_size(${wg})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) li: u32) {
  let g = ${WGSL_LINEAR_WG};
  if (g >= p.groups) { return; }
  let base = g * p.size;
  let c0 = (g % p.groupsPerRow) * p.size;
  var s = 0.0;
  for (var j = li; j < p.size; j += ${wg}u) { s += x[base + j]; }
  let mean = wgSum(s, li) / f32(p.size);
  // Second pass over the (cached) group: Σ(x − μ)² does not cancel like Σx² − Gμ².
  var q = 0.0;
  for (var j = li; j < p.size; j += ${wg}u) { let d = x[base + j] - mean; q += d * d; }
  let rstd = inverseSqrt(wgSum(q, li) / f32(p.size) + p.eps);
  for (var j = li; j < p.size; j += ${wg}u) {
    y[base + j] = (x[base + j] - mean) * rstd * w[c0 + j] + b[c0 + j];
  }
  ${saveStats ? 'if (li == 0u) { stats[2u * g] = mean; stats[2u * g + 1u] = rstd; }' : ''}
}`;

/** y = groupnorm(x)·γ + β; saves (mean, rstd) per group into opts.stats when given. */
export function groupNorm(gpu: GpuRuntime, x: Tensor, weight: Tensor, bias: Tensor, y: Tensor, opts: GroupNormOptions): void {
  const op = 'groupNorm';
  const d = dims(op, x, weight, opts.groupSize);
  sizeCheck(op, bias, d.cols, 'C');
  sameShape(op, y, x);
  if (opts.stats) sizeCheck(op, opts.stats, 2 * d.groups, `(mean, rstd) for each of rows·C/G = ${d.groups} groups`);
  const wg = workgroupSize(d.groupSize);
  const save = opts.stats !== undefined;
  const kinds = ['uniform', 'read', 'read', 'read', 'rw', ...(save ? ['rw' as const] : [])] as const;
  const p = gpu.pipeline(op, `wg${wg}${save ? ',stats' : ''}`, kinds, () => forwardShader(wg, save));
  const u = uniforms([['u32', d.groups], ['u32', d.groupSize], ['u32', d.cols / d.groupSize], ['f32', opts.eps]]);
  gpu.dispatch(p, [u, x, weight, bias, y, ...(opts.stats ? [opts.stats] : [])], grid1d(d.groups));
}

const backwardShader = (wg: number, accumulate: boolean): string => /* wgsl */ `
struct P { groups: u32, size: u32, groupsPerRow: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> w: array<f32>;
@group(0) @binding(4) var<storage, read> stats: array<f32>;
@group(0) @binding(5) var<storage, read_write> dx: array<f32>;
${wgslWorkgroupSum('wgSum', 'vec2f', wg)}
@compute @workgroup_size(${wg})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) li: u32) {
  let g = ${WGSL_LINEAR_WG};
  if (g >= p.groups) { return; }
  let base = g * p.size;
  let c0 = (g % p.groupsPerRow) * p.size;
  let mean = stats[2u * g];
  let rstd = stats[2u * g + 1u];
  // dx = rstd·(ĝ − mean(ĝ) − x̂·mean(ĝ·x̂)) with ĝ = dy·γ.
  var s = vec2f(0.0);
  for (var j = li; j < p.size; j += ${wg}u) {
    let xh = (x[base + j] - mean) * rstd;
    let gh = dy[base + j] * w[c0 + j];
    s += vec2f(gh, gh * xh);
  }
  let m = wgSum(s, li) / f32(p.size);
  for (var j = li; j < p.size; j += ${wg}u) {
    let xh = (x[base + j] - mean) * rstd;
    let v = rstd * (dy[base + j] * w[c0 + j] - m.x - xh * m.y);
    dx[base + j] = ${accumulate ? 'dx[base + j] + v' : 'v'};
  }
}`;

const weightGradShader = /* wgsl */ `
struct P { rows: u32, cols: u32, size: u32, rowsPerChunk: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> stats: array<f32>;
@group(0) @binding(4) var<storage, read_write> partial: array<f32>;
@compute @workgroup_size(${COLUMN_WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) li: u32) {
  let c = wid.x * ${COLUMN_WG}u + li;
  if (c >= p.cols) { return; }
  let groupsPerRow = p.cols / p.size;
  let k = c / p.size;
  let r0 = wid.y * p.rowsPerChunk;
  let r1 = min(r0 + p.rowsPerChunk, p.rows);
  var s = 0.0;
  for (var r = r0; r < r1; r++) {
    let i = r * p.cols + c;
    let g = r * groupsPerRow + k;
    s += dy[i] * (x[i] - stats[2u * g]) * stats[2u * g + 1u];
  }
  partial[wid.y * p.cols + c] = s;
}`;

/**
 * Gradients of groupNorm from dy, the forward input x, γ and the saved stats:
 * dx (overwritten, or added with accumulateDx), and dγ/dβ when given. dγ and dβ are
 * deterministic two-pass column sums (partials per chunk of rows, then their sum).
 */
export function groupNormBackward(gpu: GpuRuntime, dy: Tensor, x: Tensor, weight: Tensor, stats: Tensor, dx: Tensor, opts: GroupNormBackwardOptions): void {
  const op = 'groupNormBackward';
  const d = dims(op, x, weight, opts.groupSize);
  sameShape(op, dy, x);
  sameShape(op, dx, x);
  sizeCheck(op, stats, 2 * d.groups, `(mean, rstd) for each of rows·C/G = ${d.groups} groups`);
  if (opts.dWeight) sizeCheck(op, opts.dWeight, d.cols, 'C');
  if (opts.dBias) sizeCheck(op, opts.dBias, d.cols, 'C');

  const wg = workgroupSize(d.groupSize);
  const acc = opts.accumulateDx ?? false;
  const p = gpu.pipeline(op, `wg${wg}${acc ? ',acc' : ''}`, ['uniform', 'read', 'read', 'read', 'read', 'rw'], () => backwardShader(wg, acc));
  const u = uniforms([['u32', d.groups], ['u32', d.groupSize], ['u32', d.cols / d.groupSize]]);
  gpu.dispatch(p, [u, dy, x, weight, stats, dx], grid1d(d.groups));

  const accumulate = opts.accumulateParams ?? false;
  if (opts.dWeight) {
    const { chunks, rowsPerChunk } = columnChunks(d.rows);
    const partial = scratch(gpu, 'groupNormWeightGrad', [chunks, d.cols], 'f32');
    const pw = gpu.pipeline('groupNormWeightGrad', '', ['uniform', 'read', 'read', 'read', 'rw'], () => weightGradShader);
    const uw = uniforms([['u32', d.rows], ['u32', d.cols], ['u32', d.groupSize], ['u32', rowsPerChunk]]);
    gpu.dispatch(pw, [uw, dy, x, stats, partial], [ceilDiv(d.cols, COLUMN_WG), chunks]);
    columnSum(gpu, partial, opts.dWeight, { accumulate });
  }
  if (opts.dBias) columnSum(gpu, dy, opts.dBias, { accumulate });
}
