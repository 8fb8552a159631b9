/**
 * Matrix products on tensor cores through Dawn's chromium-experimental-subgroup-matrix
 * (Vulkan cooperative matrices): f16 operands, f32 accumulation.
 *
 * C[M,N] = alpha·2^−(ea[m]+eb[n])·A16·op(B) (+ C), where A16 [Mp, Kp] is op(A)'s scaled
 * f16 copy (f16_rows.ts) and B is either a frozen weight, read in place in either layout
 * (f16 as stored, bf16 rounded to f16 in the shader), or op(B)ᵀ's scaled f16 copy [Np, Kp].
 * Each workgroup stages BM×BK of A and BN×BK of B through workgroup memory (the next
 * tile is fetched into registers while this one is multiplied) and its subgroups each
 * own TM×TN matrix tiles of the BM×BN output. The tiling's option `double` keeps two
 * staging buffers, so one barrier per K step suffices (the next step's stores go to the
 * other buffer). Matrix load offsets come from subgroup_id, which is uniform across each
 * subgroup though WGSL's analysis cannot prove it, hence the diagnostic directive.
 */
import type { GpuRuntime } from '../gpu/device.js';
import type { BindingKind } from '../gpu/pipelines.js';
import type { Tensor } from '../gpu/tensor.js';
import { narrowF16 } from './elementwise.js';
import { f16Rows, type F16Append, type F16Layout } from './f16_rows.js';
import { ceilDiv, grid1d, uniforms, wgslBf16Reader, wgslF16Reader, WGSL_LINEAR_WG, WGSL_POW2 } from './common.js';

/** A subgroup-matrix configuration: left M×K times right K×N. */
export interface MatrixShape {
  M: number;
  N: number;
  K: number;
}

/** Workgroup tiling: WM×WN subgroups, each owning TM×TN matrix tiles; K staged BK at a time. */
export interface TcTiling {
  wm: number;
  wn: number;
  tm: number;
  tn: number;
  bk: number;
  /** Two staging buffers, one barrier per K step. */
  double?: boolean;
}

/** WMxWNxTMxTNxBK with an optional suffix d (double), e.g. 2x2x4x4x32d. */
export function parseTcTiling(s: string): TcTiling {
  const m = /^(\d+)x(\d+)x(\d+)x(\d+)x(\d+)(d?)$/.exec(s);
  const nums = m ? m.slice(1, 6).map(Number) : [];
  if (!m || !nums.every((v) => v > 0)) throw new Error(`tensor-core tiling ${s}: expected WMxWNxTMxTNxBK with an optional suffix d (double-buffered), e.g. 2x2x4x4x32d`);
  const [wm, wn, tm, tn, bk] = nums;
  return { wm, wn, tm, tn, bk, double: m[6] === 'd' };
}

export function tcTilingName(t: TcTiling): string {
  return `${t.wm}x${t.wn}x${t.tm}x${t.tn}x${t.bk}${t.double ? 'd' : ''}`;
}

// 4×4 subgroups of 2×4 tiles (128×256 per workgroup, 16 warps of 125 registers): on the
// H200 (bench/RESULTS.md, seventeenth pass) faster than the 2×4 subgroups of 4×4 tiles
// (8 warps of 234 registers) on five of the six dominant 1.5B products (0.98× on the
// sixth), and training steps 2–5% faster at every layout.
export const TC_TILING: TcTiling = { wm: 4, wn: 4, tm: 2, tn: 4, bk: 32 };

// 8×1 subgroups of 1×4 tiles (128×64) for outputs at most NARROW_N wide, where 256-wide
// tiles would be mostly empty: on the H200 at M 8192 (bench/RESULTS.md) 0.088 against
// 0.122 ms for 8192×64×2048, 0.105 against 0.124 for 8192×96×2048, the f16 copies included.
export const NARROW_TC_TILING: TcTiling = { wm: 8, wn: 1, tm: 1, tn: 4, bk: 32 };
export const NARROW_N = 128;

const chosenTiling = new WeakMap<GpuRuntime, TcTiling>();

/** The tiling every later product on this runtime uses (benchmarks and tests compare them), instead of tcTiling's choice. */
export function setTcTiling(gpu: GpuRuntime, t: TcTiling | undefined): void {
  if (t) chosenTiling.set(gpu, t);
  else chosenTiling.delete(gpu);
}

// The same 128×256 tile in 2×4 subgroups of 4×4 tiles (256 invocations, 8 KiB less for the
// epilogue), where a workgroup may not hold TC_TILING's 512 invocations or 46 KiB.
export const SMALL_TC_TILING: TcTiling = { wm: 2, wn: 4, tm: 4, tn: 4, bk: 32 };

