/**
 * RWKV-7 (x070) fused elementwise kernels around the projections and the WKV kernel:
 * token shift with its lerps, the bias + sigmoid gates, the value residual, the key
 * preparation (kk, k̃ and WKV's a = −kk, b = kk⊙a) and the bonus + output gate, each
 * with its backward (gradients wrt the activations only).
 *
 * Activations are f32 [rows, C], rows = B·T, sequence b at rows b·T..b·T+T−1. The
 * per-channel parameters (x_r…x_g, ffn.x_k, w0, a0, v0, k_k, k_a, r_k) are frozen f32
 * vectors of C elements (r_k is [H, N] flattened or not). Backward kernels overwrite
 * their outputs unless `accumulate` is set, then they add into them.
 */
import type { GpuRuntime } from '../gpu/device.js';
import type { BindingKind } from '../gpu/pipelines.js';
import { numel, type Tensor } from '../gpu/tensor.js';
import { ceilDiv, grid1d, uniforms, WGSL_LINEAR_WG } from './common.js';

const WG = 256;
/** Threads per (token, head) workgroup; each thread covers channels li, li+64, … of the head. */
const HEAD_WG = 64;

/** Batch and sequence length: rows = B·T, and the token shift restarts at every sequence. */
export interface SeqDims {
  B: number;
  T: number;
}

export interface AccumulateOption {
  /** Add into the gradient buffers instead of overwriting them. */
  accumulate?: boolean;
}

export interface HeadOptions {
  /** Channels per head, N; C must be a multiple. */
  headSize: number;
}

// ---- argument checks ----

function checkF32(op: string, t: Tensor): void {
  if (t.dtype !== 'f32') throw new Error(`${op}: ${t.label} is ${t.dtype}, expected f32`);
}

/** Asserts the per-channel parameters are f32 with one common element count, C, and returns it. */
function channelCount(op: string, params: readonly Tensor[]): number {
  const C = numel(params[0].shape);
  for (const t of params) {
    checkF32(op, t);
    if (numel(t.shape) !== C) {
      throw new Error(`${op}: ${t.label} has shape [${t.shape.join(',')}] (${numel(t.shape)} elements), expected C = ${C} elements like ${params[0].label}`);
    }
  }
  return C;
}

/** Asserts the activations are f32 [rows, C] (any shape with rows·C elements). */
function checkActs(op: string, rows: number, C: number, acts: readonly Tensor[]): void {
  for (const t of acts) {
    checkF32(op, t);
    if (numel(t.shape) !== rows * C) {
      throw new Error(`${op}: ${t.label} has shape [${t.shape.join(',')}] (${numel(t.shape)} elements), expected [${rows},${C}] (${rows * C} elements)`);
    }
  }
}

/** Rows of an activation given C, for ops that take no B and T. */
function rowsOf(op: string, C: number, x: Tensor): number {
  const n = numel(x.shape);
  if (n === 0 || n % C !== 0) {
    throw new Error(`${op}: ${x.label} has shape [${x.shape.join(',')}] (${n} elements), expected [rows, C] with C = ${C}`);
  }
  return n / C;
}

function rowsFromSeq(op: string, d: SeqDims): number {
  for (const [name, v] of Object.entries(d)) {
    if (!Number.isInteger(v) || v < 1) throw new Error(`${op}: ${name} = ${v}, expected a positive integer`);
  }
  return d.B * d.T;
}

/** Heads per row; C must split into heads of `headSize`. */
function headCount(op: string, C: number, headSize: number): number {
  if (!Number.isInteger(headSize) || headSize < 1 || C % headSize !== 0) {
    throw new Error(`${op}: head size ${headSize} does not divide C = ${C}`);
  }
  return C / headSize;
}

function checkRk(op: string, rk: Tensor, H: number, N: number): void {
  if (rk.shape.length === 2 && (rk.shape[0] !== H || rk.shape[1] !== N)) {
    throw new Error(`${op}: ${rk.label} has shape [${rk.shape.join(',')}], expected [H, N] = [${H},${N}]`);
  }
}

function checkStorageBuffers(op: string, gpu: GpuRuntime, kinds: readonly BindingKind[]): void {
  const n = kinds.filter((k) => k !== 'uniform').length;
  const max = gpu.limits.maxStorageBuffersPerShaderStage;
  if (n > max) throw new Error(`${op}: needs ${n} storage buffers per shader stage, this adapter allows ${max}`);
}

