/**
 * Fused softmax cross-entropy with RWKV-PEFT's L2Wrap (spec §1.10): the row losses and
 * dL/dlogits in one pass over the logits, with the valid-target count and the mean loss
 * kept on the GPU so a training step never waits on a read-back.
 *
 * The logits may be a chunk of a larger batch's rows (a model never holds [B·T, V] whole):
 * the valid count is taken once over the whole batch by countValidTargets, and each chunk's
 * crossEntropy reads it and writes its rows of the batch's row losses, so the mean divides
 * by the batch's count, not the chunk's.
 *
 * Targets: -100 marks an ignored position. Any other target outside [0, V) is treated
 * exactly like -100 (not counted, zero loss, zero CE gradient); rejecting such data is
 * the data loader's job, not this kernel's.
 */
import type { GpuRuntime } from '../gpu/device.js';
import { describe, numel, type Tensor } from '../gpu/tensor.js';
import { grid1d, uniforms, WGSL_LINEAR_WG } from './common.js';

const WG = 256;

/** RWKV-PEFT's fixed L2Wrap factor: the gradient at each row's top logit is logit·1e-4/(B·T). */
export const L2WRAP_FACTOR = 1e-4;

export interface CrossEntropyOptions {
  /** Add L2Wrap's gradient at each row's argmax (every row, ignored ones included). */
  l2wrap: boolean;
  /** Scales the CE part of the gradient (e.g. 1/accumulate_grad_batches); L2Wrap is not scaled, as in RWKV-PEFT. */
  gradScale?: number;
  /** B·T in L2Wrap's 1e-4/(B·T) (the whole batch's, for a chunk); defaults to the rows of the logits. */
  l2wrapTokens?: number;
  /** u32 [1]: the number of valid targets of the whole batch, from countValidTargets. */
  nValid: Tensor;
  /**
   * The batch row of logits row 0, when the logits are a chunk: targets and rowLoss then
   * cover the whole batch and the chunk's rows are firstRow onwards. Omitted: they match
   * the logits row for row.
   */
  firstRow?: number;
}

function expectShape(op: string, t: Tensor, dtype: Tensor['dtype'], shape: readonly number[]): void {
  const ok = t.dtype === dtype && t.shape.length === shape.length && t.shape.every((d, i) => d === shape[i]);
  if (!ok) throw new Error(`${op}: ${t.label} must be ${dtype} [${shape.join(', ')}], found ${describe(t)}`);
}

function expectPositive(op: string, name: string, x: number): void {
  if (!(x > 0 && Number.isFinite(x))) throw new Error(`${op}: ${name} must be a positive finite number, found ${x}`);
}

// A target counts when it lies in [0, V); -100 and anything else out of range do not.
const WGSL_VALID = 'fn valid(t: i32) -> bool { return t >= 0 && t < i32(p.V); }';

const COUNT_VALID = /* wgsl */ `
struct P { M: u32, V: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> tgt: array<i32>;
@group(0) @binding(2) var<storage, read_write> count: array<u32>;
var<workgroup> part: array<u32, ${WG}>;
${WGSL_VALID}
@compute @workgroup_size(${WG})
fn main(@builtin(local_invocation_index) li: u32) {
  var c = 0u;
  for (var i = li; i < p.M; i += ${WG}u) { c += select(0u, 1u, valid(tgt[i])); }
  part[li] = c;
  workgroupBarrier();
  for (var s = ${WG / 2}u; s > 0u; s >>= 1u) {
    if (li < s) { part[li] += part[li + s]; }
    workgroupBarrier();
  }
  if (li == 0u) { count[0] = part[0]; }
}`;

/**
 * nValid[0] = the number of targets in [0, V) (one workgroup; integer sum, so exact).
 * Recorded before crossEntropy, once per batch however many chunks follow.
 */
export function countValidTargets(gpu: GpuRuntime, targets: Tensor, V: number, nValid: Tensor): void {
  const op = 'countValidTargets';
  if (targets.dtype !== 'i32' || targets.shape.length !== 1) throw new Error(`${op}: ${targets.label} must be i32 [M], found ${describe(targets)}`);
  expectShape(op, nValid, 'u32', [1]);
  if (!(Number.isInteger(V) && V >= 1)) throw new Error(`${op}: V must be a positive integer, found ${V}`);
  const M = numel(targets.shape);
  const p = gpu.pipeline('ce_count_valid', '', ['uniform', 'read', 'rw'], () => COUNT_VALID);
  gpu.dispatch(p, [uniforms([['u32', M], ['u32', V]]), targets, nValid], [1]);
}

