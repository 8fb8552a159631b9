/**
 * Matrix products C[M,N] = alpha·op(A)·op(B) (+ C) for f32 activations against
 * frozen weights (bf16, or f16 where tensor cores read them) or f32 LoRA factors: one
 * workgroup-tiled f32 kernel, specialised per transpose combination and B dtype; large
 * products go to tensor cores (matmul_tc.ts, f16 operands) where the adapter has them,
 * unless the mode says f32.
 */
import type { GpuRuntime } from '../gpu/device.js';
import { describe, type DType, type Tensor } from '../gpu/tensor.js';
import { grid1d, uniforms, wgslBf16Reader, wgslF16Reader, WGSL_LINEAR_WG } from './common.js';
import { matmulTcF32, matmulTcWeight, tcCanAppend, tcPadding, tcSupport, tcTiling, type WeightAppend } from './matmul_tc.js';

// Workgroups of 16x16 threads compute a 128x64 output tile (each thread 8x4 outputs) or,
// for outputs wider than tall, 64x128 (4x8); K is staged 16 at a time, in at most
// 12.5 KiB of workgroup memory (lavapipe allows 16 KiB).
const BK = 16;
const TX = 16;
const TY = 16;
const THREADS = TX * TY;

interface F32Tile {
  bm: number;
  bn: number;
}

const TALL: F32Tile = { bm: 128, bn: 64 };
const WIDE: F32Tile = { bm: 64, bn: 128 };

export interface MatmulOptions {
  /** Add into C instead of overwriting it (gradient accumulation). */
  accumulate?: boolean;
  /** Scale of the product; C's old value (when accumulating) is not scaled. */
  alpha?: number;
  /** Slices of K whose partial products a second pass sums (default: chosen from the shape). */
  splitK?: number;
}

/**
 * Products with few output tiles and a long K (the LoRA weight gradients: 64×2048 outputs
 * summed over every token; x·Aᵀ: 8192×64 outputs over 2048 inputs; the head's dx: a
 * chunk's rows × n_embd summed over the 65536 logits) leave most of a large GPU idle (an
 * H200 has 132 SMs), so K is cut into slices whose partial products are summed
 * afterwards. Aim: about SPLIT_TARGET workgroups, slices of at least SPLIT_MIN_K (f32) or
 * TC_SPLIT_MIN_K (tensor cores, whose workgroups own 8× the outputs), partials within
 * SPLIT_MAX_BYTES. Short slices pay at micro_bsz 1, where the LoRA products have 6–12
 * tiles and K of 768–1024: 256 workgroups and slices of 128 ran a 0.1B step 12–14%
 * faster on an H200 than 512 and 512, and the 1.5B step at micro_bsz 8 as fast.
 * Only below SPLIT_MAX_TILES: at 1.5B and micro_bsz 8 the LoRA products
 * with 64 output columns or rows (x·Aᵀ, dy·B, dA, dB of the FFN) have 64 tiles, half the
 * H200's SMs. It stays under the float64 model check's 192-tile FFN products, whose split
 * (more accurate each, by a direct check) moved that check's f32 gradient error from 2.8e-4
 * to 1.1e-3 on the H200, which bench/RESULTS.md leaves open.
 */
const SPLIT_TARGET = 256;
const SPLIT_MIN_K = 128;
const TC_SPLIT_MIN_K = 1024;
const SPLIT_MAX_TILES = 128;
const SPLIT_MAX_BYTES = 32 * 2 ** 20;

function chooseSplits(tiles: number, k: number, mn: number, minK: number): number {
  if (tiles >= SPLIT_MAX_TILES) return 1;
  return Math.max(1, Math.min(Math.ceil(SPLIT_TARGET / tiles), Math.floor(k / minK), Math.floor(SPLIT_MAX_BYTES / (4 * mn))));
}

