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
 *
 * Every invocation holds `rows` rows of the state (`cols` columns in the column pass), so
 * that each vec4 read from workgroup memory serves that many of them. With many heads the
 * kernels are bound by workgroup memory's bandwidth, not by their arithmetic: a warp's vec4
 * read returns 512 bytes however few distinct values it holds (a broadcast), and the SM
 * returns 128 bytes a cycle. At one row per invocation the forward at B 8 took 1,040 cycles
 * a step on an H200, against 1,024 for its 32 such reads in each of 8 warps per SM.
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
  /** Consecutive state rows per invocation: 1, 2 or 4, at most lanes. */
  rows: number;
}

/** Padded size: the vec4s of a row split evenly over the lanes. */
const paddedN = (N: number, lanes: number): number => Math.ceil(N / (4 * lanes)) * 4 * lanes;

const COMP = ['x', 'y', 'z', 'w'];
/** `f(0) … f(n−1)` on lines: loops over register-held vec4s are unrolled here, so that no
 * compiler is left to decide whether a dynamically indexed array stays in registers. */
const rep = (n: number, f: (c: number) => string): string => Array.from({ length: n }, (_, c) => f(c)).join('\n');

/**
 * Statements leaving in `name` the sum over the LANES invocations sharing them of xs[m],
 * m = lane / (LANES / xs.length), for xs one value per row (or column) an invocation holds:
 * the first levels of the butterfly each halve the values, so that it takes
 * xs.length − 1 + log2(LANES / xs.length) shuffles instead of xs.length·log2(LANES).
 * Needs xs.length a power of two and at most LANES.
 */
function splitSum(name: string, xs: readonly string[], lanes: number): string {
  const lines: string[] = [];
  let vals = xs;
  let d = lanes / 2;
  for (let level = 0; vals.length > 1; level++, d /= 2) {
    const half = vals.length / 2;
    const hi = `(lane & ${d}u) != 0u`;
    vals = vals.slice(0, half).map((lo, j) => {
      const up = vals[j + half];
      lines.push(`let ${name}_${level}_${j} = select(${lo}, ${up}, ${hi}) + subgroupShuffleXor(select(${up}, ${lo}, ${hi}), ${d}u);`);
      return `${name}_${level}_${j}`;
    });
  }
  lines.push(`var ${name} = ${vals[0]};`);
  for (; d >= 1; d /= 2) lines.push(`${name} += subgroupShuffleXor(${name}, ${d}u);`);
  return lines.join('\n');
}

/** xs[m] for the WGSL index m (nested selects: a register-held array is not indexed dynamically). */
const pick = (xs: readonly string[], m: string): string => xs.reduce((acc, x, k) => (k === 0 ? x : `select(${acc}, ${x}, ${m} == ${k}u)`));

