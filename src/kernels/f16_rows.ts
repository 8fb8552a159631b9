/**
 * Scaled f16 copies of f32 matrices, the operands of the tensor-core matmul.
 *
 * Each row of op(X) [R, K] is multiplied by its own power of two 2^e, chosen so the
 * row's largest magnitude lands in [2^14, 2^15): f16's range is narrow (gradients of
 * 1e-9 would flush to zero, activations above 65504 would overflow) but a
 * power-of-two scale is exact, and the matmul undoes it on its f32 result.
 * The copy is [Rp, Kp] row-major (padding rows and columns written as zero) with
 * exponents e [Rp] (0 on padding rows). A 'rows' copy may append a second matrix's rows
 * scaled by a constant, [X | s·X2], under one exponent per row: the operand of a product
 * whose K is two segments (a frozen weight's and its LoRA factor's, matmul_tc.ts).
 */
import type { GpuRuntime } from '../gpu/device.js';
import { describe, type Tensor } from '../gpu/tensor.js';
import { ceilDiv, grid1d, uniforms, WGSL_LINEAR_WG, WGSL_POW2 } from './common.js';

/** How op(X) [R, K] is stored: 'rows' is X [R, K]; 'cols' is X [K, R] (op(X) = Xᵀ). */
export type F16Layout = 'rows' | 'cols';

const WG = 256;
/** The 'cols' copy's tiles: TC columns of X (rows of the copy) by TK rows, and KB rows of X per block of the column maxima. */
const TC = 64;
const TK = 64;
const KB = 256;
/** Bounds on the exponent: 2^±60 stays exact in f32 whatever the data, and so does 2^(ea+eb) in the matmul. */
const E_MAX = 60;

// Exponent e with max·2^e in [2^14, 2^15), from max's f32 exponent bits; 0 for an all-zero row.
const WGSL_EXPONENT = /* wgsl */ `
fn rowExponent(mx: f32) -> i32 {
  if (mx == 0.0) { return 0; }
  let p = i32((bitcast<u32>(mx) >> 23u) & 0xffu) - 127;
  return clamp(14 - p, -${E_MAX}, ${E_MAX});
}
${WGSL_POW2}`;

// k1: the columns from x (k for a single source); the rest, to k, are scale·x2's.
const WGSL_PARAMS = /* wgsl */ `
struct P { r: u32, k: u32, rp: u32, kp: u32, k1: u32, scale: f32 }
@group(0) @binding(0) var<uniform> p: P;`;


/** Quads (4 columns) per invocation kept in registers from the max to the copy: Kp <= 16384 at WG 256. */
const MAX_HELD = 16;
/** Side of the two-level max without subgroups: WG = RB². */
const RB = 16;

const lines = (n: number, f: (i: number) => string): string => Array.from({ length: n }, (_, i) => f(i)).join('\n');

/**
 * The 'rows' copy, one workgroup per row, invocation li owning quads li + i·WG (unrolled,
 * so they stay in registers). `vec` reads vec4s and writes four f16s per store (K and Kp
 * multiples of 4); otherwise scalars. A row of at most MAX_HELD·WG quads is read once,
 * nv quads per invocation; a longer one twice, MAX_HELD quads per invocation per step.
 * `cat`: columns from p.k1 on come from x2 times p.scale (vec only).
 */
