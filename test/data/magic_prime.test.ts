import { describe, expect, it } from 'vitest';
import { isPrime, magicPrime, magicPrimeOffset } from '../../src/data/magic_prime.js';

describe('magic prime', () => {
  it('finds the primes of the spec examples', () => {
    expect(magicPrime(1_498_226_207, 512)).toBe(2_926_181);
    expect(magicPrime(1_498_226_207, 4096)).toBe(365_759);
    expect(magicPrime(10_000, 128)).toBe(71);
  });

  it('is the largest prime p ≡ 2 (mod 3) with p ≤ floor(N/ctx_len) − 1, and none below 3·ctx_len tokens', () => {
    const slowPrime = (n: number): boolean => n >= 2 && Array.from({ length: n - 2 }, (_, k) => k + 2).every((d) => n % d !== 0);
    for (let n = 0; n < 3000; n += 7) {
      for (const ctx of [1, 4, 17]) {
        let want: number | null = null;
        if (n >= 3 * ctx) for (let p = Math.floor(n / ctx) - 1; p >= 2 && want === null; p--) if (p % 3 === 2 && slowPrime(p)) want = p;
        expect(magicPrime(n, ctx), `n=${n} ctx=${ctx}`).toBe(want);
      }
    }
    for (let n = 0; n < 500; n++) expect(isPrime(n), `${n}`).toBe(slowPrime(n));
  });

  it('reproduces the spec offsets (p = 2926181, ctx_len 512, epoch 0, one GPU)', () => {
    expect(Math.trunc(2_926_181 * ((Math.sqrt(5) - 1) / 2))).toBe(1_808_479);
    expect([0, 1, 2, 3, 4].map((k) => magicPrimeOffset(2_926_181, 512, k))).toEqual([925941248, 1414711296, 1029138944, 830257664, 380896256]);
  });

  it('agrees with exact BigInt arithmetic far into a run, where factor·ii³ passes 2^53', () => {
    const p = 2_926_181;
    for (const k of [40_319, 40_320, 1_000_000, 2_926_180, 123_456_789]) {
      const ii = BigInt(k + 1);
      const want = Number(((1_808_479n * ii ** 3n) % BigInt(p)) * 512n);
      expect(magicPrimeOffset(p, 512, k)).toBe(want);
    }
  });

  it('visits every chunk exactly once in the first p samples (p = 71, and a larger p)', () => {
    for (const p of [71, magicPrime(1_000_000, 7)!]) {
      const seen = new Uint8Array(p);
      for (let k = 0; k < p; k++) seen[magicPrimeOffset(p, 3, k) / 3]++;
      expect(seen.every((c) => c === 1), `p=${p}`).toBe(true);
    }
  });
});