/**
 * 'auto': tensor cores (f16 operands, f32 accumulation) for products with a frozen
 * weight of at least TC_MIN_MACS multiply-adds when the adapter has them, the f32
 * kernel otherwise; 'f32': always the f32 kernel; 'tc': always tensor cores.
 * LoRA products (matmulF32) stay f32 in 'auto' but for the down-projection x·Aᵀ
 * (LORA_DOWN_N): their weight gradients sum over every token with heavy cancellation,
 * where f16 operands cost accuracy, and on an H200 tensor cores gained little or lost on
 * the others (bench/RESULTS.md).
 */
export type MatmulMode = 'auto' | 'f32' | 'tc';

/**
 * Below this many multiply-adds the f16 copies cost more than tensor cores save. (Narrow
 * products, N or K of 64–128, ran as fast on the new f32 kernel, but moving them there
 * moved the float64 gradient check at random weights from 0.28 to 1.6: left open in
 * bench/RESULTS.md, so they stay on tensor cores.)
 */
export const TC_MIN_MACS = 2 ** 24;

const modes = new WeakMap<GpuRuntime, MatmulMode>();

/** The mode of `gpu`: as set, else the environment's RWKV_MATMUL, else 'auto'. */
export function matmulMode(gpu: GpuRuntime): MatmulMode {
  const set = modes.get(gpu);
  if (set) return set;
  const env = process.env.RWKV_MATMUL;
  if (!env) return 'auto';
  if (env !== 'auto' && env !== 'f32' && env !== 'tc') throw new Error(`RWKV_MATMUL=${env}: expected auto, f32 or tc`);
  return env;
}

export function setMatmulMode(gpu: GpuRuntime, mode: MatmulMode): void {
  if (mode === 'tc' && !tcSupport(gpu)) throw new Error('matmul mode tc: this adapter has no f16 subgroup-matrix (tensor-core) configuration');
  modes.set(gpu, mode);
}

/**
 * How frozen weight matrices should be stored on this runtime: f16 where products will run
 * on tensor cores (their operands' type, read as stored, with no conversion in the shader;
 * on the H200 that left the 1.5B products within 2% of bf16, bench/RESULTS.md), bf16
 * otherwise (exact, for the f32 kernel).
 */
export function preferredWeightDtype(gpu: GpuRuntime): WeightDtype {
  return matmulMode(gpu) !== 'f32' && tcSupport(gpu) ? 'f16' : 'bf16';
}

/**
 * f32 products A·Bᵀ at most this wide (LoRA's down-projection x·Aᵀ, N = r) take tensor cores
 * in 'auto' too: an activation product, which f16 operands with row scales round no worse
 * than the frozen ones; on the H200 (narrow tiling, copies included) 0.098 against 0.118 ms
 * at 8192×64×2048 and 0.297 against 0.369 at 8192×64×8192 (bench/RESULTS.md).
 */
const LORA_DOWN_N = 64;

function useTensorCores(gpu: GpuRuntime, spec: Spec, macs: number, n: number): boolean {
  const mode = matmulMode(gpu);
  if (mode === 'f32') return false;
  if (mode === 'tc') {
    if (!tcSupport(gpu)) throw new Error('matmul mode tc: this adapter has no f16 subgroup-matrix (tensor-core) configuration');
    return true;
  }
  const down = spec.bDtype === 'f32' && !spec.transA && spec.transB && n <= LORA_DOWN_N;
  return (spec.bDtype !== 'f32' || down) && macs >= TC_MIN_MACS && tcSupport(gpu) !== undefined;
}

interface Spec {
  transA: boolean;
  transB: boolean;
  bDtype: 'f32' | WeightDtype;
}

/** How frozen weight matrices are stored on the GPU. */
export type WeightDtype = 'bf16' | 'f16';

