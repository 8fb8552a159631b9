/** Elementwise kernels over f32 tensors (and bf16 widened to f32, f32 narrowed to f16). */
import type { GpuRuntime } from '../gpu/device.js';
import { describe, numel, type Tensor } from '../gpu/tensor.js';
import { ceilDiv, grid1d, uniforms, wgslBf16Reader, WGSL_LINEAR_WG } from './common.js';

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

const WIDEN_BF16 = /* wgsl */ `
struct P { n: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> x: array<u32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
${wgslBf16Reader('at', 'x')}
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) li: u32) {
  let i = ${WGSL_LINEAR_WG} * ${WG}u + li;
  if (i >= p.n) { return; }
  y[i] = at(i);
}`;

/** y = x widened from bf16 to f32 (exact), element by element. */
export function widenBf16(gpu: GpuRuntime, x: Tensor, y: Tensor): void {
  const n = assertSameSize('widenBf16', y);
  if (x.dtype !== 'bf16' || numel(x.shape) !== n) throw new Error(`widenBf16: ${describe(x)} should be bf16 with the ${n} elements of ${describe(y)}`);
  const p = gpu.pipeline('widenBf16', '', ['uniform', 'read', 'rw'], () => WIDEN_BF16);
  gpu.dispatch(p, [uniforms([['u32', n]]), x, y], grid1d(ceilDiv(n, WG)));
}

const NARROW_F16 = /* wgsl */ `
struct P { pairs: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> x: array<vec2f>;
@group(0) @binding(2) var<storage, read_write> y: array<u32>;
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) li: u32) {
  let i = ${WGSL_LINEAR_WG} * ${WG}u + li;
  if (i >= p.pairs) { return; }
  y[i] = pack2x16float(x[i]);
}`;

/**
 * y = x rounded to f16 (nearest even; below 2^-14 with subnormal precision, beyond 65504
 * infinite), element by element, for an even count: LoRA factors as tensor-core operands,
 * where their products join a frozen product whose rounding error is far larger.
 */
export function narrowF16(gpu: GpuRuntime, x: Tensor, y: Tensor): void {
  const n = assertSameSize('narrowF16', x);
  if (y.dtype !== 'f16' || numel(y.shape) !== n) throw new Error(`narrowF16: ${describe(y)} should be f16 with the ${n} elements of ${describe(x)}`);
  if (n % 2 !== 0) throw new Error(`narrowF16: ${describe(x)} has an odd number of elements; f16 pairs are written whole`);
  const p = gpu.pipeline('narrowF16', '', ['uniform', 'read', 'rw'], () => NARROW_F16);
  gpu.dispatch(p, [uniforms([['u32', n / 2]]), x, y], grid1d(ceilDiv(n / 2, WG)));
}

// ---- one generated family: out[i] = expression of the inputs at i ----

/** Activations RWKV needs: WGSL `f(x)` and its derivative `df(x)`, both from the input x. */
const ACTIVATIONS = {
  sigmoid: /* wgsl */ `
fn f(x: f32) -> f32 { return 1.0 / (1.0 + exp(-x)); }
fn df(x: f32) -> f32 { let s = f(x); return s * (1.0 - s); }`,
  // Clamped because an exp-based tanh overflows to inf/inf = NaN; tanh(±15) is ±1 in f32.
  tanh: /* wgsl */ `
fn f(x: f32) -> f32 { return tanh(clamp(x, -15.0, 15.0)); }
fn df(x: f32) -> f32 { let t = f(x); return 1.0 - t * t; }`,
  reluSq: /* wgsl */ `
fn f(x: f32) -> f32 { let r = max(x, 0.0); return r * r; }
fn df(x: f32) -> f32 { return 2.0 * max(x, 0.0); }`,
} as const;

export type Activation = keyof typeof ACTIVATIONS;

const BINARY = { add: 'a + b', mul: 'a * b' } as const;

type BinaryOp = keyof typeof BINARY;

/**
 * WGSL computing out[i] = expr (or out[i] + expr) where expr reads the f32 inputs,
 * named `inputs`, at element i, helper functions from `prelude`, and the uniform p.s.
 * With `vec4` each invocation takes four elements, read and written as vec4s (n a
 * multiple of 4): a quarter of the invocations and wider memory accesses for the same
 * arithmetic, element by element.
 */
