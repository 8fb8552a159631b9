/**
 * Float64 reference of the whole RWKV-7 (x070) model with LoRA: forward, loss
 * (mean cross-entropy, L2Wrap) and a hand-written reverse-mode backward. It is
 * the ground truth the GPU model is tested against, so it favours plain loops
 * over speed. Math: spec rwkv-peft-and-model-math.md §1.10, §2.1, §2.2, §2.4, §2.5.
 *
 * API
 *   modelDims(weights) -> X070Dims
 *       Checks every checkpoint key of §2.2 (layer 0 without v0/v1/v2) and derives
 *       n_layer, C, H, N (from r_k), V, the hidden size 4C and D_w/D_a/D_v/D_g.
 *   forwardRef(weights, lora, ids, B, T, opts?) -> { logits [B·T,V], loss, cache }
 *       ids and opts.labels are [B·T] row-major (row = b·T + t); labels of −100
 *       are not counted; without labels (or with none counted) loss is NaN, as
 *       in PyTorch. opts.initStates[n] is layer n's initial WKV state, either
 *       [H,N,N] shared by every sequence (state tuning's time_state) or
 *       [B,H,N,N]; row = value dim i, column = key dim j.
 *       cache.layers[n] holds every intermediate activation of block n
 *       (BlockActs: TimeMixActs and ChannelMixActs) for step-by-step comparison.
 *   refModel(weights, lora) -> RefModel (weights, LoRA and dims, checked)
 *   timeMixRef(model, layer, x, vFirst, B, T, initState?) -> TimeMixActs
 *   channelMixRef(model, layer, x, B, T) -> ChannelMixActs
 *       One block's sub-layers on a given input, with all their activations.
 *   backwardRef(fwd, opts?) -> { grads, dLogits, layers }
 *       grads: Map from checkpoint-style names to gradients:
 *         '<module>.lora_A' / '<module>.lora_B' for every LoRA module;
 *         with opts.trainLn, every LayerNorm/GroupNorm '.weight' and '.bias'
 *         (blocks.0.ln0, blocks.n.ln1, ln2, att.ln_x, ln_out);
 *         'blocks.n.att.time_state' for each given initial state (same shape
 *         as given; a shared state's gradient is summed over the batch).
 *       opts.gradOutput (default 1) scales the loss gradient, as autograd's
 *       grad_output does; opts.l2wrap adds L2Wrap's logit gradient
 *       1e-4/(B·T)·logit at each position's argmax (first one on ties), at
 *       every position, NOT scaled by gradOutput (§1.10).
 *       layers[n] holds block n's intermediate gradients (BlockGrads).
 *
 * LoRA (§2.4): RefLora.tensors maps '<module>.lora_A' [r,in] and
 * '<module>.lora_B' [out,r] for modules such as 'blocks.0.att.key'; the modules
 * present are the LoRA'd ones. y = x·Wᵀ + (alpha/r)·(x·Aᵀ)·Bᵀ (no dropout).
 */

export interface RefTensor {
  shape: number[];
  data: Float64Array;
}

/** Checkpoint tensors by key name ('blocks.0.att.key.weight', …). */
export type RefWeights = Map<string, RefTensor>;

export interface RefLora {
  alpha: number;
  tensors: Map<string, RefTensor>;
}

/** The six Linear modules per block that LoRA may target (§2.4). */
export const X070_LORA_TARGETS = ['att.receptance', 'att.key', 'att.value', 'att.output', 'ffn.key', 'ffn.value'] as const;

export interface X070Dims {
  nLayer: number;
  C: number;
  H: number;
  N: number;
  V: number;
  hidden: number;
  dW: number;
  dA: number;
  dV: number;
  dG: number;
}

export interface ForwardOptions {
  labels?: ArrayLike<number>;
  initStates?: (Float64Array | undefined)[];
}

/** TimeMix activations, all row-major with rows = B·T tokens. */
export interface TimeMixActs {
  /** Input (after ln1) and the token-shift difference xx = x_{t−1} − x. */
  x: Float64Array;
  xx: Float64Array;
  xr: Float64Array;
  xw: Float64Array;
  xk: Float64Array;
  xv: Float64Array;
  xa: Float64Array;
  xg: Float64Array;
  r: Float64Array;
  /** key(xk), before the k̃ modification. */
  k: Float64Array;
  /** value(xv) before the value residual. */
  vRaw: Float64Array;
  /** [rows, D_v] xv·v1 and [rows, C] σ(v0 + xv·v1·v2); undefined on layer 0. */
  vHidden: Float64Array | undefined;
  vGate: Float64Array | undefined;
  /** Value after the residual mix (layer 0: vRaw, which becomes v_first). */
  v: Float64Array;
  /** [rows, D_w] tanh(xw·w1), w_raw = w0 + wHidden·w2, decay = exp(−e^{−0.5}·σ(w_raw)). */
  wHidden: Float64Array;
  wRaw: Float64Array;
  decay: Float64Array;
  /** [rows, D_a] xa·a1 and a = σ(a0 + aHidden·a2). */
  aHidden: Float64Array;
  a: Float64Array;
  /** [rows, D_g] σ(xg·g1) and g = gHidden·g2. */
  gHidden: Float64Array;
  g: Float64Array;
  /** k⊙k_k, its per-head L2 norm [rows, H], and kk = normalised. */
  kkRaw: Float64Array;
  kkNorm: Float64Array;
  kk: Float64Array;
  /** k̃ = k⊙(1 + (a−1)⊙k_a). */
  kt: Float64Array;
  /** sa_t[i] = Σ_j S_{t−1}[i,j]·(−kk_t[j]), per token. */
  sa: Float64Array;
  /** WKV output y_t = S_t·r_t. */
  y: Float64Array;
  /** [B,H,T+1,N,N]: S_0 … S_T per sequence and head. */
  states: Float64Array;
  /** [B,H,N,N] the state after the last token. */
  finalState: Float64Array;
  /** GroupNorm(y) with ln_x. */
  yNorm: Float64Array;
  /** [rows, H] Σ_j r·k̃·r_k per head. */
  bonus: Float64Array;
  /** o = yNorm + bonus·v, og = o⊙g, out = output(og). */
  o: Float64Array;
  og: Float64Array;
  out: Float64Array;
}

