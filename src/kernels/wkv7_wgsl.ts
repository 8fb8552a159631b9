/**
 * WGSL of the three WKV7 kernels (wkv7.ts has the maths, the API and the dispatches).
 *
 * Layout shared by all three: a head's N×N matrices are padded to NP×NP (NP a multiple of
 * 4·lanes, the padding held at zero) and handled as vec4s of 4 consecutive elements.
 * `lanes` adjacent invocations share one row (or column) and own its vec4s
 * q = c·lanes + lane, so a warp reading one vec4 each touches consecutive workgroup
 * memory; they combine partial dot products with subgroupShuffleXor. That needs
 * subgroups at least `lanes` wide whose invocations are consecutive local indices (as on
 * every Vulkan driver we know of: the tests check it on each adapter). lanes = 1 uses no
 * subgroup operation at all: the fallback.
 *
 * The row scans (forward, backward state scan) stage the per-step vectors of BLOCK steps
 * in workgroup memory at once, loading the next block into registers while this one is
 * computed: three barriers per BLOCK steps, none inside a block.
 */
/** Steps between saved states. */
export const WKV7_CHUNK = 16;
const W_SCALE = '-0.6065306597';
/** Steps staged per barrier pair in the row scans; divides WKV7_CHUNK. */
const BLOCK = 8;

export interface ScanShape {
  N: number;
  /** Invocations per state row: 1, 2, 4 or 8. */
  lanes: number;
  /** Workgroups per head, each owning NP/groups rows: 1, 2 or 4. */
  groups: number;
}

/** Padded size: the vec4s of a row split evenly over the lanes. */
const paddedN = (N: number, lanes: number): number => Math.ceil(N / (4 * lanes)) * 4 * lanes;

const COMP = ['x', 'y', 'z', 'w'];
/** `f(0) … f(n−1)` on lines: loops over register-held vec4s are unrolled here, so that no
 * compiler is left to decide whether a dynamically indexed array stays in registers. */
const rep = (n: number, f: (c: number) => string): string => Array.from({ length: n }, (_, c) => f(c)).join('\n');

export const scanWorkgroupSize = (s: ScanShape): number => (paddedN(s.N, s.lanes) / s.groups) * s.lanes;
export const colsWorkgroupSize = (N: number, lanes: number): number => paddedN(N, lanes) * lanes;

/** Workgroup memory of the row scans (with two row vectors staged) and of the column pass, in bytes. */
export const scanWorkgroupBytes = (s: ScanShape): number => BLOCK * (6 * paddedN(s.N, s.lanes) + (2 * paddedN(s.N, s.lanes)) / s.groups) * 4;
export const colsWorkgroupBytes = (N: number, lanes: number): number => 4 * WKV7_CHUNK * paddedN(N, lanes) * 4;

/** Bindings 1, 2, … of f32 arrays read by a kernel, under these names; those in `vec4` as array<vec4f> (vec4Loader's). */
const readBindings = (names: readonly string[], vec4: readonly string[] = []): string =>
  names.map((n, i) => `@group(0) @binding(${i + 1}) var<storage, read> ${n}: array<${vec4.includes(n) ? 'vec4f' : 'f32'}>;`).join('\n');

/** Constants and helpers every WKV7 kernel shares. */
function header(N: number, lanes: number): string {
  const shuffles = Array.from({ length: Math.log2(lanes) }, (_, m) => `s += subgroupShuffleXor(s, ${1 << m}u);`).join(' ');
  return /* wgsl */ `${lanes > 1 ? 'enable subgroups;' : ''}
struct P { T: u32, H: u32, slots: u32, dslots: u32 }
@group(0) @binding(0) var<uniform> p: P;
const N = ${N}u;
const NP = ${paddedN(N, lanes)}u;
const NQ4 = NP / 4u;
const LANES = ${lanes}u;
const CHUNK = ${WKV7_CHUNK}u;
const W_SCALE = ${W_SCALE};
// Element 0 of token t of head (bb, h) in a [B, T, H, N] tensor.
fn tokenBase(bb: u32, t: u32, h: u32) -> u32 { return ((bb * p.T + t) * p.H + h) * N; }
// Element [0, 0] of slot c of head (bb, h) in a [B, H, slots, N, N] tensor.
fn slotBase(bb: u32, h: u32, c: u32, slots: u32) -> u32 { return ((bb * p.H + h) * slots + c) * N * N; }
// Sum over the LANES invocations of a row; every one of them gets the same value.
fn laneSum(x: f32) -> f32 { var s = x; ${shuffles} return s; }
fn sum4(x: vec4f) -> f32 { return (x.x + x.y) + (x.z + x.w); }
`;
}