function mapShader(prelude: string, inputs: readonly string[], expr: string, accumulate: boolean, vec4: boolean): string {
  const type = vec4 ? 'vec4f' : 'f32';
  const bindings = inputs.map((name, k) => `@group(0) @binding(${k + 1}) var<storage, read> ${name}_: array<${type}>;`);
  const body = vec4
    ? `if (i >= p.n / 4u) { return; }
  ${inputs.map((name) => `let ${name}4 = ${name}_[i];`).join(' ')}
  var o = ${accumulate ? 'out[i]' : 'vec4f(0.0)'};
  for (var c = 0u; c < 4u; c++) {
    ${inputs.map((name) => `let ${name} = ${name}4[c];`).join(' ')}
    o[c] = ${accumulate ? 'o[c] + ' : ''}(${expr});
  }
  out[i] = o;`
    : `if (i >= p.n) { return; }
  ${inputs.map((name) => `let ${name} = ${name}_[i];`).join(' ')}
  out[i] = ${accumulate ? 'out[i] + ' : ''}(${expr});`;
  return /* wgsl */ `
struct P { n: u32, s: f32 }
@group(0) @binding(0) var<uniform> p: P;
${bindings.join('\n')}
@group(0) @binding(${inputs.length + 1}) var<storage, read_write> out: array<${type}>;
${prelude}
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) li: u32) {
  let i = ${WGSL_LINEAR_WG} * ${WG}u + li;
  ${body}
}`;
}

interface MapSpec {
  /** Pipeline name; with `accumulate` the key says so. */
  name: string;
  prelude?: string;
  inputs: readonly (readonly [wgslName: string, t: Tensor])[];
  expr: string;
  out: Tensor;
  accumulate?: boolean;
  scalar?: number;
}

function runMap(gpu: GpuRuntime, s: MapSpec): void {
  const n = assertSameSize(s.name, s.out, ...s.inputs.map(([, t]) => t));
  const acc = s.accumulate ?? false;
  const names = s.inputs.map(([name]) => name);
  const kinds = ['uniform', ...names.map(() => 'read' as const), 'rw'] as const;
  const vec4 = n % 4 === 0;
  const key = [acc ? 'acc' : '', vec4 ? 'vec4' : ''].filter((k) => k).join('_');
  const p = gpu.pipeline(s.name, key, kinds, () => mapShader(s.prelude ?? '', names, s.expr, acc, vec4));
  const args = [uniforms([['u32', n], ['f32', s.scalar ?? 0]]), ...s.inputs.map(([, t]) => t), s.out];
  gpu.dispatch(p, args, grid1d(ceilDiv(vec4 ? n / 4 : n, WG)));
}

/** out = value everywhere, recorded as a kernel (ordered with the other dispatches, unlike gpu.fill). */
export function fill(gpu: GpuRuntime, out: Tensor, value: number): void {
  runMap(gpu, { name: 'fill', inputs: [], expr: 'p.s', out, scalar: value });
}

/** out = a op b elementwise; out must not share memory with a or b. */
function binary(gpu: GpuRuntime, op: BinaryOp, a: Tensor, b: Tensor, out: Tensor): void {
  runMap(gpu, { name: op, inputs: [['a', a], ['b', b]], expr: BINARY[op], out });
}

/** out = a + b. */
export function add(gpu: GpuRuntime, a: Tensor, b: Tensor, out: Tensor): void {
  binary(gpu, 'add', a, b, out);
}

/** out = a ⊙ b. */
export function mul(gpu: GpuRuntime, a: Tensor, b: Tensor, out: Tensor): void {
  binary(gpu, 'mul', a, b, out);
}

/** y = f(x) for an activation f; y must not share memory with x. */
export function activation(gpu: GpuRuntime, op: Activation, x: Tensor, y: Tensor): void {
  runMap(gpu, { name: op, prelude: ACTIVATIONS[op], inputs: [['x', x]], expr: 'f(x)', out: y });
}

/** dx = dy·f'(x) (dx += that with accumulate), from the forward input x. */
export function activationBackward(gpu: GpuRuntime, op: Activation, x: Tensor, dy: Tensor, dx: Tensor, opts: { accumulate?: boolean } = {}): void {
  runMap(gpu, {
    name: `${op}Backward`,
    prelude: ACTIVATIONS[op],
    inputs: [['x', x], ['dy', dy]],
    expr: 'dy * df(x)',
    out: dx,
    accumulate: opts.accumulate,
  });
}