export interface ChannelMixActs {
  /** Input (after ln2), the lerped xk, key(xk), relu(key(xk))² and value(·). */
  x: Float64Array;
  xk: Float64Array;
  hPre: Float64Array;
  h: Float64Array;
  out: Float64Array;
}

export interface BlockActs {
  /** Residual stream entering the block (layer 0: after ln0). */
  xIn: Float64Array;
  att: TimeMixActs;
  /** Residual stream after the TimeMix. */
  xMid: Float64Array;
  ffn: ChannelMixActs;
  xOut: Float64Array;
}

export interface ForwardCache {
  model: RefModel;
  B: number;
  T: number;
  ids: Int32Array;
  labels: Int32Array | undefined;
  initStates: (Float64Array | undefined)[];
  /** emb[ids], before ln0. */
  emb: Float64Array;
  layers: BlockActs[];
  /** ln_out(residual stream after the last block). */
  xFinal: Float64Array;
}

export interface ForwardResult {
  logits: Float64Array;
  loss: number;
  cache: ForwardCache;
}

export interface BackwardOptions {
  trainLn?: boolean;
  l2wrap?: boolean;
  gradOutput?: number;
}

export interface TimeMixGrads {
  dOut: Float64Array;
  dog: Float64Array;
  dO: Float64Array;
  dg: Float64Array;
  dy: Float64Array;
  dr: Float64Array;
  dk: Float64Array;
  dkt: Float64Array;
  dkk: Float64Array;
  dv: Float64Array;
  dvRaw: Float64Array;
  da: Float64Array;
  dDecay: Float64Array;
  dwRaw: Float64Array;
  /** ∂L/∂S_0, [B,H,N,N]. */
  dState0: Float64Array;
  /** Gradient of the TimeMix input (after ln1). */
  dx: Float64Array;
}

export interface ChannelMixGrads {
  dOut: Float64Array;
  dh: Float64Array;
  dhPre: Float64Array;
  dxk: Float64Array;
  dx: Float64Array;
}

export interface BlockGrads {
  att: TimeMixGrads;
  ffn: ChannelMixGrads;
  /** Gradient of the residual stream entering the block. */
  dxIn: Float64Array;
}

export interface BackwardResult {
  grads: Map<string, Float64Array>;
  dLogits: Float64Array;
  layers: BlockGrads[];
}

export interface RefModel {
  weights: RefWeights;
  lora: RefLora | undefined;
  dims: X070Dims;
}

const LN_EPS = 1e-5;
const GN_EPS = 64e-5;
const KK_EPS = 1e-12;
/** decay = exp(W_SCALE·σ(w_raw)) with W_SCALE = −e^{−0.5} (§2.2 step 5). */
const W_SCALE = -Math.exp(-0.5);
const L2WRAP_FACTOR = 1e-4;

// ---------------------------------------------------------------------------
// Shapes and validation

function shapeStr(s: readonly number[]): string {
  return `[${s.join(',')}]`;
}

function expectTensor(map: Map<string, RefTensor>, key: string, shape: number[], what: string): RefTensor {
  const t = map.get(key);
  if (!t) throw new Error(`${what}: missing tensor ${key} (expected shape ${shapeStr(shape)})`);
  const n = shape.reduce((p, d) => p * d, 1);
  if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i]) || t.data.length !== n) {
    throw new Error(`${what}: ${key} has shape ${shapeStr(t.shape)} (${t.data.length} values), expected ${shapeStr(shape)}`);
  }
  return t;
}

function dimOf(weights: RefWeights, key: string, rank: number, axis: number): number {
  const t = weights.get(key);
  if (!t) throw new Error(`x070 weights: missing tensor ${key}`);
  if (t.shape.length !== rank) throw new Error(`x070 weights: ${key} has shape ${shapeStr(t.shape)}, expected rank ${rank}`);
  return t.shape[axis];
}

/** The §2.2 key table for the given dims (layer 0 without v0/v1/v2). */
export function x070KeyShapes(d: X070Dims): [string, number[]][] {
  const { C, H, N, V, hidden } = d;
  const vec = [1, 1, C];
  const keys: [string, number[]][] = [
    ['emb.weight', [V, C]],
    ['blocks.0.ln0.weight', [C]],
    ['blocks.0.ln0.bias', [C]],
  ];
  for (let n = 0; n < d.nLayer; n++) {
    const p = `blocks.${n}.`;
    keys.push([`${p}ln1.weight`, [C]], [`${p}ln1.bias`, [C]], [`${p}ln2.weight`, [C]], [`${p}ln2.bias`, [C]]);
    for (const m of ['x_r', 'x_w', 'x_k', 'x_v', 'x_a', 'x_g', 'w0', 'a0', 'k_k', 'k_a']) keys.push([`${p}att.${m}`, vec]);
    keys.push([`${p}att.w1`, [C, d.dW]], [`${p}att.w2`, [d.dW, C]]);
    keys.push([`${p}att.a1`, [C, d.dA]], [`${p}att.a2`, [d.dA, C]]);
    if (n > 0) keys.push([`${p}att.v0`, vec], [`${p}att.v1`, [C, d.dV]], [`${p}att.v2`, [d.dV, C]]);
    keys.push([`${p}att.g1`, [C, d.dG]], [`${p}att.g2`, [d.dG, C]]);
    keys.push([`${p}att.r_k`, [H, N]]);
    for (const m of ['receptance', 'key', 'value', 'output']) keys.push([`${p}att.${m}.weight`, [C, C]]);
    keys.push([`${p}att.ln_x.weight`, [C]], [`${p}att.ln_x.bias`, [C]]);
    keys.push([`${p}ffn.x_k`, vec], [`${p}ffn.key.weight`, [hidden, C]], [`${p}ffn.value.weight`, [C, hidden]]);
  }
  keys.push(['ln_out.weight', [C]], ['ln_out.bias', [C]], ['head.weight', [V, C]]);
  return keys;
}