/**
 * One workgroup per row. Pass 1: each thread keeps an online (max, argmax, Σexp of the
 * others) over a strided slice, merged by a fixed tree (deterministic). Keeping the max's
 * own exp(0) = 1 out of the sum lets a confident row (softmax at the target near 1) get its
 * loss log1p(others) and gradient −others/(1+others) without cancelling against 1.
 * Pass 2 writes the gradient. When `inPlace` the gradient overwrites the logits through
 * the one read_write binding `x`; every element is read and then written by the same
 * thread, and the target logit is captured in pass 1 by the thread that owns it, so no
 * thread reads a value another has overwritten.
 */
function ceSource(inPlace: boolean): string {
  const out = inPlace ? 'x' : 'dx';
  const bindings = inPlace
    ? `@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read> tgt: array<i32>;
@group(0) @binding(3) var<storage, read> nvalid: array<u32>;
@group(0) @binding(4) var<storage, read_write> loss: array<f32>;`
    : `@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> tgt: array<i32>;
@group(0) @binding(3) var<storage, read> nvalid: array<u32>;
@group(0) @binding(4) var<storage, read_write> dx: array<f32>;
@group(0) @binding(5) var<storage, read_write> loss: array<f32>;`;
  return /* wgsl */ `
struct P { M: u32, V: u32, gradScale: f32, l2: f32, first: u32 }
@group(0) @binding(0) var<uniform> p: P;
${bindings}
var<workgroup> smax: array<f32, ${WG}>;
var<workgroup> ssum: array<f32, ${WG}>;
var<workgroup> sarg: array<u32, ${WG}>;
${WGSL_VALID}
// log(1 + s) for s >= 0; below 0.25 by the atanh series (z <= 1/9, error < 1e-10) because
// 1 + s rounds away s's low bits and GPU log is only good to ~2^-21 absolute near 1.
fn log1p(s: f32) -> f32 {
  if (s >= 0.25) { return log(1.0 + s); }
  let z = s / (2.0 + s);
  let z2 = z * z;
  return 2.0 * z * (1.0 + z2 * (1.0 / 3.0 + z2 * (0.2 + z2 * (1.0 / 7.0 + z2 / 9.0))));
}
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) li: u32) {
  let row = ${WGSL_LINEAR_WG};
  if (row >= p.M) { return; }
  let base = row * p.V;
  let t = tgt[p.first + row];
  let ok = valid(t);
  let tj = select(0xffffffffu, u32(t), ok);
  // Lowest finite f32 rather than -inf: WGSL forbids infinite constants. A thread with no
  // elements holds (lowest, 0, 0xffffffff); its phantom max weighs exp(lowest − real) = 0.
  var m = -3.4028234663852886e38;
  var s = 0.0;
  var a = 0xffffffffu;
  var xt = 0.0;
  for (var j = li; j < p.V; j += ${WG}u) {
    let v = x[base + j];
    if (v > m) { s = (s + 1.0) * exp(m - v); m = v; a = j; } else { s += exp(v - m); }
    if (j == tj) { xt = v; }
  }
  smax[li] = m;
  ssum[li] = s;
  sarg[li] = a;
  workgroupBarrier();
  for (var k = ${WG / 2}u; k > 0u; k >>= 1u) {
    if (li < k) {
      let m1 = smax[li];
      let m2 = smax[li + k];
      let mm = max(m1, m2);
      // The losing max joins the others with weight exp(min − max).
      ssum[li] = ssum[li] * exp(m1 - mm) + ssum[li + k] * exp(m2 - mm) + exp(min(m1, m2) - mm);
      // Ties go to the lower index, so the argmax is the first maximum, as torch.argmax.
      let a2 = sarg[li + k];
      if (m2 > m1 || (m2 == m1 && a2 < sarg[li])) { sarg[li] = a2; }
      smax[li] = mm;
    }
    workgroupBarrier();
  }
  let mx = smax[0];
  let others = ssum[0];
  let inv = 1.0 / (1.0 + others);
  let amax = sarg[0];
  let owner = select(0u, tj % ${WG}u, ok);
  if (li == owner) { loss[p.first + row] = select(0.0, (mx - xt) + log1p(others), ok); }
  let n = nvalid[0];
  let scale = select(0.0, p.gradScale / f32(max(n, 1u)), ok);
  for (var j = li; j < p.V; j += ${WG}u) {
    let v = x[base + j];
    var q = exp(v - mx) * inv;
    if (j == tj) { q = select(q - 1.0, -others * inv, j == amax); }
    var g = scale * q;
    if (j == amax) { g += mx * p.l2; }
    ${out}[base + j] = g;
  }
}`;
}

