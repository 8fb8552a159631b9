/**
 * The WKV7 recurrence (RWKV-7 clampw form, spec §2.2 step 6, §3): forward with
 * 16-step state checkpoints and the saved sa, and the "backstepping" backward.
 * One workgroup of N invocations per (b, h); grid (H, B).
 *
 * Per step, with decay = exp(−0.6065306597·σ(w)):
 *   sa[i] = Σ_j S[i,j]·a[j];  S[i,j] = S[i,j]·decay[j] + sa[i]·b[j] + v[i]·k[j];  y[i] = Σ_j S[i,j]·r[j]
 * S is row i = value dim, column j = key dim. Per-token tensors are [B, T, H, N] f32
 * (any shape with that many elements, e.g. [B·T, H·N]).
 */
import type { BindingKind } from '../gpu/pipelines.js';
import type { GpuRuntime } from '../gpu/device.js';
import { numel, type Tensor } from '../gpu/tensor.js';
import { ceilDiv, uniforms } from './common.js';

/** Steps between saved states. */
export const WKV7_CHUNK = 16;
const W_SCALE = '-0.6065306597';
const MAX_N = 64;

export interface Wkv7Dims {
  B: number;
  T: number;
  H: number;
  /** Head size, 1..64 (64 in real models). */
  N: number;
}

/**
 * What the backward needs from the forward.
 * states [B, H, ceil(T/16)+1, N, N]: slot 0 is the initial state, slot c+1 the state after
 * step min(16c+15, T−1), so the last slot is the final state.
 * sa [B, T, H, N]: Σ_j S_{t−1}[i,j]·a_t[j].
 */
export interface Wkv7Saved {
  states: Tensor;
  sa: Tensor;
}

export function wkv7SavedShapes(d: Wkv7Dims): { states: number[]; sa: number[] } {
  return { states: [d.B, d.H, ceilDiv(d.T, WKV7_CHUNK) + 1, d.N, d.N], sa: [d.B, d.T, d.H, d.N] };
}

export function allocWkv7Saved(gpu: GpuRuntime, d: Wkv7Dims, label = 'wkv7'): Wkv7Saved {
  const s = wkv7SavedShapes(d);
  return { states: gpu.tensor(s.states, 'f32', `${label}.states`), sa: gpu.tensor(s.sa, 'f32', `${label}.sa`) };
}

export interface Wkv7ForwardArgs extends Wkv7Dims {
  r: Tensor;
  /** Raw decay input w_raw. */
  w: Tensor;
  /** The modified key k̃. */
  k: Tensor;
  v: Tensor;
  /** −kk in the model. */
  a: Tensor;
  /** kk⊙a in the model. */
  b: Tensor;
  /** Initial state [B, H, N, N]; zero when absent. */
  s0?: Tensor;
  y: Tensor;
  saved: Wkv7Saved;
  /** Final state [B, H, N, N], written when given. */
  sT?: Tensor;
}

export interface Wkv7BackwardArgs extends Wkv7Dims {
  r: Tensor;
  w: Tensor;
  k: Tensor;
  v: Tensor;
  a: Tensor;
  b: Tensor;
  dy: Tensor;
  /** From wkv7Forward on the same inputs (it holds the initial state, so s0 is not needed here). */
  saved: Wkv7Saved;
  dr: Tensor;
  /** Gradient with respect to the raw w. */
  dw: Tensor;
  dk: Tensor;
  dv: Tensor;
  da: Tensor;
  db: Tensor;
  /** ∂L/∂s0 [B, H, N, N], written when given. */
  ds0?: Tensor;
  /** Add into ds0 (the parameter gradient of state tuning) instead of overwriting it. */
  accumulate?: boolean;
}

function checkDims(op: string, gpu: GpuRuntime, d: Wkv7Dims, storageBuffers: number): void {
  for (const [name, v] of Object.entries({ B: d.B, T: d.T, H: d.H, N: d.N })) {
    if (!Number.isInteger(v) || v < 1) throw new Error(`${op}: ${name} = ${v}, expected a positive integer`);
  }
  if (d.N > MAX_N) throw new Error(`${op}: head size N = ${d.N}, expected at most ${MAX_N}`);
  const maxWg = gpu.limits.maxComputeWorkgroupsPerDimension;
  if (d.H > maxWg || d.B > maxWg) throw new Error(`${op}: grid (H=${d.H}, B=${d.B}) exceeds ${maxWg} workgroups per dimension`);
  const maxBuffers = gpu.limits.maxStorageBuffersPerShaderStage;
  if (storageBuffers > maxBuffers) {
    throw new Error(`${op}: needs ${storageBuffers} storage buffers per shader stage, this adapter allows ${maxBuffers}`);
  }
}

