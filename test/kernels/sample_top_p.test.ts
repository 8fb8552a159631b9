/**
 * The top-p sampling kernel against a float64 reference of the rwkv pip
 * package's sampler (sort, cumulative sum, cutoff, power 1/temperature,
 * renormalise): the distribution it samples from, and the token it draws for
 * given uniforms (draws within 1e-4 of a bucket edge are skipped: f32 and f64
 * may place those either side).
 */
import { describe, expect, it } from 'vitest';
import { sampleTopP } from '../../src/kernels/sample_top_p.js';
import { expectClose, f32, freshRng, getGpu, poison, type Rng } from '../helpers.js';

interface RefSample {
  probs: Float64Array;
  /** Cumulative distribution in token order, for drawing and for edge checks. */
  cdf: Float64Array;
}

function reference(logits: ArrayLike<number>, temperature: number, topP: number): RefSample {
  const V = logits.length;
  let m = -Infinity;
  for (let i = 0; i < V; i++) m = Math.max(m, logits[i]);
  const p = Float64Array.from(logits, (l) => Math.exp(l - m));
  const z = p.reduce((a, b) => a + b, 0);
  p.forEach((v, i) => (p[i] = v / z));
  const sorted = [...p].sort((a, b) => b - a);
  let cum = 0;
  let cutoff = sorted[0];
  if (temperature > 0) {
    for (const v of sorted) {
      cum += v;
      cutoff = v;
      if (cum >= topP) break;
    }
  }
  const pmax = sorted[0];
  const q = p.map((v) => (v >= cutoff ? (temperature > 0 ? (v / pmax) ** (1 / temperature) : 1) : 0));
  const s = q.reduce((a, b) => a + b, 0);
  const probs = q.map((v) => v / s);
  const cdf = new Float64Array(V);
  let acc = 0;
  probs.forEach((v, i) => (cdf[i] = acc += v));
  return { probs, cdf };
}

/** Distance of topP from every cumulative sum of the sorted distribution (the reference's decision points). */
function topPMargin(logits: ArrayLike<number>, topP: number): number {
  const { probs } = reference(logits, 1, 1);
  const sorted = [...probs].sort((a, b) => b - a);
  let cum = 0;
  let d = Infinity;
  for (const v of sorted) d = Math.min(d, Math.abs((cum += v) - topP));
  return d;
}

function logitsFor(rng: Rng, V: number): Float64Array {
  // Realistic logits: a spread of a few units, with a handful of confident tokens.
  const l = rng.normals(V, 2);
  for (let k = 0; k < Math.min(5, V); k++) l[rng.int(V)] += 6;
  return Float64Array.from(f32(l));
}

// exp and division in f32 over up to 65536 terms: measured relative errors ~1e-6.
const BOUND = 2e-5;

describe('sampleTopP', () => {
  for (const V of [1, 17, 129, 1000, 65536]) {
    for (const [temperature, topP] of [[1, 1], [1, 0.7], [0.6, 0.85], [1.5, 0.3], [0, 0.9]] as const) {
      it(`V=${V} temperature=${temperature} top_p=${topP}`, async () => {
        const gpu = await getGpu();
        const rng = freshRng();
        const rows = 3;
        const row = 2;
        let l = logitsFor(rng, V);
        for (let tries = 0; tries < 20 && topP < 1 && temperature > 0 && topPMargin(l, topP) < 1e-4; tries++) l = logitsFor(rng, V);
        const all = new Float32Array(rows * V);
        for (let r = 0; r < rows; r++) all.set(r === row ? f32(l) : f32(rng.normals(V, 3)), r * V);
        const tl = gpu.upload(all, [rows, V], 'f32', 'logits');
        const probs = gpu.tensor([V], 'f32', 'probs');
        const token = gpu.tensor([1], 'u32', 'token');
        const ref = reference(l, temperature, topP);
        // A draw close to a cumulative sum may fall either side of it: the GPU's f32 partial
        // sums over V terms drift from float64's (a flip was seen at V = 65536 with a 1e-4
        // margin). So draws are placed inside the tokens' intervals [cdf_{i-1}, cdf_i),
        // at least `margin` from either end, in intervals picked at random.
        const margin = 1e-4 + V * 2 ** -27;
        const wide: number[] = [];
        ref.cdf.forEach((c, i) => {
          if (c - (i ? ref.cdf[i - 1] : 0) > 2 * margin) wide.push(i);
        });
        expect(wide.length, `no token interval wider than ${2 * margin} [seed ${rng.seed}]`).toBeGreaterThan(0);
        for (let k = 0; k < 6; k++) {
          const want = wide[rng.int(wide.length)];
          const lo = want ? ref.cdf[want - 1] : 0;
          const u = lo + margin + rng.next() * (ref.cdf[want] - lo - 2 * margin);
          poison(gpu, probs, token);
          sampleTopP(gpu, tl, probs, token, { row, temperature, topP, u });
          if (k === 0) expectClose('sampled distribution', await gpu.readF32(probs), ref.probs, BOUND, rng);
          expect((await gpu.readU32(token))[0], `token for u=${u} [seed ${rng.seed}]`).toBe(want);
        }
        for (const t of [tl, probs, token]) gpu.free(t);
      });
    }
  }

  it('limit: ids at or past it are never candidates (a tokenizer smaller than the vocabulary)', async () => {
    const gpu = await getGpu();
    const rng = freshRng();
    const V = 129;
    const limit = 97;
    const l = logitsFor(rng, V);
    for (let i = limit; i < V; i++) l[i] = 20; // would dominate if considered
    const tl = gpu.upload(f32(l), [1, V], 'f32', 'logits');
    const probs = gpu.tensor([limit], 'f32', 'probs');
    const token = gpu.tensor([1], 'u32', 'token');
    poison(gpu, probs, token);
    sampleTopP(gpu, tl, probs, token, { row: 0, temperature: 1, topP: 1, u: 0.999, limit });
    expectClose('distribution over the first 97 ids', await gpu.readF32(probs), reference(l.subarray(0, limit), 1, 1).probs, BOUND, rng);
    expect((await gpu.readU32(token))[0]).toBeLessThan(limit);
    for (const t of [tl, probs, token]) gpu.free(t);
  });

  it('rejects bad shapes and settings, naming the tensor', async () => {
    const gpu = await getGpu();
    const logits = gpu.tensor([2, 10], 'f32', 'logits');
    const probs = gpu.tensor([9], 'f32', 'probs');
    const token = gpu.tensor([1], 'u32', 'token');
    const good = gpu.tensor([10], 'f32', 'probs10');
    const o = { row: 0, temperature: 1, topP: 0.9, u: 0.5 };
    expect(() => sampleTopP(gpu, logits, probs, token, o)).toThrow(/probs must be f32 with 10 elements, found f32 \[9\]/);
    expect(() => sampleTopP(gpu, logits, good, token, { ...o, row: 2 })).toThrow(/row 2 is outside logits \(2 rows\)/);
    expect(() => sampleTopP(gpu, logits, good, token, { ...o, topP: 1.5 })).toThrow(/top_p must be in \[0, 1\]/);
    expect(() => sampleTopP(gpu, logits, good, good, o)).toThrow(/probs10 must be u32 \[1\]/);
    expect(() => sampleTopP(gpu, logits, good, token, { ...o, limit: 11 })).toThrow(/limit must be in 1\.\.10/);
  });
});