/** Derives the dims from tensor shapes and checks every key of the §2.2 table. */
export function modelDims(weights: RefWeights): X070Dims {
  let nLayer = 0;
  while (weights.has(`blocks.${nLayer}.att.r_k`)) nLayer++;
  if (nLayer === 0) throw new Error('x070 weights: no blocks.0.att.r_k; not an RWKV-7 weight map');
  const H = dimOf(weights, 'blocks.0.att.r_k', 2, 0);
  const N = dimOf(weights, 'blocks.0.att.r_k', 2, 1);
  const C = H * N;
  const d: X070Dims = {
    nLayer,
    C,
    H,
    N,
    V: dimOf(weights, 'emb.weight', 2, 0),
    hidden: 4 * C,
    dW: dimOf(weights, 'blocks.0.att.w1', 2, 1),
    dA: dimOf(weights, 'blocks.0.att.a1', 2, 1),
    dV: nLayer > 1 ? dimOf(weights, 'blocks.1.att.v1', 2, 1) : 0,
    dG: dimOf(weights, 'blocks.0.att.g1', 2, 1),
  };
  for (const [key, shape] of x070KeyShapes(d)) expectTensor(weights, key, shape, 'x070 weights');
  return d;
}

/** Checks each LoRA pair against the module it adapts; returns the module names. */
function loraModules(weights: RefWeights, lora: RefLora | undefined): string[] {
  if (!lora) return [];
  const modules: string[] = [];
  for (const key of lora.tensors.keys()) {
    if (key.endsWith('.lora_A')) modules.push(key.slice(0, -'.lora_A'.length));
    else if (!key.endsWith('.lora_B')) throw new Error(`LoRA: tensor ${key} is neither a .lora_A nor a .lora_B`);
  }
  for (const m of modules) {
    if (!X070_LORA_TARGETS.some((t) => m.endsWith(`.${t}`))) throw new Error(`LoRA: ${m} is not a LoRA target module`);
    const w = weights.get(`${m}.weight`);
    if (!w) throw new Error(`LoRA: ${m}.lora_A adapts no weight (${m}.weight missing)`);
    const [out, inp] = w.shape;
    const A = lora.tensors.get(`${m}.lora_A`)!;
    if (A.shape.length !== 2 || A.shape[1] !== inp) {
      throw new Error(`LoRA: ${m}.lora_A has shape ${shapeStr(A.shape)}, expected [r,${inp}]`);
    }
    expectTensor(lora.tensors, `${m}.lora_A`, [A.shape[0], inp], 'LoRA');
    expectTensor(lora.tensors, `${m}.lora_B`, [out, A.shape[0]], 'LoRA');
  }
  for (const key of lora.tensors.keys()) {
    if (key.endsWith('.lora_B') && !lora.tensors.has(`${key.slice(0, -'.lora_B'.length)}.lora_A`)) {
      throw new Error(`LoRA: ${key} has no matching .lora_A`);
    }
  }
  return modules;
}

function checkTokens(what: string, a: ArrayLike<number>, n: number, V: number, allowIgnore: boolean): Int32Array {
  if (a.length !== n) throw new Error(`${what}: length ${a.length}, expected B·T = ${n}`);
  const out = Int32Array.from(a);
  for (let i = 0; i < n; i++) {
    const ok = Number.isInteger(a[i]) && ((a[i] >= 0 && a[i] < V) || (allowIgnore && a[i] === -100));
    if (!ok) throw new Error(`${what}[${i}] = ${a[i]}, expected an integer in [0, ${V})${allowIgnore ? ' or −100' : ''}`);
  }
  return out;
}

function checkInitStates(states: (Float64Array | undefined)[] | undefined, d: X070Dims, B: number): (Float64Array | undefined)[] {
  const out: (Float64Array | undefined)[] = [];
  const one = d.H * d.N * d.N;
  for (let n = 0; n < d.nLayer; n++) {
    const s = states?.[n];
    if (s && s.length !== one && s.length !== B * one) {
      throw new Error(`initStates[${n}]: ${s.length} values, expected [H,N,N] = ${one} or [B,H,N,N] = ${B * one}`);
    }
    out.push(s);
  }
  if (states && states.length > d.nLayer) throw new Error(`initStates: ${states.length} entries for ${d.nLayer} layers`);
  return out;
}

// ---------------------------------------------------------------------------
// Dense algebra

/** y = x·Wᵀ with x [rows,k], W [n,k] (PyTorch Linear layout). */
function mulWT(x: Float64Array, rows: number, k: number, W: Float64Array, n: number): Float64Array {
  const y = new Float64Array(rows * n);
  for (let r = 0; r < rows; r++) {
    for (let o = 0; o < n; o++) {
      let s = 0;
      for (let i = 0; i < k; i++) s += x[r * k + i] * W[o * k + i];
      y[r * n + o] = s;
    }
  }
  return y;
}

/** y = x·M with x [rows,k], M [k,n]. */
function mulW(x: Float64Array, rows: number, k: number, M: Float64Array, n: number): Float64Array {
  const y = new Float64Array(rows * n);
  for (let r = 0; r < rows; r++) {
    for (let i = 0; i < k; i++) {
      const xv = x[r * k + i];
      for (let o = 0; o < n; o++) y[r * n + o] += xv * M[i * n + o];
    }
  }
  return y;
}

/** acc += s·aᵀ·b with a [rows,m], b [rows,n], acc [m,n]. */
function addMulTN(acc: Float64Array, s: number, a: Float64Array, m: number, b: Float64Array, n: number, rows: number): void {
  for (let r = 0; r < rows; r++) {
    for (let i = 0; i < m; i++) {
      const av = s * a[r * m + i];
      for (let j = 0; j < n; j++) acc[i * n + j] += av * b[r * n + j];
    }
  }
}

