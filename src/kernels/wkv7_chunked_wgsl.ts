/**
 * WGSL of the chunked (time-parallel) WKV7 recurrence: the forward, an alternative to
 * forwardWgsl's row scan that writes the same y, saved sa, state checkpoints and sT (wkv7.ts
 * has the recurrence), and, run backwards, the backward's dS scan (end of this comment).
 *
 * The scan takes T dependent steps per head; this takes ceil(T/16) dependent chunk steps,
 * each a pair of small matrix products, and moves all work that does not depend on the
 * state entering a chunk into a pass that runs every chunk at once.
 *
 * Within a chunk (local steps t, s = 0..15, S0 the state entering it, d_t the decays):
 *   P_t = Π_{τ≤t} d_τ (inclusive, per key column j), Pex_t = P_t / d_t (exclusive),
 *   ã_t = a_t⊙Pex_t, r̃_t = r_t⊙P_t, b̂_s = b_s/P_s, k̂_s = k_s/P_s,
 *   b'_s = b_s⊙Π_{τ>s} d_τ, k'_s likewise, P_L = Π_τ d_τ.
 * Unrolling S_t = S_{t−1}·diag(d_t) + sa_t b_tᵀ + v_t k_tᵀ from S0 gives, with rows = steps,
 *   sa_t = S0 ã_t + Σ_{s<t} (ã_t·b̂_s) sa_s + Σ_{s<t} (ã_t·k̂_s) v_s
 *   y_t  = S0 r̃_t + Σ_{s≤t} (r̃_t·b̂_s) sa_s + Σ_{s≤t} (r̃_t·k̂_s) v_s
 *   S_L  = S0·diag(P_L) + Σ_s sa_s b'_sᵀ + v_s k'_sᵀ.
 * With the 16×16 matrices Mab, Mak (strictly lower) and Mrb, Mrk (lower) of those dot
 * products and Inv = (I − Mab)⁻¹, the sa rows are U = G·S0ᵀ + U0 and the y rows
 * Y = Q·S0ᵀ + Y0, where G = Inv·Ã, Q = R̃ + (Mrb·Inv)·Ã, U0 = (Inv·Mak)·V and
 * Y0 = (Mrb·Inv·Mak + Mrk)·V depend only on the chunk's own inputs.
 *
 * Pass 1 (chunkPrepWgsl, grid (H, B, chunks)): G, Q, b', k', P_L into a per-chunk block,
 * U0 and Y0 into sa and y. The ratios P_{t−1}/P_s enter as Pex_t·(1/P_s): d ≥ 0.545, so
 * P_s ≥ 0.545^16 ≈ 6e-5 and the reciprocals stay far inside f32. Inv is the Neumann series
 * Σ_{k<16} Mab^k (Mab is nilpotent), formed as (I+L)(I+L²)(I+L⁴)(I+L⁸) in 6 parallel steps.
 * Pass 2 (chunkCarryWgsl, grid (H, B, groups)): per chunk, [U; Y] = [G; Q]·S0ᵀ + [U0; Y0]
 * (sa and y written), then S_L = S0⊙P_L + [U; V]ᵀ·[b'; k'] and its checkpoint. Rows of S
 * never mix, so like the scan each workgroup owns NP/groups rows, `lanes` invocations each.
 *
 * The backward's dS scan (stateBackwardWgsl) is the same kind of recurrence, transposed and
 * walked back in time: with X_t = ∂L/∂S_t from the steps after t (X_{T−1} = 0),
 *   E_t = X_t + dy_t r_tᵀ,  dsa_t = E_t b_t,  dv_t = E_t k_t,  X_{t−1} = E_t·diag(d_t) + dsa_t a_tᵀ,
 * checkpoints dSck[c] = X at step min(16c+15, T−1) and ds0 = X_{−1}. Number a chunk's steps
 * backwards, t = 0 its last step … 15 its first (in a partial last chunk the missing steps
 * come first, with d = 1 and zero vectors: they change nothing), X0 the dS entering it from
 * the later chunk, P_t, Pex_t the products over these reversed steps as above. Unrolling,
 *   E_t = X0·diag(Pex_t) + Σ_{s≤t} dy_s (r_s⊙Pex_t/Pex_s)ᵀ + Σ_{s<t} dsa_s (a_s⊙Pex_t/P_s)ᵀ
 *   dsa_t = X0 (b_t⊙Pex_t) + Σ_{s<t} ((b_t⊙Pex_t)·(a_s/P_s)) dsa_s + Σ_{s≤t} ((b_t⊙Pex_t)·(r_s/Pex_s)) dy_s
 *   dv_t  = X0 (k_t⊙Pex_t) + Σ_{s<t} ((k_t⊙Pex_t)·(a_s/P_s)) dsa_s + Σ_{s≤t} ((k_t⊙Pex_t)·(r_s/Pex_s)) dy_s
 *   X_L   = X0·diag(P_L) + Σ_s dsa_s (a_s⊙Π_{τ>s} d_τ)ᵀ + dy_s (r_s⊙Π_{τ≥s} d_τ)ᵀ.
 * With k⊙Pex = (k/d)⊙P and r/Pex = (r⊙d)/P, these are the forward's formulas term for term
 * with a → b, r → k/d, b → a, k → r⊙d, v → dy (then sa → dsa, y → dv, S → X, b' → a⊙Π_{τ>s},
 * k' → r⊙Π_{τ≥s}), except which diagonals count: dsa_t sees dy_t (its "Mak" includes s = t)
 * and dv_t does not see dsa_t (its "Mrb" excludes it). So both passes take a direction: the
 * backward binds those buffers in those roles, divides and multiplies by d as it loads, swaps
 * the two diagonals, walks the chunks from the last and each chunk's steps from its end,
 * writes dSck[c] on entering chunk c (p.chunks slots) and ds0 (maybe added) at the end.
 */