/** split: write this K slice's partial product to `c` (the partials, [splits, M, N]) unscaled. */
function matmulWgsl({ transA, transB, bDtype }: Spec, split: boolean, t: F32Tile): string {
  const { bm: BM, bn: BN } = t;
  const RM = BM / TY;
  const RN = BN / TX;
  const SA = BM + 4;
  const SB = BN + 4;
  // Each thread loads elements li + r·THREADS of a tile; the faster-varying tile index
  // follows the stored layout so neighbouring threads read neighbouring addresses. The
  // staged rows are padded by 4 so that transposing stores hit different banks.
  const aTile = transA ? `let mm = e % ${BM}u; let kk = e / ${BM}u;` : `let kk = e % ${BK}u; let mm = e / ${BK}u;`;
  const bTile = transB ? `let kk = e % ${BK}u; let nn = e / ${BK}u;` : `let nn = e % ${BN}u; let kk = e / ${BN}u;`;
  const aIndex = transA ? 'k * p.m + m' : 'm * p.k + k';
  const bIndex = transB ? 'n * p.k + k' : 'k * p.n + n';
  const bRead =
    bDtype === 'bf16'
      ? wgslBf16Reader('readB', 'b')
      : bDtype === 'f16'
        ? wgslF16Reader('readB', 'b')
        : /* wgsl */ `
fn readB(i: u32) -> f32 { return b[i]; }
`;
  // The next K step's tile is fetched into registers (RA and RB elements per thread) while
  // this one is multiplied: with the few workgroups per SM of the split LoRA products
  // nothing else hid the loads' latency (on the H200 they took 54.2 ms of a 1.5B step
  // instead of 65.7: bench/RESULTS.md, tenth pass).
  const RA = (BM * BK) / THREADS;
  const RB = (BN * BK) / THREADS;
  const each = (n: number, tile: string, f: (r: number) => string): string =>
    Array.from({ length: n }, (_, r) => `{ let e = li + ${r * THREADS}u; ${tile} ${f(r)} }`).join('\n    ');
  const fetch = (k0: string): string =>
    [each(RA, aTile, (r) => `ra${r} = loadA(m0 + mm, ${k0} + kk, kEnd);`), each(RB, bTile, (r) => `rb${r} = loadB(${k0} + kk, n0 + nn, kEnd);`)].join('\n    ');
  const stage = [each(RA, aTile, (r) => `sa[kk * ${SA / 4}u + mm / 4u][mm % 4u] = ra${r};`), each(RB, bTile, (r) => `sb[kk * ${SB / 4}u + nn / 4u][nn % 4u] = rb${r};`)].join('\n    ');
  // Column vec4s x + 16q rather than x·RN/4 + q: in the wide tiles the latter strode a
  // warp's B reads over 2-way bank conflicts, which made the LoRA dA products take 22.6 ms
  // of a 1.5B step on the H200 instead of 15.5 (bench/RESULTS.md, eleventh pass).
  const av = (q: number): string => `a${q >> 2}.${'xyzw'[q & 3]}`;
  const body: string[] = [];
  for (let q = 0; q < RM / 4; q++) body.push(`let a${q} = sa[kk * ${SA / 4}u + lid.y * ${RM / 4}u + ${q}u];`);
  for (let q = 0; q < RN / 4; q++) body.push(`let b${q} = sb[kk * ${SB / 4}u + ${q * TX}u + lid.x];`);
  for (let i = 0; i < RM; i++) for (let q = 0; q < RN / 4; q++) body.push(`acc${i}_${q} = fma(vec4f(${av(i)}), b${q}, acc${i}_${q});`);
  const accs = Array.from({ length: RM }, (_, i) => Array.from({ length: RN / 4 }, (_, q) => `acc${i}_${q}`)).flat();
  const store = (i: number, q: number): string => `{
    let m = m0 + lid.y * ${RM}u + ${i}u;
    for (var j = 0u; j < 4u; j++) {
      let n = n0 + (${q * TX}u + lid.x) * 4u + j;
      if (m < p.m && n < p.n) {
        let o = m * p.n + n;
${
  split
    ? `        c[s * p.m * p.n + o] = acc${i}_${q}[j];`
    : `        var v = p.alpha * acc${i}_${q}[j];
        if (p.accumulate != 0u) { v += c[o]; }
        c[o] = v;`
}
      }
    }
  }`;
  return /* wgsl */ `
struct P { m: u32, n: u32, k: u32, tilesN: u32, tiles: u32, alpha: f32, accumulate: u32, kChunk: u32, splits: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<${bDtype === 'f32' ? 'f32' : 'u32'}>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;
var<workgroup> sa: array<vec4f, ${(BK * SA) / 4}>;
var<workgroup> sb: array<vec4f, ${(BK * SB) / 4}>;
${bRead}
fn loadA(m: u32, k: u32, kEnd: u32) -> f32 {
  if (m >= p.m || k >= kEnd) { return 0.0; }
  return a[${aIndex}];
}

fn loadB(k: u32, n: u32, kEnd: u32) -> f32 {
  if (k >= kEnd || n >= p.n) { return 0.0; }
  return readB(${bIndex});
}

@compute @workgroup_size(${TX}, ${TY})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_id) lid: vec3u, @builtin(local_invocation_index) li: u32) {
  let wg = ${WGSL_LINEAR_WG};
  if (wg >= p.tiles * p.splits) { return; }
  // Workgroup wg computes tile t over K slice s.
  let s = wg / p.tiles;
  let t = wg % p.tiles;
  let kBeg = s * p.kChunk;
  let kEnd = min(p.k, kBeg + p.kChunk);
  let m0 = (t / p.tilesN) * ${BM}u;
  let n0 = (t % p.tilesN) * ${BN}u;
  // Thread (x, y) owns ${RM} consecutive rows from y·${RM} and the ${RN / 4} column vec4s x, x + ${TX}, …:
  // its operands are whole vec4s of the staged tiles, and a warp's B reads are contiguous.
  ${accs.map((x) => `var ${x} = vec4f(0.0);`).join(' ')}
  ${[...Array.from({ length: RA }, (_, r) => `var ra${r}: f32;`), ...Array.from({ length: RB }, (_, r) => `var rb${r}: f32;`)].join(' ')}
  if (kBeg < kEnd) {
    ${fetch('kBeg')}
  }
  for (var k0 = kBeg; k0 < kEnd; k0 += ${BK}u) {
    ${stage}
    workgroupBarrier();
    if (k0 + ${BK}u < kEnd) {
      ${fetch(`k0 + ${BK}u`)}
    }
    for (var kk = 0u; kk < ${BK}u; kk++) {
      ${body.join('\n      ')}
    }
    workgroupBarrier();
  }
  ${Array.from({ length: RM }, (_, i) => Array.from({ length: RN / 4 }, (_, q) => store(i, q))).flat().join('\n  ')}
}`;
}