function bindings(names: readonly string[], kind: 'read' | 'read_write', first: number): string {
  return names.map((n, k) => `@group(0) @binding(${first + k}) var<storage, ${kind}> ${n}_: array<f32>;`).join('\n');
}

/** WGSL storing `value` into out_[i], adding to it when accumulating. */
function store(out: string, value: string, accumulate: boolean): string {
  return `${out}_[i] = ${accumulate ? `${out}_[i] + ` : ''}${value};`;
}

const MAIN_ARGS = '@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) li: u32';

// ---- one generated family: per-element maps over [rows, C] with per-channel parameters ----

interface ChannelMap {
  /** Pipeline name. */
  name: string;
  /** Activations [rows, C], read at element i, bound as `name_` and loaded into `name`. */
  acts: readonly (readonly [wgslName: string, t: Tensor])[];
  /** Per-channel parameters [C], read at channel i % C; with none, the tensors are one row. */
  params: readonly (readonly [wgslName: string, t: Tensor])[];
  /** WGSL statements defining a `let` for each output name from the loaded inputs. */
  body: string;
  /** Outputs [rows, C]; each written as out[i] = value, or out[i] += value when accumulating. */
  outs: readonly (readonly [wgslName: string, t: Tensor, accumulate: boolean])[];
}

function channelMapShader(m: ChannelMap): string {
  const acts = m.acts.map(([n]) => n);
  const params = m.params.map(([n]) => n);
  const outs = m.outs.map(([n]) => n);
  const loads = [...acts.map((n) => `let ${n} = ${n}_[i];`), ...params.map((n) => `let ${n} = ${n}_[c];`)];
  const stores = m.outs.map(([n, , acc]) => store(n, n, acc));
  return /* wgsl */ `
struct P { n: u32, C: u32 }
@group(0) @binding(0) var<uniform> p: P;
${bindings(acts, 'read', 1)}
${bindings(params, 'read', 1 + acts.length)}
${bindings(outs, 'read_write', 1 + acts.length + params.length)}
fn sigmoid(x: f32) -> f32 { return 1.0 / (1.0 + exp(-x)); }
@compute @workgroup_size(${WG})
fn main(${MAIN_ARGS}) {
  let i = ${WGSL_LINEAR_WG} * ${WG}u + li;
  if (i >= p.n) { return; }
  let c = i % p.C;
  ${loads.join('\n  ')}
  ${m.body}
  ${stores.join('\n  ')}
}`;
}

function runChannelMap(gpu: GpuRuntime, m: ChannelMap): void {
  const acts = [...m.acts.map(([, t]) => t), ...m.outs.map(([, t]) => t)];
  const C = m.params.length ? channelCount(m.name, m.params.map(([, t]) => t)) : numel(acts[0].shape);
  const rows = rowsOf(m.name, C, acts[0]);
  checkActs(m.name, rows, C, acts);
  const kinds: BindingKind[] = ['uniform', ...m.acts.map(() => 'read' as const), ...m.params.map(() => 'read' as const), ...m.outs.map(() => 'rw' as const)];
  checkStorageBuffers(m.name, gpu, kinds);
  const key = m.outs.map(([, , acc]) => (acc ? 'acc' : 'set')).join(',');
  const p = gpu.pipeline(m.name, key, kinds, () => channelMapShader(m));
  const n = rows * C;
  const args = [uniforms([['u32', n], ['u32', C]]), ...m.acts.map(([, t]) => t), ...m.params.map(([, t]) => t), ...m.outs.map(([, t]) => t)];
  gpu.dispatch(p, args, grid1d(ceilDiv(n, WG)));
}

/** x += bias per channel, in place (w_raw = w0 + z_w; its backward is the identity). */
export function addBias(gpu: GpuRuntime, x: Tensor, bias: Tensor): void {
  runChannelMap(gpu, { name: 'rwkv7AddBias', acts: [], params: [['bias', bias]], body: 'let x = bias;', outs: [['x', x, true]] });
}

/** out = σ(z + bias) per channel (a = σ(a0 + z_a)). */
export function sigmoidBias(gpu: GpuRuntime, z: Tensor, bias: Tensor, out: Tensor): void {
  runChannelMap(gpu, { name: 'rwkv7SigmoidBias', acts: [['z', z]], params: [['bias', bias]], body: 'let out = sigmoid(z + bias);', outs: [['out', out, false]] });
}