import { COMP, FORWARD_BINDINGS, header, paddedN, rep, rowStore, vec4Loader, WKV7_CHUNK, type ScanShape } from './wkv7_wgsl.js';

/**
 * Which recurrence a chunked kernel runs: 'forward' the state S, 'backward' the backward's dS
 * (the header comment's role mapping; each chunk's steps and the chunks themselves reversed).
 */
export type ChunkDirection = 'forward' | 'backward';

/** Rows of a chunk block: G (16), Q (16), b' (16), k' (16), P_L (1), each NP wide. */
export const CHUNK_BLOCK_ROWS = 4 * WKV7_CHUNK + 1;
/** Invocations of the chunk pass: one per (t, s) entry of a 16×16 matrix. */
export const PREP_WORKGROUP_SIZE = WKV7_CHUNK * WKV7_CHUNK;



/** Workgroup memory of the chunk pass: 5 step×vec4 arrays (rows padded by one vec4 against bank conflicts) and 7 16×16 matrices. */
export const prepWorkgroupBytes = (NP: number): number => 5 * WKV7_CHUNK * (NP / 4 + 1) * 16 + 7 * 256 * 4;
export const carryWorkgroupSize = (s: ScanShape): number => (paddedN(s.N, s.lanes) / s.groups) * s.lanes;
/** Workgroup memory of the carry pass: one chunk block and the U, V and Y0 rows of this workgroup's rows. */
export const carryWorkgroupBytes = (s: ScanShape): number => {
  const NP = paddedN(s.N, s.lanes);
  return CHUNK_BLOCK_ROWS * NP * 4 + 3 * WKV7_CHUNK * (NP / s.groups) * 4;
};

// vec4 0 of chunk ch's block of head (bb, h) in the [B, H, chunks, CHUNK_BLOCK_ROWS, NP] scratch.
const BLOCK_BASE = /* wgsl */ `
fn blockBase(bb: u32, h: u32, ch: u32) -> u32 { return ((bb * p.H + h) * p.chunks + ch) * ${CHUNK_BLOCK_ROWS}u * NQ4; }
`;
/**
 * The shared header with the loop bounds this file's kernels read from the uniforms, and
 * stepAt(t1, tt): the sequence step of local step tt of the chunk that starts at step t1.
 */
const chunkHeader = (N: number, NP: number, lanes: number, dir: ChunkDirection): string =>
  header(N, lanes, { np: NP, uniforms: ', steps: u32, nq4: u32' }) +
  BLOCK_BASE +
  `fn stepAt(t1: u32, tt: u32) -> u32 { return ${dir === 'forward' ? 't1 + tt' : 't1 + CHUNK - 1u - tt'}; }
`;