/**
 * A function `name4(bb, h, t, q) -> vec4f`: columns 4q..4q+3 of token t of `buf`, zero outside
 * [0, T) × [0, N). With `vector` (N a multiple of 4: vec4Rows), `buf` is an array<vec4f> read a
 * vec4 at a time, one load and one bound instead of four.
 */
function vec4Loader(buf: string, vector: boolean): string {
  const body = vector
    ? `  if (t < p.T && 4u * q < N) { o = ${buf}[tokenBase(bb, t, h) / 4u + q]; }`
    : `  if (t < p.T) {
    let e = tokenBase(bb, t, h) + 4u * q;
${rep(4, (c) => `    if (4u * q + ${c}u < N) { o.${COMP[c]} = ${buf}[e + ${c}u]; }`)}
  }`;
  return /* wgsl */ `
fn ${buf}4(bb: u32, h: u32, t: u32, q: u32) -> vec4f {
  var o = vec4f(0.0);
${body}
  return o;
}`;
}

/** Whether rows of N values start on 16 bytes (N a multiple of 4), so the kernels can read and write them a vec4 at a time. */
const vec4Rows = (N: number): boolean => N % 4 === 0;

/**
 * Staging of one BLOCK of steps for a row scan: column vectors r, w, k, a, b ([step][vec4])
 * and row vectors `rows` (this workgroup's R rows): loadBlock(t0) fetches the block from
 * step t0 into registers, storeBlock() writes the decays and the row vectors to workgroup
 * memory, and scaleBlock, after a barrier, writes r, k, a, b with the decays folded in, from
 * the registers, before loadBlock fetches the next block into them (the dS scan, walking down,
 * also takes the block's step count: its products run from each step to the block's top).
 * Folding from the registers rather than in place in workgroup memory took the forward from
 * 0.486 to 0.474 ms and the dS scan from 0.437 to 0.428 at 1.5B, B 8 on the H200.
 * With `vector` the column vectors are fetched a vec4 at a time (vec4Loader), and `vec4` names
 * the bindings the kernel must then declare as array<vec4f>.
 *
 * The scans keep their state scaled column by column, so that a step's decay costs no
 * operation per state element. The forward holds Ŝ = S·diag(C)⁻¹ with C_t the product of
 * the block's decays up to step t: then sa = Ŝ·(a∘C_{t−1}), Ŝ += sa·(b/C_t)ᵀ + v·(k/C_t)ᵀ and
 * y = Ŝ·(r∘C_t), and S = Ŝ·diag(C) at the block's end (s_c holds C_t). The dS scan, walking
 * down, holds D̂ = dS·diag(F)⁻¹ with F_t the product of the decays after step t to the
 * block's top: Ĝ = D̂ + dy·(r/F_t)ᵀ, dsa = Ĝ·(b∘F_t), dv = Ĝ·(k∘F_t), D̂ = Ĝ + dsa·(a/F_{t−1})ᵀ,
 * and dS = D̂·diag(F_{t0−1}) at the block's bottom (s_c holds F_{t−1}). Within 8 steps the
 * scales stay within 0.545⁸ ≈ 0.008 of 1, so nothing nears f32's range, and scaling a column
 * by one factor leaves its relative rounding as it was.
 */