function addInto(acc: Float64Array, x: Float64Array): void {
  for (let i = 0; i < acc.length; i++) acc[i] += x[i];
}

function sigmoid(z: number): number {
  return 1 / (1 + Math.exp(-z));
}

/** Per-group normalisation over groups of `size` channels: LayerNorm when size = C. */
function groupNorm(x: Float64Array, rows: number, C: number, size: number, gamma: Float64Array, beta: Float64Array, eps: number): Float64Array {
  const y = new Float64Array(rows * C);
  for (let base = 0; base < rows * C; base += size) {
    let mean = 0;
    for (let i = 0; i < size; i++) mean += x[base + i];
    mean /= size;
    let vr = 0;
    for (let i = 0; i < size; i++) vr += (x[base + i] - mean) ** 2;
    const rstd = 1 / Math.sqrt(vr / size + eps);
    for (let i = 0; i < size; i++) {
      const c = (base + i) % C;
      y[base + i] = (x[base + i] - mean) * rstd * gamma[c] + beta[c];
    }
  }
  return y;
}

/** Backward of groupNorm (§2.5); accumulates dγ, dβ when given. */
function groupNormBackward(
  x: Float64Array,
  dy: Float64Array,
  rows: number,
  C: number,
  size: number,
  gamma: Float64Array,
  eps: number,
  dGamma?: Float64Array,
  dBeta?: Float64Array,
): Float64Array {
  const dx = new Float64Array(rows * C);
  const xhat = new Float64Array(size);
  const dxhat = new Float64Array(size);
  for (let base = 0; base < rows * C; base += size) {
    let mean = 0;
    for (let i = 0; i < size; i++) mean += x[base + i];
    mean /= size;
    let vr = 0;
    for (let i = 0; i < size; i++) vr += (x[base + i] - mean) ** 2;
    const rstd = 1 / Math.sqrt(vr / size + eps);
    let mDx = 0;
    let mDxX = 0;
    for (let i = 0; i < size; i++) {
      const c = (base + i) % C;
      xhat[i] = (x[base + i] - mean) * rstd;
      dxhat[i] = dy[base + i] * gamma[c];
      mDx += dxhat[i];
      mDxX += dxhat[i] * xhat[i];
      if (dGamma) dGamma[c] += dy[base + i] * xhat[i];
      if (dBeta) dBeta[c] += dy[base + i];
    }
    mDx /= size;
    mDxX /= size;
    for (let i = 0; i < size; i++) dx[base + i] = (dxhat[i] - mDx - xhat[i] * mDxX) * rstd;
  }
  return dx;
}

/** x_{t−1} per sequence, zero at t = 0 (ZeroPad2d((0,0,1,−1))). */
function shiftPrev(x: Float64Array, B: number, T: number, C: number): Float64Array {
  const p = new Float64Array(B * T * C);
  for (let b = 0; b < B; b++) for (let t = 1; t < T; t++) for (let c = 0; c < C; c++) p[(b * T + t) * C + c] = x[(b * T + t - 1) * C + c];
  return p;
}

/** Adds the gradient of shiftPrev's output into dx. */
function shiftPrevBackward(dx: Float64Array, dPrev: Float64Array, B: number, T: number, C: number): void {
  for (let b = 0; b < B; b++) for (let t = 1; t < T; t++) for (let c = 0; c < C; c++) dx[(b * T + t - 1) * C + c] += dPrev[(b * T + t) * C + c];
}

// ---------------------------------------------------------------------------
// Model pieces

function param(m: RefModel, key: string): Float64Array {
  const t = m.weights.get(key);
  if (!t) throw new Error(`x070 weights: missing tensor ${key}`);
  return t.data;
}

function loraPair(m: RefModel, module: string): { A: Float64Array; B: Float64Array; r: number; s: number } | undefined {
  const A = m.lora?.tensors.get(`${module}.lora_A`);
  if (!A) return undefined;
  const r = A.shape[0];
  return { A: A.data, B: m.lora!.tensors.get(`${module}.lora_B`)!.data, r, s: m.lora!.alpha / r };
}

/** Linear with optional LoRA: y = x·Wᵀ + s·(x·Aᵀ)·Bᵀ. */
function linear(m: RefModel, module: string, x: Float64Array, rows: number): Float64Array {
  const W = m.weights.get(`${module}.weight`)!;
  const [out, inp] = W.shape;
  const y = mulWT(x, rows, inp, W.data, out);
  const l = loraPair(m, module);
  if (l) {
    const h = mulWT(x, rows, inp, l.A, l.r);
    const yl = mulWT(h, rows, l.r, l.B, out);
    for (let i = 0; i < y.length; i++) y[i] += l.s * yl[i];
  }
  return y;
}

/** Backward of linear (§2.5 LoRA branch): returns dx, accumulates dA and dB. */
function linearBackward(m: RefModel, module: string, x: Float64Array, dy: Float64Array, rows: number, grads: Map<string, Float64Array>): Float64Array {
  const W = m.weights.get(`${module}.weight`)!;
  const [out, inp] = W.shape;
  const dx = mulW(dy, rows, out, W.data, inp);
  const l = loraPair(m, module);
  if (l) {
    const h = mulWT(x, rows, inp, l.A, l.r);
    addMulTN(grads.get(`${module}.lora_B`)!, l.s, dy, out, h, l.r, rows);
    const dh = mulW(dy, rows, out, l.B, l.r);
    for (let i = 0; i < dh.length; i++) dh[i] *= l.s;
    addMulTN(grads.get(`${module}.lora_A`)!, 1, dh, l.r, x, inp, rows);
    addInto(dx, mulW(dh, rows, l.r, l.A, inp));
  }
  return dx;
}

function lerp(x: Float64Array, xx: Float64Array, mu: Float64Array, C: number): Float64Array {
  return x.map((v, i) => v + xx[i] * mu[i % C]);
}

/**
 * One TimeMix (§2.2) on x = ln1(residual) [B·T, C]. vFirst is layer 0's value
 * (ignored on layer 0, which produces it as its v); initState as in ForwardOptions.
 */