function checkTensor(op: string, t: Tensor, shape: readonly number[], what: string): void {
  if (t.dtype !== 'f32') throw new Error(`${op}: ${t.label} is ${t.dtype}, expected f32`);
  const n = numel(shape);
  if (numel(t.shape) !== n) {
    throw new Error(`${op}: ${t.label} has shape [${t.shape.join(',')}] (${numel(t.shape)} elements), expected ${what} = [${shape.join(',')}] (${n} elements)`);
  }
}

function checkSaved(op: string, d: Wkv7Dims, saved: Wkv7Saved): void {
  const s = wkv7SavedShapes(d);
  checkTensor(op, saved.states, s.states, '[B,H,ceil(T/16)+1,N,N]');
  checkTensor(op, saved.sa, s.sa, '[B,T,H,N]');
}

const tokenShape = (d: Wkv7Dims): number[] => [d.B, d.T, d.H, d.N];
const stateShape = (d: Wkv7Dims): number[] => [d.B, d.H, d.N, d.N];

const dimUniforms = (d: Wkv7Dims): ArrayBuffer =>
  uniforms([
    ['u32', d.T],
    ['u32', d.H],
    ['u32', ceilDiv(d.T, WKV7_CHUNK) + 1],
  ]);

/** Shared WGSL header: uniforms, constants and index helpers. */
function header(N: number): string {
  return /* wgsl */ `
struct P { T: u32, H: u32, slots: u32 }
@group(0) @binding(0) var<uniform> p: P;
const N = ${N}u;
const CHUNK = ${WKV7_CHUNK}u;
const W_SCALE = ${W_SCALE};
// Element 0 of token t of head (bb, h) in a [B, T, H, N] tensor.
fn tokenBase(bb: u32, t: u32, h: u32) -> u32 { return ((bb * p.T + t) * p.H + h) * N; }
// Element [0, 0] of checkpoint slot c of head (bb, h) in the saved states.
fn slotBase(bb: u32, h: u32, c: u32) -> u32 { return ((bb * p.H + h) * p.slots + c) * N * N; }
`;
}

function forwardWgsl(N: number, hasS0: boolean, hasST: boolean): string {
  return /* wgsl */ `${header(N)}
@group(0) @binding(1) var<storage, read> r: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read> k: array<f32>;
@group(0) @binding(4) var<storage, read> v: array<f32>;
@group(0) @binding(5) var<storage, read> a: array<f32>;
@group(0) @binding(6) var<storage, read> b: array<f32>;
@group(0) @binding(7) var<storage, read_write> y: array<f32>;
@group(0) @binding(8) var<storage, read_write> states: array<f32>;
@group(0) @binding(9) var<storage, read_write> sa: array<f32>;
${hasS0 ? '@group(0) @binding(10) var<storage, read> s0: array<f32>;' : ''}
${hasST ? `@group(0) @binding(${hasS0 ? 11 : 10}) var<storage, read_write> sT: array<f32>;` : ''}
var<workgroup> rs: array<f32, N>;
var<workgroup> decays: array<f32, N>;
var<workgroup> ks: array<f32, N>;
var<workgroup> as_: array<f32, N>;
var<workgroup> bs: array<f32, N>;

@compute @workgroup_size(N)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) i: u32) {
  let h = wid.x;
  let bb = wid.y;
  // This invocation owns row i of S.
  var S: array<f32, N>;
  let row = ((bb * p.H + h) * N + i) * N;
  for (var j = 0u; j < N; j++) {
    S[j] = ${hasS0 ? 's0[row + j]' : '0.0'};
    states[slotBase(bb, h, 0u) + i * N + j] = S[j];
  }
  for (var t = 0u; t < p.T; t++) {
    let e = tokenBase(bb, t, h) + i;
    rs[i] = r[e];
    decays[i] = exp(W_SCALE / (1.0 + exp(-w[e])));
    ks[i] = k[e];
    as_[i] = a[e];
    bs[i] = b[e];
    let vi = v[e];
    workgroupBarrier();
    var sai = 0.0;
    for (var j = 0u; j < N; j++) { sai += S[j] * as_[j]; }
    sa[e] = sai;
    var yi = 0.0;
    for (var j = 0u; j < N; j++) {
      S[j] = S[j] * decays[j] + sai * bs[j] + vi * ks[j];
      yi += S[j] * rs[j];
    }
    y[e] = yi;
    if ((t + 1u) % CHUNK == 0u || t + 1u == p.T) {
      let o = slotBase(bb, h, t / CHUNK + 1u) + i * N;
      for (var j = 0u; j < N; j++) { states[o + j] = S[j]; }
    }
    workgroupBarrier();
  }
${hasST ? '  for (var j = 0u; j < N; j++) { sT[row + j] = S[j]; }' : ''}
}`;
}