function scanStaging(s: ScanShape, rows: readonly string[], down: boolean, vector: boolean): { decl: string; fns: string; vec4: readonly string[] } {
  const cols = ['r', 'w', 'k', 'a', 'b'];
  const WG = scanWorkgroupSize(s);
  const units = BLOCK * (paddedN(s.N, s.lanes) / 4);
  const R = paddedN(s.N, s.lanes) / s.groups;
  const cu = Math.ceil(units / WG);
  const ru = Math.ceil((BLOCK * R) / WG);
  const decl = [
    ...cols.map((c) => `var<workgroup> s_${c}: array<vec4f, ${units}>;\n${rep(cu, (n) => `var<private> f_${c}${n}: vec4f;`)}`),
    `var<workgroup> s_c: array<vec4f, ${units}>;`,
    ...rows.map((row) => `var<workgroup> s_${row}: array<f32, ${BLOCK * R}>;\n${rep(ru, (n) => `var<private> f_${row}${n}: f32;`)}`),
    ...cols.map((c) => vec4Loader(c, vector)),
  ].join('\n');
  const fns = /* wgsl */ `
fn loadBlock(bb: u32, h: u32, grp: u32, idx: u32, t0: u32) {
${rep(
  cu,
  (n) => `  {
    let u = idx + ${n * WG}u;
    if (u < ${units}u) {
      let t = t0 + u / NQ4;
      let q = u % NQ4;
${cols.map((c) => `      f_${c}${n} = ${c}4(bb, h, t, q);`).join('\n')}
    }
  }`,
)}
${rep(
  ru,
  (n) => `  {
    let u = idx + ${n * WG}u;
    let t = t0 + u / ${R}u;
    let i = grp * ${R}u + u % ${R}u;
${rows.map((row) => `    f_${row}${n} = 0.0;
    if (u < ${BLOCK * R}u && t < p.T && i < N) { f_${row}${n} = ${row}[tokenBase(bb, t, h) + i]; }`).join('\n')}
  }`,
)}
}
fn storeBlock(idx: u32) {
${rep(
  cu,
  (n) => `  if (idx + ${n * WG}u < ${units}u) {
    f_w${n} = exp(W_SCALE / (1.0 + exp(-f_w${n})));
    s_w[idx + ${n * WG}u] = f_w${n};
  }`,
)}
${rep(ru, (n) => rows.map((row) => `  if (idx + ${n * WG}u < ${BLOCK * R}u) { s_${row}[idx + ${n * WG}u] = f_${row}${n}; }`).join('\n'))}
}
// The decay products are unrolled over the block with selects, in the loops' order (so the
// results are as before), not looped: every load is then issued at once rather than one
// dependent load and multiply per step. 0.495 → 0.486 ms (forward) and 0.450 → 0.437 (dS scan)
// at 1.5B, B 8 on the H200.
fn scaleBlock(idx: u32${down ? ', steps: u32' : ''}) {
${rep(
  cu,
  (n) => `  {
    let u = idx + ${n * WG}u;
    if (u < ${units}u) {
      let st = u / NQ4;
      let q = u % NQ4;
${
  down
    ? `      var f = vec4f(1.0);
${rep(BLOCK - 1, (k) => `      f *= select(vec4f(1.0), s_w[${k + 1}u * NQ4 + q], ${k + 1}u > st && ${k + 1}u < steps);`)}
      let g = f * f_w${n};
      s_r[u] = f_r${n} * (1.0 / f);
      s_k[u] = f_k${n} * f;
      s_b[u] = f_b${n} * f;
      s_a[u] = f_a${n} * (1.0 / g);
      s_c[u] = g;`
    : `      var c = vec4f(1.0);
${rep(BLOCK - 1, (k) => `      c *= select(vec4f(1.0), s_w[${k}u * NQ4 + q], ${k}u < st);`)}
      s_a[u] = f_a${n} * c;
      c *= f_w${n};
      let ic = 1.0 / c;
      s_r[u] = f_r${n} * c;
      s_k[u] = f_k${n} * ic;
      s_b[u] = f_b${n} * ic;
      s_c[u] = c;`
}
    }
  }`,
)}
}`;
  return { decl, fns, vec4: vector ? cols : [] };
}

/** Statements setting `dst`0… to column i, at this lane's vec4s of rows, of the N×N matrix at element `base` of `buf`. */
function colLoad(nq: number, lanes: number, dst: string, buf: string, base: string): string {
  return rep(
    nq,
    (c) => `${dst}${c} = vec4f(0.0);
${rep(4, (e) => `{ let j = ${4 * c * lanes + e}u + 4u * lane; if (i < N && j < N) { ${dst}${c}.${COMP[e]} = ${buf}[${base} + j * N + i]; } }`)}`,
  );
}