/** Statements setting `dst` to Σ_m A[t,m]·B[m,s] over 16×16 row-major workgroup matrices (t, s from the invocation). */
const mm16 = (dst: string, A: string, B: string): string =>
  `{ var acc = 0.0; for (var m = 0u; m < p.steps; m++) { acc = fma(${A}[t * 16u + m], ${B}[m * 16u + s], acc); } ${dst} = acc; }`;

/**
 * Pass 1: everything of a chunk that does not depend on the state entering it (header comment).
 * One workgroup of 256 per (chunk, head); invocation (t, s) = (idx / 16, idx % 16) for the
 * 16×16 matrices. Writes the chunk block of `cd` and U0, Y0 into sa and y (valid steps only).
 * Its loops run to bounds read from the uniforms (p.steps = 16, p.nq4 = NQ4), which no
 * compiler can unroll: lavapipe took minutes to compile this kernel with them unrolled.
 * 'backward' runs the dS scan's chunks (header comment): bound as r, w, k, v, a, b, y, sa
 * are k, w, r, dy, b, a, dv, dsa; r is divided and k multiplied by the decay as they load.
 */
export function chunkPrepWgsl(N: number, NP: number, dir: ChunkDirection = 'forward'): string {
  const NQ4 = NP / 4;
  const SP = NQ4 + 1;
  const loadUnits = WKV7_CHUNK * NQ4;
  const WG = PREP_WORKGROUP_SIZE;
  const lu = Math.ceil(loadUnits / WG);
  const vecs = ['r', 'k', 'a', 'b'];
  const scale: Record<string, string> = dir === 'forward' ? {} : { r: ' / dn', k: ' * dn' };
  // The diagonal (s = t) of U0's matrix Mak and of Hm's Mrb: the forward's sa_t does not see v_t, its y_t sees sa_t; the backward's the other way round.
  const [akDiag, rbDiag] = dir === 'forward' ? ['<', '<='] : ['<=', '<'];
  return /* wgsl */ `${chunkHeader(N, NP, 1, dir)}
const SP = ${SP}u;
${FORWARD_BINDINGS}
@group(0) @binding(8) var<storage, read_write> sa: array<f32>;
@group(0) @binding(9) var<storage, read_write> cd: array<vec4f>;
// [step][vec4], row stride SP (one vec4 of padding: rows read at once hit different banks).
// r, a, b, k become r̃, ã, b̂, k̂ in place; s_d holds the decays; v replaces b̂ once the
// matrices are formed (it waits in registers), keeping this under lavapipe's 32 KiB.
${[...vecs, 'd'].map((x) => `var<workgroup> s_${x}: array<vec4f, ${WKV7_CHUNK * SP}>;`).join('\n')}
// 16×16 row-major: Mak, Mrb, Mrk, and the ping-pong pairs of the inverse's powers and partial products.
${['m_ak', 'm_rb', 'm_rk', 'x_a', 'x_b', 'pw_a', 'pw_b'].map((x) => `var<workgroup> ${x}: array<f32, 256>;`).join('\n')}
${[...vecs, 'v'].map(vec4Loader).join('\n')}
// Decays of columns 4q..4q+3 at step t; 1 past the sequence's end (a partial last chunk's
// missing steps then change nothing) and in the padding columns.
fn d4(bb: u32, h: u32, t: u32, q: u32) -> vec4f {
  var o = vec4f(1.0);
  if (t < p.T) {
    let e = tokenBase(bb, t, h) + 4u * q;
${rep(4, (c) => `    if (4u * q + ${c}u < N) { o.${COMP[c]} = exp(W_SCALE / (1.0 + exp(-w[e + ${c}u]))); }`)}
  }
  return o;
}

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) idx: u32) {
  let h = wid.x;
  let bb = wid.y;
  let ch = wid.z;
  let t1 = ch * CHUNK;
  let blk = blockBase(bb, h, ch);
${rep(lu, (n) => `  var f_v${n} = vec4f(0.0);
  {
    let u = idx + ${n * WG}u;
    if (u < ${loadUnits}u) {
      let t = u / NQ4;
      let q = u % NQ4;
      let tn = stepAt(t1, t);
      let dn = d4(bb, h, tn, q);
${vecs.map((x) => `      s_${x}[t * SP + q] = ${x}4(bb, h, tn, q)${scale[x] ?? ''};`).join('\n')}
      s_d[t * SP + q] = dn;
      f_v${n} = v4(bb, h, tn, q);
    }
  }`)}
  workgroupBarrier();
  // Column vec4 c: suffix products first (no division): b'_t, k'_t and P_L; then the prefix ones.
  let c = idx;
  if (c < NQ4) {
    var suf = vec4f(1.0);
    for (var n = 0u; n < p.steps; n++) {
      let t = CHUNK - 1u - n;
      let o = t * SP + c;
      cd[blk + (32u + t) * NQ4 + c] = s_b[o] * suf;
      cd[blk + (48u + t) * NQ4 + c] = s_k[o] * suf;
      suf *= s_d[o];
    }
    cd[blk + 64u * NQ4 + c] = suf;
    var pr = vec4f(1.0);
    for (var t = 0u; t < p.steps; t++) {
      let o = t * SP + c;
      s_a[o] *= pr;
      pr *= s_d[o];
      s_r[o] *= pr;
      let ip = 1.0 / pr;
      s_b[o] *= ip;
      s_k[o] *= ip;
    }
  }
  workgroupBarrier();
  let t = idx / 16u;
  let s = idx % 16u;
  {
    var ab = 0.0;
    var ak = 0.0;
    var rb = 0.0;
    var rk = 0.0;
    for (var q = 0u; q < p.nq4; q++) {
      let at = s_a[t * SP + q];
      let rt = s_r[t * SP + q];
      let bs = s_b[s * SP + q];
      let ks = s_k[s * SP + q];
      ab += dot(at, bs);
      ak += dot(at, ks);
      rb += dot(rt, bs);
      rk += dot(rt, ks);
    }
    let lower = select(0.0, ab, s < t);
    pw_a[idx] = lower;
    x_a[idx] = lower + select(0.0, 1.0, s == t);
    m_ak[idx] = select(0.0, ak, s ${akDiag} t);
    m_rb[idx] = select(0.0, rb, s ${rbDiag} t);
    m_rk[idx] = select(0.0, rk, s <= t);
  }
  workgroupBarrier();
  // b̂ is spent: v takes its place (read after the next barrier).
${rep(lu, (n) => `  if (idx + ${n * WG}u < ${loadUnits}u) { let u = idx + ${n * WG}u; s_b[(u / NQ4) * SP + u % NQ4] = f_v${n}; }`)}
  // Inv = (I+L)(I+L²)(I+L⁴)(I+L⁸) with L = Mab: X ← X + X·Pw after Pw ← Pw², three times.
${[
  ['pw_a', 'pw_b', 'x_a', 'x_b'],
  ['pw_b', 'pw_a', 'x_b', 'x_a'],
  ['pw_a', 'pw_b', 'x_a', 'x_b'],
]
  .map(
    ([pw, pw2, x, x2], i) => `  ${mm16(`${pw2}[idx]`, pw, pw)}
  workgroupBarrier();
  var xl${i}: f32;
  ${mm16(`xl${i}`, x, pw2)}
  ${x2}[idx] = ${x}[idx] + xl${i};
  workgroupBarrier();`,
  )
  .join('\n')}
  // Inv = x_b. Z = Inv·Mak into pw_a, Hm = Mrb·Inv into x_a, then Y0m = Hm·Mak + Mrk into pw_b.
  ${mm16('pw_a[idx]', 'x_b', 'm_ak')}
  ${mm16('x_a[idx]', 'm_rb', 'x_b')}
  workgroupBarrier();
  var hmak: f32;
  ${mm16('hmak', 'x_a', 'm_ak')}
  pw_b[idx] = hmak + m_rk[idx];
  workgroupBarrier();
  // G = Inv·Ã, Q = R̃ + Hm·Ã into the block; U0 = Z·V, Y0 = Y0m·V into sa and y.
  for (var n = 0u; n < ${lu}u; n++) {
    let u = idx + n * ${WG}u;
    if (u < ${loadUnits}u) {
      let tt = u / NQ4;
      let q = u % NQ4;
      var g = vec4f(0.0);
      var qv = s_r[tt * SP + q];
      var u0 = vec4f(0.0);
      var y0 = vec4f(0.0);
      for (var m = 0u; m < p.steps; m++) {
        let am = s_a[m * SP + q];
        let vm = s_b[m * SP + q];
        let o = tt * 16u + m;
        g = fma(vec4f(x_b[o]), am, g);
        qv = fma(vec4f(x_a[o]), am, qv);
        u0 = fma(vec4f(pw_a[o]), vm, u0);
        y0 = fma(vec4f(pw_b[o]), vm, y0);
      }
      cd[blk + tt * NQ4 + q] = g;
      cd[blk + (16u + tt) * NQ4 + q] = qv;
      let tn = stepAt(t1, tt);
      if (tn < p.T) {
        let e = tokenBase(bb, tn, h) + 4u * q;
${rep(4, (e) => `        if (4u * q + ${e}u < N) { sa[e + ${e}u] = u0.${COMP[e]}; y[e + ${e}u] = y0.${COMP[e]}; }`)}
      }
    }
  }
}`;
}