// C = alpha·Σ_s partials[s] (+ C), one invocation per element.
const SPLIT_SUM_WGSL = /* wgsl */ `
struct P { mn: u32, splits: u32, alpha: f32, accumulate: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> part: array<f32>;
@group(0) @binding(2) var<storage, read_write> c: array<f32>;
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) li: u32) {
  let i = ${WGSL_LINEAR_WG} * 256u + li;
  if (i >= p.mn) { return; }
  var v = 0.0;
  for (var s = 0u; s < p.splits; s++) { v += part[s * p.mn + i]; }
  v *= p.alpha;
  if (p.accumulate != 0u) { v += c[i]; }
  c[i] = v;
}`;

function shape2(op: string, t: Tensor, dtype: DType): [number, number] {
  if (t.dtype !== dtype) throw new Error(`${op}: ${describe(t)} has dtype ${t.dtype}, expected ${dtype}`);
  if (t.shape.length !== 2) throw new Error(`${op}: ${describe(t)} has rank ${t.shape.length}, expected a 2-D matrix`);
  if (t.shape[0] < 1 || t.shape[1] < 1) throw new Error(`${op}: ${describe(t)} is empty, expected every dimension >= 1`);
  return [t.shape[0], t.shape[1]];
}

function overlaps(x: Tensor, y: Tensor): boolean {
  return x.buffer === y.buffer && x.offset < y.offset + y.byteLength && y.offset < x.offset + x.byteLength;
}

