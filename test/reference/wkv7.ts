/**
 * Float64 reference for the WKV7 recurrence (clampw form, spec §2.2 step 6 and §3.3):
 * a plain forward and a reverse-mode backward through every stored state.
 * Layouts: per-token vectors [B, T, H, N]; states [B, H, N, N] with row i = value dim.
 */

/** decay = exp(W_SCALE·σ(w_raw)), the soft clamp of RWKV-LM's clampw kernel. */
export const W_SCALE = -0.6065306597;

export interface Wkv7RefInputs {
  B: number;
  T: number;
  H: number;
  N: number;
  r: ArrayLike<number>;
  w: ArrayLike<number>;
  k: ArrayLike<number>;
  v: ArrayLike<number>;
  a: ArrayLike<number>;
  b: ArrayLike<number>;
  /** Initial state [B, H, N, N]; zero when absent. */
  s0?: ArrayLike<number>;
}

export interface Wkv7RefForward {
  y: Float64Array;
  /** Σ_j S_{t−1}[i,j]·a_t[j], [B, T, H, N]. */
  sa: Float64Array;
  /** Final state [B, H, N, N]. */
  sT: Float64Array;
}

export interface Wkv7RefGrads {
  dr: Float64Array;
  dw: Float64Array;
  dk: Float64Array;
  dv: Float64Array;
  da: Float64Array;
  db: Float64Array;
  /** ∂L/∂s0, [B, H, N, N]. */
  ds0: Float64Array;
}

function sigmoid(x: number): number {
  return 1 / (1 + Math.exp(-x));
}

export function wkv7Decay(wRaw: number): number {
  return Math.exp(W_SCALE * sigmoid(wRaw));
}

/** Runs one (b, h) head; `visit(t, prev, next, sa)` sees every step's states before they are overwritten. */
function runHead(
  x: Wkv7RefInputs,
  bb: number,
  h: number,
  visit: (t: number, prev: Float64Array, next: Float64Array, sa: Float64Array) => void,
): Float64Array {
  const { T, H, N } = x;
  let S = new Float64Array(N * N);
  if (x.s0) for (let e = 0; e < N * N; e++) S[e] = x.s0[(bb * H + h) * N * N + e];
  const sa = new Float64Array(N);
  for (let t = 0; t < T; t++) {
    const o = ((bb * T + t) * H + h) * N;
    const next = new Float64Array(N * N);
    for (let i = 0; i < N; i++) {
      let s = 0;
      for (let j = 0; j < N; j++) s += S[i * N + j] * x.a[o + j];
      sa[i] = s;
      for (let j = 0; j < N; j++) {
        next[i * N + j] = S[i * N + j] * wkv7Decay(x.w[o + j]) + s * x.b[o + j] + x.v[o + i] * x.k[o + j];
      }
    }
    visit(t, S, next, sa);
    S = next;
  }
  return S;
}

export function wkv7RefForward(x: Wkv7RefInputs): Wkv7RefForward {
  const { B, T, H, N } = x;
  const y = new Float64Array(B * T * H * N);
  const saAll = new Float64Array(B * T * H * N);
  const sT = new Float64Array(B * H * N * N);
  for (let bb = 0; bb < B; bb++) {
    for (let h = 0; h < H; h++) {
      const last = runHead(x, bb, h, (t, _prev, next, sa) => {
        const o = ((bb * T + t) * H + h) * N;
        for (let i = 0; i < N; i++) {
          let s = 0;
          for (let j = 0; j < N; j++) s += next[i * N + j] * x.r[o + j];
          y[o + i] = s;
          saAll[o + i] = sa[i];
        }
      });
      sT.set(last, (bb * H + h) * N * N);
    }
  }
  return { y, sa: saAll, sT };
}

/** Gradients of L = Σ y·dy with respect to every input (and s0, zero-based when s0 is absent). */
export function wkv7RefBackward(x: Wkv7RefInputs, dy: ArrayLike<number>): Wkv7RefGrads {
  const { B, T, H, N } = x;
  const n = B * T * H * N;
  const g: Wkv7RefGrads = {
    dr: new Float64Array(n),
    dw: new Float64Array(n),
    dk: new Float64Array(n),
    dv: new Float64Array(n),
    da: new Float64Array(n),
    db: new Float64Array(n),
    ds0: new Float64Array(B * H * N * N),
  };
  for (let bb = 0; bb < B; bb++) {
    for (let h = 0; h < H; h++) {
      // Keep every state S_{t−1} and every sa_t, then walk back.
      const prevs: Float64Array[] = [];
      const sas: Float64Array[] = [];
      const last = runHead(x, bb, h, (_t, prev, _next, sa) => {
        prevs.push(prev);
        sas.push(Float64Array.from(sa));
      });
      const dS = new Float64Array(N * N); // ∂L/∂S_t
      const dsa = new Float64Array(N);
      for (let t = T - 1; t >= 0; t--) {
        const o = ((bb * T + t) * H + h) * N;
        const St = t === T - 1 ? last : prevs[t + 1];
        const Sp = prevs[t];
        const sa = sas[t];
        // y_t = S_t r_t
        for (let i = 0; i < N; i++) {
          for (let j = 0; j < N; j++) {
            g.dr[o + j] += St[i * N + j] * dy[o + i];
            dS[i * N + j] += dy[o + i] * x.r[o + j];
          }
        }
        // S_t = S_{t−1}·diag(decay) + sa bᵀ + v kᵀ, sa = S_{t−1} a
        dsa.fill(0);
        for (let i = 0; i < N; i++) {
          for (let j = 0; j < N; j++) {
            const d = dS[i * N + j];
            g.dw[o + j] += d * Sp[i * N + j];
            g.dk[o + j] += d * x.v[o + i];
            g.db[o + j] += d * sa[i];
            g.dv[o + i] += d * x.k[o + j];
            dsa[i] += d * x.b[o + j];
          }
        }
        for (let j = 0; j < N; j++) {
          const s = sigmoid(x.w[o + j]);
          g.dw[o + j] *= wkv7Decay(x.w[o + j]) * W_SCALE * s * (1 - s);
        }
        for (let i = 0; i < N; i++) {
          for (let j = 0; j < N; j++) {
            g.da[o + j] += Sp[i * N + j] * dsa[i];
            dS[i * N + j] = dS[i * N + j] * wkv7Decay(x.w[o + j]) + dsa[i] * x.a[o + j];
          }
        }
      }
      g.ds0.set(dS, (bb * H + h) * N * N);
    }
  }
  return g;
}