/** Whether this device's workgroups can hold tiling t: its invocations, and its staging with one epilogue tile per subgroup for either B layout. */
function tilingFits(gpu: GpuRuntime, t: TcTiling): boolean {
  const s = tcSupport(gpu);
  if (!s) return false;
  const lim = gpu.limits;
  const bytes = Math.max(...[false, true].map((kn) => stagingF16(t, s, kn).bytes)) + 4 * epilogueF32(t, s, 1);
  return blocks(t, s).threads <= Math.min(lim.maxComputeInvocationsPerWorkgroup, lim.maxComputeWorkgroupSizeX) && bytes <= lim.maxComputeWorkgroupStorageSize;
}

/** The tiling of a product with N output columns: as set, else NARROW_TC_TILING up to NARROW_N, else TC_TILING where it fits, else SMALL_TC_TILING. */
export function tcTiling(gpu: GpuRuntime, n = Infinity): TcTiling {
  return chosenTiling.get(gpu) ?? (n <= NARROW_N ? NARROW_TC_TILING : tilingFits(gpu, TC_TILING) ? TC_TILING : SMALL_TC_TILING);
}

/**
 * How B is stored: 'nk' a weight [N, K] (a Linear's W for x·Wᵀ), 'kn' a weight [K, N],
 * 'f16' a scaled f16 copy [Np, Kp] of op(B)ᵀ with exponents eb. '-s' variants read the
 * weight element by element, for K (nk) or N (kn) not a multiple of 8.
 */
type BKind = 'nk' | 'kn' | 'nk-s' | 'kn-s' | 'f16';
/** A weight's element type (bf16 is rounded to f16 as it is staged); 'f16' for the copies. */
type WDtype = 'bf16' | 'f16';

export interface TcSupport {
  shape: MatrixShape;
  subgroupSize: number;
}

const support = new WeakMap<GpuRuntime, TcSupport | null>();

/**
 * The f16→f32 matrix configuration this adapter offers (16×16×16 preferred), or
 * undefined where tensor cores are not reachable (no subgroup matrix, no shader-f16,
 * or a subgroup size that varies).
 */
export function tcSupport(gpu: GpuRuntime): TcSupport | undefined {
  let s = support.get(gpu);
  if (s === undefined) {
    s = null;
    const info = gpu.adapter.info as GPUAdapterInfo & { subgroupMinSize?: number; subgroupMaxSize?: number };
    if (gpu.hasSubgroupMatrix && gpu.hasF16 && gpu.hasSubgroups && info.subgroupMinSize === info.subgroupMaxSize && info.subgroupMaxSize) {
      const configs = gpu.report().subgroupMatrixConfigs.filter((c) => c.componentType === 'f16' && c.resultComponentType === 'f32');
      const best = configs.find((c) => c.M === 16 && c.N === 16 && c.K === 16) ?? configs.sort((a, b) => b.M * b.N - a.M * a.N)[0];
      if (best) s = { shape: { M: best.M, N: best.N, K: best.K }, subgroupSize: info.subgroupMaxSize };
    }
    support.set(gpu, s);
  }
  return s ?? undefined;
}

interface Blocks {
  bm: number;
  bn: number;
  threads: number;
}

function blocks(t: TcTiling, s: TcSupport): Blocks {
  return { bm: t.wm * t.tm * s.shape.M, bn: t.wn * t.tn * s.shape.N, threads: t.wm * t.wn * s.subgroupSize };
}

/**
 * The staged tiles in f16: A [BM, BK] and B ([BN, BK], or [BK, BN] when kn) in rows padded
 * by 8 f16 (conflict-free fragment loads), their row strides and the bytes of all buffers.
 */
function stagingF16(t: TcTiling, s: TcSupport, kn: boolean): { lda: number; ldb: number; sizeA: number; sizeB: number; bytes: number } {
  const { bm, bn } = blocks(t, s);
  const [lda, ldb] = [t.bk + 8, kn ? bn + 8 : t.bk + 8];
  const [sizeA, sizeB] = [bm * lda, kn ? t.bk * ldb : bn * ldb];
  return { lda, ldb, sizeA, sizeB, bytes: (t.double ? 2 : 1) * (sizeA + sizeB) * 2 };
}

/** The epilogue's staged results, in f32: `tiles` result matrices per subgroup. */
const epilogueF32 = (t: TcTiling, s: TcSupport, tiles: number): number => t.wm * t.wn * tiles * s.shape.M * s.shape.N;

/** Padded rows and K of the f16 copies a product with this tiling reads. */
export function tcPadding(gpu: GpuRuntime, t: TcTiling = tcTiling(gpu)): { rowsA: number; rowsB: number; k: number } {
  const s = tcSupport(gpu);
  if (!s) throw new Error('tensor-core matmul: this adapter has no f16 subgroup-matrix configuration');
  const b = blocks(t, s);
  return { rowsA: b.bm, rowsB: b.bn, k: t.bk };
}

