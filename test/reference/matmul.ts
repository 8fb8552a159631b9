/** float64 reference of the matrix products, for the f32 and tensor-core kernels' tests. */

/**
 * alpha·op(A)·op(B) (+ c0), op(A) [M,K] and op(B) [K,N] read from their stored layouts
 * (transA: A is [K,M]; transB: B is [N,K]), and each element's rounding scale
 * |alpha|·Σ|a||b| (+ |c0|).
 */
export function refMatmul(
  a: ArrayLike<number>,
  b: ArrayLike<number>,
  m: number,
  k: number,
  n: number,
  transA: boolean,
  transB: boolean,
  alpha: number,
  c0?: ArrayLike<number>,
): { ref: Float64Array; mag: Float64Array } {
  const ref = new Float64Array(m * n);
  const mag = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let s = 0;
      let t = 0;
      for (let l = 0; l < k; l++) {
        const p = a[transA ? l * m + i : i * k + l] * b[transB ? j * k + l : l * n + j];
        s += p;
        t += Math.abs(p);
      }
      ref[i * n + j] = alpha * s + (c0 ? c0[i * n + j] : 0);
      mag[i * n + j] = Math.abs(alpha) * t + (c0 ? Math.abs(c0[i * n + j]) : 0);
    }
  }
  return { ref, mag };
}

/**
 * refMatmul of alpha·[A | s·A2]·op([W | F]) (+ c0): A [M,K1], A2 [M,K2], and W and F
 * stored alike ([N,K] when transW, else [K,N]); values and magnitude scales summed.
 */
export function refMatmulAppend(
  a: ArrayLike<number>,
  w: ArrayLike<number>,
  a2: ArrayLike<number>,
  f: ArrayLike<number>,
  [m, k1, k2, n]: readonly [number, number, number, number],
  transW: boolean,
  alpha: number,
  s: number,
  c0?: ArrayLike<number>,
): { ref: Float64Array; mag: Float64Array } {
  const main = refMatmul(a, w, m, k1, n, false, transW, alpha, c0);
  const extra = refMatmul(a2, f, m, k2, n, false, transW, alpha * s);
  return { ref: main.ref.map((v, i) => v + extra.ref[i]), mag: main.mag.map((v, i) => v + extra.mag[i]) };
}