/** dz = dout·out·(1 − out), from the forward output out = σ(z + bias). */
export function sigmoidBiasBackward(gpu: GpuRuntime, dout: Tensor, out: Tensor, dz: Tensor, opts: AccumulateOption = {}): void {
  runChannelMap(gpu, {
    name: 'rwkv7SigmoidBiasBackward',
    acts: [['dout', dout], ['s', out]],
    params: [],
    body: 'let dz = dout * s * (1.0 - s);',
    outs: [['dz', dz, opts.accumulate ?? false]],
  });
}

/** out = v + (v_first − v)⊙σ(v0 + z_v): the value residual of layers > 0. */
export function valueResidual(gpu: GpuRuntime, v: Tensor, vFirst: Tensor, zv: Tensor, v0: Tensor, out: Tensor): void {
  runChannelMap(gpu, {
    name: 'rwkv7ValueResidual',
    acts: [['v', v], ['vf', vFirst], ['zv', zv]],
    params: [['v0', v0]],
    body: 'let out = v + (vf - v) * sigmoid(v0 + zv);',
    outs: [['out', out, false]],
  });
}

export interface ValueResidualGrads {
  /** ∂L/∂v (before the residual). */
  dv: Tensor;
  /** ∂L/∂v_first; accumulated across layers unless accumulateDvfirst is false. */
  dvfirst: Tensor;
  /** ∂L/∂z_v (the second low-rank matmul's output, before v0 and the sigmoid). */
  dz: Tensor;
}

/** Backward of valueResidual. `accumulate` applies to dv and dz. */
export function valueResidualBackward(
  gpu: GpuRuntime,
  dout: Tensor,
  v: Tensor,
  vFirst: Tensor,
  zv: Tensor,
  v0: Tensor,
  grads: ValueResidualGrads,
  opts: AccumulateOption & { accumulateDvfirst?: boolean } = {},
): void {
  const acc = opts.accumulate ?? false;
  runChannelMap(gpu, {
    name: 'rwkv7ValueResidualBackward',
    acts: [['dout', dout], ['v', v], ['vf', vFirst], ['zv', zv]],
    params: [['v0', v0]],
    body: 'let s = sigmoid(v0 + zv); let dv = dout * (1.0 - s); let dvf = dout * s; let dz = dout * (vf - v) * s * (1.0 - s);',
    outs: [
      ['dv', grads.dv, acc],
      ['dvf', grads.dvfirst, opts.accumulateDvfirst ?? true],
      ['dz', grads.dz, acc],
    ],
  });
}

// ---- token shift and lerps ----

function tokenShiftShader(k: number, backward: boolean, accumulate: boolean): string {
  const ms = Array.from({ length: k }, (_, m) => m);
  const head = /* wgsl */ `
struct P { n: u32, C: u32, T: u32 }
@group(0) @binding(0) var<uniform> p: P;`;
  const index = /* wgsl */ `
  let i = ${WGSL_LINEAR_WG} * ${WG}u + li;
  if (i >= p.n) { return; }
  let c = i % p.C;
  let t = (i / p.C) % p.T;`;
  if (!backward) {
    return /* wgsl */ `${head}
@group(0) @binding(1) var<storage, read> x_: array<f32>;
${bindings(ms.map((m) => `mix${m}`), 'read', 2)}
${bindings(ms.map((m) => `out${m}`), 'read_write', 2 + k)}
@compute @workgroup_size(${WG})
fn main(${MAIN_ARGS}) {${index}
  let x = x_[i];
  // x_{t−1} is zero at each sequence start.
  var prev = 0.0;
  if (t > 0u) { prev = x_[i - p.C]; }
  let xx = prev - x;
  ${ms.map((m) => `out${m}_[i] = x + xx * mix${m}_[c];`).join('\n  ')}
}`;
  }
  return /* wgsl */ `${head}
${bindings(ms.map((m) => `dout${m}`), 'read', 1)}
${bindings(ms.map((m) => `mix${m}`), 'read', 1 + k)}
@group(0) @binding(${1 + 2 * k}) var<storage, read_write> dx_: array<f32>;
@compute @workgroup_size(${WG})
fn main(${MAIN_ARGS}) {${index}
  // Token t feeds its own lerps with weight 1 − mix and token t+1's with weight mix.
  var dx = ${ms.map((m) => `dout${m}_[i] * (1.0 - mix${m}_[c])`).join(' + ')};
  if (t + 1u < p.T) {
    let j = i + p.C;
    dx += ${ms.map((m) => `dout${m}_[j] * mix${m}_[c]`).join(' + ')};
  }
  dx_[i] = ${accumulate ? 'dx_[i] + ' : ''}dx;
}`;
}

