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
 * computed: two barriers per BLOCK steps, none inside a block.
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
export const chunkWorkgroupSize = (N: number): number => 16 * Math.ceil(N / 4);

/** Workgroup memory of the row scans and of the chunk pass, in bytes. */
export const scanWorkgroupBytes = (s: ScanShape): number => BLOCK * (6 * paddedN(s.N, s.lanes) + paddedN(s.N, s.lanes) / s.groups) * 4;
export const chunkWorkgroupBytes = (N: number): number => (64 + 16 + 8) * Math.ceil(N / 4) * 16 + 512 * 16;

/** Bindings 1, 2, … of f32 arrays read by a kernel, under these names. */
const readBindings = (names: readonly string[]): string => names.map((n, i) => `@group(0) @binding(${i + 1}) var<storage, read> ${n}: array<f32>;`).join('\n');

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

/** A function `name4(bb, h, t, q) -> vec4f`: columns 4q..4q+3 of token t of `buf`, zero outside [0, T) × [0, N). */
function vec4Loader(buf: string): string {
  return /* wgsl */ `
fn ${buf}4(bb: u32, h: u32, t: u32, q: u32) -> vec4f {
  var o = vec4f(0.0);
  if (t < p.T) {
    let e = tokenBase(bb, t, h) + 4u * q;
${rep(4, (c) => `    if (4u * q + ${c}u < N) { o.${COMP[c]} = ${buf}[e + ${c}u]; }`)}
  }
  return o;
}`;
}

/**
 * Staging of one BLOCK of steps for a row scan: column vectors r, w, k, a, b ([step][vec4])
 * and one row vector `row` (this workgroup's R rows): loadBlock(t0) fetches the block from
 * step t0 into registers, storeBlock() writes it to workgroup memory (w becoming the decay),
 * and scaleBlock, after a barrier, folds the decays into r, k, a, b (the dS scan, walking down,
 * also takes the block's step count: its products run from each step to the block's top).
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
function scanStaging(s: ScanShape, row: string, down: boolean): { decl: string; fns: string } {
  const cols = ['r', 'w', 'k', 'a', 'b'];
  const WG = scanWorkgroupSize(s);
  const units = BLOCK * (paddedN(s.N, s.lanes) / 4);
  const R = paddedN(s.N, s.lanes) / s.groups;
  const cu = Math.ceil(units / WG);
  const ru = Math.ceil((BLOCK * R) / WG);
  const decl = [
    ...cols.map((c) => `var<workgroup> s_${c}: array<vec4f, ${units}>;\n${rep(cu, (n) => `var<private> f_${c}${n}: vec4f;`)}`),
    `var<workgroup> s_c: array<vec4f, ${units}>;`,
    `var<workgroup> s_${row}: array<f32, ${BLOCK * R}>;\n${rep(ru, (n) => `var<private> f_${row}${n}: f32;`)}`,
    ...cols.map(vec4Loader),
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
    f_${row}${n} = 0.0;
    if (u < ${BLOCK * R}u && t < p.T && i < N) { f_${row}${n} = ${row}[tokenBase(bb, t, h) + i]; }
  }`,
)}
}
fn storeBlock(idx: u32) {
${rep(
  cu,
  (n) => `  if (idx + ${n * WG}u < ${units}u) {
${cols.map((c) => (c === 'w' ? `    s_w[idx + ${n * WG}u] = exp(W_SCALE / (1.0 + exp(-f_w${n})));` : `    s_${c}[idx + ${n * WG}u] = f_${c}${n};`)).join('\n')}
  }`,
)}
${rep(ru, (n) => `  if (idx + ${n * WG}u < ${BLOCK * R}u) { s_${row}[idx + ${n * WG}u] = f_${row}${n}; }`)}
}
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
      for (var s = st + 1u; s < steps; s++) { f *= s_w[s * NQ4 + q]; }
      let g = f * s_w[u];
      s_r[u] *= 1.0 / f;
      s_k[u] *= f;
      s_b[u] *= f;
      s_a[u] *= 1.0 / g;
      s_c[u] = g;`
    : `      var c = vec4f(1.0);
      for (var s = 0u; s < st; s++) { c *= s_w[s * NQ4 + q]; }
      s_a[u] *= c;
      c *= s_w[u];
      let ic = 1.0 / c;
      s_r[u] *= c;
      s_k[u] *= ic;
      s_b[u] *= ic;
      s_c[u] = c;`
}
    }
  }`,
)}
}`;
  return { decl, fns };
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
const stateArray = (N: number): string => (N % 4 === 0 ? 'array<vec4f>' : 'array<f32>');

/**
 * Forward: invocation (row i, lane) keeps its vec4s of row i of S. Per step:
 * sa = S·a (lane sum), S = S·diag(decay) + sa·bᵀ + v·kᵀ, y = S·r (lane sum).
 * Grid (H, B, groups).
 */