/**
 * WGSL storing the 8 f16 held by `v` (a vec4u of 4 words, `word` widening one to vec2<f16>)
 * as 16-byte chunk `unit` of a tile staged at `arr`[`base`..] in rows of `perRow` chunks
 * padded to `ld` f16. Chunks start on 16 bytes, so a warp's 32 chunks fall in 8 groups of 4
 * banks: storing word k of each at once would be a 4-way bank conflict per f16 store (on
 * the H200 those stores halved the product's speed). Each invocation instead starts at
 * word g = (row + chunk/8) % 4, which differs among the invocations sharing a bank group in
 * every tiling in use (stagingBankConflicts checks them). `rotate` false stores in word
 * order, for bench/tc_ceiling.ts to time against.
 */
export function stagingStore(arr: string, base: string, ld: number, unit: string, perRow: number, v: string, word: string, rotate = true): string {
  const [row, chunk] = [`${unit} / ${perRow}u`, `${unit} % ${perRow}u`];
  const g = rotate ? `((${row}) + (${chunk}) / 8u) & 3u` : '0u'; // as stagingRotation
  // r = v rotated left by g words, a bit of g at a time (8 selects): a dynamic index into v
  // went through local memory and made the products 35% slower.
  const steps = [0, 1, 2, 3].map((k) => `{ let h = ${word}(r.${'xyzw'[k]}); let q = o + 2u * ((g + ${k}u) & 3u); ${arr}[q] = h.x; ${arr}[q + 1u] = h.y; }`);
  return `{ let o = ${base} + (${row}) * ${ld}u + (${chunk}) * 8u; let v = ${v}; let g = ${g};
      let r1 = select(v, v.yzwx, (g & 1u) != 0u); let r = select(r1, r1.zwxy, (g & 2u) != 0u); ${steps.join(' ')} }`;
}

/** The word stagingStore starts a chunk at: WGSL's g. */
const stagingRotation = (row: number, chunk: number): number => (row + Math.floor(chunk / 8)) % 4;

/**
 * The worst bank conflict of one warp's f16 stores in stagingStore, staging rows of
 * `chunks` 16-byte chunks (unit u: row u / chunks, chunk u % chunks) padded to `ld` f16,
 * `threads` invocations storing `units` chunks each: 1 means none.
 */
export function stagingBankConflicts(chunks: number, ld: number, threads: number, units: number): number {
  let worst = 1;
  for (let warp = 0; warp < threads / 32; warp++) {
    for (let j = 0; j < units; j++) {
      for (let k = 0; k < 4; k++) {
        const words = new Map<number, Set<number>>();
        for (let lane = 0; lane < 32; lane++) {
          const u = warp * 32 + lane + j * threads;
          const [row, chunk] = [Math.floor(u / chunks), u % chunks];
          const word = ((stagingRotation(row, chunk) + k) % 4) + (row * ld + chunk * 8) / 2;
          const bank = word % 32;
          words.set(bank, (words.get(bank) ?? new Set()).add(word));
        }
        for (const w of words.values()) worst = Math.max(worst, w.size);
      }
    }
  }
  return worst;
}

/** A word of two f16 as they are. */
const F16X2 = 'bitcast<vec2<f16>>';

/**
 * full: the weight spans whole tiles (N a multiple of BN, K of BK), so no load needs a bound.
 * cat: K goes on past the weight's p.k (a multiple of BK) into a second f16 matrix f2 of
 * p.k2 rows (kn) or columns (nk) in the weight's layout, read with bounds.
 */