/** Checks shapes, then records C = alpha·op(A)·op(B) (+ C) (+ alpha·s·A2·op(F) with `append`). */
function matmul(gpu: GpuRuntime, op: string, a: Tensor, b: Tensor, c: Tensor, spec: Spec, opts: MatmulOptions, append?: WeightAppend): void {
  const [a0, a1] = shape2(op, a, 'f32');
  const [b0, b1] = shape2(op, b, spec.bDtype);
  const [c0, c1] = shape2(op, c, 'f32');
  const [m, k] = spec.transA ? [a1, a0] : [a0, a1];
  const [kb, n] = spec.transB ? [b1, b0] : [b0, b1];
  const aDesc = spec.transA ? `${describe(a)} (read as its transpose [${m},${k}])` : describe(a);
  const bDesc = spec.transB ? `${describe(b)} (read as its transpose [${kb},${n}])` : describe(b);
  if (kb !== k) throw new Error(`${op}: inner dimensions differ: ${aDesc} has K=${k}, but ${bDesc} has K=${kb}`);
  if (c0 !== m || c1 !== n) throw new Error(`${op}: ${describe(c)} should be [${m},${n}] for ${aDesc} times ${bDesc}`);
  let k2 = 0;
  if (append) {
    const [h0, h1] = shape2(`${op} (appended)`, append.a, 'f32');
    const [f0, f1] = shape2(`${op} (appended)`, append.w, 'f32');
    k2 = h1;
    const [fk, fn] = spec.transB ? [f1, f0] : [f0, f1];
    if (h0 !== m || fk !== k2 || fn !== n) {
      throw new Error(`${op}: appended ${describe(append.a)} and ${describe(append.w)} should be [${m},K2] and ${spec.transB ? `[${n},K2]` : `[K2,${n}]`} with one K2`);
    }
  }
  for (const src of [a, b, ...(append ? [append.a, append.w] : [])]) {
    if (overlaps(c, src)) throw new Error(`${op}: output ${describe(c)} overlaps input ${describe(src)} in memory`);
  }
  const tc = useTensorCores(gpu, spec, m * n * k, n);
  const alpha = opts.alpha ?? 1;
  const accumulate = opts.accumulate ?? false;
  // Appended to the tensor-core product where it can be, else a product of its own after it.
  const fused = append && tc && spec.bDtype !== 'f32' && !spec.transA && tcCanAppend(gpu, n, k, k2, spec.transB, tcTiling(gpu, n)) ? append : undefined;
  if (append && !fused) {
    matmul(gpu, op, a, b, c, spec, opts);
    matmulF32(gpu, append.a, append.w, c, { transB: spec.transB, accumulate: true, alpha: alpha * append.scale });
    return;
  }
  const tile = n > m ? WIDE : TALL;
  const tiling = tc ? tcTiling(gpu, n) : undefined;
  const pad = tiling && tcPadding(gpu, tiling);
  const [bm, bn, bk] = pad ? [pad.rowsA, pad.rowsB, pad.k] : [tile.bm, tile.bn, BK];
  const tilesN = Math.ceil(n / bn);
  const tiles = Math.ceil(m / bm) * tilesN;
  const wanted = opts.splitK ?? chooseSplits(tiles, k, m * n, tc ? TC_SPLIT_MIN_K : SPLIT_MIN_K);
  if (!Number.isInteger(wanted) || wanted < 1) throw new Error(`${op}: splitK = ${wanted}, expected a positive integer`);
  // K (both segments) padded to the staging step; every slice but the last a whole number of steps.
  const kp = Math.ceil((k + k2) / bk) * bk;
  const kChunk = Math.ceil(kp / wanted / bk) * bk;
  const splits = Math.ceil(kp / kChunk);
  // Records out = alpha·op(A)·op(B) (+ out); with split-K, out is the partials [splits, M, N], unscaled.
  const record = (out: Tensor, split: boolean): void => {
    if (tc) {
      const prod = { m, n, k, kChunk, alpha: split ? 1 : alpha, accumulate: split ? false : accumulate, transA: spec.transA };
      if (spec.bDtype !== 'f32') matmulTcWeight(gpu, a, b, out, { ...prod, transW: spec.transB, append: fused }, tiling);
      else matmulTcF32(gpu, a, b, out, { ...prod, transB: spec.transB }, tiling);
      return;
    }
    const key = `${spec.transA ? 'T' : 'N'}${spec.transB ? 'T' : 'N'}_${spec.bDtype}_${tile.bm}x${tile.bn}${split ? '_split' : ''}`;
    const p = gpu.pipeline('matmul', key, ['uniform', 'read', 'read', 'rw'], () => matmulWgsl(spec, split, tile));
    const u = uniforms([
      ['u32', m],
      ['u32', n],
      ['u32', k],
      ['u32', tilesN],
      ['u32', tiles],
      ['f32', alpha],
      ['u32', accumulate ? 1 : 0],
      ['u32', kChunk],
      ['u32', splits],
    ]);
    gpu.dispatch(p, [u, a, b, out], grid1d(tiles * splits));
  };
  if (splits === 1) {
    record(c, false);
    return;
  }
  const part = gpu.tensor([splits, m, n], 'f32', `${op} split-K partials`);
  record(part, true);
  const sum = gpu.pipeline('matmul_split_sum', '', ['uniform', 'read', 'rw'], () => SPLIT_SUM_WGSL);
  const su = uniforms([
    ['u32', m * n],
    ['u32', splits],
    ['f32', alpha],
    ['u32', accumulate ? 1 : 0],
  ]);
  gpu.dispatch(sum, [su, part, c], grid1d(Math.ceil((m * n) / 256)));
  gpu.free(part);
}