function rowsWgsl(vec: boolean, nv: number, held: boolean, subgroups: boolean, cat: boolean): string {
  const load = (q: string, pad: string): string => lines(nv, (i) => `${pad}let v${i} = load4(row, ${q} + ${i * WG}u);`);
  const tree = (a: number, b: number): string => (b - a === 1 ? `absMax(v${a})` : `max(${tree(a, (a + b) >> 1)}, ${tree((a + b) >> 1, b)})`);
  const absMax = tree(0, nv);
  const store = (pad: string): string => lines(nv, (i) => `${pad}store4(row, q + ${i * WG}u, v${i} * f);`);
  const reduce = subgroups
    ? /* wgsl */ `  // Each subgroup's max, then theirs (subgroups have at least 4 invocations: at most WG/4 of them).
  let sm = subgroupMax(m);
  if (lane == 0u) { red[sg] = sm; }
  workgroupBarrier();
  var mx = red[0];
  for (var i = 1u; i < nsg; i++) { mx = max(mx, red[i]); }`
    : /* wgsl */ `  // The first ${RB} invocations each take the max of one column of red (theirs alone), then all take theirs.
  red[li] = m;
  workgroupBarrier();
  if (li < ${RB}u) {
    var t = red[li];
    for (var j = 1u; j < ${RB}u; j++) { t = max(t, red[li + j * ${RB}u]); }
    red[li] = t;
  }
  workgroupBarrier();
  var mx = red[0];
  for (var i = 1u; i < ${RB}u; i++) { mx = max(mx, red[i]); }`;
  const builtins = subgroups ? ',\n        @builtin(subgroup_id) sg: u32, @builtin(num_subgroups) nsg: u32, @builtin(subgroup_invocation_id) lane: u32' : '';
  return /* wgsl */ `${subgroups ? 'enable subgroups;' : ''}
${WGSL_PARAMS}
@group(0) @binding(1) var<storage, read> x: array<${vec ? 'vec4f' : 'f32'}>;
@group(0) @binding(2) var<storage, read_write> out: array<${vec ? 'vec2u' : 'u32'}>;
@group(0) @binding(3) var<storage, read_write> e: array<i32>;
${cat ? '@group(0) @binding(4) var<storage, read> x2: array<vec4f>;' : ''}
var<workgroup> red: array<f32, ${subgroups ? WG / 4 : WG}>;
${WGSL_EXPONENT}
// Columns 4q..4q+3 of the row, zero past R or K.
fn load4(row: u32, q: u32) -> vec4f {
  var v = vec4f(0.0);
${
  vec
    ? cat
      ? `  if (row < p.r && q < p.k / 4u) {
    let q1 = p.k1 / 4u;
    if (q < q1) { v = x[row * q1 + q]; } else { v = p.scale * x2[row * (p.k / 4u - q1) + q - q1]; }
  }`
      : `  if (row < p.r && q < p.k / 4u) { v = x[row * (p.k / 4u) + q]; }`
    : `  if (row < p.r) {
    for (var c = 0u; c < 4u; c++) {
      if (4u * q + c < p.k) { v[c] = x[row * p.k + 4u * q + c]; }
    }
  }`
}
  return v;
}
// Columns 4q..4q+3 of the copy as f16, those within Kp.
fn store4(row: u32, q: u32, v: vec4f) {
${
  vec
    ? `  if (q < p.kp / 4u) { out[row * (p.kp / 4u) + q] = vec2u(pack2x16float(v.xy), pack2x16float(v.zw)); }`
    : `  let half = p.kp / 2u;
  if (2u * q < half) { out[row * half + 2u * q] = pack2x16float(v.xy); }
  if (2u * q + 1u < half) { out[row * half + 2u * q + 1u] = pack2x16float(v.zw); }`
}
}
fn absMax(v: vec4f) -> f32 {
  let a = abs(v);
  return max(max(a.x, a.y), max(a.z, a.w));
}

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) li: u32${builtins}) {
  let row = ${WGSL_LINEAR_WG};
  if (row >= p.rp) { return; }
${
  held
    ? `  let q = li;
${load('q', '  ')}
  let m = ${absMax};`
    : `  var m = 0.0;
  for (var q = li; q < (p.k + 3u) / 4u; q += ${nv * WG}u) {
${load('q', '    ')}
    m = max(m, ${absMax});
  }`
}
${reduce}
  let ex = rowExponent(mx);
  if (li == 0u) { e[row] = ex; }
  let f = pow2(ex);
${
  held
    ? store('  ')
    : `  for (var q = li; q < (p.kp + 3u) / 4u; q += ${nv * WG}u) {
${load('q', '    ')}
${store('    ')}
  }`
}
}`;
}