function checkLerps(op: string, mixes: readonly Tensor[], others: readonly Tensor[]): void {
  if (mixes.length === 0 || mixes.length !== others.length) {
    throw new Error(`${op}: ${mixes.length} mix vectors for ${others.length} lerp tensors, expected the same number (at least 1)`);
  }
}

/**
 * outs[m] = x + (x_{t−1} − x)⊙mixes[m] for each mix vector (six for TimeMix, ffn.x_k
 * alone for ChannelMix), with x_{−1} = 0 at each sequence start.
 */
export function tokenShiftLerp(gpu: GpuRuntime, x: Tensor, mixes: readonly Tensor[], outs: readonly Tensor[], seq: SeqDims): void {
  const op = 'rwkv7TokenShiftLerp';
  checkLerps(op, mixes, outs);
  const rows = rowsFromSeq(op, seq);
  const C = channelCount(op, mixes);
  checkActs(op, rows, C, [x, ...outs]);
  const kinds: BindingKind[] = ['uniform', 'read', ...mixes.map(() => 'read' as const), ...outs.map(() => 'rw' as const)];
  checkStorageBuffers(op, gpu, kinds);
  const p = gpu.pipeline(op, `k${mixes.length}`, kinds, () => tokenShiftShader(mixes.length, false, false));
  gpu.dispatch(p, [uniforms([['u32', rows * C], ['u32', C], ['u32', seq.T]]), x, ...mixes, ...outs], grid1d(ceilDiv(rows * C, WG)));
}

/** dx (+)= the gradient of tokenShiftLerp's input from the gradients of its outputs. */
export function tokenShiftLerpBackward(
  gpu: GpuRuntime,
  douts: readonly Tensor[],
  mixes: readonly Tensor[],
  dx: Tensor,
  seq: SeqDims,
  opts: AccumulateOption = {},
): void {
  const op = 'rwkv7TokenShiftLerpBackward';
  checkLerps(op, mixes, douts);
  const rows = rowsFromSeq(op, seq);
  const C = channelCount(op, mixes);
  checkActs(op, rows, C, [...douts, dx]);
  const acc = opts.accumulate ?? false;
  const kinds: BindingKind[] = ['uniform', ...douts.map(() => 'read' as const), ...mixes.map(() => 'read' as const), 'rw'];
  checkStorageBuffers(op, gpu, kinds);
  const p = gpu.pipeline(op, `k${mixes.length}${acc ? ',acc' : ''}`, kinds, () => tokenShiftShader(mixes.length, true, acc));
  gpu.dispatch(p, [uniforms([['u32', rows * C], ['u32', C], ['u32', seq.T]]), ...douts, ...mixes, dx], grid1d(ceilDiv(rows * C, WG)));
}

// ---- per-head kernels: one workgroup per (token, head) ----

/**
 * WGSL for a per-head kernel. `phase1` runs for each channel j of the head (element index
 * i, channel index c) and adds to `acc: vec2f`; `phase2` runs for each channel again with
 * `sum`, the head's total of acc.
 */
function headShader(inputs: readonly string[], outputs: readonly string[], phase1: string, phase2: string): string {
  return /* wgsl */ `
struct P { groups: u32, C: u32, N: u32, H: u32 }
@group(0) @binding(0) var<uniform> p: P;
${bindings(inputs, 'read', 1)}
${bindings(outputs, 'read_write', 1 + inputs.length)}
var<workgroup> red: array<vec2f, ${HEAD_WG}>;
@compute @workgroup_size(${HEAD_WG})
fn main(${MAIN_ARGS}) {
  let g = ${WGSL_LINEAR_WG};
  if (g >= p.groups) { return; }
  let h = g % p.H;
  let base = (g / p.H) * p.C + h * p.N;
  var acc = vec2f(0.0);
  for (var j = li; j < p.N; j += ${HEAD_WG}u) {
    let i = base + j;
    let c = h * p.N + j;
    ${phase1}
  }
  red[li] = acc;
  workgroupBarrier();
  for (var s = ${HEAD_WG / 2}u; s > 0u; s >>= 1u) {
    if (li < s) { red[li] += red[li + s]; }
    workgroupBarrier();
  }
  let sum = red[0];
  for (var j = li; j < p.N; j += ${HEAD_WG}u) {
    let i = base + j;
    let c = h * p.N + j;
    ${phase2}
  }
}`;
}