/**
 * Writes this invocation's part of row i of `src`0… to `buf` at element offset `base` (row-major N×N);
 * `value` maps each element's expression (`o` is its offset), e.g. to add to what is there.
 * With `vec4` (N a multiple of 4, `buf` an array<vec4f>: stateArray) each vec4 goes out as one
 * store: scalar stores of 2-8 lanes' rows fill 32-byte sectors in pieces, which cost the
 * forward a quarter of its time in its 16-step checkpoints.
 */
function rowStore(nq: number, lanes: number, buf: string, base: string, src: string, value = (x: string): string => x, vec4 = false): string {
  const body = vec4
    ? rep(nq, (c) => `    { let j = ${4 * c * lanes}u + 4u * lane; if (j < N) { let o = (${base} + i * N + j) / 4u; ${buf}[o] = ${value(`${src}${c}`)}; } }`)
    : rep(nq, (c) =>
        rep(4, (e) => `    { let j = ${4 * c * lanes + e}u + 4u * lane; if (j < N) { let o = ${base} + i * N + j; ${buf}[o] = ${value(`${src}${c}.${COMP[e]}`)}; } }`),
      );
  return `if (i < N) {\n${body}\n  }`;
}

/** Element type of the N×N matrices the row scans write: whole vec4s when rows are made of them (rowStore). */
const stateArray = (N: number): string => (vec4Rows(N) ? 'array<vec4f>' : 'array<f32>');

/**
 * Forward: invocation (row i, lane) keeps its vec4s of row i of S. Per step:
 * sa = S·a (lane sum), S = S·diag(decay) + sa·bᵀ + v·kᵀ, y = S·r (lane sum).
 * Grid (H, B, groups).
 */
export function forwardWgsl(s: ScanShape, hasS0: boolean, hasST: boolean): string {
  const R = paddedN(s.N, s.lanes) / s.groups;
  const nq = paddedN(s.N, s.lanes) / 4 / s.lanes;
  const vec = vec4Rows(s.N);
  const st = scanStaging(s, ['v'], false, vec);
  const q = (c: number): string => `o + ${c * s.lanes}u`;
  return /* wgsl */ `${header(s.N, s.lanes)}
${readBindings(['r', 'w', 'k', 'v', 'a', 'b'], st.vec4)}
@group(0) @binding(7) var<storage, read_write> y: array<f32>;
@group(0) @binding(8) var<storage, read_write> states: ${stateArray(s.N)};
@group(0) @binding(9) var<storage, read_write> sa: array<f32>;
${hasS0 ? '@group(0) @binding(10) var<storage, read> s0: array<f32>;' : ''}
${hasST ? `@group(0) @binding(${hasS0 ? 11 : 10}) var<storage, read_write> sT: ${stateArray(s.N)};` : ''}
${st.decl}
${st.fns}

@compute @workgroup_size(${scanWorkgroupSize(s)})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) idx: u32) {
  let h = wid.x;
  let bb = wid.y;
  let grp = wid.z;
  let lane = idx % LANES;
  let i = grp * ${R}u + idx / LANES;
${rep(nq, (c) => `  var S${c} = vec4f(0.0);`)}
  let head = (bb * p.H + h) * N * N;
${hasS0 ? rep(nq, (c) => rep(4, (e) => `  { let j = ${4 * c * s.lanes + e}u + 4u * lane; if (i < N && j < N) { S${c}.${COMP[e]} = s0[head + i * N + j]; } }`)) : ''}
  let slot0 = slotBase(bb, h, 0u, p.slots);
  ${rowStore(nq, s.lanes, 'states', 'slot0', 'S', undefined, vec)}
  loadBlock(bb, h, grp, idx, 0u);
  for (var t0 = 0u; t0 < p.T; t0 += ${BLOCK}u) {
    let steps = min(${BLOCK}u, p.T - t0);
    storeBlock(idx);
    workgroupBarrier();
    scaleBlock(idx);
    loadBlock(bb, h, grp, idx, t0 + ${BLOCK}u);
    workgroupBarrier();
    for (var st = 0u; st < steps; st++) {
      let o = st * NQ4 + lane;
      var acc = vec4f(0.0);
${rep(nq, (c) => `      acc = fma(S${c}, s_a[${q(c)}], acc);`)}
      let sai = laneSum(sum4(acc));
      let vi = s_v[st * ${R}u + idx / LANES];
      var ya = vec4f(0.0);
${rep(nq, (c) => `      S${c} = fma(vec4f(sai), s_b[${q(c)}], fma(vec4f(vi), s_k[${q(c)}], S${c}));
      ya = fma(S${c}, s_r[${q(c)}], ya);`)}
      let yi = laneSum(sum4(ya));
      // Every lane of the row stores the same sums (equal values, so their order does not matter):
      // a branch on the lane cost more (at 1.5B on the H200, forward 0.473 → 0.469 ms at B 8, 0.265 → 0.256 at B 1;
      // one store per lane, y by lane 0 and sa by the last, took 0.491 and 0.304).
      if (i < N) {
        let e = tokenBase(bb, t0 + st, h) + i;
        y[e] = yi;
        sa[e] = sai;
      }
    }
    {
      let o = (steps - 1u) * NQ4 + lane;
${rep(nq, (c) => `      S${c} *= s_c[${q(c)}];`)}
    }
    // Checkpoints fall on block ends: BLOCK divides CHUNK.
    let t = t0 + steps - 1u;
    if ((t + 1u) % CHUNK == 0u || t + 1u == p.T) {
      let slot = slotBase(bb, h, t / CHUNK + 1u, p.slots);
      ${rowStore(nq, s.lanes, 'states', 'slot', 'S', undefined, vec)}
    }
    workgroupBarrier();
  }
${hasST ? `  ${rowStore(nq, s.lanes, 'sT', 'head', 'S', undefined, vec)}` : ''}
}`;
}