function tcWgsl(t: TcTiling, s: TcSupport, bKind: BKind, wDtype: WDtype, full: boolean, cat: boolean, cVec: boolean, maxWorkgroupBytes: number): string {
  const { M: SM, N: SN, K: SK } = s.shape;
  const { bm: BM, bn: BN, threads: TH } = blocks(t, s);
  const BK = t.bk;
  const kn = bKind === 'kn' || bKind === 'kn-s';
  const { lda: LDA, ldb: LDB, sizeA, sizeB, bytes: stagingBytes } = stagingF16(t, s, kn);
  const vecB = bKind === 'nk' || bKind === 'kn' || bKind === 'f16';
  const bufs = t.double ? 2 : 1;
  const aUnits = (BM * BK) / 8 / TH;
  const bUnits = vecB ? (BN * BK) / 8 / TH : (BN * BK) / TH;
  if (!Number.isInteger(aUnits) || !Number.isInteger(bUnits) || BK % SK !== 0 || BK % 8 !== 0) {
    throw new Error(`tensor-core tiling ${tcTilingName(t)}: the ${TH} threads must split the A and B tiles evenly, and BK must be a multiple of ${Math.max(SK, 8)}`);
  }
  // The epilogue stages as many of a subgroup's tiles per barrier pair as workgroup memory
  // allows (a divisor of its tile count: 1 of 8 for the default tiling in 48 KiB, 2 of 16 for SMALL_TC_TILING).
  const tileCount = t.tm * t.tn;
  const tilesPerPass = Array.from({ length: tileCount }, (_, i) => tileCount - i)
    .filter((n) => tileCount % n === 0)
    .find((n) => stagingBytes + 4 * epilogueF32(t, s, n) <= maxWorkgroupBytes);
  if (tilesPerPass === undefined) {
    throw new Error(`tensor-core tiling ${tcTilingName(t)}: needs ${stagingBytes + 4 * epilogueF32(t, s, 1)} bytes of workgroup memory, this adapter allows ${maxWorkgroupBytes}`);
  }
  const hasEb = bKind === 'f16';
  const lines: string[] = [];
  const emit = (s: string): number => lines.push(s);

  // ---- global -> registers (tile at k0) ----
  // A weight's loads past its edge read a clamped (valid) address and are then zeroed. A
  // weight of whole tiles is read with no bound at all, like the padded copies: on the H200
  // the bounded loads (branch or clamp alike) cost a fifth of the product's speed.
  // The f16 copies are read a chunk (a vec4u, 8 f16) at a time. (Laid out in 8×8 blocks, so
  // that a warp's 8 rows × 4 chunks were contiguous, they made this kernel faster alone
  // but their copies slower, and a 1.5B step 18 ms slower: bench/RESULTS.md, tenth pass.)
  const chunk = (row: string, u: string, ld = 'p.kp'): string => `((${row} + ${u} / ${BK / 8}u) * ${ld} + k0) / 8u + ${u} % ${BK / 8}u`;
  const loadA = Array.from({ length: aUnits }, (_, j) => `ra${j} = a16[${chunk('m0', `(li + ${j * TH}u)`)}];`);
  const loadB = Array.from({ length: bUnits }, (_, j) => {
    const u = `(li + ${j * TH}u)`;
    switch (bKind) {
      case 'f16':
        return `rb${j} = b16[${chunk('n0', u)}];`;
      case 'nk':
        if (full) return `rb${j} = wv[${chunk('n0', u, 'p.k')}];`;
        return `{ let n = n0 + ${u} / ${BK / 8}u; let k = k0 + (${u} % ${BK / 8}u) * 8u;
      rb${j} = select(vec4u(0u), wv[(min(n, p.n - 1u) * p.k + min(k, p.k - 8u)) / 8u], n < p.n && k < p.k); }`;
      case 'kn':
        if (full) return `rb${j} = wv[((k0 + ${u} / ${BN / 8}u) * p.n + n0) / 8u + ${u} % ${BN / 8}u];`;
        return `{ let k = k0 + ${u} / ${BN / 8}u; let n = n0 + (${u} % ${BN / 8}u) * 8u;
      rb${j} = select(vec4u(0u), wv[(min(k, p.k - 1u) * p.n + min(n, p.n - 8u)) / 8u], n < p.n && k < p.k); }`;
      case 'nk-s':
        return `{ let n = n0 + ${u} / ${BK}u; let k = k0 + ${u} % ${BK}u;
      rb${j} = select(0.0, wAt(min(n, p.n - 1u) * p.k + min(k, p.k - 1u)), n < p.n && k < p.k); }`;
      case 'kn-s':
        return `{ let k = k0 + ${u} / ${BN}u; let n = n0 + ${u} % ${BN}u;
      rb${j} = select(0.0, wAt(min(k, p.k - 1u) * p.n + min(n, p.n - 1u)), n < p.n && k < p.k); }`;
    }
  });
  // The second segment of K: tiles from k0 = p.k on, so k0 − p.k is the row (kn) or column (nk) of f2.
  const loadF2 = Array.from({ length: cat ? bUnits : 0 }, (_, j) => {
    const u = `(li + ${j * TH}u)`;
    return bKind === 'nk'
      ? `{ let n = n0 + ${u} / ${BK / 8}u; let k = k0 - p.k + (${u} % ${BK / 8}u) * 8u;
      rb${j} = select(vec4u(0u), f2[(min(n, p.n - 1u) * p.k2 + min(k, p.k2 - 8u)) / 8u], n < p.n && k < p.k2); }`
      : `{ let k = k0 - p.k + ${u} / ${BN / 8}u; let n = n0 + (${u} % ${BN / 8}u) * 8u;
      rb${j} = select(vec4u(0u), f2[(min(k, p.k2 - 1u) * p.n + min(n, p.n - 8u)) / 8u], n < p.n && k < p.k2); }`;
  });

  // ---- registers -> workgroup memory (buffer at sAo / sBo), as f16 ----
  const storeA = Array.from({ length: aUnits }, (_, j) => {
    const u = `(li + ${j * TH}u)`;
    return stagingStore('sA', 'sAo', LDA, u, BK / 8, `ra${j}`, F16X2);
  });
  const storeBAs = (widen: string): string[] => Array.from({ length: bUnits }, (_, j) => {
    const u = `(li + ${j * TH}u)`;
    switch (bKind) {
      case 'f16':
        return stagingStore('sB', 'sBo', LDB, u, BK / 8, `rb${j}`, F16X2);
      case 'nk':
        return stagingStore('sB', 'sBo', LDB, u, BK / 8, `rb${j}`, widen);
      case 'kn':
        return stagingStore('sB', 'sBo', LDB, u, BN / 8, `rb${j}`, widen);
      case 'nk-s':
        return `sB[sBo + (${u} / ${BK}u) * ${LDB}u + ${u} % ${BK}u] = f16(rb${j});`;
      case 'kn-s':
        return `sB[sBo + (${u} / ${BN}u) * ${LDB}u + ${u} % ${BN}u] = f16(rb${j});`;
    }
  });
  const storeB = storeBAs(wDtype === 'f16' ? F16X2 : 'bf16x2');

  // ---- the multiply: named accumulators, everything unrolled ----
  const acc = (i: number, j: number): string => `acc${i}_${j}`;
  const mma: string[] = [];
  for (let kk = 0; kk < BK; kk += SK) {
    mma.push('{');
    for (let i = 0; i < t.tm; i++) {
      mma.push(`let a${i} = subgroupMatrixLoad<subgroup_matrix_left<f16, ${SK}, ${SM}>, row_major>(&sA, sAo + (aRow + ${i * SM}u) * ${LDA}u + ${kk}u, ${LDA}u);`);
    }
    for (let j = 0; j < t.tn; j++) {
      const off = kn ? `sBo + ${kk * LDB}u + bCol + ${j * SN}u` : `sBo + (bCol + ${j * SN}u) * ${LDB}u + ${kk}u`;
      mma.push(`let b${j} = subgroupMatrixLoad<subgroup_matrix_right<f16, ${SN}, ${SK}>, ${kn ? 'row_major' : 'col_major'}>(&sB, ${off}, ${LDB}u);`);
    }
    for (let i = 0; i < t.tm; i++) {
      for (let j = 0; j < t.tn; j++) mma.push(`${acc(i, j)} = subgroupMatrixMultiplyAccumulate(a${i}, b${j}, ${acc(i, j)});`);
    }
    mma.push('}');
  }
  const mmaBlock = mma.join('\n    ');

  // ---- epilogue: tiles through workgroup memory, tilesPerPass per barrier pair ----
  // Each lane writes 4 adjacent columns of rows er, er + rowsPer, … of a staged tile, a vec4
  // at a time, its scale exponents fetched once, before the first pass (rows 0 and 8 of
  // 16×16 tiles in subgroups of 32). The scales are applied as products with powers of two
  // (pow2), not with ldexp: on the H200 ldexp made the epilogue cost a quarter of an
  // 8192x2048x2048 product.
  const rowLanes = SN / 4;
  const rowsPer = s.subgroupSize / rowLanes;
  if (!Number.isInteger(rowLanes) || !Number.isInteger(rowsPer) || SM % rowsPer !== 0) {
    throw new Error(`tensor-core epilogue: ${SM}x${SN} matrices in subgroups of ${s.subgroupSize} do not split into rows of 4-column vectors`);
  }
  const halves = Array.from({ length: SM / rowsPer }, (_, n) => n * rowsPer);
  const epi: string[] = [`let er = lane / ${rowLanes}u;`, `let ec = (lane % ${rowLanes}u) * 4u;`];
  for (let i = 0; i < t.tm; i++) for (const h of halves) epi.push(`let ea${i}_${h} = ea[m0 + aRow + ${i * SM + h}u + er];${hasEb ? '' : ` let f${i}_${h} = vec4f(pow2(-ea${i}_${h}));`}`);
  if (hasEb) for (let j = 0; j < t.tn; j++) epi.push(`let eb${j} = vec4i(${[0, 1, 2, 3].map((c) => `eb[n0 + bCol + ${j * SN + c}u + ec]`).join(', ')});`);
  const tiles = Array.from({ length: t.tm * t.tn }, (_, q) => [Math.floor(q / t.tn), q % t.tn] as const);
  for (let q0 = 0; q0 < tiles.length; q0 += tilesPerPass) {
    const pass = tiles.slice(q0, q0 + tilesPerPass);
    pass.forEach(([i, j], e) => epi.push(`subgroupMatrixStore<row_major>(&sC, cBase + ${e * SM * SN}u, ${acc(i, j)}, ${SN}u);`));
    epi.push('workgroupBarrier();');
    for (const [e, [i, j]] of pass.entries()) {
      for (const h of halves) {
        epi.push(`{ let q = cBase + ${e * SM * SN + h * SN}u + er * ${SN}u + ec;
    put(vec4f(sC[q], sC[q + 1u], sC[q + 2u], sC[q + 3u]), m0 + aRow + ${i * SM + h}u + er, n0 + bCol + ${j * SN}u + ec, ${hasEb ? `vec4f(${[0, 1, 2, 3].map((c) => `pow2(-ea${i}_${h} - eb${j}.${'xyzw'[c]})`).join(', ')})` : `f${i}_${h}`}, s); }`);
      }
    }
    epi.push('workgroupBarrier();');
  }

  // The K loop over [begin, end): each step stores the staged tile, fetches the next into
  // registers, multiplies. A second segment gets a loop of its own, so neither has a branch
  // on the source inside (on the H200 one cost the product 40%).
  const kLoop = (begin: string, end: string, loads: string[], stores: string[]): string => `{
  let kStop = ${end};
  k0 = ${begin};
  if (k0 < kStop) {
    ${loadA.join('\n    ')}
    ${loads.join('\n    ')}
  }
  for (var kt = k0; kt < kStop; kt += ${BK}u) {
    ${storeA.join('\n    ')}
    ${stores.join('\n    ')}
    workgroupBarrier();
    k0 = kt + ${BK}u;
    if (k0 < kStop) {
      ${loadA.join('\n      ')}
      ${loads.join('\n      ')}
    }
    ${mmaBlock}
    ${t.double ? swap : 'workgroupBarrier();'}
  }
  }`;

  const bBinding =
    bKind === 'f16'
      ? '@group(0) @binding(3) var<storage, read> b16: array<vec4u>;\n@group(0) @binding(4) var<storage, read> eb: array<i32>;'
      : vecB
        ? '@group(0) @binding(3) var<storage, read> wv: array<vec4u>;'
        : '@group(0) @binding(3) var<storage, read> ws: array<u32>;';
  const cBinding = hasEb || cat ? 5 : 4;
  const bRegType = vecB ? 'vec4u' : 'f32';
  const swap = `sAo = ${sizeA}u - sAo; sBo = ${sizeB}u - sBo;`;
  emit(`diagnostic(off, chromium.subgroup_matrix_uniformity);
enable f16;
enable subgroups;
enable chromium_experimental_subgroup_matrix;

struct P { m: u32, n: u32, k: u32, kp: u32, tilesM: u32, tiles: u32, alpha: f32, accumulate: u32, kChunk: u32, k2: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> a16: array<vec4u>;
@group(0) @binding(2) var<storage, read> ea: array<i32>;
${bBinding}
${cat ? '@group(0) @binding(4) var<storage, read> f2: array<vec4u>;' : ''}
@group(0) @binding(${cBinding}) var<storage, read_write> c: array<${cVec ? 'vec4f' : 'f32'}>;

var<workgroup> sA: array<f16, ${bufs * sizeA}>;
var<workgroup> sB: array<f16, ${bufs * sizeB}>;
var<workgroup> sC: array<f32, ${epilogueF32(t, s, tilesPerPass)}>;

// bf16 is the top half of an f32 (exact); f16 then rounds it, exactly so in f16's normal range.
fn bf16x2(w: u32) -> vec2<f16> {
  return vec2<f16>(f16(bitcast<f32>(w << 16u)), f16(bitcast<f32>(w & 0xffff0000u)));
}
${vecB ? '' : wDtype === 'f16' ? wgslF16Reader('wAt', 'ws') : wgslBf16Reader('wAt', 'ws')}
${WGSL_POW2}
// Writes 4 adjacent elements of C, row m, columns n.. (of K slice s's partial product with
// split-K), undoing the scales: f = 2^−(ea+eb), exact since |ea|, |eb| <= 60 (f16_rows.ts).
fn put(x: vec4f, m: u32, n: u32, f: vec4f, s: u32) {
  if (m >= p.m) { return; }
  let v = p.alpha * (x * f);
  let o = (s * p.m + m) * p.n + n;
${cVec ? `  if (n < p.n) {
    var w = v;
    if (p.accumulate != 0u) { w += c[o / 4u]; }
    c[o / 4u] = w;
  }` : [0, 1, 2, 3].map((k) => `  if (n + ${k}u < p.n) { var w = v[${k}]; if (p.accumulate != 0u) { w += c[o + ${k}u]; } c[o + ${k}u] = w; }`).join('\n')}
}

@compute @workgroup_size(${TH})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) li: u32, @builtin(subgroup_id) sg: u32,
        @builtin(subgroup_invocation_id) lane: u32) {
  let wg = ${WGSL_LINEAR_WG};
  // Workgroups beyond the first p.tiles take later K slices of p.kChunk.
  let s = wg / p.tiles;
  let t = wg % p.tiles;
  let kBeg = s * p.kChunk;
  let kEnd = min(p.kp, kBeg + p.kChunk);
  if (kBeg >= kEnd) { return; }
  let m0 = (t % p.tilesM) * ${BM}u;
  let n0 = (t / p.tilesM) * ${BN}u;
  let aRow = (sg / ${t.wn}u) * ${t.tm * SM}u;
  let bCol = (sg % ${t.wn}u) * ${t.tn * SN}u;
  let cBase = sg * ${tilesPerPass * SM * SN}u;
  ${tiles.map(([i, j]) => `var ${acc(i, j)} = subgroup_matrix_result<f32, ${SN}, ${SM}>();`).join('\n  ')}
  ${Array.from({ length: aUnits }, (_, j) => `var ra${j}: vec4u;`).join(' ')}
  ${Array.from({ length: bUnits }, (_, j) => `var rb${j}: ${bRegType};`).join(' ')}
  var sAo = 0u;
  var sBo = 0u;
  var k0 = kBeg;
  ${cat ? `${kLoop('kBeg', 'min(kEnd, p.k)', loadB, storeB)}
  ${kLoop('max(kBeg, p.k)', 'kEnd', loadF2, storeBAs(F16X2))}` : kLoop('kBeg', 'kEnd', loadB, storeB)}
  ${epi.join('\n  ')}
}`);
  return lines.join('\n');
}