interface HeadKernel {
  name: string;
  key: string;
  rows: number;
  C: number;
  N: number;
  inputs: readonly (readonly [wgslName: string, t: Tensor])[];
  outputs: readonly (readonly [wgslName: string, t: Tensor])[];
  phase1: string;
  phase2: string;
}

function runHeadKernel(gpu: GpuRuntime, k: HeadKernel): void {
  const kinds: BindingKind[] = ['uniform', ...k.inputs.map(() => 'read' as const), ...k.outputs.map(() => 'rw' as const)];
  checkStorageBuffers(k.name, gpu, kinds);
  const names = (xs: HeadKernel['inputs']): string[] => xs.map(([n]) => n);
  const p = gpu.pipeline(k.name, k.key, kinds, () => headShader(names(k.inputs), names(k.outputs), k.phase1, k.phase2));
  const H = k.C / k.N;
  const groups = k.rows * H;
  const u = uniforms([['u32', groups], ['u32', k.C], ['u32', k.N], ['u32', H]]);
  gpu.dispatch(p, [u, ...k.inputs.map(([, t]) => t), ...k.outputs.map(([, t]) => t)], grid1d(groups));
}

/** normalize() clamps the per-head norm below at this (F.normalize's eps). */
const NORM_EPS = '1e-12';

export interface KeyPrepOutputs {
  /** normalize_per_head(k⊙k_k). */
  kk: Tensor;
  /** k̃ = k⊙(1 + (a − 1)⊙k_a), WKV's key. */
  kt: Tensor;
  /** WKV's a input, −kk. */
  aw: Tensor;
  /** WKV's b input, kk⊙a. */
  bw: Tensor;
}

/** The keys for WKV: kk, k̃ and WKV's a = −kk, b = kk⊙a, from k and a = σ(a0 + z_a). */
export function keyPrep(gpu: GpuRuntime, k: Tensor, a: Tensor, kK: Tensor, kA: Tensor, out: KeyPrepOutputs, opts: HeadOptions): void {
  const op = 'rwkv7KeyPrep';
  const C = channelCount(op, [kK, kA]);
  const N = opts.headSize;
  headCount(op, C, N);
  const rows = rowsOf(op, C, k);
  checkActs(op, rows, C, [k, a, out.kk, out.kt, out.aw, out.bw]);
  runHeadKernel(gpu, {
    name: op,
    key: '',
    rows,
    C,
    N,
    inputs: [['k', k], ['a', a], ['kK', kK], ['kA', kA]],
    outputs: [['kk', out.kk], ['kt', out.kt], ['aw', out.aw], ['bw', out.bw]],
    phase1: 'let z = k_[i] * kK_[c]; acc.x += z * z;',
    phase2: /* wgsl */ `
    let kv = k_[i];
    let av = a_[i];
    let n = kv * kK_[c] / max(sqrt(sum.x), ${NORM_EPS});
    kk_[i] = n;
    kt_[i] = kv * (1.0 + (av - 1.0) * kA_[c]);
    aw_[i] = -n;
    bw_[i] = n * av;`,
  });
}

export interface KeyPrepGrads {
  dk: Tensor;
  da: Tensor;
}

/**
 * Backward of keyPrep: from ∂L/∂k̃, ∂L/∂aw and ∂L/∂bw (WKV's a and b inputs) to ∂L/∂k and
 * ∂L/∂a. kk is keyPrep's output.
 */
export function keyPrepBackward(
  gpu: GpuRuntime,
  dkt: Tensor,
  daw: Tensor,
  dbw: Tensor,
  k: Tensor,
  a: Tensor,
  kK: Tensor,
  kA: Tensor,
  kk: Tensor,
  grads: KeyPrepGrads,
  opts: HeadOptions & AccumulateOption,
): void {
  const op = 'rwkv7KeyPrepBackward';
  const C = channelCount(op, [kK, kA]);
  const N = opts.headSize;
  headCount(op, C, N);
  const rows = rowsOf(op, C, k);
  checkActs(op, rows, C, [dkt, daw, dbw, k, a, kk, grads.dk, grads.da]);
  const acc = opts.accumulate ?? false;
  runHeadKernel(gpu, {
    name: op,
    key: acc ? 'acc' : '',
    rows,
    C,
    N,
    inputs: [['dkt', dkt], ['daw', daw], ['dbw', dbw], ['k', k], ['a', a], ['kK', kK], ['kA', kA], ['kk', kk]],
    outputs: [['dk', grads.dk], ['da', grads.da]],
    // ‖z‖² and kk·dkk, where dkk = ∂L/∂kk = −daw + dbw⊙a.
    phase1: 'let z = k_[i] * kK_[c]; acc += vec2f(z * z, kk_[i] * (dbw_[i] * a_[i] - daw_[i]));',
    // dz = (dkk − kk·(kk·dkk))/‖z‖; below the clamp kk = z/eps is linear in z.
    phase2: /* wgsl */ `
    let norm = sqrt(sum.x);
    let proj = select(0.0, sum.y, norm > ${NORM_EPS});
    let kv = k_[i];
    let av = a_[i];
    let kav = kA_[c];
    let dktv = dkt_[i];
    let dbwv = dbw_[i];
    let dz = (dbwv * av - daw_[i] - kk_[i] * proj) / max(norm, ${NORM_EPS});
    ${store('dk', 'dktv * (1.0 + (av - 1.0) * kav) + dz * kK_[c]', acc)}
    ${store('da', 'dktv * kv * kav + dbwv * kk_[i]', acc)}`,
  });
}