export const scanWorkgroupSize = (s: ScanShape): number => (paddedN(s.N, s.lanes) / s.groups / s.rows) * s.lanes;
/** Invocations of the column pass with `lanes` per column and `cols` columns per invocation. */
export const colsWorkgroupSize = (N: number, lanes: number, cols: number): number => (paddedN(N, lanes) / cols) * lanes;

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
 * step t0 into registers, storeBlock() writes it to workgroup memory (w becoming the decay),
 * and scaleBlock, after a barrier, folds the decays into r, k, a, b (the dS scan, walking down,
 * also takes the block's step count: its products run from each step to the block's top).
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
${cols.map((c) => (c === 'w' ? `    s_w[idx + ${n * WG}u] = exp(W_SCALE / (1.0 + exp(-f_w${n})));` : `    s_${c}[idx + ${n * WG}u] = f_${c}${n};`)).join('\n')}
  }`,
)}
${rep(ru, (n) => rows.map((row) => `  if (idx + ${n * WG}u < ${BLOCK * R}u) { s_${row}[idx + ${n * WG}u] = f_${row}${n}; }`).join('\n'))}
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
  return { decl, fns, vec4: vector ? cols : [] };
}

/**
 * Statements setting `dst`k_c (k < cols) to column i0 + k, at this lane's vec4s c of rows, of the
 * N×N matrix at element `base` of `buf`.
 */
function colLoad(nq: number, lanes: number, cols: number, dst: string, buf: string, base: string): string {
  return rep(
    cols,
    (k) => `{ let i = i0 + ${k}u;
${rep(
  nq,
  (c) => `${dst}${k}_${c} = vec4f(0.0);
${rep(4, (e) => `{ let j = ${4 * c * lanes + e}u + 4u * lane; if (i < N && j < N) { ${dst}${k}_${c}.${COMP[e]} = ${buf}[${base} + j * N + i]; } }`)}`,
)}
}`,
  );
}

/**
 * Writes this invocation's part of rows i0 + k (k < rows) of `src`k_c to `buf` at element offset
 * `base` (row-major N×N); `value` maps each element's expression (`o` is its offset), e.g. to add
 * to what is there. With `vec4` (N a multiple of 4, `buf` an array<vec4f>: stateArray) each vec4
 * goes out as one store: scalar stores of 2-8 lanes' rows fill 32-byte sectors in pieces, which
 * cost the forward a quarter of its time in its 16-step checkpoints.
 */
function rowStore(nq: number, lanes: number, rows: number, buf: string, base: string, src: string, value = (x: string): string => x, vec4 = false): string {
  const body = (k: number): string =>
    vec4
      ? rep(nq, (c) => `    { let j = ${4 * c * lanes}u + 4u * lane; if (j < N) { let o = (${base} + i * N + j) / 4u; ${buf}[o] = ${value(`${src}${k}_${c}`)}; } }`)
      : rep(nq, (c) =>
          rep(4, (e) => `    { let j = ${4 * c * lanes + e}u + 4u * lane; if (j < N) { let o = ${base} + i * N + j; ${buf}[o] = ${value(`${src}${k}_${c}.${COMP[e]}`)}; } }`),
        );
  return rep(rows, (k) => `{ let i = i0 + ${k}u; if (i < N) {\n${body(k)}\n  } }`);
}

/** Element type of the N×N matrices the row scans write: whole vec4s when rows are made of them (rowStore). */
const stateArray = (N: number): string => (vec4Rows(N) ? 'array<vec4f>' : 'array<f32>');

/**
 * The row scans' invocation layout: `lane` of LANES sharing rows i0 … i0 + rows − 1, `mine` the
 * one of them whose sums (splitSum) this lane ends with, and `writes` whether it is the lane
 * that stores that row's per-token results.
 */
function rowLayout(s: ScanShape, R: number): string {
  const per = s.lanes / s.rows;
  return `  let lane = idx % LANES;
  let rw = (idx / LANES) * ${s.rows}u;
  let i0 = grp * ${R}u + rw;
  let mine = lane / ${per}u;
  let writes = lane % ${per}u == 0u && i0 + mine < N;`;
}

/**
 * Forward: invocation (rows i0…, lane) keeps its vec4s of those rows of S. Per step:
 * sa = S·a (lane sum), S = S·diag(decay) + sa·bᵀ + v·kᵀ, y = S·r (lane sum).
 * Grid (H, B, groups).
 */
export function forwardWgsl(s: ScanShape, hasS0: boolean, hasST: boolean): string {
  const R = paddedN(s.N, s.lanes) / s.groups;
  const nq = paddedN(s.N, s.lanes) / 4 / s.lanes;
  const vec = vec4Rows(s.N);
  const st = scanStaging(s, ['v'], false, vec);
  const q = (c: number): string => `o + ${c * s.lanes}u`;
  const ks = Array.from({ length: s.rows }, (_, k) => k);
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
${rowLayout(s, R)}
${rep(s.rows, (k) => rep(nq, (c) => `  var S${k}_${c} = vec4f(0.0);`))}
  let head = (bb * p.H + h) * N * N;
${hasS0 ? rep(s.rows, (k) => rep(nq, (c) => rep(4, (e) => `  { let i = i0 + ${k}u; let j = ${4 * c * s.lanes + e}u + 4u * lane; if (i < N && j < N) { S${k}_${c}.${COMP[e]} = s0[head + i * N + j]; } }`))) : ''}
  let slot0 = slotBase(bb, h, 0u, p.slots);
  ${rowStore(nq, s.lanes, s.rows, 'states', 'slot0', 'S', undefined, vec)}
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
${rep(s.rows, (k) => `      var acc${k} = vec4f(0.0);\n      var ya${k} = vec4f(0.0);`)}
${rep(nq, (c) => `      { let ax = s_a[${q(c)}];\n${rep(s.rows, (k) => `        acc${k} = fma(S${k}_${c}, ax, acc${k});`)} }`)}
${rep(s.rows, (k) => `      let sa${k} = laneSum(sum4(acc${k}));\n      let v${k} = s_v[st * ${R}u + rw + ${k}u];`)}
${rep(nq, (c) => `      { let bx = s_b[${q(c)}]; let kx = s_k[${q(c)}]; let rx = s_r[${q(c)}];
${rep(s.rows, (k) => `        S${k}_${c} = fma(vec4f(sa${k}), bx, fma(vec4f(v${k}), kx, S${k}_${c}));\n        ya${k} = fma(S${k}_${c}, rx, ya${k});`)} }`)}
      ${splitSum('yi', ks.map((k) => `sum4(ya${k})`), s.lanes)}
      if (writes) {
        let e = tokenBase(bb, t0 + st, h) + i0 + mine;
        y[e] = yi;
        sa[e] = ${pick(ks.map((k) => `sa${k}`), 'mine')};
      }
    }
    {
      let o = (steps - 1u) * NQ4 + lane;
${rep(nq, (c) => `      { let cx = s_c[${q(c)}];${ks.map((k) => ` S${k}_${c} *= cx;`).join('')} }`)}
    }
    // Checkpoints fall on block ends: BLOCK divides CHUNK.
    let t = t0 + steps - 1u;
    if ((t + 1u) % CHUNK == 0u || t + 1u == p.T) {
      let slot = slotBase(bb, h, t / CHUNK + 1u, p.slots);
      ${rowStore(nq, s.lanes, s.rows, 'states', 'slot', 'S', undefined, vec)}
    }
    workgroupBarrier();
  }
${hasST ? `  ${rowStore(nq, s.lanes, s.rows, 'sT', 'head', 'S', undefined, vec)}` : ''}
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
  const ks = Array.from({ length: s.rows }, (_, k) => k);
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
${rowLayout(s, R)}
${rep(s.rows, (k) => rep(nq, (c) => `  var dS${k}_${c} = vec4f(0.0);`))}
  let blocks = (p.T + ${BLOCK - 1}u) / ${BLOCK}u;
  loadBlock(bb, h, grp, idx, (blocks - 1u) * ${BLOCK}u);
  for (var n = blocks; n > 0u; n--) {
    let t0 = (n - 1u) * ${BLOCK}u;
    let steps = min(${BLOCK}u, p.T - t0);
    storeBlock(idx);
    workgroupBarrier();
    // Fetched even below the first block, where t0 − BLOCK wraps past T and loadBlock reads
    // zeros: behind a branch on n this scan took 0.55 ms instead of 0.47 at 1.5B, B 8 on the H200.
    loadBlock(bb, h, grp, idx, t0 - ${BLOCK}u);
    scaleBlock(idx, steps);
    workgroupBarrier();
    for (var st = steps; st > 0u; st--) {
      let t = t0 + st - 1u;
      // Checkpoints fall on block tops (BLOCK divides CHUNK), where D̂ = dS.
      if (t % ${group}u == ${group - 1}u || t + 1u == p.T) {
        let slot = slotBase(bb, h, t / ${group}u, p.dslots);
        ${rowStore(nq, s.lanes, s.rows, 'dSck', 'slot', 'dS', undefined, vec)}
      }
      let o = (st - 1u) * NQ4 + lane;
      let rt = (st - 1u) * ${R}u + rw;
${rep(s.rows, (k) => `      let dy${k} = s_dy[rt + ${k}u];\n      var accb${k} = vec4f(0.0);\n      var acck${k} = vec4f(0.0);`)}
${rep(nq, (c) => `      { let rx = s_r[${q(c)}]; let bx = s_b[${q(c)}]; let kx = s_k[${q(c)}];
${rep(s.rows, (k) => `        dS${k}_${c} = fma(vec4f(dy${k}), rx, dS${k}_${c});
        accb${k} = fma(dS${k}_${c}, bx, accb${k});
        acck${k} = fma(dS${k}_${c}, kx, acck${k});`)} }`)}
${rep(s.rows, (k) => `      let dsa${k} = laneSum(sum4(accb${k}));`)}
      ${splitSum('dvi', ks.map((k) => `sum4(acck${k})`), s.lanes)}
${rep(nq, (c) => `      { let ax = s_a[${q(c)}];${ks.map((k) => ` dS${k}_${c} = fma(vec4f(dsa${k}), ax, dS${k}_${c});`).join('')} }`)}
      if (writes) {
        let e = tokenBase(bb, t, h) + i0 + mine;
        dv[e] = ${addDv ? 's_dv[rt + mine] + ' : ''}dvi;
        dsa[e] = ${pick(ks.map((k) => `dsa${k}`), 'mine')};
      }
    }
    {
      let o = lane;
${rep(nq, (c) => `      { let cx = s_c[${q(c)}];${ks.map((k) => ` dS${k}_${c} *= cx;`).join('')} }`)}
    }
    workgroupBarrier();
  }
${hasDs0 ? `  let head = (bb * p.H + h) * N * N;\n  ${rowStore(nq, s.lanes, s.rows, 'ds0', 'head', 'dS', accumulate ? (x) => `ds0[o] + ${x}` : undefined, vec)}` : ''}
}`;
}