function backwardWgsl(N: number, hasDs0: boolean, accumulate: boolean): string {
  return /* wgsl */ `${header(N)}
@group(0) @binding(1) var<storage, read> r: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read> k: array<f32>;
@group(0) @binding(4) var<storage, read> v: array<f32>;
@group(0) @binding(5) var<storage, read> a: array<f32>;
@group(0) @binding(6) var<storage, read> b: array<f32>;
@group(0) @binding(7) var<storage, read> dy: array<f32>;
@group(0) @binding(8) var<storage, read> states: array<f32>;
@group(0) @binding(9) var<storage, read> sa: array<f32>;
@group(0) @binding(10) var<storage, read_write> dr: array<f32>;
@group(0) @binding(11) var<storage, read_write> dw: array<f32>;
@group(0) @binding(12) var<storage, read_write> dk: array<f32>;
@group(0) @binding(13) var<storage, read_write> dv: array<f32>;
@group(0) @binding(14) var<storage, read_write> da: array<f32>;
@group(0) @binding(15) var<storage, read_write> db: array<f32>;
${hasDs0 ? '@group(0) @binding(16) var<storage, read_write> ds0: array<f32>;' : ''}
var<workgroup> rs: array<f32, N>;
var<workgroup> decays: array<f32, N>;
var<workgroup> ks: array<f32, N>;
var<workgroup> vs: array<f32, N>;
var<workgroup> as_: array<f32, N>;
var<workgroup> bs: array<f32, N>;
var<workgroup> dys: array<f32, N>;
var<workgroup> sas: array<f32, N>;
var<workgroup> dsas: array<f32, N>;

@compute @workgroup_size(N)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) i: u32) {
  let h = wid.x;
  let bb = wid.y;
  // This invocation owns column i of S (St[j] = S[j,i]) and row and column i of dS = ∂L/∂S.
  var St: array<f32, N>;
  var dSrow: array<f32, N>;
  var dScol: array<f32, N>;
  let last = slotBase(bb, h, p.slots - 1u);
  for (var j = 0u; j < N; j++) {
    St[j] = states[last + j * N + i];
    dSrow[j] = 0.0;
    dScol[j] = 0.0;
  }
  for (var tt = 0u; tt < p.T; tt++) {
    let t = p.T - 1u - tt;
    let e = tokenBase(bb, t, h) + i;
    let sig = 1.0 / (1.0 + exp(-w[e]));
    let di = exp(W_SCALE * sig);
    let ri = r[e];
    let ki = k[e];
    let ai = a[e];
    let bi = b[e];
    let dyi = dy[e];
    rs[i] = ri;
    decays[i] = di;
    ks[i] = ki;
    vs[i] = v[e];
    as_[i] = ai;
    bs[i] = bi;
    dys[i] = dyi;
    sas[i] = sa[e];
    workgroupBarrier();
    // St holds S_t: y_t = S_t r_t.
    var dri = 0.0;
    for (var j = 0u; j < N; j++) { dri += St[j] * dys[j]; }
    dr[e] = dri;
    // St becomes S_{t−1}: a checkpoint at chunk starts, else the step inverted with the saved sa.
    if (t % CHUNK == 0u) {
      let o = slotBase(bb, h, t / CHUNK);
      for (var j = 0u; j < N; j++) { St[j] = states[o + j * N + i]; }
    } else {
      let inv = 1.0 / di;
      for (var j = 0u; j < N; j++) { St[j] = (St[j] - ki * vs[j] - bi * sas[j]) * inv; }
    }
    var dd = 0.0;
    var dki = 0.0;
    var dbi = 0.0;
    var dvi = 0.0;
    var dsai = 0.0;
    for (var j = 0u; j < N; j++) {
      dSrow[j] += dyi * rs[j];
      dScol[j] += dys[j] * ri;
      dd += dScol[j] * St[j];
      dki += dScol[j] * vs[j];
      dbi += dScol[j] * sas[j];
      dvi += dSrow[j] * ks[j];
      dsai += dSrow[j] * bs[j];
    }
    dsas[i] = dsai;
    dw[e] = dd * di * W_SCALE * sig * (1.0 - sig);
    dk[e] = dki;
    dv[e] = dvi;
    db[e] = dbi;
    workgroupBarrier();
    // dS becomes ∂L/∂S_{t−1}.
    var dai = 0.0;
    for (var j = 0u; j < N; j++) {
      dai += St[j] * dsas[j];
      dSrow[j] = dSrow[j] * decays[j] + dsai * as_[j];
      dScol[j] = dScol[j] * di + ai * dsas[j];
    }
    da[e] = dai;
    workgroupBarrier();
  }
${
  hasDs0
    ? `  let row = ((bb * p.H + h) * N + i) * N;
  for (var j = 0u; j < N; j++) { ds0[row + j] = ${accumulate ? 'ds0[row + j] + ' : ''}dSrow[j]; }`
    : ''
}
}`;
}