export interface TcProduct {
  m: number;
  n: number;
  k: number;
  alpha: number;
  accumulate: boolean;
  /**
   * Split-K: slices of this many (padded) K, a multiple of the tiling's BK; slice s writes
   * its partial product to C[s] (C being [slices, M, N]). Default: one slice.
   */
  kChunk?: number;
  /** A second segment of K (matmulTcWeight): C = alpha·[A | s·A2]·op([W | F]) (+ C). */
  append?: WeightAppend;
}

/**
 * A second segment of K for a frozen weight's product (a LoRA branch): A2 [M, K2] (f32)
 * times `scale` against F (f32, laid out like the weight: [N, K2] when it is transposed,
 * else [K2, N]).
 */
export interface WeightAppend {
  a: Tensor;
  scale: number;
  w: Tensor;
}

/**
 * Whether matmulTcWeight can append a K segment of k2 to a product whose weight has K k1
 * and N n: the weight's K must end on a staging step and both segments be read in 8s.
 */
export function tcCanAppend(gpu: GpuRuntime, n: number, k1: number, k2: number, transW: boolean, tiling: TcTiling = tcTiling(gpu, n)): boolean {
  return k1 % tiling.bk === 0 && k1 % 8 === 0 && k2 % 8 === 0 && (transW || n % 8 === 0);
}