// The 'cols' copy reads X [k, r] along its rows and writes the copy along its rows (X's
// columns), in two passes that each spread over the whole matrix: the maxima of TC
// columns over KB rows per workgroup into partials [ceil(k / KB), r], then TC×TK tiles
// transposed through workgroup memory, each workgroup taking its columns' maxima from
// the partials. (One workgroup per 32 columns, as before, left an H200 mostly idle.)
const COLS_MAX_WGSL = /* wgsl */ `
${WGSL_PARAMS}
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> part: array<f32>;
var<workgroup> red: array<f32, ${WG}>;
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) li: u32) {
  let col = wid.x * ${TC}u + li % ${TC}u;
  let k0 = wid.y * ${KB}u;
  var m = 0.0;
  if (col < p.r) {
    for (var kk = li / ${TC}u; kk < ${KB}u && k0 + kk < p.k; kk += ${WG / TC}u) { m = max(m, abs(x[(k0 + kk) * p.r + col])); }
  }
  red[li] = m;
  workgroupBarrier();
  if (li < ${TC}u && col < p.r) {
    var mx = red[li];
    for (var j = 1u; j < ${WG / TC}u; j++) { mx = max(mx, red[li + j * ${TC}u]); }
    part[wid.y * p.r + col] = mx;
  }
}`;

const COLS_COPY_WGSL = /* wgsl */ `
${WGSL_PARAMS}
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> part: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<u32>;
@group(0) @binding(4) var<storage, read_write> e: array<i32>;
var<workgroup> ex: array<i32, ${TC}>;
// k-major tile of X, padded by one column against bank conflicts.
var<workgroup> tile: array<f32, ${TK * (TC + 1)}>;
${WGSL_EXPONENT}
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) li: u32) {
  let c0 = wid.x * ${TC}u;
  let k0 = wid.y * ${TK}u;
  if (li < ${TC}u) {
    var mx = 0.0;
    if (c0 + li < p.r) {
      for (var b = 0u; b < (p.k + ${KB - 1}u) / ${KB}u; b++) { mx = max(mx, part[b * p.r + c0 + li]); }
    }
    ex[li] = rowExponent(mx);
    if (wid.y == 0u && c0 + li < p.rp) { e[c0 + li] = ex[li]; }
  }
  let c = li % ${TC}u;
  for (var j = 0u; j < ${TK / (WG / TC)}u; j++) {
    let kk = li / ${TC}u + j * ${WG / TC}u;
    var v = 0.0;
    if (c0 + c < p.r && k0 + kk < p.k) { v = x[(k0 + kk) * p.r + c0 + c]; }
    tile[kk * ${TC + 1}u + c] = v;
  }
  workgroupBarrier();
  let half = p.kp / 2u;
  for (var j = 0u; j < ${(TC * TK) / 2 / WG}u; j++) {
    let idx = li + j * ${WG}u;
    let rr = idx / ${TK / 2}u;
    let pp = idx % ${TK / 2}u;
    let w = k0 / 2u + pp;
    if (c0 + rr < p.rp && w < half) {
      let s = ex[rr];
      let v = vec2f(tile[2u * pp * ${TC + 1}u + rr], tile[(2u * pp + 1u) * ${TC + 1}u + rr]) * pow2(s);
      out[(c0 + rr) * half + w] = pack2x16float(v);
    }
  }
}`;

/** A second matrix appended to each row of a 'rows' copy, times `scale`. */
export interface F16Append {
  x: Tensor;
  scale: number;
}

/**
 * out [Rp, Kp] (f16) = op(x) · 2^e row by row, e [Rp] (i32) the per-row exponents.
 * Kp must be even; Rp >= R and Kp >= K, the padding written as zero. With `append`
 * (layout 'rows', x [R, K1] and append.x [R, K2], K1 and K2 multiples of 4) the rows
 * are [x | scale·append.x], K = K1 + K2, each under one exponent.
 */