export function timeMixRef(
  m: RefModel,
  layer: number,
  x: Float64Array,
  vFirst: Float64Array | undefined,
  B: number,
  T: number,
  initState?: Float64Array,
): TimeMixActs {
  const { C, H, N, dW, dA, dV, dG } = m.dims;
  const rows = B * T;
  const p = (name: string) => param(m, `blocks.${layer}.att.${name}`);
  const mod = (name: string) => `blocks.${layer}.att.${name}`;
  if (x.length !== rows * C) throw new Error(`timeMixRef: x has ${x.length} values, expected B·T·C = ${rows * C}`);

  const prev = shiftPrev(x, B, T, C);
  const xx = prev.map((v, i) => v - x[i]);
  const xr = lerp(x, xx, p('x_r'), C);
  const xw = lerp(x, xx, p('x_w'), C);
  const xk = lerp(x, xx, p('x_k'), C);
  const xv = lerp(x, xx, p('x_v'), C);
  const xa = lerp(x, xx, p('x_a'), C);
  const xg = lerp(x, xx, p('x_g'), C);

  const r = linear(m, mod('receptance'), xr, rows);
  const k = linear(m, mod('key'), xk, rows);
  const vRaw = linear(m, mod('value'), xv, rows);

  const wHidden = mulW(xw, rows, C, p('w1'), dW).map(Math.tanh);
  const w0 = p('w0');
  const wRaw = mulW(wHidden, rows, dW, p('w2'), C).map((v, i) => v + w0[i % C]);
  const decay = wRaw.map((z) => Math.exp(W_SCALE * sigmoid(z)));

  const aHidden = mulW(xa, rows, C, p('a1'), dA);
  const a0 = p('a0');
  const a = mulW(aHidden, rows, dA, p('a2'), C).map((v, i) => sigmoid(v + a0[i % C]));

  const gHidden = mulW(xg, rows, C, p('g1'), dG).map(sigmoid);
  const g = mulW(gHidden, rows, dG, p('g2'), C);

  let v = vRaw;
  let vHidden: Float64Array | undefined;
  let vGate: Float64Array | undefined;
  if (layer > 0) {
    if (!vFirst || vFirst.length !== rows * C) throw new Error(`timeMixRef: layer ${layer} needs v_first of B·T·C = ${rows * C} values`);
    vHidden = mulW(xv, rows, C, p('v1'), dV);
    const v0 = p('v0');
    const gate = mulW(vHidden, rows, dV, p('v2'), C).map((z, i) => sigmoid(z + v0[i % C]));
    vGate = gate;
    v = vRaw.map((vr, i) => vr + (vFirst[i] - vr) * gate[i]);
  }

  const kK = p('k_k');
  const kkRaw = k.map((kv, i) => kv * kK[i % C]);
  const kkNorm = new Float64Array(rows * H);
  const kk = new Float64Array(rows * C);
  for (let rh = 0; rh < rows * H; rh++) {
    let ss = 0;
    for (let j = 0; j < N; j++) ss += kkRaw[rh * N + j] ** 2;
    kkNorm[rh] = Math.sqrt(ss);
    const den = Math.max(kkNorm[rh], KK_EPS);
    for (let j = 0; j < N; j++) kk[rh * N + j] = kkRaw[rh * N + j] / den;
  }
  const kA = p('k_a');
  const kt = k.map((kv, i) => kv * (1 + (a[i] - 1) * kA[i % C]));

  // WKV7 (§2.2 step 6), element-wise with a_k = −kk and b_k = kk⊙a.
  const NN = N * N;
  const states = new Float64Array(B * H * (T + 1) * NN);
  const finalState = new Float64Array(B * H * NN);
  const sa = new Float64Array(rows * C);
  const y = new Float64Array(rows * C);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const sBase = (b * H + h) * (T + 1) * NN;
      if (initState) {
        const src = initState.length === H * NN ? h * NN : (b * H + h) * NN;
        states.set(initState.subarray(src, src + NN), sBase);
      }
      for (let t = 0; t < T; t++) {
        const o = (b * T + t) * C + h * N;
        const S0 = states.subarray(sBase + t * NN, sBase + (t + 1) * NN);
        const S1 = states.subarray(sBase + (t + 1) * NN, sBase + (t + 2) * NN);
        for (let i = 0; i < N; i++) {
          let s = 0;
          for (let j = 0; j < N; j++) s += S0[i * N + j] * -kk[o + j];
          sa[o + i] = s;
        }
        for (let i = 0; i < N; i++) {
          let yi = 0;
          for (let j = 0; j < N; j++) {
            S1[i * N + j] = S0[i * N + j] * decay[o + j] + sa[o + i] * kk[o + j] * a[o + j] + v[o + i] * kt[o + j];
            yi += S1[i * N + j] * r[o + j];
          }
          y[o + i] = yi;
        }
      }
      finalState.set(states.subarray(sBase + T * NN, sBase + (T + 1) * NN), (b * H + h) * NN);
    }
  }

  const yNorm = groupNorm(y, rows, C, N, p('ln_x.weight'), p('ln_x.bias'), GN_EPS);
  const rk = p('r_k');
  const bonus = new Float64Array(rows * H);
  const o = new Float64Array(rows * C);
  for (let row = 0; row < rows; row++) {
    for (let h = 0; h < H; h++) {
      const base = row * C + h * N;
      let s = 0;
      for (let j = 0; j < N; j++) s += r[base + j] * kt[base + j] * rk[h * N + j];
      bonus[row * H + h] = s;
      for (let j = 0; j < N; j++) o[base + j] = yNorm[base + j] + s * v[base + j];
    }
  }
  const og = o.map((ov, i) => ov * g[i]);
  const out = linear(m, mod('output'), og, rows);

  return {
    x, xx, xr, xw, xk, xv, xa, xg, r, k, vRaw, vHidden, vGate, v, wHidden, wRaw, decay, aHidden, a, gHidden, g,
    kkRaw, kkNorm, kk, kt, sa, y, states, finalState, yNorm, bonus, o, og, out,
  };
}