/** Records C = alpha·2^−ea·A16·op(B)·2^−eb (+ C) with A16 [Mp, Kp] from f16Rows. */
function tcDispatch(
  gpu: GpuRuntime,
  a16: Tensor,
  ea: Tensor,
  b: { kind: BKind; dtype: WDtype; full?: boolean; t: Tensor; eb?: Tensor; f2?: Tensor },
  c: Tensor,
  prod: TcProduct,
  tiling: TcTiling,
): void {
  const s = tcSupport(gpu)!;
  const { bm, bn } = blocks(tiling, s);
  const kp = a16.shape[1];
  const kChunk = prod.kChunk ?? kp;
  if (kChunk % tiling.bk !== 0) throw new Error(`tensor-core matmul: K slices of ${kChunk} are not a multiple of the tiling's BK ${tiling.bk}`);
  const tilesM = ceilDiv(prod.m, bm);
  const tiles = tilesM * ceilDiv(prod.n, bn);
  const cat = b.f2 !== undefined;
  // C written a vec4 at a time where its rows are whole vec4s.
  const cVec = prod.n % 4 === 0;
  const key = `${b.kind}${b.kind === 'f16' ? '' : `_${b.dtype}${b.full ? '_full' : ''}${cat ? '_cat' : ''}`}_${tcTilingName(tiling)}_${s.shape.M}x${s.shape.N}x${s.shape.K}${cVec ? '_c4' : ''}`;
  const second = b.eb ?? b.f2;
  const kinds: BindingKind[] = ['uniform', 'read', 'read', 'read', ...(second ? (['read'] as const) : []), 'rw'];
  const pipe = gpu.pipeline('matmulTc', key, kinds, () => tcWgsl(tiling, s, b.kind, b.dtype, b.full ?? false, cat, cVec, gpu.limits.maxComputeWorkgroupStorageSize));
  const u = uniforms([
    ['u32', prod.m],
    ['u32', prod.n],
    ['u32', prod.k],
    ['u32', kp],
    ['u32', tilesM],
    ['u32', tiles],
    ['f32', prod.alpha],
    ['u32', prod.accumulate ? 1 : 0],
    ['u32', kChunk],
    ['u32', prod.append?.a.shape[1] ?? 0],
  ]);
  gpu.dispatch(pipe, [u, a16, ea, b.t, ...(second ? [second] : []), c], grid1d(tiles * ceilDiv(kp, kChunk)));
}