export function forwardWgsl(s: ScanShape, hasS0: boolean, hasST: boolean): string {
  const R = paddedN(s.N, s.lanes) / s.groups;
  const nq = paddedN(s.N, s.lanes) / 4 / s.lanes;
  const st = scanStaging(s, 'v', false);
  const vec = s.N % 4 === 0;
  const q = (c: number): string => `o + ${c * s.lanes}u`;
  return /* wgsl */ `${header(s.N, s.lanes)}
${readBindings(['r', 'w', 'k', 'v', 'a', 'b'])}
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
    loadBlock(bb, h, grp, idx, t0 + ${BLOCK}u);
    scaleBlock(idx);
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
      if (lane == 0u && i < N) {
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
 * every 16-step chunk (dSck slot c at t = min(16c+15, T−1)), then dS += dy·rᵀ; dsa = dS·b and
 * dv = dS·k (lane sums); dS = dS·diag(decay) + dsa·aᵀ. Saves dsa for the chunk pass; grid
 * (H, B, groups).
 */
export function stateBackwardWgsl(s: ScanShape, hasDs0: boolean, accumulate: boolean): string {
  const R = paddedN(s.N, s.lanes) / s.groups;
  const nq = paddedN(s.N, s.lanes) / 4 / s.lanes;
  const st = scanStaging(s, 'dy', true);
  const vec = s.N % 4 === 0;
  const q = (c: number): string => `o + ${c * s.lanes}u`;
  return /* wgsl */ `${header(s.N, s.lanes)}
${readBindings(['r', 'w', 'k', 'a', 'b', 'dy'])}
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
    if (n > 1u) { loadBlock(bb, h, grp, idx, t0 - ${BLOCK}u); }
    scaleBlock(idx, steps);
    workgroupBarrier();
    for (var st = steps; st > 0u; st--) {
      let t = t0 + st - 1u;
      // Checkpoints fall on block tops (BLOCK divides CHUNK), where D̂ = dS.
      if (t % CHUNK == CHUNK - 1u || t + 1u == p.T) {
        let slot = slotBase(bb, h, t / CHUNK, p.dslots);
        ${rowStore(nq, s.lanes, 'dSck', 'slot', 'dS', undefined, vec)}
      }
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
      if (lane == 0u && i < N) {
        let e = tokenBase(bb, t, h) + i;
        dv[e] = dvi;
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
 * Backward, second pass: one workgroup per 16-step chunk and head, all at once, no step
 * depending on another. With the chunk's saved sa and the dS scan's dsa both known, S and dS
 * within a chunk are sums of decayed rank-one terms (c_t: the product of the column's decays
 * from the chunk's first step to t; S0, Z: the state before the chunk, the dS checkpoint at
 * its top):
 *   S_t = S0·diag(c_t) + Σ_{s≤t} (sa_s·b_sᵀ + v_s·k_sᵀ)·diag(c_t/c_s)
 *   dS_t = Z·diag(c_top/c_t) + Σ_{u≥t} dy_u·r_uᵀ·diag(c_u/c_t) + Σ_{u>t} dsa_u·a_uᵀ·diag(c_{u−1}/c_t)
 * so the column sums dr_t = S_tᵀ·dy_t, da_t = S_{t−1}ᵀ·dsa_t, dk_t = dS_tᵀ·v_t and
 * db_t = dS_tᵀ·sa_t are two products, each of N+32 rows by N columns with N+32 by 32:
 *   [dr/c | da/c_{t−1}] = [S0; k/c; b/c]ᵀ · [dy dsa; masked M]
 *   [dk·c | db·c] = [c_top·Z; r·c; a·c_{t−1}]ᵀ · [v sa; masked Mᵀ]
 * with M = [v sa]ᵀ·[dy dsa], the chunk's 32×32 inner products. The decay's gradient needs no
 * state: d log(decay_t) = Σ_i dS_t∘S_{t−1}∘decay_t = r_t·dr_t − b_t·db_t − k_t·dk_t
 * + a_{t+1}·da_{t+1} + (the same at t+1), ending at the chunk's top in Σ_i Z∘S_top (as in GLA's
 * backward). The decays of 16 steps stay above 0.545¹⁶ ≈ 6e-5, so k/c and b/c keep far from
 * f32's range.
 *
 * Invocation (product, output columns 4cg..4cg+3, state columns 4jq..4jq+3) keeps 4 vec4
 * sums, each row adding a vec4 of A times one B value. Rows of S0 and Z come from storage, 4
 * at a time; B from workgroup memory, where `xs` holds [dy dsa] and [v sa] by row (the vec4
 * index swizzled with the row, so that the transposing stores spread over the banks), then
 * the rows [k/c; b/c] and [r·c; a·c_{t−1}], then the terms of d log(decay); `bm` holds the
 * masked M and Mᵀ, `cc` the decays, then c. Each phase issues all its loads before using one.
 */
export function chunkBackwardWgsl(N: number): string {
  const L = WKV7_CHUNK;
  const NQ = Math.ceil(N / 4);
  const WG = chunkWorkgroupSize(N);
  const vec = N % 4 === 0;
  const arr = vec ? 'array<vec4f>' : 'array<f32>';
  // Rows of S0 and Z loaded at once (a divisor of N; with 4, i & 3 is the unrolled index).
  const U = [4, 2, 1].find((u) => N % u === 0) ?? 1;
  const sw = (i: string, n: number): string => (U === 4 ? `${n}u` : `(${i} & 3u)`);
  // Columns 4jq..4jq+3 of row i of the N×N matrix at `base` of `buf`, zero past N.
  const row4 = (buf: string, base: string, i: string): string =>
    vec
      ? `${buf}[(${base} + ${i} * N) / 4u + jq]`
      : `vec4f(${[0, 1, 2, 3].map((e) => `select(0.0, ${buf}[min(${base} + ${i} * N + 4u * jq + ${e}u, ${base} + N * N - 1u)], 4u * jq + ${e}u < N)`).join(', ')})`;
  // Stores vec4 `x` at columns 4jq..4jq+3 of the per-token vector at element `e` of `buf`.
  const store4 = (buf: string, e: string, x: string): string =>
    vec ? `${buf}[(${e}) / 4u] = ${x};` : `for (var m = 0u; m < 4u; m++) { if (4u * jq + m < N) { ${buf}[${e} + m] = ${x}[m]; } }`;
  // Statements fetching trip i0's rows into n0…: of S0, or of Z and the trip's row of S_top (else zero).
  const fetch = (i0: string): string => `if (prod == 0u) {
${rep(U, (n) => `    n${n} = ${row4('states', 'sBase', `(${i0} + ${n}u)`)};`)}
  } else {
${rep(U, (n) => `    n${n} = ${row4('dSck', 'zBase', `(${i0} + ${n}u)`)};`)}
    ne = vec4f(0.0);
    if ((${i0} / ${U}u) % ${8 / U}u == cg / ${U}u) { ne = ${row4('states', 'topBase', `(${i0} + mine)`)}; }
  }`;
  // a_m of this trip's rows, m < U.
  const pick = (m: string): string => (U === 1 ? 'a0' : U === 2 ? `select(a0, a1, ${m} == 1u)` : `select(select(a0, a1, ${m} == 1u), select(a2, a3, ${m} == 3u), ${m} >= 2u)`);
  const fmas = (a: string, b: string): string => rep(4, (c) => `    acc${c} = fma(${a}, vec4f(${b}.${COMP[c]}), acc${c});`);
  return /* wgsl */ `${header(N, 1)}
${readBindings(['r', 'w', 'k', 'v', 'a', 'b', 'dy'])}
@group(0) @binding(8) var<storage, read> states: ${arr};
@group(0) @binding(9) var<storage, read> sa: array<f32>;
@group(0) @binding(10) var<storage, read> dsa: array<f32>;
@group(0) @binding(11) var<storage, read> dSck: ${arr};
@group(0) @binding(12) var<storage, read_write> dr: ${arr};
@group(0) @binding(13) var<storage, read_write> dw: ${arr};
@group(0) @binding(14) var<storage, read_write> dk: ${arr};
@group(0) @binding(15) var<storage, read_write> db: ${arr};
@group(0) @binding(16) var<storage, read_write> da: ${arr};
const NQ = ${NQ}u;
const X2 = ${8 * N}u;
var<workgroup> xs: array<vec4f, ${64 * NQ}>;
var<workgroup> bm: array<vec4f, 512>;
var<workgroup> cc: array<vec4f, ${L * NQ}>;
var<workgroup> bnd: array<vec4f, ${8 * NQ}>;

// Element u = t·N + i of [dy dsa v sa] at step t of the chunk, zero past its end.
fn xLoad(bb: u32, h: u32, t1: u32, Lc: u32, u: u32) -> vec4f {
  let t = u / N;
  if (u >= CHUNK * N || t >= Lc) { return vec4f(0.0); }
  let e = tokenBase(bb, t1 + t, h) + u % N;
  return vec4f(dy[e], dsa[e], v[e], sa[e]);
}
fn xStore(u: u32, x: vec4f) {
  if (u >= CHUNK * N) { return; }
  let t = u / N;
  let i = u % N;
  let lo = i * 8u + ((t / 4u) ^ (i & 3u));
  let hi = i * 8u + (((t + 16u) / 4u) ^ (i & 3u));
  xs[lo][t % 4u] = x.x;
  xs[hi][t % 4u] = x.y;
  xs[X2 + lo][t % 4u] = x.z;
  xs[X2 + hi][t % 4u] = x.w;
}
// Step t's k, b, r, a and decay at column j (u = t·4NQ + j), zero (decay 1) past the chunk or N.
struct ColIn { x: vec4f, dec: f32 }
fn colLoad(bb: u32, h: u32, t1: u32, Lc: u32, u: u32) -> ColIn {
  let t = u / (4u * NQ);
  let j = u % (4u * NQ);
  if (u >= CHUNK * 4u * NQ || t >= Lc || j >= N) { return ColIn(vec4f(0.0), 1.0); }
  let e = tokenBase(bb, t1 + t, h) + j;
  return ColIn(vec4f(k[e], b[e], r[e], a[e]), exp(W_SCALE / (1.0 + exp(-w[e]))));
}
fn colStore(u: u32, c: ColIn) {
  if (u >= CHUNK * 4u * NQ) { return; }
  let t = u / (4u * NQ);
  let j = u % (4u * NQ);
${[0, 1, 2, 3].map((q) => `  xs[(${q * L}u + t) * NQ + j / 4u][j % 4u] = c.x.${COMP[q]};`).join('\n')}
  cc[t * NQ + j / 4u][j % 4u] = c.dec;
}

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) idx: u32) {
  let h = wid.x;
  let bb = wid.y;
  let ch = wid.z;
  let prod = idx / (8u * NQ);
  let cg = (idx / NQ) % 8u;
  let jq = idx % NQ;
  let t1 = ch * CHUNK;
  let Lc = min(CHUNK, p.T - t1);
  let sBase = slotBase(bb, h, ch, p.slots);
  let zBase = slotBase(bb, h, ch, p.dslots);
  let topBase = slotBase(bb, h, ch + 1u, p.slots);
  // B's first N rows: [dy dsa] (X1) and [v sa] (X2) by row i, the chunk's steps as columns.
${rep(Math.ceil((L * N) / WG), (n) => `  let x${n} = xLoad(bb, h, t1, Lc, idx + ${n * WG}u);`)}
  // The products' first rows, fetched now to arrive while B is staged.
  let mine = cg % ${U}u;
${rep(U, (n) => `  var n${n}: vec4f;`)}
  var ne = vec4f(0.0);
  ${fetch('0u')}
${rep(Math.ceil((L * N) / WG), (n) => `  xStore(idx + ${n * WG}u, x${n});`)}
  workgroupBarrier();
  // M[s', t'] = [v sa]_s' · [dy dsa]_t', 4 columns at a time, into B's last 32 rows: of the
  // first product masked to s ≤ t (dy columns) or s < t (dsa), of the second transposed and
  // masked to u ≥ t (rows of r) or u > t (a).
  for (var o = idx; o < 256u; o += ${WG}u) {
    let s = o / 8u;
    let tq = o % 8u;
    var m = vec4f(0.0);
    for (var i = 0u; i < N; i++) {
      m = fma(vec4f(xs[X2 + i * 8u + ((s / 4u) ^ (i & 3u))][s % 4u]), xs[i * 8u + (tq ^ (i & 3u))], m);
    }
    let tt = (4u * tq) % 16u + vec4u(0u, 1u, 2u, 3u);
    let strict = select(0u, 1u, tq >= 4u);
    bm[o] = select(vec4f(0.0), m, vec4u(s % 16u + strict) <= tt);
    for (var e = 0u; e < 4u; e++) {
      let tc = 4u * tq + e;
      let keep = select(tc % 16u >= s % 16u, tc % 16u > s % 16u, tc >= 16u);
      bm[256u + tc * 8u + s / 4u][s % 4u] = select(0.0, m[e], keep);
    }
  }
  // The first N rows of the products: A = S0 (product 0) or Z (1), B = X1 or X2; the rows of
  // trip i0 + U are fetched while trip i0's are used. Product 1 also sums Z∘S_top over rows
  // cg, cg + 8, …: the trip holding such a row fetches that row of S_top as well.
  let xb = select(0u, X2, prod == 1u);
${rep(4, (c) => `  var acc${c} = vec4f(0.0);`)}
  var zs = vec4f(0.0);
  for (var i0 = 0u; i0 < N; i0 += ${U}u) {
${rep(U, (n) => `    let a${n} = n${n};`)}
    let ae = ne;
    if (i0 + ${U}u < N) { ${fetch(`i0 + ${U}u`)} }
${rep(U, (n) => `    {
      let bv = xs[xb + (i0 + ${n}u) * 8u + (cg ^ ${sw(`(i0 + ${n}u)`, n)})];
  ${fmas(`a${n}`, 'bv')}
    }`)}
    zs = fma(${pick('mine')}, ae, zs);
  }
  if (prod == 1u) { bnd[cg * NQ + jq] = zs; }
  workgroupBarrier();
  // A's last 32 rows by step: k, b (product 0) and r, a (product 1) raw, and the decays.
${rep(Math.ceil((L * 4 * NQ) / WG), (n) => `  let c${n} = colLoad(bb, h, t1, Lc, idx + ${n * WG}u);`)}
${rep(Math.ceil((L * 4 * NQ) / WG), (n) => `  colStore(idx + ${n * WG}u, c${n});`)}
  workgroupBarrier();
  // Scaled in place to k/c_t, b/c_t, r·c_t, a·c_{t−1}; then cc holds c. (16·NQ = WG elements.)
  let ts = idx / NQ;
  var c = vec4f(1.0);
  for (var m = 0u; m < ts; m++) { c *= cc[m * NQ + jq]; }
  let cPrev = c;
  c *= cc[idx];
  xs[idx] /= c;
  xs[${L}u * NQ + idx] /= c;
  xs[${2 * L}u * NQ + idx] *= c;
  xs[${3 * L}u * NQ + idx] *= cPrev;
  workgroupBarrier();
  cc[idx] = c;
  workgroupBarrier();
  // Z's part of the second product was Zᵀ·[v sa]; it is c_top·Zᵀ·[v sa].
  if (prod == 1u) {
    let cTop = cc[(Lc - 1u) * NQ + jq];
${rep(4, (cc) => `    acc${cc} *= cTop;`)}
  }
  let ab = prod * ${2 * L}u * NQ;
  for (var s = 0u; s < 32u; s++) {
    let a4 = xs[ab + s * NQ + jq];
    let bv = bm[prod * 256u + s * 8u + cg];
${fmas('a4', 'bv')}
  }
  // Outputs at columns 4cg..4cg+3 = steps t of dy (cg < 4) or dsa (cg ≥ 4), and the terms of
  // d log(decay) they give: r·dr, a·da, −k·dk, −b·db (region 2·prod + kind of xs, after a barrier).
  let kind = cg / 4u;
${rep(4, (n) => `  var q${n} = vec4f(0.0);`)}
${rep(4, (n) => `  {
    let t = 4u * (cg % 4u) + ${n}u;
    if (t < Lc) {
      let ct = cc[t * NQ + jq];
      var o: vec4f;
      if (prod == 0u) {
        if (kind == 0u) { o = ct * acc${n}; } else { o = select(vec4f(1.0), cc[(max(t, 1u) - 1u) * NQ + jq], t > 0u) * acc${n}; }
        q${n} = xs[(${2 * L}u + 16u * kind + t) * NQ + jq] * acc${n};
      } else {
        o = acc${n} / ct;
        q${n} = -xs[(16u * kind + t) * NQ + jq] * acc${n};
      }
      let e = tokenBase(bb, t1 + t, h) + 4u * jq;
      switch (prod * 2u + kind) {
        case 0u: { ${store4('dr', 'e', 'o')} }
        case 1u: { ${store4('da', 'e', 'o')} }
        case 2u: { ${store4('dk', 'e', 'o')} }
        default: { ${store4('db', 'e', 'o')} }
      }
    }
  }`)}
  workgroupBarrier();
${rep(4, (n) => `  xs[((prod * 2u + kind) * 16u + 4u * (cg % 4u) + ${n}u) * NQ + jq] = q${n};`)}
  workgroupBarrier();
  // d log(decay_t) = Σ_{u≥t} (r·dr − k·dk − b·db)_u + Σ_{u>t} (a·da)_u + Σ_i Z∘S_top, one (t, jq) each.
  if (ts < Lc) {
    let e = tokenBase(bb, t1 + ts, h) + 4u * jq;
    var wr = vec4f(0.0);
    for (var m = 0u; m < 4u; m++) { if (4u * jq + m < N) { wr[m] = w[e + m]; } }
    var g = vec4f(0.0);
    for (var m = 0u; m < 8u; m++) { g += bnd[m * NQ + jq]; }
    for (var s = ts; s < Lc; s++) { g += xs[s * NQ + jq] + xs[(32u + s) * NQ + jq] + xs[(48u + s) * NQ + jq]; }
    for (var s = ts + 1u; s < Lc; s++) { g += xs[(16u + s) * NQ + jq]; }
    let sig = 1.0 / (1.0 + exp(-wr));
    let d = g * W_SCALE * sig * (1.0 - sig);
    ${store4('dw', 'e', 'd')}
  }
}`;
}