/**
 * Pass 2: the state carried from chunk to chunk. Invocation (row i, lane) keeps its vec4s
 * q = c·lanes + lane of row i of S in registers. Per chunk: the 32 dot products of row i with
 * the block's G and Q rows (lane sums) plus U0, Y0 give sa and y; then S = S⊙P_L + Σ_s
 * U[s,i]·b'_s + V[s,i]·k'_s with U from every row's invocations through workgroup memory.
 * The next chunk's block, U0, Y0 and V are fetched into registers while this one is computed.
 * Its loops run to bounds from the uniforms (as in chunkPrepWgsl), the 32 products 4 at a time:
 * lavapipe took a minute to compile them unrolled.
 * 'backward' carries dS from the last chunk to the first (header comment): bound as v, y, sa,
 * states and sT are dy, dv, dsa, dSck and ds0 (hasST; added to when `accumulate`); no s0.
 */
export function chunkCarryWgsl(s: ScanShape, hasS0: boolean, hasST: boolean, dir: ChunkDirection = 'forward', accumulate = false): string {
  if (dir === 'backward' && hasS0) throw new Error('chunkCarryWgsl: the backward starts from zero, it has no s0');
  const fwd = dir === 'forward';
  const L = s.lanes;
  const NP = paddedN(s.N, L);
  const NQ4 = NP / 4;
  const R = NP / s.groups;
  const nq = NQ4 / L;
  const WG = carryWorkgroupSize(s);
  const blockUnits = CHUNK_BLOCK_ROWS * NQ4;
  const cu = Math.ceil(blockUnits / WG);
  const rowUnits = WKV7_CHUNK * R;
  const ru = Math.ceil(rowUnits / WG);
  const MU = 4;
  // Token rows staged per chunk: U0 (from sa) → s_uv rows 0..15, V → s_uv rows 16..31, Y0 (from y) → s_y0.
  const staged: [string, string, string][] = [
    ['u', 'sa', 's_uv[0u'],
    ['v', 'v', `s_uv[${rowUnits}u`],
    ['y', 'y', 's_y0[0u'],
  ];
  return /* wgsl */ `${chunkHeader(s.N, NP, L, dir)}
@group(0) @binding(1) var<storage, read> v: array<f32>;
@group(0) @binding(2) var<storage, read> cd: array<vec4f>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read_write> sa: array<f32>;
@group(0) @binding(5) var<storage, read_write> states: array<f32>;
${hasS0 ? '@group(0) @binding(6) var<storage, read> s0: array<f32>;' : ''}
${hasST ? `@group(0) @binding(${hasS0 ? 7 : 6}) var<storage, read_write> sT: array<f32>;` : ''}
const R = ${R}u;
var<workgroup> s_cd: array<vec4f, ${blockUnits}>;
// [step][row] for this workgroup's R rows: rows 0..15 U0, then U (sa); rows 16..31 V.
var<workgroup> s_uv: array<f32, ${2 * rowUnits}>;
var<workgroup> s_y0: array<f32, ${rowUnits}>;
${rep(cu, (n) => `var<private> f_cd${n}: vec4f;`)}
${staged.map(([f]) => rep(ru, (n) => `var<private> f_${f}${n}: f32;`)).join('\n')}

fn loadChunk(bb: u32, h: u32, grp: u32, idx: u32, ch: u32) {
  let blk = blockBase(bb, h, ch);
${rep(cu, (n) => `  if (idx + ${n * WG}u < ${blockUnits}u) { f_cd${n} = cd[blk + idx + ${n * WG}u]; }`)}
${rep(
  ru,
  (n) => `  {
    let u = idx + ${n * WG}u;
    let t = stepAt(ch * CHUNK, u / R);
    let i = grp * R + u % R;
${staged.map(([f]) => `    f_${f}${n} = 0.0;`).join('\n')}
    if (u < ${rowUnits}u && t < p.T && i < N) {
      let e = tokenBase(bb, t, h) + i;
${staged.map(([f, buf]) => `      f_${f}${n} = ${buf}[e];`).join('\n')}
    }
  }`,
)}
}
fn storeChunk(idx: u32) {
${rep(cu, (n) => `  if (idx + ${n * WG}u < ${blockUnits}u) { s_cd[idx + ${n * WG}u] = f_cd${n}; }`)}
${rep(ru, (n) => `  if (idx + ${n * WG}u < ${rowUnits}u) {\n${staged.map(([f, , dst]) => `    ${dst} + idx + ${n * WG}u] = f_${f}${n};`).join('\n')}\n  }`)}
}

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) idx: u32) {
  let h = wid.x;
  let bb = wid.y;
  let grp = wid.z;
  let lane = idx % LANES;
  let il = idx / LANES;
  let i = grp * R + il;
${rep(nq, (c) => `  var S${c} = vec4f(0.0);`)}
  let head = (bb * p.H + h) * N * N;
${hasS0 ? rep(nq, (c) => rep(4, (e) => `  { let j = ${4 * c * L + e}u + 4u * lane; if (i < N && j < N) { S${c}.${COMP[e]} = s0[head + i * N + j]; } }`)) : ''}
${fwd ? `  let slot0 = slotBase(bb, h, 0u, p.slots);
  ${rowStore(nq, L, 'states', 'slot0', 'S')}` : ''}
  // Chunk n of the walk: from the first, or (backward) from the last.
  let last = p.chunks - 1u;
  loadChunk(bb, h, grp, idx, ${fwd ? '0u' : 'last'});
  for (var n = 0u; n < p.chunks; n++) {
    let ch = ${fwd ? 'n' : 'last - n'};
    storeChunk(idx);
    workgroupBarrier();
    if (n < last) { loadChunk(bb, h, grp, idx, ${fwd ? 'ch + 1u' : 'ch - 1u'}); }
    let t1 = ch * CHUNK;
${fwd ? '' : `    let slot = slotBase(bb, h, ch, p.chunks);
    ${rowStore(nq, L, 'states', 'slot', 'S')}`}
    // Rows m of [U; Y] = [G; Q]·S0ᵀ + [U0; Y0], ${MU} at a time; lane m % LANES writes row m.
    for (var m0 = 0u; m0 < 2u * p.steps; m0 += ${MU}u) {
${rep(MU, (x) => `      var acc${x} = 0.0;`)}
${rep(nq, (c) => rep(MU, (x) => `      acc${x} += dot(S${c}, s_cd[(m0 + ${x}u) * NQ4 + ${c * L}u + lane]);`))}
${rep(
  MU,
  (x) => `      {
        let sum = laneSum(acc${x});
        let m = m0 + ${x}u;
        let tt = m % CHUNK;
        let tn = stepAt(t1, tt);
        let ok = i < N && tn < p.T;
        let o = tt * R + il;
        if (lane == m % LANES) {
          if (m < CHUNK) {
            let val = sum + s_uv[o];
            s_uv[o] = select(0.0, val, ok);
            if (ok) { sa[tokenBase(bb, tn, h) + i] = val; }
          } else if (ok) {
            y[tokenBase(bb, tn, h) + i] = sum + s_y0[o];
          }
        }
      }`,
)}
    }
    workgroupBarrier();
${rep(nq, (c) => `    S${c} *= s_cd[${64 * NQ4 + c * L}u + lane];`)}
    for (var st = 0u; st < 2u * p.steps; st++) {
      let x = vec4f(s_uv[st * R + il]);
      let o = (${2 * WKV7_CHUNK}u + st) * NQ4 + lane;
${rep(nq, (c) => `      S${c} = fma(x, s_cd[o + ${c * L}u], S${c});`)}
    }
${fwd ? `    let slot = slotBase(bb, h, ch + 1u, p.slots);
    ${rowStore(nq, L, 'states', 'slot', 'S')}` : ''}
    workgroupBarrier();
  }
${hasST ? `  ${rowStore(nq, L, 'sT', 'head', 'S', accumulate ? (x) => `sT[o] + ${x}` : undefined)}` : ''}
}`;
}
