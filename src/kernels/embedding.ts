/**
 * Token embedding lookup and its gradient.
 *
 * Ids ≥ V (and negative i32 ids, which read as huge u32 values) are never used as an
 * address: their output rows are zero and they contribute no gradient. Checking ids
 * against the vocabulary is the data loader's job; the kernels only stay in bounds.
 *
 * The backward is deterministic without float atomics or sorting. A first pass links
 * each token to the next token with the same id (O(M²) id comparisons in the worst
 * case, M invocations). Then one invocation per (first occurrence, column) walks its
 * chain in token order and writes the row's sum: O(M·C) adds, the chain length (the
 * most repeats of one id) being the serial depth. Without `accumulate`, dTable is
 * first zeroed (O(V·C)). For V = 65536, M = 8192 that is at most 6.7e7 comparisons.
 */
import type { GpuRuntime } from '../gpu/device.js';
import { describe, numel, type Tensor } from '../gpu/tensor.js';
import { ceilDiv, grid1d, uniforms, wgslBf16Reader, WGSL_LINEAR_WG } from './common.js';
import { fill } from './elementwise.js';
import { scratch } from './reduce.js';

const WG = 256;
/** Bit 31 of a link marks the first occurrence of an id; bits 0..30 hold the next token. */
const MAX_TOKENS = 2 ** 31 - 1;

interface Dims {
  tokens: number;
  vocab: number;
  cols: number;
}

function dims(op: string, ids: Tensor, table: Tensor, rowsOf: Tensor, tableDtypes: readonly string[]): Dims {
  if (ids.dtype !== 'u32' && ids.dtype !== 'i32') throw new Error(`${op}: ${ids.label} is ${ids.dtype}, expected u32 or i32 token ids`);
  if (!tableDtypes.includes(table.dtype)) throw new Error(`${op}: ${table.label} is ${table.dtype}, expected ${tableDtypes.join(' or ')}`);
  if (table.shape.length !== 2) throw new Error(`${op}: ${describe(table)} should be [V, C]`);
  const [vocab, cols] = table.shape;
  const tokens = numel(ids.shape);
  if (tokens > MAX_TOKENS) throw new Error(`${op}: ${describe(ids)} holds more than 2^31 − 1 tokens`);
  if (rowsOf.dtype !== 'f32') throw new Error(`${op}: ${rowsOf.label} is ${rowsOf.dtype}, expected f32`);
  if (numel(rowsOf.shape) !== tokens * cols || rowsOf.shape[rowsOf.shape.length - 1] !== cols) {
    throw new Error(`${op}: ${describe(rowsOf)} should be [M, C] = [${tokens}, ${cols}] (M from ${ids.label}, C from ${table.label})`);
  }
  return { tokens, vocab, cols };
}

const forwardShader = (bf16: boolean): string => /* wgsl */ `
struct P { n: u32, cols: u32, vocab: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> ids: array<u32>;
@group(0) @binding(2) var<storage, read> table: array<${bf16 ? 'u32' : 'f32'}>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
${bf16 ? wgslBf16Reader('tableAt', 'table') : 'fn tableAt(i: u32) -> f32 { return table[i]; }'}
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) li: u32) {
  let i = ${WGSL_LINEAR_WG} * ${WG}u + li;
  if (i >= p.n) { return; }
  let id = ids[i / p.cols];
  var v = 0.0;
  if (id < p.vocab) { v = tableAt(id * p.cols + i % p.cols); }
  out[i] = v;
}`;

/** out[m, :] = table[ids[m], :] for a bf16 or f32 table [V, C]; rows of ids ≥ V are zero. */
export function embedding(gpu: GpuRuntime, ids: Tensor, table: Tensor, out: Tensor): void {
  const d = dims('embedding', ids, table, out, ['bf16', 'f32']);
  const bf16 = table.dtype === 'bf16';
  const p = gpu.pipeline('embedding', table.dtype, ['uniform', 'read', 'read', 'rw'], () => forwardShader(bf16));
  const n = d.tokens * d.cols;
  gpu.dispatch(p, [uniforms([['u32', n], ['u32', d.cols], ['u32', d.vocab]]), ids, table, out], grid1d(ceilDiv(n, WG)));
}

const LINKS = /* wgsl */ `
struct P { tokens: u32, vocab: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> ids: array<u32>;
@group(0) @binding(2) var<storage, read_write> links: array<u32>;
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) li: u32) {
  let m = ${WGSL_LINEAR_WG} * ${WG}u + li;
  if (m >= p.tokens) { return; }
  let id = ids[m];
  var first = id < p.vocab;
  for (var j = 0u; first && j < m; j++) { first = ids[j] != id; }
  var next = p.tokens;
  for (var j = m + 1u; j < p.tokens; j++) {
    if (ids[j] == id) { next = j; break; }
  }
  links[m] = next | select(0u, 0x80000000u, first);
}`;

const scatterShader = (accumulate: boolean): string => /* wgsl */ `
struct P { n: u32, cols: u32, tokens: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> ids: array<u32>;
@group(0) @binding(2) var<storage, read> links: array<u32>;
@group(0) @binding(3) var<storage, read> dOut: array<f32>;
@group(0) @binding(4) var<storage, read_write> dTable: array<f32>;
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) li: u32) {
  let i = ${WGSL_LINEAR_WG} * ${WG}u + li;
  if (i >= p.n) { return; }
  let m = i / p.cols;
  let c = i % p.cols;
  if ((links[m] & 0x80000000u) == 0u) { return; }
  var s = 0.0;
  var j = m;
  loop {
    s += dOut[j * p.cols + c];
    j = links[j] & 0x7fffffffu;
    if (j >= p.tokens) { break; }
  }
  let o = ids[m] * p.cols + c;
  dTable[o] = ${accumulate ? 'dTable[o] + s' : 's'};
}`;

/**
 * dTable[v, :] = Σ_{m: ids[m] = v} dOut[m, :] (added into dTable with accumulate),
 * summed in token order. dTable is f32 [V, C]; tokens with ids ≥ V are skipped.
 */
export function embeddingBackward(gpu: GpuRuntime, ids: Tensor, dOut: Tensor, dTable: Tensor, opts: { accumulate?: boolean } = {}): void {
  const op = 'embeddingBackward';
  const d = dims(op, ids, dTable, dOut, ['f32']);
  const accumulate = opts.accumulate ?? false;
  if (!accumulate) fill(gpu, dTable, 0);
  if (d.tokens === 0) return;
  const links = scratch(gpu, 'embeddingLinks', [d.tokens], 'u32');
  const pl = gpu.pipeline('embeddingLinks', '', ['uniform', 'read', 'rw'], () => LINKS);
  gpu.dispatch(pl, [uniforms([['u32', d.tokens], ['u32', d.vocab]]), ids, links], grid1d(ceilDiv(d.tokens, WG)));
  // After zeroing, each row is written by exactly one chain head: plain stores suffice.
  const ps = gpu.pipeline('embeddingScatter', accumulate ? 'acc' : '', ['uniform', 'read', 'read', 'read', 'rw'], () => scatterShader(accumulate));
  const n = d.tokens * d.cols;
  gpu.dispatch(ps, [uniforms([['u32', n], ['u32', d.cols], ['u32', d.tokens]]), ids, links, dOut, dTable], grid1d(ceilDiv(n, WG)));
}