/**
 * Backward, second pass: one workgroup per `colChunks` consecutive 16-step chunks, all
 * workgroups at once. Invocation (columns i0…, lane) keeps its vec4s of `cols` columns of S
 * and of dS, starts from the saved state after its top chunk's last step and the dS checkpoint
 * there, and walks the steps down: dr = S_tᵀ·dy; S_{t−1} from the checkpoint at a chunk's first
 * step, else by inverting the step with the saved sa; dS += dy·rᵀ; d(decay) = Σ dS∘S_{t−1},
 * dk = dSᵀ·v, db = dSᵀ·sa, da = S_{t−1}ᵀ·dsa (column lane sums); dS = dS·diag(decay) + dsa·aᵀ
 * with the first pass's dsa. A chunk ends on the exact saved state, which starts the chunk
 * below, so inverting never runs past 16 steps; a workgroup of several chunks loads the dS
 * checkpoint and the top state once. Grid (H, B, ceil(chunks/colChunks)).
 * Each step reads each row vector from workgroup memory once for all of an invocation's
 * columns; the chunk's first step, which loads S_{t−1} instead of inverting, has a copy of the
 * loop body of its own.
 * Like the scans, it keeps each column scaled (Ŝ = S·E, D̂ = dS/E with E the product of the
 * chunk's decays after step t), so that inverting a step and the dS update skip the decay: 9
 * f32 operations per element and step instead of 11; the scalars E, 1/E go into the sums' results.
 */