/** One x070 ChannelMix on x = ln2(residual) [B·T, C]. */
export function channelMixRef(m: RefModel, layer: number, x: Float64Array, B: number, T: number): ChannelMixActs {
  const { C } = m.dims;
  const rows = B * T;
  if (x.length !== rows * C) throw new Error(`channelMixRef: x has ${x.length} values, expected B·T·C = ${rows * C}`);
  const prev = shiftPrev(x, B, T, C);
  const xk = lerp(x, prev.map((v, i) => v - x[i]), param(m, `blocks.${layer}.ffn.x_k`), C);
  const hPre = linear(m, `blocks.${layer}.ffn.key`, xk, rows);
  const h = hPre.map((z) => (z > 0 ? z * z : 0));
  const out = linear(m, `blocks.${layer}.ffn.value`, h, rows);
  return { x, xk, hPre, h, out };
}

/** Builds the checked model (dims and LoRA validated) used by the functions above. */
export function refModel(weights: RefWeights, lora: RefLora | undefined): RefModel {
  const dims = modelDims(weights);
  loraModules(weights, lora);
  return { weights, lora, dims };
}

function crossEntropy(logits: Float64Array, labels: Int32Array | undefined, V: number): number {
  if (!labels) return NaN;
  let sum = 0;
  let count = 0;
  for (let row = 0; row < labels.length; row++) {
    if (labels[row] === -100) continue;
    const z = logits.subarray(row * V, (row + 1) * V);
    const mx = z.reduce((p, q) => Math.max(p, q), -Infinity);
    let se = 0;
    for (let j = 0; j < V; j++) se += Math.exp(z[j] - mx);
    sum += mx + Math.log(se) - z[labels[row]];
    count++;
  }
  return sum / count;
}

export function forwardRef(
  weights: RefWeights,
  lora: RefLora | undefined,
  ids: ArrayLike<number>,
  B: number,
  T: number,
  opts: ForwardOptions = {},
): ForwardResult {
  if (!(Number.isInteger(B) && B > 0 && Number.isInteger(T) && T > 0)) throw new Error(`forwardRef: B = ${B}, T = ${T}; expected positive integers`);
  const model = refModel(weights, lora);
  const { C, V, nLayer } = model.dims;
  const rows = B * T;
  const tok = checkTokens('ids', ids, rows, V, false);
  const labels = opts.labels ? checkTokens('labels', opts.labels, rows, V, true) : undefined;
  const initStates = checkInitStates(opts.initStates, model.dims, B);

  const embW = param(model, 'emb.weight');
  const emb = new Float64Array(rows * C);
  for (let row = 0; row < rows; row++) emb.set(embW.subarray(tok[row] * C, (tok[row] + 1) * C), row * C);
  let x = groupNorm(emb, rows, C, C, param(model, 'blocks.0.ln0.weight'), param(model, 'blocks.0.ln0.bias'), LN_EPS);

  const layers: BlockActs[] = [];
  let vFirst: Float64Array | undefined;
  for (let n = 0; n < nLayer; n++) {
    const p = `blocks.${n}.`;
    const xIn = x;
    const att = timeMixRef(model, n, groupNorm(xIn, rows, C, C, param(model, `${p}ln1.weight`), param(model, `${p}ln1.bias`), LN_EPS), vFirst, B, T, initStates[n]);
    if (n === 0) vFirst = att.v;
    const xMid = xIn.map((v, i) => v + att.out[i]);
    const ffn = channelMixRef(model, n, groupNorm(xMid, rows, C, C, param(model, `${p}ln2.weight`), param(model, `${p}ln2.bias`), LN_EPS), B, T);
    const xOut = xMid.map((v, i) => v + ffn.out[i]);
    layers.push({ xIn, att, xMid, ffn, xOut });
    x = xOut;
  }
  const xFinal = groupNorm(x, rows, C, C, param(model, 'ln_out.weight'), param(model, 'ln_out.bias'), LN_EPS);
  const logits = mulWT(xFinal, rows, C, param(model, 'head.weight'), V);
  const loss = crossEntropy(logits, labels, V);
  return { logits, loss, cache: { model, B, T, ids: tok, labels, initStates, emb, layers, xFinal } };
}

// ---------------------------------------------------------------------------
// Backward

/** ∂loss/∂logits (scaled by gradOutput) plus L2Wrap's unscaled argmax term. */
function logitsGrad(logits: Float64Array, labels: Int32Array | undefined, V: number, rows: number, opts: BackwardOptions): Float64Array {
  const d = new Float64Array(rows * V);
  const gradOutput = opts.gradOutput ?? 1;
  const count = labels ? labels.reduce((c, l) => c + (l === -100 ? 0 : 1), 0) : 0;
  for (let row = 0; row < rows; row++) {
    const z = logits.subarray(row * V, (row + 1) * V);
    const dz = d.subarray(row * V, (row + 1) * V);
    let arg = 0;
    for (let j = 1; j < V; j++) if (z[j] > z[arg]) arg = j;
    if (labels && labels[row] !== -100) {
      let se = 0;
      for (let j = 0; j < V; j++) se += Math.exp(z[j] - z[arg]);
      for (let j = 0; j < V; j++) dz[j] = (gradOutput * Math.exp(z[j] - z[arg])) / se / count;
      dz[labels[row]] -= gradOutput / count;
    }
    if (opts.l2wrap) dz[arg] += (z[arg] * L2WRAP_FACTOR) / rows;
  }
  return d;
}

