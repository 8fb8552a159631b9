/**
 * The WKV7 recurrence (RWKV-7 clampw form, spec §2.2 step 6, §3): forward with
 * 16-step state checkpoints and the saved sa, and the "backstepping" backward.
 *
 * Per step, with decay = exp(−0.6065306597·σ(w)):
 *   sa[i] = Σ_j S[i,j]·a[j];  S[i,j] = S[i,j]·decay[j] + sa[i]·b[j] + v[i]·k[j];  y[i] = Σ_j S[i,j]·r[j]
 * S is row i = value dim, column j = key dim. Per-token tensors are [B, T, H, N] f32
 * (any shape with that many elements, e.g. [B·T, H·N]).
 *
 * Rows of S never mix, so the forward splits each head's rows over `groups` workgroups and
 * each row over `lanes` invocations (wkv7_wgsl.ts). The backward runs in two passes so
 * that neither needs the other's reductions step by step: the recurrence of dS = ∂L/∂S
 * (dS_{t−1} = (dS_t + dy·rᵀ)·diag(decay) + dsa·aᵀ, dsa = (dS_t + dy·rᵀ)·b) also keeps rows
 * apart and runs like the forward, saving dsa and dS every 16·colChunks steps; then every
 * run of colChunks 16-step chunks, independently, walks its steps down again from the saved
 * S and dS, which only needs sums over columns (dr, dw, dk, db, da), and runs column-wise.
 * (Chunked forms of the forward and of the dS recurrence, spec §3.3, were slower on an
 * H200: bench/RESULTS.md.)
 */
import type { BindingKind } from '../gpu/pipelines.js';
import type { GpuRuntime } from '../gpu/device.js';
import { numel, type Tensor } from '../gpu/tensor.js';
import { ceilDiv, uniforms } from './common.js';
import {
  colsWorkgroupBytes,
  colsWorkgroupSize,
  columnBackwardWgsl,
  forwardWgsl,
  scanWorkgroupBytes,
  scanWorkgroupSize,
  stateBackwardWgsl,
  WKV7_CHUNK,
  type ScanShape,
} from './wkv7_wgsl.js';

export { WKV7_CHUNK };
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

/** How the kernels spread a head's state over invocations; wkv7Plan picks one per adapter and size. */
export interface Wkv7Plan {
  /** Invocations per state row in the forward and the backward's dS scan: 1 (no subgroup operations), 2, 4 or 8. */
  lanes: number;
  /** Workgroups per head in those scans, each owning a slice of the rows: 1, 2 or 4. */
  groups: number;
  /** Invocations per state column in the backward's per-chunk pass: 1, 2, 4 or 8. */
  colLanes: number;
  /** Consecutive 16-step chunks per workgroup of that pass: 1, 2 or 4. */
  colChunks: number;
}

/** The narrowest subgroup this adapter may run, 0 without the subgroups feature. */
function subgroupWidth(gpu: GpuRuntime): number {
  const info = gpu.adapter.info as GPUAdapterInfo & { subgroupMinSize?: number };
  return gpu.hasSubgroups ? (info.subgroupMinSize ?? 0) : 0;
}

/**
 * The plan for these sizes: `want`'s fields where given (tests force each path with them),
 * otherwise what was fastest on an H200 (npm run bench -- --parts wkv --wkv-plans ...).
 * With few heads the scans are bound by each step's latency and want more invocations per
 * row and the rows spread over more workgroups (B·H < 48: 8 lanes, 4 groups; B=1, H=32:
 * 0.70 ms per layer); with more, 2 lanes and 1 group (B=8, H=32: 2.10 ms; B=8, H=12: 1.15
 * against 1.47 for 8 lanes and 2 groups). The column pass wants 2 lanes per column there
 * (0.94 ms against 1.15 with 1 and 0.98 with 4 at B=8, H=32), 4 with few heads; and 4
 * chunks per workgroup with many heads (B=8, H=32: 0.86 ms against 0.89 with 1), 2 with few
 * (B=1, H=32: 0.144 against 0.150). Lanes are capped by the subgroup width: 1 without.
 * Those timings are the seventh and fourteenth passes' kernels. Timed again at the
 * twenty-second pass's (bench/RESULTS.md), at B=8, H=32: 4 lanes were still slower in the
 * scans (forward 0.80 ms against 0.47) and in the column pass (0.89 against 0.66), 2 row
 * groups slower (forward 0.68), and 2 chunks per column workgroup no faster than 4 (0.67).
 */
