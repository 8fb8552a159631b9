/**
 * Float64 references of the RWKV-7 fused elementwise ops (src/kernels/rwkv7_ops.ts):
 * plain functions over Float64Array, activations [rows, C] row-major, per-channel
 * parameters [C], heads of N channels.
 */

export function sigmoid(x: number): number {
  return 1 / (1 + Math.exp(-x));
}

/** outs[m] = x + (x_{t−1} − x)⊙mixes[m], x_{−1} = 0 at each of the B sequence starts. */
export function tokenShiftLerpRef(x: Float64Array, mixes: readonly Float64Array[], B: number, T: number, C: number): Float64Array[] {
  return mixes.map((mix) => {
    const out = new Float64Array(B * T * C);
    for (let row = 0; row < B * T; row++) {
      for (let c = 0; c < C; c++) {
        const i = row * C + c;
        const prev = row % T > 0 ? x[i - C] : 0;
        out[i] = x[i] + (prev - x[i]) * mix[c];
      }
    }
    return out;
  });
}

export function tokenShiftLerpBackwardRef(douts: readonly Float64Array[], mixes: readonly Float64Array[], B: number, T: number, C: number): Float64Array {
  const dx = new Float64Array(B * T * C);
  douts.forEach((d, m) => {
    for (let row = 0; row < B * T; row++) {
      for (let c = 0; c < C; c++) {
        const i = row * C + c;
        dx[i] += d[i] * (1 - mixes[m][c]);
        if (row % T > 0) dx[i - C] += d[i] * mixes[m][c];
      }
    }
  });
  return dx;
}

/** x + bias per channel. */
export function addBiasRef(x: Float64Array, bias: Float64Array): Float64Array {
  const C = bias.length;
  return x.map((v, i) => v + bias[i % C]);
}

/** σ(z + bias) per channel. */
export function sigmoidBiasRef(z: Float64Array, bias: Float64Array): Float64Array {
  const C = bias.length;
  return z.map((v, i) => sigmoid(v + bias[i % C]));
}

/** dz from dout and the forward output s = σ(z + bias). */
export function sigmoidBiasBackwardRef(dout: Float64Array, s: Float64Array): Float64Array {
  return dout.map((d, i) => d * s[i] * (1 - s[i]));
}

/** v + (v_first − v)⊙σ(v0 + z_v). */
export function valueResidualRef(v: Float64Array, vFirst: Float64Array, zv: Float64Array, v0: Float64Array): Float64Array {
  const C = v0.length;
  return v.map((x, i) => x + (vFirst[i] - x) * sigmoid(v0[i % C] + zv[i]));
}

export function valueResidualBackwardRef(
  dout: Float64Array,
  v: Float64Array,
  vFirst: Float64Array,
  zv: Float64Array,
  v0: Float64Array,
): { dv: Float64Array; dvfirst: Float64Array; dz: Float64Array } {
  const C = v0.length;
  const s = zv.map((z, i) => sigmoid(v0[i % C] + z));
  return {
    dv: dout.map((d, i) => d * (1 - s[i])),
    dvfirst: dout.map((d, i) => d * s[i]),
    dz: dout.map((d, i) => d * (vFirst[i] - v[i]) * s[i] * (1 - s[i])),
  };
}

/** Σ over each head's N channels of f(i, c), for element index i = base + j and channel c = h·N + j. */
function headSums(rows: number, C: number, N: number, f: (i: number, c: number) => number): Float64Array {
  const H = C / N;
  const sums = new Float64Array(rows * H);
  for (let row = 0; row < rows; row++) {
    for (let c = 0; c < C; c++) sums[row * H + Math.floor(c / N)] += f(row * C + c, c);
  }
  return sums;
}

/** Index into headSums' result for element i. */
function headOf(i: number, C: number, N: number): number {
  return Math.floor(i / C) * (C / N) + Math.floor((i % C) / N);
}

const NORM_EPS = 1e-12;

export interface KeyPrepRef {
  kk: Float64Array;
  kt: Float64Array;
  aw: Float64Array;
  bw: Float64Array;
}