/**
 * Softmax cross-entropy over rows of `logits` [M, V] with integer `targets`:
 * rowLoss[f + m] = -log softmax(logits[m])[t_{f+m}] (0 for ignored rows), f = opts.firstRow, and
 * dlogits = gradScale·(softmax − onehot)/nValid on valid rows (0 on ignored rows), plus with
 * L2Wrap logits[m, j*]·1e-4/l2wrapTokens at each row's argmax j*, unscaled by gradScale.
 * `dlogits` may be `logits` itself (in place). opts.nValid must hold countValidTargets' count
 * (recorded earlier). When no target is valid the CE gradient is 0 (torch would give NaN),
 * so a fully masked batch changes nothing.
 */
export function crossEntropy(gpu: GpuRuntime, logits: Tensor, targets: Tensor, dlogits: Tensor, rowLoss: Tensor, opts: CrossEntropyOptions): void {
  const op = 'crossEntropy';
  if (logits.dtype !== 'f32' || logits.shape.length !== 2) throw new Error(`${op}: ${logits.label} must be f32 [M, V], found ${describe(logits)}`);
  const [M, V] = logits.shape;
  const first = opts.firstRow ?? 0;
  // Rows of the batch that targets and rowLoss cover.
  const batchRows = opts.firstRow === undefined ? M : targets.shape[0];
  expectShape(op, targets, 'i32', [batchRows]);
  expectShape(op, dlogits, 'f32', [M, V]);
  expectShape(op, rowLoss, 'f32', [batchRows]);
  expectShape(op, opts.nValid, 'u32', [1]);
  if (!(Number.isInteger(first) && first >= 0 && first + M <= batchRows)) {
    throw new Error(`${op}: rows ${first}..${first + M - 1} of ${logits.label} lie outside the ${batchRows} rows of ${targets.label}`);
  }
  const inPlace = logits.buffer === dlogits.buffer;
  if (inPlace && (logits.offset !== dlogits.offset || logits.byteLength !== dlogits.byteLength)) {
    throw new Error(`${op}: ${dlogits.label} shares a buffer with ${logits.label} but not the same window; pass the same tensor to work in place`);
  }
  const gradScale = opts.gradScale ?? 1;
  const tokens = opts.l2wrapTokens ?? M;
  expectPositive(op, 'gradScale', gradScale);
  expectPositive(op, 'l2wrapTokens', tokens);
  const u = uniforms([['u32', M], ['u32', V], ['f32', gradScale], ['f32', opts.l2wrap ? L2WRAP_FACTOR / tokens : 0], ['u32', first]]);
  if (inPlace) {
    const p = gpu.pipeline('cross_entropy', 'inplace', ['uniform', 'rw', 'read', 'read', 'rw'], () => ceSource(true));
    gpu.dispatch(p, [u, logits, targets, opts.nValid, rowLoss], grid1d(M));
  } else {
    const p = gpu.pipeline('cross_entropy', 'separate', ['uniform', 'read', 'read', 'read', 'rw', 'rw'], () => ceSource(false));
    gpu.dispatch(p, [u, logits, targets, opts.nValid, dlogits, rowLoss], grid1d(M));
  }
}

const MEAN_LOSS = /* wgsl */ `
struct P { M: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> loss: array<f32>;
@group(0) @binding(2) var<storage, read> nvalid: array<u32>;
@group(0) @binding(3) var<storage, read_write> mean: array<f32>;
var<workgroup> part: array<f32, ${WG}>;
@compute @workgroup_size(${WG})
fn main(@builtin(local_invocation_index) li: u32) {
  var s = 0.0;
  for (var i = li; i < p.M; i += ${WG}u) { s += loss[i]; }
  part[li] = s;
  workgroupBarrier();
  for (var k = ${WG / 2}u; k > 0u; k >>= 1u) {
    if (li < k) { part[li] += part[li + k]; }
    workgroupBarrier();
  }
  if (li == 0u) {
    let n = nvalid[0];
    mean[0] = select(0.0, part[0] / f32(n), n > 0u);
  }
}`;

/**
 * out[0] = Σ rowLoss / nValid (0 when nothing is valid), the mean CE loss as torch reports it.
 * One workgroup with a fixed summation order, so the result is bitwise reproducible.
 */
export function meanLoss(gpu: GpuRuntime, rowLoss: Tensor, nValid: Tensor, out: Tensor): void {
  const op = 'meanLoss';
  if (rowLoss.dtype !== 'f32' || rowLoss.shape.length !== 1) throw new Error(`${op}: ${rowLoss.label} must be f32 [M], found ${describe(rowLoss)}`);
  expectShape(op, nValid, 'u32', [1]);
  expectShape(op, out, 'f32', [1]);
  const p = gpu.pipeline('ce_mean_loss', '', ['uniform', 'read', 'read', 'rw'], () => MEAN_LOSS);
  gpu.dispatch(p, [uniforms([['u32', rowLoss.shape[0]]]), rowLoss, nValid, out], [1]);
}