export function wkv7Plan(gpu: GpuRuntime, d: Wkv7Dims, want: Partial<Wkv7Plan> = {}): Wkv7Plan {
  const sg = subgroupWidth(gpu);
  const maxLanes = sg >= 2 ? Math.min(8, 2 ** Math.floor(Math.log2(sg))) : 1;
  const heads = d.B * d.H;
  const few = heads < 48;
  const plan: Wkv7Plan = {
    lanes: want.lanes ?? Math.min(maxLanes, few ? 8 : 2),
    groups: want.groups ?? (few ? 4 : 1),
    colLanes: want.colLanes ?? Math.min(maxLanes, few ? 4 : 2),
    colChunks: want.colChunks ?? (few ? 2 : 4),
  };
  const maxInv = Math.min(gpu.limits.maxComputeInvocationsPerWorkgroup, gpu.limits.maxComputeWorkgroupSizeX);
  const maxBytes = gpu.limits.maxComputeWorkgroupStorageSize;
  for (const key of ['lanes', 'colLanes'] as const) {
    const n = plan[key];
    if (![1, 2, 4, 8].includes(n)) throw new Error(`wkv7 plan: ${key} = ${n}, expected 1, 2, 4 or 8`);
    if (n > 1 && n > sg) throw new Error(`wkv7 plan: ${key} = ${n} needs subgroups of at least ${n} invocations; this adapter's narrowest is ${sg || 'none (no subgroups feature)'}`);
  }
  if (![1, 2, 4].includes(plan.groups)) throw new Error(`wkv7 plan: groups = ${plan.groups}, expected 1, 2 or 4`);
  if (![1, 2, 4].includes(plan.colChunks)) throw new Error(`wkv7 plan: colChunks = ${plan.colChunks}, expected 1, 2 or 4`);
  const scan: ScanShape = { N: d.N, lanes: plan.lanes, groups: plan.groups };
  const sizes: [string, number, number][] = [
    ['row scans', scanWorkgroupSize(scan), scanWorkgroupBytes(scan)],
    ['column pass', colsWorkgroupSize(d.N, plan.colLanes), colsWorkgroupBytes(d.N, plan.colLanes)],
  ];
  for (const [what, inv, bytes] of sizes) {
    if (inv > maxInv) throw new Error(`wkv7 plan ${JSON.stringify(plan)}: the ${what} need ${inv} invocations per workgroup, this adapter allows ${maxInv}`);
    if (bytes > maxBytes) throw new Error(`wkv7 plan ${JSON.stringify(plan)}: the ${what} need ${bytes} bytes of workgroup memory, this adapter allows ${maxBytes}`);
  }
  return plan;
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
  /** Overrides of the automatic plan (tests). */
  plan?: Partial<Wkv7Plan>;
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
  /** Per-token gradients to add into instead of overwriting (the model's other paths to r, k̃ and v wrote theirs first). */
  addInto?: readonly Wkv7TokenGrad[];
  /** Overrides of the automatic plan (tests). */
  plan?: Partial<Wkv7Plan>;
}

export type Wkv7TokenGrad = 'dr' | 'dw' | 'dk' | 'dv' | 'da' | 'db';

function checkDims(op: string, gpu: GpuRuntime, d: Wkv7Dims, storageBuffers: number): void {
  for (const [name, v] of Object.entries({ B: d.B, T: d.T, H: d.H, N: d.N })) {
    if (!Number.isInteger(v) || v < 1) throw new Error(`${op}: ${name} = ${v}, expected a positive integer`);
  }
  if (d.N > MAX_N) throw new Error(`${op}: head size N = ${d.N}, expected at most ${MAX_N}`);
  const maxWg = gpu.limits.maxComputeWorkgroupsPerDimension;
  const chunks = ceilDiv(d.T, WKV7_CHUNK);
  if (d.H > maxWg || d.B > maxWg || chunks > maxWg) {
    throw new Error(`${op}: grid (H=${d.H}, B=${d.B}, ceil(T/16)=${chunks}) exceeds ${maxWg} workgroups per dimension`);
  }
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

/** T, H, the saved states' slots and the dS checkpoints' slots (one per column-pass workgroup). */
const dimUniforms = (d: Wkv7Dims, colChunks: number): ArrayBuffer =>
  uniforms([
    ['u32', d.T],
    ['u32', d.H],
    ['u32', ceilDiv(d.T, WKV7_CHUNK) + 1],
    ['u32', ceilDiv(d.T, WKV7_CHUNK * colChunks)],
  ]);

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
  const plan = wkv7Plan(gpu, x, x.plan);
  const kinds: BindingKind[] = ['uniform', ...Array<BindingKind>(6).fill('read'), 'rw', 'rw', 'rw'];
  if (hasS0) kinds.push('read');
  if (hasST) kinds.push('rw');
  const scan: ScanShape = { N: x.N, lanes: plan.lanes, groups: plan.groups };
  const key = `N${x.N}_l${plan.lanes}_g${plan.groups}${hasS0 ? '_s0' : ''}${hasST ? '_sT' : ''}`;
  const p = gpu.pipeline('wkv7_forward', key, kinds, () => forwardWgsl(scan, hasS0, hasST));
  gpu.dispatch(p, [dimUniforms(x, 1), ...tensors], [x.H, x.B, plan.groups]);
}