/** out = (gn + (Σ_{j∈head} r[j]·k̃[j]·r_k[h,j])·v)⊙g: the bonus term and the output gate. */
export function bonusGate(gpu: GpuRuntime, gn: Tensor, r: Tensor, kt: Tensor, v: Tensor, rK: Tensor, g: Tensor, out: Tensor, opts: HeadOptions): void {
  const op = 'rwkv7BonusGate';
  const C = channelCount(op, [rK]);
  const N = opts.headSize;
  checkRk(op, rK, headCount(op, C, N), N);
  const rows = rowsOf(op, C, gn);
  checkActs(op, rows, C, [gn, r, kt, v, g, out]);
  runHeadKernel(gpu, {
    name: op,
    key: '',
    rows,
    C,
    N,
    inputs: [['gn', gn], ['r', r], ['kt', kt], ['v', v], ['rK', rK], ['g', g]],
    outputs: [['out', out]],
    phase1: 'acc.x += r_[i] * kt_[i] * rK_[c];',
    phase2: 'out_[i] = (gn_[i] + sum.x * v_[i]) * g_[i];',
  });
}

export interface BonusGateGrads {
  dgn: Tensor;
  dr: Tensor;
  dkt: Tensor;
  dv: Tensor;
  dg: Tensor;
}

/** Backward of bonusGate: from ∂L/∂out to the five activation gradients. */
export function bonusGateBackward(
  gpu: GpuRuntime,
  dout: Tensor,
  gn: Tensor,
  r: Tensor,
  kt: Tensor,
  v: Tensor,
  rK: Tensor,
  g: Tensor,
  grads: BonusGateGrads,
  opts: HeadOptions & AccumulateOption,
): void {
  const op = 'rwkv7BonusGateBackward';
  const C = channelCount(op, [rK]);
  const N = opts.headSize;
  checkRk(op, rK, headCount(op, C, N), N);
  const rows = rowsOf(op, C, dout);
  checkActs(op, rows, C, [dout, gn, r, kt, v, g, grads.dgn, grads.dr, grads.dkt, grads.dv, grads.dg]);
  const acc = opts.accumulate ?? false;
  runHeadKernel(gpu, {
    name: op,
    key: acc ? 'acc' : '',
    rows,
    C,
    N,
    inputs: [['dout', dout], ['gn', gn], ['r', r], ['kt', kt], ['v', v], ['rK', rK], ['g', g]],
    outputs: [['dgn', grads.dgn], ['dr', grads.dr], ['dkt', grads.dkt], ['dv', grads.dv], ['dg', grads.dg]],
    // The head's bonus scalar s = Σ r·k̃·r_k and its gradient ds = Σ do·v, do = dout⊙g.
    phase1: 'let rkc = rK_[c]; acc += vec2f(r_[i] * kt_[i] * rkc, dout_[i] * g_[i] * v_[i]);',
    phase2: /* wgsl */ `
    let s = sum.x;
    let ds = sum.y;
    let rkc = rK_[c];
    let dov = dout_[i] * g_[i];
    let vv = v_[i];
    ${store('dgn', 'dov', acc)}
    ${store('dr', 'ds * kt_[i] * rkc', acc)}
    ${store('dkt', 'ds * r_[i] * rkc', acc)}
    ${store('dv', 'dov * s', acc)}
    ${store('dg', 'dout_[i] * (gn_[i] + s * vv)', acc)}`,
  });
}