/**
 * Backward, first pass: the recurrence of dS = ∂L/∂S alone, rows independent like the
 * forward's. Walking t down, with dS = ∂L/∂S_t from later steps: checkpoint dS at the top of
 * every column-pass workgroup's colChunks·16 steps (dSck slot g at t = min(16·colChunks·(g+1)−1,
 * T−1)), then dS += dy·rᵀ; dsa = dS·b and dv = dS·k
 * (lane sums); dS = dS·diag(decay) + dsa·aᵀ. Saves dsa for the column pass; with addDv, adds dv
 * to what dv holds (staged with dy per block). Grid (H, B, groups).
 */
export function stateBackwardWgsl(s: ScanShape, hasDs0: boolean, accumulate: boolean, colChunks: number, addDv: boolean): string {
  const R = paddedN(s.N, s.lanes) / s.groups;
  const nq = paddedN(s.N, s.lanes) / 4 / s.lanes;
  const vec = vec4Rows(s.N);
  const st = scanStaging(s, addDv ? ['dy', 'dv'] : ['dy'], true, vec);
  const group = WKV7_CHUNK * colChunks;
  const q = (c: number): string => `o + ${c * s.lanes}u`;
  return /* wgsl */ `${header(s.N, s.lanes)}
${readBindings(['r', 'w', 'k', 'a', 'b', 'dy'], st.vec4)}
@group(0) @binding(7) var<storage, read_write> dv: array<f32>;
@group(0) @binding(8) var<storage, read_write> dsa: array<f32>;
@group(0) @binding(9) var<storage, read_write> dSck: ${stateArray(s.N)};
${hasDs0 ? `@group(0) @binding(10) var<storage, read_write> ds0: ${stateArray(s.N)};` : ''}
${st.decl}
${st.fns}

@compute @workgroup_size(${scanWorkgroupSize(s)})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) idx: u32) {
  let h = wid.x;
  let bb = wid.y;
  let grp = wid.z;
  let lane = idx % LANES;
  let i = grp * ${R}u + idx / LANES;
${rep(nq, (c) => `  var dS${c} = vec4f(0.0);`)}
  let blocks = (p.T + ${BLOCK - 1}u) / ${BLOCK}u;
  loadBlock(bb, h, grp, idx, (blocks - 1u) * ${BLOCK}u);
  for (var n = blocks; n > 0u; n--) {
    let t0 = (n - 1u) * ${BLOCK}u;
    let steps = min(${BLOCK}u, p.T - t0);
    storeBlock(idx);
    workgroupBarrier();
    scaleBlock(idx, steps);
    // Fetched even below the first block, where t0 − BLOCK wraps past T and loadBlock reads
    // zeros: behind a branch on n this scan took 0.55 ms instead of 0.47 at 1.5B, B 8 on the H200.
    loadBlock(bb, h, grp, idx, t0 - ${BLOCK}u);
    workgroupBarrier();
    // Checkpoints fall on block tops (BLOCK divides CHUNK), where D̂ = dS: stored here rather
    // than in the step loop, where every step copied dS into the registers of the vec4 stores.
    {
      let t = t0 + steps - 1u;
      if (t % ${group}u == ${group - 1}u || t + 1u == p.T) {
        let slot = slotBase(bb, h, t / ${group}u, p.dslots);
        ${rowStore(nq, s.lanes, 'dSck', 'slot', 'dS', undefined, vec)}
      }
    }
    for (var st = steps; st > 0u; st--) {
      let t = t0 + st - 1u;
      let o = (st - 1u) * NQ4 + lane;
      let dyi = s_dy[(st - 1u) * ${R}u + idx / LANES];
      var accb = vec4f(0.0);
      var acck = vec4f(0.0);
${rep(nq, (c) => `      dS${c} = fma(vec4f(dyi), s_r[${q(c)}], dS${c});
      accb = fma(dS${c}, s_b[${q(c)}], accb);
      acck = fma(dS${c}, s_k[${q(c)}], acck);`)}
      let dsai = laneSum(sum4(accb));
      let dvi = laneSum(sum4(acck));
${rep(nq, (c) => `      dS${c} = fma(vec4f(dsai), s_a[${q(c)}], dS${c});`)}
      // Stored by every lane of the row, as in the forward (0.225 → 0.216 ms at 1.5B, B 1).
      if (i < N) {
        let e = tokenBase(bb, t, h) + i;
        dv[e] = ${addDv ? `s_dv[(st - 1u) * ${R}u + idx / LANES] + ` : ''}dvi;
        dsa[e] = dsai;
      }
    }
    {
      let o = lane;
${rep(nq, (c) => `      dS${c} *= s_c[${q(c)}];`)}
    }
    workgroupBarrier();
  }
${hasDs0 ? `  let head = (bb * p.H + h) * N * N;\n  ${rowStore(nq, s.lanes, 'ds0', 'head', 'dS', accumulate ? (x) => `ds0[o] + ${x}` : undefined, vec)}` : ''}
}`;
}

