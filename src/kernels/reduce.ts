/**
 * Deterministic reductions over f32 tensors (no float atomics: every sum runs in a
 * fixed order, so a result is bit-identical from run to run), the WGSL workgroup
 * tree sum and the per-runtime scratch buffers that multi-pass kernels share.
 */
import type { GpuRuntime } from '../gpu/device.js';
import { describe, numel, storageBytes, type DType, type Tensor } from '../gpu/tensor.js';
import { ceilDiv, grid1d, uniforms, WGSL_LINEAR_WG } from './common.js';

// ---- scratch ----

const scratches = new WeakMap<GpuRuntime, Map<string, Tensor>>();

/**
 * A work buffer named `name`, owned by this module for the runtime's lifetime and
 * reused by every call (dispatches run in recording order, so reuse within one
 * submission is safe). It is never handed back to the pool between calls: a buffer
 * freed before submit could be re-acquired and filled by queue.writeBuffer, which
 * runs before the still-unsubmitted kernels that use it. Growing submits first for
 * the same reason. Callers must use distinct names for buffers alive at once.
 */
export function scratch(gpu: GpuRuntime, name: string, shape: readonly number[], dtype: DType): Tensor {
  const bytes = storageBytes(dtype, numel(shape));
  let byName = scratches.get(gpu);
  if (!byName) scratches.set(gpu, (byName = new Map()));
  let t = byName.get(name);
  // The pool rounds sizes up to a size class: the whole buffer is usable.
  if (!t || t.buffer.size - t.offset < bytes) {
    if (t) {
      gpu.submit();
      gpu.free(t);
    }
    t = gpu.tensor([bytes / 4], 'u32', `scratch:${name}`);
    byName.set(name, t);
  }
  return { buffer: t.buffer, offset: t.offset, shape: [...shape], dtype, byteLength: bytes, label: `scratch:${name}` };
}

// ---- WGSL building block ----

/**
 * WGSL for `fn ${fn}(v: T, li: u32) -> T`: the sum of v over a workgroup of `wg`
 * (a power of two) invocations, by a fixed tree. Call it from uniform control flow.
 * It ends with a barrier so that it can be called again straight away.
 */
export function wgslWorkgroupSum(fn: string, type: string, wg: number): string {
  if (wg & (wg - 1)) throw new Error(`wgslWorkgroupSum: workgroup size ${wg} is not a power of two`);
  return /* wgsl */ `
var<workgroup> ${fn}_buf: array<${type}, ${wg}>;
fn ${fn}(v: ${type}, li: u32) -> ${type} {
  ${fn}_buf[li] = v;
  workgroupBarrier();
  for (var s = ${wg / 2}u; s > 0u; s >>= 1u) {
    if (li < s) { ${fn}_buf[li] += ${fn}_buf[li + s]; }
    workgroupBarrier();
  }
  let total = ${fn}_buf[0];
  workgroupBarrier();
  return total;
}
`;
}

// ---- column sums ----

/** Columns per workgroup of the column-reduction kernels (one invocation per column). */
export const COLUMN_WG = 64;
const MIN_ROWS_PER_CHUNK = 64;
const MAX_CHUNKS = 256;

/**
 * How column reductions split rows: `chunks` blocks of `rowsPerChunk` rows, each
 * summed sequentially by one invocation per column; a second pass adds the chunks.
 * At most 256 chunks, so that second pass is one sequential sum per column.
 */
export function columnChunks(rows: number): { chunks: number; rowsPerChunk: number } {
  const rowsPerChunk = Math.max(MIN_ROWS_PER_CHUNK, ceilDiv(rows, MAX_CHUNKS));
  return { chunks: Math.max(1, ceilDiv(rows, rowsPerChunk)), rowsPerChunk };
}

const columnSumShader = (accumulate: boolean): string => /* wgsl */ `
struct P { rows: u32, cols: u32, rowsPerChunk: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@compute @workgroup_size(${COLUMN_WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) li: u32) {
  let c = wid.x * ${COLUMN_WG}u + li;
  if (c >= p.cols) { return; }
  let r0 = wid.y * p.rowsPerChunk;
  let r1 = min(r0 + p.rowsPerChunk, p.rows);
  var s = 0.0;
  for (var r = r0; r < r1; r++) { s += x[r * p.cols + c]; }
  let o = wid.y * p.cols + c;
  out[o] = ${accumulate ? 'out[o] + s' : 's'};
}`;

/** out[chunk, c] (=|+=) Σ of x[r, c] over the rows of that chunk. */
function columnSumPass(gpu: GpuRuntime, x: Tensor, rows: number, cols: number, out: Tensor, chunks: number, rowsPerChunk: number, accumulate: boolean): void {
  const p = gpu.pipeline('columnSum', accumulate ? 'acc' : '', ['uniform', 'read', 'rw'], () => columnSumShader(accumulate));
  gpu.dispatch(p, [uniforms([['u32', rows], ['u32', cols], ['u32', rowsPerChunk]]), x, out], [ceilDiv(cols, COLUMN_WG), chunks]);
}