/** A scaled f16 copy of op(x) [r, k] (with `append`: [x | s·x2]) in pooled scratch; the caller frees both tensors. */
function f16Copy(gpu: GpuRuntime, x: Tensor, layout: F16Layout, r: number, k: number, rowAlign: number, kAlign: number, append?: F16Append): [Tensor, Tensor] {
  const rp = ceilDiv(r, rowAlign) * rowAlign;
  const kp = ceilDiv(k, kAlign) * kAlign;
  const data = gpu.tensor([rp, kp], 'f16', `${x.label} as f16`);
  const exps = gpu.tensor([rp], 'i32', `${x.label} f16 exponents`);
  f16Rows(gpu, x, layout, data, exps, append);
  return [data, exps];
}

/**
 * C[M,N] = alpha·op(A)·op(W) (+ C) on tensor cores: A f32 (op(A) = Aᵀ when transA),
 * W a frozen bf16 or f16 weight ([N,K] when transW, else [K,N]). Shapes are the caller's to
 * check. With prod.append (not with transA; tcCanAppend must hold), K runs on into the
 * appended segment: A2 joins A's f16 copy under A's row exponents and F is rounded to f16
 * as it is, so a LoRA branch adds its product without a pass over C of its own.
 */
export function matmulTcWeight(
  gpu: GpuRuntime,
  a: Tensor,
  w: Tensor,
  c: Tensor,
  prod: TcProduct & { transA: boolean; transW: boolean },
  tiling: TcTiling = tcTiling(gpu, prod.n),
): void {
  const pad = tcPadding(gpu, tiling);
  const app = prod.append;
  const k2 = app?.a.shape[1] ?? 0;
  if (app && (prod.transA || !tcCanAppend(gpu, prod.n, prod.k, k2, prod.transW, tiling))) {
    throw new Error(`matmulTcWeight: cannot append K ${k2} to a product of K ${prod.k}, N ${prod.n}${prod.transA ? ' with A transposed' : ''}`);
  }
  const [a16, ea] = f16Copy(gpu, a, prod.transA ? 'cols' : 'rows', prod.m, prod.k + k2, pad.rowsA, pad.k, app && { x: app.a, scale: app.scale });
  const vec = prod.transW ? prod.k % 8 === 0 : prod.n % 8 === 0;
  const kind: BKind = prod.transW ? (vec ? 'nk' : 'nk-s') : vec ? 'kn' : 'kn-s';
  if (w.dtype !== 'bf16' && w.dtype !== 'f16') throw new Error(`matmulTcWeight: weight ${w.label} is ${w.dtype}, expected bf16 or f16`);
  const full = vec && prod.n % pad.rowsB === 0 && prod.k % pad.k === 0;
  const f2 = app && gpu.tensor(app.w.shape, 'f16', `${app.w.label} as f16`);
  if (app && f2) narrowF16(gpu, app.w, f2);
  tcDispatch(gpu, a16, ea, { kind, dtype: w.dtype, full, t: w, f2 }, c, prod, tiling);
  for (const t of [a16, ea, f2]) if (t) gpu.free(t);
}

/** C[M,N] = alpha·op(A)·op(B) (+ C) on tensor cores, A and B f32 (transB: B is [N,K]). */
export function matmulTcF32(
  gpu: GpuRuntime,
  a: Tensor,
  b: Tensor,
  c: Tensor,
  prod: TcProduct & { transA: boolean; transB: boolean },
  tiling: TcTiling = tcTiling(gpu, prod.n),
): void {
  const pad = tcPadding(gpu, tiling);
  const [a16, ea] = f16Copy(gpu, a, prod.transA ? 'cols' : 'rows', prod.m, prod.k, pad.rowsA, pad.k);
  // op(B)ᵀ is [N, K]: B itself when transB, B's transpose otherwise.
  const [b16, eb] = f16Copy(gpu, b, prod.transB ? 'rows' : 'cols', prod.n, prod.k, pad.rowsB, pad.k);
  tcDispatch(gpu, a16, ea, { kind: 'f16', dtype: 'f16', t: b16, eb }, c, prod, tiling);
  for (const t of [a16, ea, b16, eb]) gpu.free(t);
}