/**
 * Gradients of WKV7 with respect to r, w (raw), k, v, a, b (written, or added into those named
 * in addInto) and, when ds0 is given, the initial state.
 * Two dispatches; between them it holds dsa [B,T,H,N] and the
 * dS checkpoints [B,H,ceil(T/(16·colChunks)),N,N] in pooled buffers, released
 * when recorded.
 */
export function wkv7Backward(gpu: GpuRuntime, x: Wkv7BackwardArgs): void {
  const op = 'wkv7Backward';
  const accumulate = x.accumulate ?? false;
  // The column pass binds 16 storage buffers (11 inputs, 5 gradients).
  checkDims(op, gpu, x, 16);
  for (const t of [x.r, x.w, x.k, x.v, x.a, x.b, x.dy, x.dr, x.dw, x.dk, x.dv, x.da, x.db]) {
    checkTensor(op, t, tokenShape(x), '[B,T,H,N]');
  }
  if (x.ds0) checkTensor(op, x.ds0, stateShape(x), '[B,H,N,N]');
  checkSaved(op, x, x.saved);
  const plan = wkv7Plan(gpu, x, x.plan);
  const scan: ScanShape = { N: x.N, lanes: plan.lanes, groups: plan.groups };
  const colGroups = ceilDiv(x.T, WKV7_CHUNK * plan.colChunks);
  const dsa = gpu.tensor(tokenShape(x), 'f32', 'wkv7.dsa');
  const dSck = gpu.tensor([x.B, x.H, colGroups, x.N, x.N], 'f32', 'wkv7.dSck');
  const u = dimUniforms(x, plan.colChunks);

  const kinds1: BindingKind[] = ['uniform', ...Array<BindingKind>(6).fill('read'), ...Array<BindingKind>(x.ds0 ? 4 : 3).fill('rw')];
  const add = new Set<string>(x.addInto ?? []);
  // Pipeline key suffixes naming the gradients a kernel adds into.
  const adds = (gs: readonly string[]): string => gs.filter((g) => add.has(g)).map((g) => `_add_${g}`).join('');
  const key1 = `N${x.N}_l${plan.lanes}_g${plan.groups}_c${plan.colChunks}${x.ds0 ? (accumulate ? '_ds0acc' : '_ds0') : ''}${adds(['dv'])}`;
  const p1 = gpu.pipeline('wkv7_backward_state', key1, kinds1, () => stateBackwardWgsl(scan, x.ds0 !== undefined, accumulate, plan.colChunks, add.has('dv')));
  gpu.dispatch(p1, [u, x.r, x.w, x.k, x.a, x.b, x.dy, x.dv, dsa, dSck, ...(x.ds0 ? [x.ds0] : [])], [x.H, x.B, plan.groups]);

  const kinds2: BindingKind[] = ['uniform', ...Array<BindingKind>(11).fill('read'), ...Array<BindingKind>(5).fill('rw')];
  const key2 = `N${x.N}_l${plan.colLanes}_c${plan.colChunks}${adds(['dr', 'dw', 'dk', 'db', 'da'])}`;
  const p2 = gpu.pipeline('wkv7_backward_cols', key2, kinds2, () => columnBackwardWgsl(x.N, plan.colLanes, plan.colChunks, add));
  const args2 = [u, x.r, x.w, x.k, x.v, x.a, x.b, x.dy, x.saved.states, x.saved.sa, dsa, dSck, x.dr, x.dw, x.dk, x.db, x.da];
  gpu.dispatch(p2, args2, [x.H, x.B, colGroups]);
  // Recorded work keeps its buffers; later users of the pooled memory are ordered after it.
  gpu.free(dsa);
  gpu.free(dSck);
}