export function f16Rows(gpu: GpuRuntime, x: Tensor, layout: F16Layout, out: Tensor, exps: Tensor, append?: F16Append): void {
  const op = 'f16Rows';
  if (x.dtype !== 'f32' || x.shape.length !== 2) throw new Error(`${op}: ${describe(x)} should be a 2-D f32 matrix`);
  const [r, k1] = layout === 'rows' ? x.shape : [x.shape[1], x.shape[0]];
  let k = k1;
  if (append) {
    const x2 = append.x;
    if (layout !== 'rows') throw new Error(`${op}: a second matrix is appended to 'rows' copies only, not '${layout}'`);
    if (x2.dtype !== 'f32' || x2.shape.length !== 2 || x2.shape[0] !== r) throw new Error(`${op}: appended ${describe(x2)} should be f32 [${r}, K2] like ${describe(x)}`);
    if (k1 % 4 !== 0 || x2.shape[1] % 4 !== 0) throw new Error(`${op}: appending needs both widths multiples of 4, got ${describe(x)} and ${describe(x2)}`);
    k += x2.shape[1];
  }
  if (out.dtype !== 'f16' || out.shape.length !== 2) throw new Error(`${op}: ${describe(out)} should be a 2-D f16 matrix`);
  const [rp, kp] = out.shape;
  if (rp < r || kp < k || kp % 2 !== 0) {
    throw new Error(`${op}: ${describe(out)} should be [Rp >= ${r}, even Kp >= ${k}] for op(${describe(x)}) read as ${layout}${append ? ` with ${describe(append.x)} appended` : ''}`);
  }
  if (exps.dtype !== 'i32' || exps.shape.length !== 1 || exps.shape[0] !== rp) {
    throw new Error(`${op}: ${describe(exps)} should be i32 [${rp}]`);
  }
  const u = uniforms([
    ['u32', r],
    ['u32', k],
    ['u32', rp],
    ['u32', kp],
    ['u32', k1],
    ['f32', append?.scale ?? 1],
  ]);
  const kinds = ['uniform', 'read', 'rw', 'rw'] as const;
  if (layout === 'cols') {
    const part = gpu.tensor([ceilDiv(k, KB), r], 'f32', `${x.label} column maxima`);
    gpu.dispatch(gpu.pipeline('f16Rows', 'cols_max', ['uniform', 'read', 'rw'], () => COLS_MAX_WGSL), [u, x, part], [ceilDiv(r, TC), ceilDiv(k, KB)]);
    gpu.dispatch(gpu.pipeline('f16Rows', 'cols', ['uniform', 'read', 'read', 'rw', 'rw'], () => COLS_COPY_WGSL), [u, x, part, out, exps], [ceilDiv(rp, TC), ceilDiv(kp, TK)]);
    gpu.free(part);
    return;
  }
  const vec = k % 4 === 0 && kp % 4 === 0;
  if (append && !vec) throw new Error(`${op}: appending needs Kp a multiple of 4, got ${describe(out)}`);
  const perInvocation = Math.max(1, ceilDiv(ceilDiv(kp, 4), WG));
  const held = perInvocation <= MAX_HELD;
  const nv = Math.min(perInvocation, MAX_HELD);
  const sg = gpu.hasSubgroups;
  const key = `rows_${vec ? 'vec4' : 'scalar'}_${held ? `held${nv}` : 'reread'}${sg ? '_sg' : ''}${append ? '_cat' : ''}`;
  const pipe = gpu.pipeline('f16Rows', key, append ? [...kinds, 'read'] : kinds, () => rowsWgsl(vec, nv, held, sg, append !== undefined));
  gpu.dispatch(pipe, append ? [u, x, out, exps, append.x] : [u, x, out, exps], grid1d(rp));
}