/** Backward of a TimeMix; dvFirst collects the gradient of v_first from layers > 0. */
function timeMixBackward(
  m: RefModel,
  layer: number,
  act: TimeMixActs,
  vFirst: Float64Array | undefined,
  dOut: Float64Array,
  dvFirst: Float64Array,
  B: number,
  T: number,
  grads: Map<string, Float64Array>,
  trainLn: boolean,
): TimeMixGrads {
  const { C, H, N, dW, dA, dV, dG } = m.dims;
  const rows = B * T;
  const p = (name: string) => param(m, `blocks.${layer}.att.${name}`);
  const mod = (name: string) => `blocks.${layer}.att.${name}`;

  const dog = linearBackward(m, mod('output'), act.og, dOut, rows, grads);
  const dO = dog.map((d, i) => d * act.g[i]);
  const dg = dog.map((d, i) => d * act.o[i]);

  // Bonus: o += (Σ_j r·k̃·r_k)·v per head.
  const rk = p('r_k');
  const dr = new Float64Array(rows * C);
  const dkt = new Float64Array(rows * C);
  const dv = new Float64Array(rows * C);
  for (let row = 0; row < rows; row++) {
    for (let h = 0; h < H; h++) {
      const base = row * C + h * N;
      let ds = 0;
      for (let j = 0; j < N; j++) {
        ds += dO[base + j] * act.v[base + j];
        dv[base + j] += dO[base + j] * act.bonus[row * H + h];
      }
      for (let j = 0; j < N; j++) {
        dr[base + j] += ds * act.kt[base + j] * rk[h * N + j];
        dkt[base + j] += ds * act.r[base + j] * rk[h * N + j];
      }
    }
  }
  const dy = groupNormBackward(
    act.y, dO, rows, C, N, p('ln_x.weight'), GN_EPS,
    trainLn ? grads.get(mod('ln_x.weight')) : undefined,
    trainLn ? grads.get(mod('ln_x.bias')) : undefined,
  );

  // WKV7 backward: reverse over time with the stored states S_{t−1}, S_t.
  const NN = N * N;
  const dDecay = new Float64Array(rows * C);
  const dak = new Float64Array(rows * C);
  const dbk = new Float64Array(rows * C);
  const dState0 = new Float64Array(B * H * NN);
  const dS = new Float64Array(NN);
  const dsa = new Float64Array(N);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const sBase = (b * H + h) * (T + 1) * NN;
      dS.fill(0);
      for (let t = T - 1; t >= 0; t--) {
        const o = (b * T + t) * C + h * N;
        const S0 = act.states.subarray(sBase + t * NN, sBase + (t + 1) * NN);
        const S1 = act.states.subarray(sBase + (t + 1) * NN, sBase + (t + 2) * NN);
        for (let i = 0; i < N; i++) {
          for (let j = 0; j < N; j++) {
            dS[i * N + j] += dy[o + i] * act.r[o + j];
            dr[o + j] += S1[i * N + j] * dy[o + i];
          }
        }
        for (let i = 0; i < N; i++) {
          let s = 0;
          for (let j = 0; j < N; j++) s += dS[i * N + j] * act.kk[o + j] * act.a[o + j];
          dsa[i] = s;
        }
        for (let i = 0; i < N; i++) {
          for (let j = 0; j < N; j++) {
            const d = dS[i * N + j];
            dDecay[o + j] += d * S0[i * N + j];
            dbk[o + j] += d * act.sa[o + i];
            dv[o + i] += d * act.kt[o + j];
            dkt[o + j] += d * act.v[o + i];
            dak[o + j] += dsa[i] * S0[i * N + j];
          }
        }
        for (let i = 0; i < N; i++) {
          for (let j = 0; j < N; j++) dS[i * N + j] = dS[i * N + j] * act.decay[o + j] - dsa[i] * act.kk[o + j];
        }
      }
      dState0.set(dS, (b * H + h) * NN);
    }
  }

  // a_k = −kk, b_k = kk⊙a.
  const dkk = new Float64Array(rows * C);
  const da = new Float64Array(rows * C);
  for (let i = 0; i < rows * C; i++) {
    dkk[i] = -dak[i] + dbk[i] * act.a[i];
    da[i] = dbk[i] * act.kk[i];
  }
  // k̃ = k⊙(1 + (a−1)⊙k_a).
  const kA = p('k_a');
  const dk = new Float64Array(rows * C);
  for (let i = 0; i < rows * C; i++) {
    dk[i] = dkt[i] * (1 + (act.a[i] - 1) * kA[i % C]);
    da[i] += dkt[i] * act.k[i] * kA[i % C];
  }
  // kk = (k⊙k_k)/max(‖·‖, eps) per head.
  const kK = p('k_k');
  for (let rh = 0; rh < rows * H; rh++) {
    const base = rh * N;
    const nrm = act.kkNorm[rh];
    let dot = 0;
    if (nrm > KK_EPS) for (let j = 0; j < N; j++) dot += act.kk[base + j] * dkk[base + j];
    const den = Math.max(nrm, KK_EPS);
    for (let j = 0; j < N; j++) {
      const dz = (dkk[base + j] - act.kk[base + j] * dot) / den;
      dk[base + j] += dz * kK[(base + j) % C];
    }
  }

  // Value residual: v = vRaw + (vFirst − vRaw)⊙gate (layer 0: v is v_first).
  let dvRaw: Float64Array;
  let dxv: Float64Array;
  if (layer > 0) {
    const gate = act.vGate!;
    dvRaw = dv.map((d, i) => d * (1 - gate[i]));
    for (let i = 0; i < rows * C; i++) dvFirst[i] += dv[i] * gate[i];
    const dgPre = dv.map((d, i) => d * (vFirst![i] - act.vRaw[i]) * gate[i] * (1 - gate[i]));
    dxv = mulWT(mulWT(dgPre, rows, C, p('v2'), dV), rows, dV, p('v1'), C);
  } else {
    dvRaw = dv.map((d, i) => d + dvFirst[i]);
    dxv = new Float64Array(rows * C);
  }

  // a = σ(a0 + xa·a1·a2), g = σ(xg·g1)·g2, decay = exp(W_SCALE·σ(w0 + tanh(xw·w1)·w2)).
  const daPre = da.map((d, i) => d * act.a[i] * (1 - act.a[i]));
  const dxa = mulWT(mulWT(daPre, rows, C, p('a2'), dA), rows, dA, p('a1'), C);
  const dgHidden = mulWT(dg, rows, C, p('g2'), dG).map((d, i) => d * act.gHidden[i] * (1 - act.gHidden[i]));
  const dxg = mulWT(dgHidden, rows, dG, p('g1'), C);
  const dwRaw = dDecay.map((d, i) => {
    const s = sigmoid(act.wRaw[i]);
    return d * act.decay[i] * W_SCALE * s * (1 - s);
  });
  const dwHidden = mulWT(dwRaw, rows, C, p('w2'), dW).map((d, i) => d * (1 - act.wHidden[i] ** 2));
  const dxw = mulWT(dwHidden, rows, dW, p('w1'), C);

  const dxr = linearBackward(m, mod('receptance'), act.xr, dr, rows, grads);
  const dxk = linearBackward(m, mod('key'), act.xk, dk, rows, grads);
  addInto(dxv, linearBackward(m, mod('value'), act.xv, dvRaw, rows, grads));

  // Lerps x* = x + xx⊙μ*, with xx = x_{t−1} − x.
  const mus = ['x_r', 'x_w', 'x_k', 'x_v', 'x_a', 'x_g'].map(p);
  const dxs = [dxr, dxw, dxk, dxv, dxa, dxg];
  const dx = new Float64Array(rows * C);
  const dxx = new Float64Array(rows * C);
  for (let q = 0; q < 6; q++) {
    for (let i = 0; i < rows * C; i++) {
      dx[i] += dxs[q][i];
      dxx[i] += dxs[q][i] * mus[q][i % C];
    }
  }
  for (let i = 0; i < rows * C; i++) dx[i] -= dxx[i];
  shiftPrevBackward(dx, dxx, B, T, C);

  return { dOut, dog, dO, dg, dy, dr, dk, dkt, dkk, dv, dvRaw, da, dDecay, dwRaw, dState0, dx };
}