/**
 * C[M,N] = alpha·A[M,K]·op(W) (+ C) with W a frozen bf16 or f16 weight, read in place.
 * transW: W is [N,K] (a PyTorch Linear weight: y = x·Wᵀ); otherwise W is [K,N].
 * append: plus alpha·s·A2·op(F), on tensor cores within the same product (K extended by
 * F's, A2 sharing A's f16 row scales: bench/RESULTS.md), else as an f32 product after it.
 */
export function matmulWeight(gpu: GpuRuntime, a: Tensor, w: Tensor, c: Tensor, opts: MatmulOptions & { transW: boolean; append?: WeightAppend }): void {
  const op = 'matmulWeight';
  if (w.dtype !== 'bf16' && w.dtype !== 'f16') throw new Error(`${op}: ${describe(w)} has dtype ${w.dtype}, expected bf16 or f16`);
  matmul(gpu, op, a, w, c, { transA: false, transB: opts.transW, bDtype: w.dtype }, opts, opts.append);
}

/**
 * C[M,N] = alpha·op(A)·op(B) (+ C), all f32. transA: A is [K,M]; transB: B is [N,K].
 */
export function matmulF32(
  gpu: GpuRuntime,
  a: Tensor,
  b: Tensor,
  c: Tensor,
  opts: MatmulOptions & { transA?: boolean; transB?: boolean } = {},
): void {
  matmul(gpu, 'matmulF32', a, b, c, { transA: opts.transA ?? false, transB: opts.transB ?? false, bDtype: 'f32' }, opts);
}