/** kk = normalize_per_head(k⊙k_k), k̃ = k⊙(1 + (a − 1)⊙k_a), aw = −kk, bw = kk⊙a. */
export function keyPrepRef(k: Float64Array, a: Float64Array, kK: Float64Array, kA: Float64Array, N: number): KeyPrepRef {
  const C = kK.length;
  const rows = k.length / C;
  const sq = headSums(rows, C, N, (i, c) => (k[i] * kK[c]) ** 2);
  const kk = k.map((v, i) => (v * kK[i % C]) / Math.max(Math.sqrt(sq[headOf(i, C, N)]), NORM_EPS));
  return {
    kk,
    kt: k.map((v, i) => v * (1 + (a[i] - 1) * kA[i % C])),
    aw: kk.map((v) => -v),
    bw: kk.map((v, i) => v * a[i]),
  };
}

export function keyPrepBackwardRef(
  dkt: Float64Array,
  daw: Float64Array,
  dbw: Float64Array,
  k: Float64Array,
  a: Float64Array,
  kK: Float64Array,
  kA: Float64Array,
  N: number,
): { dk: Float64Array; da: Float64Array } {
  const C = kK.length;
  const rows = k.length / C;
  const { kk } = keyPrepRef(k, a, kK, kA, N);
  const dkk = daw.map((d, i) => -d + dbw[i] * a[i]);
  const norm = headSums(rows, C, N, (i, c) => (k[i] * kK[c]) ** 2).map(Math.sqrt);
  const dot = headSums(rows, C, N, (i) => kk[i] * dkk[i]);
  const dk = k.map((_, i) => {
    const h = headOf(i, C, N);
    // Below the clamp kk = z/eps is linear in z: no projection term.
    const proj = norm[h] > NORM_EPS ? dot[h] : 0;
    const dz = (dkk[i] - kk[i] * proj) / Math.max(norm[h], NORM_EPS);
    return dkt[i] * (1 + (a[i] - 1) * kA[i % C]) + dz * kK[i % C];
  });
  const da = k.map((v, i) => dkt[i] * v * kA[i % C] + dbw[i] * kk[i]);
  return { dk, da };
}

/** (gn + (Σ_{j∈head} r·k̃·r_k)·v)⊙g, with r_k [H, N] flattened to [C]. */
export function bonusGateRef(gn: Float64Array, r: Float64Array, kt: Float64Array, v: Float64Array, rK: Float64Array, g: Float64Array, N: number): Float64Array {
  const C = rK.length;
  const s = headSums(gn.length / C, C, N, (i, c) => r[i] * kt[i] * rK[c]);
  return gn.map((x, i) => (x + s[headOf(i, C, N)] * v[i]) * g[i]);
}

export interface BonusGateGradsRef {
  dgn: Float64Array;
  dr: Float64Array;
  dkt: Float64Array;
  dv: Float64Array;
  dg: Float64Array;
}

export function bonusGateBackwardRef(
  dout: Float64Array,
  gn: Float64Array,
  r: Float64Array,
  kt: Float64Array,
  v: Float64Array,
  rK: Float64Array,
  g: Float64Array,
  N: number,
): BonusGateGradsRef {
  const C = rK.length;
  const rows = gn.length / C;
  const s = headSums(rows, C, N, (i, c) => r[i] * kt[i] * rK[c]);
  const ds = headSums(rows, C, N, (i) => dout[i] * g[i] * v[i]);
  const h = (i: number): number => headOf(i, C, N);
  return {
    dgn: dout.map((d, i) => d * g[i]),
    dr: r.map((_, i) => ds[h(i)] * kt[i] * rK[i % C]),
    dkt: kt.map((_, i) => ds[h(i)] * r[i] * rK[i % C]),
    dv: v.map((_, i) => dout[i] * g[i] * s[h(i)]),
    dg: g.map((_, i) => dout[i] * (gn[i] + s[h(i)] * v[i])),
  };
}