function channelMixBackward(m: RefModel, layer: number, act: ChannelMixActs, dOut: Float64Array, B: number, T: number, grads: Map<string, Float64Array>): ChannelMixGrads {
  const { C } = m.dims;
  const rows = B * T;
  const dh = linearBackward(m, `blocks.${layer}.ffn.value`, act.h, dOut, rows, grads);
  const dhPre = dh.map((d, i) => (act.hPre[i] > 0 ? 2 * act.hPre[i] * d : 0));
  const dxk = linearBackward(m, `blocks.${layer}.ffn.key`, act.xk, dhPre, rows, grads);
  const mu = param(m, `blocks.${layer}.ffn.x_k`);
  const dx = new Float64Array(rows * C);
  const dPrev = new Float64Array(rows * C);
  for (let i = 0; i < rows * C; i++) {
    dx[i] = dxk[i] * (1 - mu[i % C]);
    dPrev[i] = dxk[i] * mu[i % C];
  }
  shiftPrevBackward(dx, dPrev, B, T, C);
  return { dOut, dh, dhPre, dxk, dx };
}

/** Names of the LayerNorm/GroupNorm parameters ("ln" train part), in model order. */
export function lnParamNames(nLayer: number): string[] {
  const names = ['blocks.0.ln0.weight', 'blocks.0.ln0.bias'];
  for (let n = 0; n < nLayer; n++) {
    for (const ln of ['ln1', 'ln2', 'att.ln_x']) names.push(`blocks.${n}.${ln}.weight`, `blocks.${n}.${ln}.bias`);
  }
  names.push('ln_out.weight', 'ln_out.bias');
  return names;
}

export function backwardRef(fwd: ForwardResult, opts: BackwardOptions = {}): BackwardResult {
  const { model, B, T, labels, initStates, layers } = fwd.cache;
  const { C, V, H, N, nLayer } = model.dims;
  const rows = B * T;
  const trainLn = opts.trainLn ?? false;

  const grads = new Map<string, Float64Array>();
  for (const mod of loraModules(model.weights, model.lora)) {
    for (const part of ['lora_A', 'lora_B']) grads.set(`${mod}.${part}`, new Float64Array(model.lora!.tensors.get(`${mod}.${part}`)!.data.length));
  }
  if (trainLn) for (const name of lnParamNames(nLayer)) grads.set(name, new Float64Array(C));

  const lnBack = (name: string, x: Float64Array, dy: Float64Array) =>
    groupNormBackward(x, dy, rows, C, C, param(model, `${name}.weight`), LN_EPS,
      trainLn ? grads.get(`${name}.weight`) : undefined, trainLn ? grads.get(`${name}.bias`) : undefined);

  const dLogits = logitsGrad(fwd.logits, labels, V, rows, opts);
  const last = layers[nLayer - 1].xOut;
  let dx = lnBack('ln_out', last, mulW(dLogits, rows, V, param(model, 'head.weight'), C));

  const dvFirst = new Float64Array(rows * C);
  const blockGrads: BlockGrads[] = new Array(nLayer);
  for (let n = nLayer - 1; n >= 0; n--) {
    const L = layers[n];
    const ffn = channelMixBackward(model, n, L.ffn, dx, B, T, grads);
    const dMid = Float64Array.from(dx);
    addInto(dMid, lnBack(`blocks.${n}.ln2`, L.xMid, ffn.dx));
    const att = timeMixBackward(model, n, L.att, n > 0 ? layers[0].att.v : undefined, dMid, dvFirst, B, T, grads, trainLn);
    const dxIn = Float64Array.from(dMid);
    addInto(dxIn, lnBack(`blocks.${n}.ln1`, L.xIn, att.dx));
    blockGrads[n] = { att, ffn, dxIn };
    const s0 = initStates[n];
    if (s0) {
      const g = new Float64Array(s0.length);
      for (let i = 0; i < B * H * N * N; i++) g[i % s0.length] += att.dState0[i];
      grads.set(`blocks.${n}.att.time_state`, g);
    }
    dx = dxIn;
  }
  lnBack('blocks.0.ln0', fwd.cache.emb, dx);
  return { grads, dLogits, layers: blockGrads };
}
