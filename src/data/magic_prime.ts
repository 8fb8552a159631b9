/**
 * RWKV-LM's "magic prime" arithmetic. A dataset of N tokens has floor(N/ctx_len) chunks;
 * p is the largest prime ≤ floor(N/ctx_len) − 1 with p ≡ 2 (mod 3), so t ↦ t³ permutes
 * Z_p and samples 1..p visit every chunk start once, in scrambled order.
 */

export function isPrime(n: number): boolean {
  if (!Number.isInteger(n) || n < 2) return false;
  if (n % 2 === 0 || n % 3 === 0) return n === 2 || n === 3;
  for (let d = 5; d * d <= n; d += 6) if (n % d === 0 || n % (d + 2) === 0) return false;
  return true;
}

/** make_data.py / compute_magic_prime.py; null where there are fewer than 3·ctx_len tokens (make_data prints none). */
export function magicPrime(dataTokens: number, ctxLen: number): number | null {
  if (dataTokens < 3 * ctxLen) return null;
  for (let p = Math.floor(dataTokens / ctxLen) - 1; p >= 2; p--) if (p % 3 === 2 && isPrime(p)) return p;
  return null;
}

/**
 * Token offset of sample `sample` (0-based over the whole run: epoch·40320 + idx on one
 * GPU): ii = 1 + sample, offset = ((⌊p·(√5−1)/2⌋ · ii³) mod p) · ctx_len. The product
 * passes 2^53, hence BigInt; the factor is the same float64 product Python truncates.
 */
export function magicPrimeOffset(p: number, ctxLen: number, sample: number): number {
  const factor = BigInt(Math.trunc(p * ((Math.sqrt(5) - 1) / 2)));
  const ii = BigInt(sample) + 1n;
  return Number(((factor * ii * ii * ii) % BigInt(p)) * BigInt(ctxLen));
}