/**
 * Backward, second pass: one workgroup per `colChunks` consecutive 16-step chunks, all
 * workgroups at once. Invocation (column i, lane) keeps its vec4s of column i of S and of dS,
 * starts from the saved state after its top chunk's last step and the dS checkpoint there,
 * and walks the steps down: dr = S_tᵀ·dy; S_{t−1} from the checkpoint at a chunk's first
 * step, else by inverting the step with the saved sa; dS += dy·rᵀ; d(decay) = Σ dS∘S_{t−1}
 * (below), dk = dSᵀ·v, db = dSᵀ·sa, da = S_{t−1}ᵀ·dsa (column lane sums); dS = dS·diag(decay) + dsa·aᵀ
 * with the first pass's dsa. A chunk ends on the exact saved state, which starts the chunk
 * below, so inverting never runs past 16 steps; a workgroup of several chunks loads the dS
 * checkpoint and the top state once. Grid (H, B, ceil(chunks/colChunks)).
 * Each step reads each row vector from workgroup memory once; the chunk's first step, which
 * loads S_{t−1} instead of inverting, is peeled off the loop (stepBody).
 * Like the scans, it keeps the column scaled (Ŝ = S·E, D̂ = dS/E with E the product of the
 * chunk's decays after step t), so that inverting a step and the dS update skip the decay; the
 * scalars E, 1/E go into the sums' results.
 * The decay's sum needs no product of its own: with P_t = Σ_i dS_t[i,j]·S_t[i,j] (dS_t before
 * step t's dy·rᵀ), S_t = S_{t−1}·diag(decay) + sa·bᵀ + v·kᵀ gives
 * decay·Σ_i G[i,j]·S_{t−1}[i,j] = P_t + r·dr − b·db − k·dk (G = dS_t + dy·rᵀ), and
 * P_{t−1} = that + a·da: four scalar fmas per column from the other sums, started from one
 * exact product at each chunk's top (Σ dS∘S is the same for the scaled column). 8 f32
 * operations per element and step, against 9 with the product and 11 unscaled.
 */
