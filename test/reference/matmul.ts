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