function assertF32(op: string, t: Tensor): void {
  if (t.dtype !== 'f32') throw new Error(`${op}: ${t.label} is ${t.dtype}, expected f32`);
}

/**
 * out[c] = Σ_r x[r, c] (or out[c] += that with accumulate) for x [rows, C] (any
 * shape whose last dimension is C) and out [C]. Two passes when rows > 64: per-chunk
 * partial sums into a scratch buffer, then their sum.
 */
export function columnSum(gpu: GpuRuntime, x: Tensor, out: Tensor, opts: { accumulate?: boolean } = {}): void {
  assertF32('columnSum', x);
  assertF32('columnSum', out);
  const cols = x.shape[x.shape.length - 1] ?? 0;
  if (x.shape.length < 2 || cols === 0) throw new Error(`columnSum: ${describe(x)} should be [rows, C] with C > 0`);
  if (numel(out.shape) !== cols) throw new Error(`columnSum: ${out.label} has ${numel(out.shape)} elements, expected C = ${cols} (the last dimension of ${x.label})`);
  const rows = numel(x.shape) / cols;
  const accumulate = opts.accumulate ?? false;
  const { chunks, rowsPerChunk } = columnChunks(rows);
  if (chunks === 1) {
    columnSumPass(gpu, x, rows, cols, out, 1, rowsPerChunk, accumulate);
    return;
  }
  const partial = scratch(gpu, 'columnSum', [chunks, cols], 'f32');
  columnSumPass(gpu, x, rows, cols, partial, chunks, rowsPerChunk, false);
  columnSumPass(gpu, partial, chunks, cols, out, 1, chunks, accumulate);
}

// ---- sum of squares ----

const SQ_WG = 256;
/** Elements each invocation of the first pass squares and adds. */
const SQ_PER_THREAD = 8;
const SQ_CHUNK = SQ_WG * SQ_PER_THREAD;

const SUMSQ_PARTIAL = /* wgsl */ `
struct P { n: u32, groups: u32, base: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> partial: array<f32>;
${wgslWorkgroupSum('wgSum', 'f32', SQ_WG)}
@compute @workgroup_size(${SQ_WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) li: u32) {
  let g = ${WGSL_LINEAR_WG};
  if (g >= p.groups) { return; }
  var s = 0.0;
  for (var k = 0u; k < ${SQ_PER_THREAD}u; k++) {
    let i = g * ${SQ_CHUNK}u + k * ${SQ_WG}u + li;
    if (i < p.n) { s += x[i] * x[i]; }
  }
  let total = wgSum(s, li);
  if (li == 0u) { partial[p.base + g] = total; }
}`;

const SUMSQ_FINAL = /* wgsl */ `
struct P { n: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> partial: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
${wgslWorkgroupSum('wgSum', 'f32', SQ_WG)}
@compute @workgroup_size(${SQ_WG})
fn main(@builtin(local_invocation_index) li: u32) {
  var s = 0.0;
  for (var i = li; i < p.n; i += ${SQ_WG}u) { s += partial[i]; }
  let total = wgSum(s, li);
  if (li == 0u) { out[0] = total; }
}`;

/**
 * out[0] = Σ over all `tensors` of Σ x² (the squared global norm used for gradient
 * clipping). Pass 1: each workgroup reduces 2048 elements of one tensor to a partial
 * (one dispatch per tensor); pass 2: one workgroup adds the partials.
 */
export function sumSquares(gpu: GpuRuntime, tensors: readonly Tensor[], out: Tensor): void {
  assertF32('sumSquares', out);
  if (numel(out.shape) !== 1) throw new Error(`sumSquares: ${describe(out)} should hold 1 element`);
  for (const t of tensors) assertF32('sumSquares', t);
  const groups = tensors.map((t) => ceilDiv(numel(t.shape), SQ_CHUNK));
  const total = groups.reduce((a, b) => a + b, 0);
  const partial = scratch(gpu, 'sumSquares', [Math.max(total, 1)], 'f32');
  const p1 = gpu.pipeline('sumSquaresPartial', '', ['uniform', 'read', 'rw'], () => SUMSQ_PARTIAL);
  let base = 0;
  tensors.forEach((t, k) => {
    gpu.dispatch(p1, [uniforms([['u32', numel(t.shape)], ['u32', groups[k]], ['u32', base]]), t, partial], grid1d(groups[k]));
    base += groups[k];
  });
  const p2 = gpu.pipeline('sumSquaresFinal', '', ['uniform', 'read', 'rw'], () => SUMSQ_FINAL);
  gpu.dispatch(p2, [uniforms([['u32', total]]), partial, out], [1]);
}