export function columnBackwardWgsl(N: number, lanes: number, colChunks: number, addInto: ReadonlySet<string>): string {
  const nq = paddedN(N, lanes) / 4 / lanes;
  const rowVecs = ['dy', 'v', 'sa', 'dsa'];
  const vec = vec4Rows(N);
  // Writes gradient g at element e, or adds into it (its value there fetched a step ahead with the column's scalars).
  const out = (g: string, x: string): string => `${g}[e] = ${addInto.has(g) ? `cur.${g} + ` : ''}${x};`;
  const units = WKV7_CHUNK * (paddedN(N, lanes) / 4);
  const WG = colsWorkgroupSize(N, lanes);
  // Row vectors of the chunk from step t1, into registers (stored to workgroup memory at the chunk's start).
  const ru = Math.ceil(units / WG);
  const fetchRows = (t1: string): string =>
    rep(ru, (n) => `  {\n    let u = idx + ${n * WG}u;\n    if (u < ${units}u) {\n${rowVecs.map((x) => `      f_${x}${n} = ${x}4(bb, h, ${t1} + u / NQ4, u % NQ4);`).join('\n')}\n    }\n  }`);
  // acc += x·y, one chain of scalar fmas (vec4 accumulators would hold 4× the registers).
  const dot = (x: string, y: string, acc: string): string => `${acc} = fma(${x}.x, ${y}.x, fma(${x}.y, ${y}.y, fma(${x}.z, ${y}.z, fma(${x}.w, ${y}.w, ${acc}))));`;
  // Step tt with S = S_tt when reconstructing (S_{tt−1} by inverting step tt), else with S = S_{tt−1} and dr summed.
  const step = (reconstruct: boolean): string =>
    rep(nq, (c) => {
      const qq = `o + ${c * lanes}u`;
      return `      { let dyv = s_dy[${qq}]; let vv = s_v[${qq}]; let sav = s_sa[${qq}]; let dsav = s_dsa[${qq}];
${reconstruct ? `        ${dot(`S${c}`, 'dyv', 'accr')}\n        S${c} = fma(vec4f(-kE), vv, fma(vec4f(-bE), sav, S${c}));\n` : ''}        dS${c} = fma(dyv, vec4f(rE), dS${c});
        ${dot(`dS${c}`, 'vv', 'acck')}
        ${dot(`dS${c}`, 'sav', 'accb')}
        ${dot(`S${c}`, 'dsav', 'acca')}
        dS${c} = fma(dsav, vec4f(aE), dS${c});
      }`;
    });
  // Step tt of a chunk, given its column scalars `cur`: above the chunk's first step S_{tt−1}
  // comes from inverting step tt, at the first from the saved state. The first step is peeled
  // off the loop rather than branched on in it: 0.712 ms instead of 0.746 at 1.5B, B 8 on the
  // H200 (a branched form's SASS spent 33 register moves a step, and fetched behind the branch).
  const stepBody = (reconstruct: boolean): string => `      let sig = 1.0 / (1.0 + exp(-cur.w));
      E1 = E * exp(W_SCALE * sig);
      let kE = cur.k * E;
      let bE = cur.b * E;
      let rE = cur.r / E;
      let aE = cur.a / E1;
      var accr = 0.0;
      var acck = 0.0;
      var accb = 0.0;
      var acca = 0.0;
      let o = (tt - t1) * NQ4 + lane;
${
  reconstruct
    ? step(true)
    : `${rep(nq, (c) => `        ${dot(`S${c}`, `s_dy[o + ${c * lanes}u]`, 'accr')}`)}
        let base = slotBase(bb, h, ch, p.slots);
${colLoad(nq, lanes, 'S', 'states', 'base')}
${rep(nq, (c) => `        S${c} *= E1;`)}
${step(false)}`
}
      let dri = laneSum(accr);
      let dki = laneSum(acck);
      let dbi = laneSum(accb);
      let dai = laneSum(acca);
      // Σ_i ∂L/∂S_t[i,j]·S_{t−1}[i,j]·decay from the other sums (see above), and P_{t−1}.
      let dd = fma(rE, dri, fma(-bE, dbi, fma(-kE, dki, P)));
      P = fma(aE, dai, dd);
      if (lane == 0u && i < N) {
        let e = tokenBase(bb, tt, h) + i;
        ${out('dr', 'dri / E')}
        ${out('dw', 'dd * W_SCALE * sig * (1.0 - sig)')}
        ${out('dk', 'dki * E')}
        ${out('db', 'dbi * E')}
        ${out('da', 'dai / E1')}
      }`;
  return /* wgsl */ `${header(N, lanes)}
${readBindings(['r', 'w', 'k', 'v', 'a', 'b', 'dy', 'states', 'sa', 'dsa', 'dSck'], vec ? rowVecs : [])}
@group(0) @binding(12) var<storage, read_write> dr: array<f32>;
@group(0) @binding(13) var<storage, read_write> dw: array<f32>;
@group(0) @binding(14) var<storage, read_write> dk: array<f32>;
@group(0) @binding(15) var<storage, read_write> db: array<f32>;
@group(0) @binding(16) var<storage, read_write> da: array<f32>;
${rowVecs.map((x) => `var<workgroup> s_${x}: array<vec4f, ${units}>;\n${rep(ru, (n) => `var<private> f_${x}${n}: vec4f;`)}\n${vec4Loader(x, vec)}`).join('\n')}

// Step t's scalars of column i, and what the gradients added into hold there (0 otherwise).
struct Col { r: f32, w: f32, k: f32, a: f32, b: f32, dr: f32, dw: f32, dk: f32, db: f32, da: f32 }
fn colAt(bb: u32, h: u32, t: u32, i: u32) -> Col {
  if (i >= N) { return Col(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0); }
  let e = tokenBase(bb, t, h) + i;
  return Col(r[e], w[e], k[e], a[e], b[e], ${['dr', 'dw', 'dk', 'db', 'da'].map((g) => (addInto.has(g) ? `${g}[e]` : '0.0')).join(', ')});
}

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) idx: u32) {
  let h = wid.x;
  let bb = wid.y;
  let g = wid.z;
  let lane = idx % LANES;
  let i = idx / LANES;
  let cLo = g * ${colChunks}u;
  let cTop = min(cLo + ${colChunks}u, p.slots - 1u) - 1u;
${rep(nq, (c) => `  var S${c}: vec4f;\n  var dS${c}: vec4f;`)}
  var P = 0.0;
  {
    let base = slotBase(bb, h, cTop + 1u, p.slots);
${colLoad(nq, lanes, 'S', 'states', 'base')}
  }
  {
    let base = slotBase(bb, h, g, p.dslots);
${colLoad(nq, lanes, 'dS', 'dSck', 'base')}
  }
${fetchRows('cTop * CHUNK')}
  for (var ch = cTop; ; ch--) {
    let t1 = ch * CHUNK;
    let tEnd = min(t1 + CHUNK, p.T) - 1u;
    // The chunk above has read its row vectors.
    workgroupBarrier();
${rep(ru, (n) => `    if (idx + ${n * WG}u < ${units}u) {\n${rowVecs.map((x) => `      s_${x}[idx + ${n * WG}u] = f_${x}${n};`).join('\n')}\n    }`)}
    workgroupBarrier();
    // P_tEnd, exactly: the recurrence then runs at most 16 steps.
    {
      var acc = 0.0;
${rep(nq, (c) => `      ${dot(`dS${c}`, `S${c}`, 'acc')}`)}
      P = laneSum(acc);
    }
    var x = colAt(bb, h, tEnd, i);
    // Ŝ = S·E and D̂ = dS/E, E_t the product of the column's decays after step t to tEnd.
    var E = 1.0;
    var E1 = 1.0;
    for (var tt = tEnd; tt > t1; tt--) {
      // This step's column scalars; the previous step's are fetched while it runs.
      let cur = x;
      x = colAt(bb, h, tt - 1u, i);
${stepBody(true)}
      E = E1;
    }
    // The chunk below's row vectors, fetched while the first step loads its saved state (below
    // chunk 0, t1 − CHUNK wraps past T and the loads read zeros). Fetched at the chunk's start
    // instead, the column pass took 0.706 ms rather than 0.675 at 1.5B, B 8 on the H200.
${fetchRows('t1 - CHUNK')}
    {
      let tt = t1;
      let cur = x;
${stepBody(false)}
    }
    if (ch == cLo) { break; }
    // S_{t1−1} and ∂L/∂S_{t1−1} unscaled: the chunk below starts from them with E = 1.
    let iE1 = 1.0 / E1;
${rep(nq, (c) => `    S${c} *= iE1;\n    dS${c} *= E1;`)}
  }
}`;
}