export function columnBackwardWgsl(N: number, lanes: number, cols: number, colChunks: number, addInto: ReadonlySet<string>): string {
  const nq = paddedN(N, lanes) / 4 / lanes;
  const rowVecs = ['dy', 'v', 'sa', 'dsa'];
  const vec = vec4Rows(N);
  const ks = Array.from({ length: cols }, (_, k) => k);
  const per = lanes / cols;
  // Writes gradient g at element e, or adds into it (its value there fetched a step ahead with the column's scalars).
  const out = (g: string, x: string): string => `${g}[e] = ${addInto.has(g) ? `${pick(ks.map((k) => `cur${k}.${g}`), 'mine')} + ` : ''}${x};`;
  const units = WKV7_CHUNK * (paddedN(N, lanes) / 4);
  const WG = colsWorkgroupSize(N, lanes, cols);
  // acc += x·y, one chain of scalar fmas (vec4 accumulators would hold 4× the registers).
  const dot = (x: string, y: string, acc: string): string => `${acc} = fma(${x}.x, ${y}.x, fma(${x}.y, ${y}.y, fma(${x}.z, ${y}.z, fma(${x}.w, ${y}.w, ${acc}))));`;
  // Step tt with S = S_tt when reconstructing (S_{tt−1} by inverting step tt), else with S = S_{tt−1} and dr summed.
  const step = (reconstruct: boolean): string =>
    rep(nq, (c) => {
      const qq = `o + ${c * lanes}u`;
      return `      { let dyv = s_dy[${qq}]; let vv = s_v[${qq}]; let sav = s_sa[${qq}]; let dsav = s_dsa[${qq}];
${rep(cols, (k) => {
  const S = `S${k}_${c}`;
  const dS = `dS${k}_${c}`;
  return `${reconstruct ? `        ${dot(S, 'dyv', `accr${k}`)}\n        ${S} = fma(vec4f(-kE${k}), vv, fma(vec4f(-bE${k}), sav, ${S}));\n` : ''}        ${dS} = fma(dyv, vec4f(rE${k}), ${dS});
        ${dot(dS, S, `accd${k}`)}
        ${dot(dS, 'vv', `acck${k}`)}
        ${dot(dS, 'sav', `accb${k}`)}
        ${dot(S, 'dsav', `acca${k}`)}
        ${dS} = fma(dsav, vec4f(aE${k}), ${dS});`;
})}
      }`;
    });
  const sums = ['accr', 'accd', 'acck', 'accb', 'acca'];
  return /* wgsl */ `${header(N, lanes)}
${readBindings(['r', 'w', 'k', 'v', 'a', 'b', 'dy', 'states', 'sa', 'dsa', 'dSck'], vec ? rowVecs : [])}
@group(0) @binding(12) var<storage, read_write> dr: array<f32>;
@group(0) @binding(13) var<storage, read_write> dw: array<f32>;
@group(0) @binding(14) var<storage, read_write> dk: array<f32>;
@group(0) @binding(15) var<storage, read_write> db: array<f32>;
@group(0) @binding(16) var<storage, read_write> da: array<f32>;
${rowVecs.map((x) => `var<workgroup> s_${x}: array<vec4f, ${units}>;\n${vec4Loader(x, vec)}`).join('\n')}

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
  let i0 = (idx / LANES) * ${cols}u;
  let mine = lane / ${per}u;
  let writes = lane % ${per}u == 0u && i0 + mine < N;
  let cLo = g * ${colChunks}u;
  let cTop = min(cLo + ${colChunks}u, p.slots - 1u) - 1u;
${rep(cols, (k) => rep(nq, (c) => `  var S${k}_${c}: vec4f;\n  var dS${k}_${c}: vec4f;`))}
  {
    let base = slotBase(bb, h, cTop + 1u, p.slots);
${colLoad(nq, lanes, cols, 'S', 'states', 'base')}
  }
  {
    let base = slotBase(bb, h, g, p.dslots);
${colLoad(nq, lanes, cols, 'dS', 'dSck', 'base')}
  }
  for (var ch = cTop; ; ch--) {
    let t1 = ch * CHUNK;
    let tEnd = min(t1 + CHUNK, p.T) - 1u;
    // The chunk above has read its row vectors.
    workgroupBarrier();
    for (var n = 0u; n < ${Math.ceil(units / WG)}u; n++) {
      let u = idx + n * ${WG}u;
      if (u < ${units}u) {
        let t = t1 + u / NQ4;
        let q = u % NQ4;
${rowVecs.map((x) => `        s_${x}[u] = ${x}4(bb, h, t, q);`).join('\n')}
      }
    }
    workgroupBarrier();
${rep(cols, (k) => `    var x${k} = colAt(bb, h, tEnd, i0 + ${k}u);
    // Ŝ = S·E and D̂ = dS/E, E_t the product of the column's decays after step t to tEnd.
    var E${k} = 1.0;
    var Ed${k} = 1.0;`)}
    for (var tt = tEnd; ; tt--) {
      // This step's column scalars, and the previous step's fetched while it runs (at the chunk's
      // first step, step t1's again: a fetch behind a branch waits where it is used).
      let tp = max(tt, t1 + 1u) - 1u;
${rep(cols, (k) => `      let cur${k} = x${k};
      x${k} = colAt(bb, h, tp, i0 + ${k}u);
      let sig${k} = 1.0 / (1.0 + exp(-cur${k}.w));
      Ed${k} = E${k} * exp(W_SCALE * sig${k});
      let kE${k} = cur${k}.k * E${k};
      let bE${k} = cur${k}.b * E${k};
      let rE${k} = cur${k}.r / E${k};
      let aE${k} = cur${k}.a / Ed${k};
${sums.map((a) => `      var ${a}${k} = 0.0;`).join('\n')}`)}
      let o = (tt - t1) * NQ4 + lane;
      if (tt > t1) {
${step(true)}
      } else {
${rep(nq, (c) => `        { let dyv = s_dy[o + ${c * lanes}u];${ks.map((k) => ` ${dot(`S${k}_${c}`, 'dyv', `accr${k}`)}`).join('')} }`)}
        let base = slotBase(bb, h, ch, p.slots);
${colLoad(nq, lanes, cols, 'S', 'states', 'base')}
${rep(cols, (k) => rep(nq, (c) => `        S${k}_${c} *= Ed${k};`))}
${step(false)}
      }
${sums.map((a) => `      ${splitSum(`${a}S`, ks.map((k) => `${a}${k}`), lanes)}`).join('\n')}
      if (writes) {
        let e = tokenBase(bb, tt, h) + i0 + mine;
        let Em = ${pick(ks.map((k) => `E${k}`), 'mine')};
        let Edm = ${pick(ks.map((k) => `Ed${k}`), 'mine')};
        let sigm = ${pick(ks.map((k) => `sig${k}`), 'mine')};
        ${out('dr', 'accrS / Em')}
        ${out('dw', 'accdS * W_SCALE * sigm * (1.0 - sigm)')}
        ${out('dk', 'acckS * Em')}
        ${out('db', 'accbS * Em')}
        ${out('da', 'accaS / Edm')}
      }
      if (tt == t1) { break; }
${rep(cols, (k) => `      E${k} = Ed${k};`)}
    }
    if (ch == cLo) { break; }
    // S_{t1−1} and ∂L/∂S_{t1−1} unscaled: the chunk below starts from them with E = 1.
${rep(cols, (k) => `    { let iEd = 1.0 / Ed${k};\n${rep(nq, (c) => `      S${k}_${c} *= iEd;\n      dS${k}_${c} *= Ed${k};`)}\n    }`)}
  }
}`;
}