/** y = WKV7(r, w, k, v, a, b; s0), saving what wkv7Backward needs. */
export function wkv7Forward(gpu: GpuRuntime, x: Wkv7ForwardArgs): void {
  const op = 'wkv7Forward';
  const hasS0 = x.s0 !== undefined;
  const hasST = x.sT !== undefined;
  const tensors = [x.r, x.w, x.k, x.v, x.a, x.b, x.y, x.saved.states, x.saved.sa];
  if (x.s0) tensors.push(x.s0);
  if (x.sT) tensors.push(x.sT);
  checkDims(op, gpu, x, tensors.length);
  for (const t of [x.r, x.w, x.k, x.v, x.a, x.b, x.y]) checkTensor(op, t, tokenShape(x), '[B,T,H,N]');
  if (x.s0) checkTensor(op, x.s0, stateShape(x), '[B,H,N,N]');
  if (x.sT) checkTensor(op, x.sT, stateShape(x), '[B,H,N,N]');
  checkSaved(op, x, x.saved);
  const kinds: BindingKind[] = ['uniform', ...Array<BindingKind>(6).fill('read'), 'rw', 'rw', 'rw'];
  if (hasS0) kinds.push('read');
  if (hasST) kinds.push('rw');
  const p = gpu.pipeline('wkv7_forward', `N${x.N}${hasS0 ? '_s0' : ''}${hasST ? '_sT' : ''}`, kinds, () =>
    forwardWgsl(x.N, hasS0, hasST),
  );
  gpu.dispatch(p, [dimUniforms(x), ...tensors], [x.H, x.B]);
}

/** Gradients of WKV7 with respect to r, w (raw), k, v, a, b and, when ds0 is given, the initial state. */
export function wkv7Backward(gpu: GpuRuntime, x: Wkv7BackwardArgs): void {
  const op = 'wkv7Backward';
  const accumulate = x.accumulate ?? false;
  const tensors = [x.r, x.w, x.k, x.v, x.a, x.b, x.dy, x.saved.states, x.saved.sa, x.dr, x.dw, x.dk, x.dv, x.da, x.db];
  if (x.ds0) tensors.push(x.ds0);
  checkDims(op, gpu, x, tensors.length);
  for (const t of [x.r, x.w, x.k, x.v, x.a, x.b, x.dy, x.dr, x.dw, x.dk, x.dv, x.da, x.db]) {
    checkTensor(op, t, tokenShape(x), '[B,T,H,N]');
  }
  if (x.ds0) checkTensor(op, x.ds0, stateShape(x), '[B,H,N,N]');
  checkSaved(op, x, x.saved);
  const kinds: BindingKind[] = ['uniform', ...Array<BindingKind>(9).fill('read'), ...Array<BindingKind>(x.ds0 ? 7 : 6).fill('rw')];
  const key = `N${x.N}${x.ds0 ? (accumulate ? '_ds0acc' : '_ds0') : ''}`;
  const p = gpu.pipeline('wkv7_backward', key, kinds, () => backwardWgsl(x.N, x.ds0 !== undefined, accumulate));
  gpu.dispatch(p, [dimUniforms(x), ...tensors], [x.H, x.B]);
}
