import { describe, expect, it } from 'vitest';
import { countValidTargets, crossEntropy, L2WRAP_FACTOR, meanLoss } from '../../src/kernels/cross_entropy.js';
import { expectClose, f32, finiteDiff, freshRng, getGpu, poison, type Rng } from '../helpers.js';

const IGNORE = -100;

interface RefOut {
  rowLoss: Float64Array;
  dlogits: Float64Array;
  nValid: number;
  mean: number;
}

/** Float64 reference: torch CrossEntropyLoss (mean over valid targets) plus L2Wrap's backward. */
function refCrossEntropy(x: Float64Array, tgt: Int32Array, M: number, V: number, l2wrap: boolean, gradScale: number, tokens: number): RefOut {
  const valid = (t: number) => t >= 0 && t < V;
  const nValid = tgt.filter(valid).length;
  const rowLoss = new Float64Array(M);
  const dlogits = new Float64Array(M * V);
  for (let r = 0; r < M; r++) {
    const row = x.subarray(r * V, (r + 1) * V);
    let mx = -Infinity;
    let arg = 0;
    for (let j = 0; j < V; j++) if (row[j] > mx) [mx, arg] = [row[j], j];
    let sum = 0;
    for (let j = 0; j < V; j++) sum += Math.exp(row[j] - mx);
    const t = tgt[r];
    if (valid(t)) {
      rowLoss[r] = Math.log(sum) + mx - row[t];
      for (let j = 0; j < V; j++) dlogits[r * V + j] = (gradScale * (Math.exp(row[j] - mx) / sum - (j === t ? 1 : 0))) / nValid;
    }
    if (l2wrap) dlogits[r * V + arg] += (mx * L2WRAP_FACTOR) / tokens;
  }
  const mean = nValid ? rowLoss.reduce((a, b) => a + b, 0) / nValid : 0;
  return { rowLoss, dlogits, nValid, mean };
}

/** The scalar whose gradient the reference backward claims to be: gradScale·CE + L2Wrap's penalty. */
function refObjective(x: Float64Array, tgt: Int32Array, M: number, V: number, l2wrap: boolean, gradScale: number, tokens: number): number {
  const { mean } = refCrossEntropy(x, tgt, M, V, false, 1, tokens);
  let penalty = 0;
  if (l2wrap) {
    for (let r = 0; r < M; r++) penalty += Math.max(...x.subarray(r * V, (r + 1) * V)) ** 2;
    penalty *= L2WRAP_FACTOR / (2 * tokens);
  }
  return gradScale * mean + penalty;
}

/**
 * Targets in [0, V) with about a quarter ignored (-100) and, when asked, one out of range
 * (treated as ignored). Row 0 is always valid so every case has a loss to compare.
 */
function randomTargets(rng: Rng, M: number, V: number, outOfRange: boolean): Int32Array {
  const t = new Int32Array(M);
  for (let i = 0; i < M; i++) t[i] = i > 0 && rng.next() < 0.25 ? IGNORE : rng.int(V);
  if (outOfRange && M > 2) t[1] = rng.next() < 0.5 ? V : -7;
  return t;
}

/** Logits ~ N(0, 3²), rounded to f32 so the reference sees exactly what the GPU sees. */
function randomLogits(rng: Rng, n: number): Float64Array {
  return Float64Array.from(f32(rng.normals(n, 3)));
}

/** expectClose, except that an all-zero reference must be matched to within `abs` (relative error is undefined there). */
function expectCloseOrZero(what: string, gpu: ArrayLike<number>, ref: ArrayLike<number>, bound: number, abs: number, rng: Rng): void {
  if (Array.from(ref).some((v) => v !== 0)) return expectClose(what, gpu, ref, bound, rng);
  const worst = Array.from(gpu, Math.abs).reduce((a, b) => Math.max(a, b), 0);
  if (!(worst <= abs)) throw new Error(`${what}: reference is all zero but GPU max |value| is ${worst} [seed ${rng.seed}]`);
}

describe('cross-entropy reference', () => {
  for (const l2wrap of [false, true]) {
    it(`backward matches finite differences (l2wrap=${l2wrap})`, () => {
      const rng = freshRng();
      const [M, V, gradScale, tokens] = [5, 7, 0.5, 12];
      const x = rng.normals(M * V, 3);
      const tgt = Int32Array.from([3, IGNORE, 0, 6, V]);
      const ref = refCrossEntropy(x, tgt, M, V, l2wrap, gradScale, tokens);
      const idx = Array.from({ length: M * V }, (_, i) => i);
      const fd = finiteDiff((xx) => refObjective(xx, tgt, M, V, l2wrap, gradScale, tokens), x, idx, 1e-5);
      expectClose('reference dlogits vs finite differences', ref.dlogits, fd, 1e-7, rng);
    });
  }
});

describe('crossEntropy', () => {
  // Bounds: f32 logsumexp and softmax over ≤ 65536 terms stay well inside 1e-5 relative.
  const LOSS_BOUND = 1e-5;
  const GRAD_BOUND = 1e-5;
  const cases: [M: number, V: number][] = [];
  for (const M of [1, 17, 129]) for (const V of [1, 7, 256, 1000]) cases.push([M, V]);
  cases.push([1, 65536], [3, 65536]);

  cases.forEach(([M, V], ci) => {
    for (const inPlace of [false, true]) {
      const l2wrap = (ci + (inPlace ? 1 : 0)) % 2 === 0;
      const gradScale = ci % 3 === 0 ? 1 : 0.25;
      const tokens = ci % 2 === 0 ? undefined : 2 * M + 3;
      it(`M=${M} V=${V} ${inPlace ? 'in place' : 'separate'} l2wrap=${l2wrap} gradScale=${gradScale} tokens=${tokens ?? 'M'}`, async () => {
        const gpu = await getGpu();
        const rng = freshRng();
        const x = randomLogits(rng, M * V);
        const tgt = randomTargets(rng, M, V, ci % 2 === 1);
        const ref = refCrossEntropy(x, tgt, M, V, l2wrap, gradScale, tokens ?? M);

        const logits = gpu.upload(f32(x), [M, V], 'f32', 'logits');
        const targets = gpu.upload(tgt, [M], 'i32', 'targets');
        const dlogits = inPlace ? logits : gpu.tensor([M, V], 'f32', 'dlogits');
        const rowLoss = gpu.tensor([M], 'f32', 'rowLoss');
        const nValid = gpu.tensor([1], 'u32', 'nValid');
        const mean = gpu.tensor([1], 'f32', 'mean');
        poison(gpu, rowLoss, nValid, mean, ...(inPlace ? [] : [dlogits]));

        countValidTargets(gpu, targets, V, nValid);
        crossEntropy(gpu, logits, targets, dlogits, rowLoss, { l2wrap, gradScale, l2wrapTokens: tokens, nValid });
        meanLoss(gpu, rowLoss, nValid, mean);

        expect((await gpu.readU32(nValid))[0]).toBe(ref.nValid);
        expectCloseOrZero('rowLoss', await gpu.readF32(rowLoss), ref.rowLoss, LOSS_BOUND, 1e-6, rng);
        expectCloseOrZero('dlogits', await gpu.readF32(dlogits), ref.dlogits, GRAD_BOUND, 1e-6, rng);
        expectCloseOrZero('meanLoss', await gpu.readF32(mean), [ref.mean], LOSS_BOUND, 1e-6, rng);
        for (const t of new Set([logits, targets, dlogits, rowLoss, nValid, mean])) gpu.free(t);
      });
    }
  });

  it('confident rows (softmax at the target near 1) keep full relative precision', async () => {
    const gpu = await getGpu();
    const rng = freshRng();
    const [M, V] = [3, 300];
    const x = randomLogits(rng, M * V);
    const tgt = Int32Array.from([0, 150, 299]);
    // Lift each target 12..18 above the row's max: row losses ~1e-5..1e-8, where 1 + Σ others rounds.
    for (let r = 0; r < M; r++) x[r * V + tgt[r]] = Math.fround(Math.max(...x.subarray(r * V, (r + 1) * V)) + 12 + 3 * r);
    const ref = refCrossEntropy(x, tgt, M, V, false, 1, M);
    const logits = gpu.upload(f32(x), [M, V], 'f32', 'logits');
    const targets = gpu.upload(tgt, [M], 'i32', 'targets');
    const rowLoss = gpu.tensor([M], 'f32', 'rowLoss');
    const nValid = gpu.tensor([1], 'u32', 'nValid');
    poison(gpu, rowLoss, nValid);
    countValidTargets(gpu, targets, V, nValid);
    crossEntropy(gpu, logits, targets, logits, rowLoss, { l2wrap: false, nValid });
    const loss = await gpu.readF32(rowLoss);
    const grad = await gpu.readF32(logits);
    for (let r = 0; r < M; r++) {
      expectClose(`rowLoss[${r}]`, [loss[r]], [ref.rowLoss[r]], LOSS_BOUND, rng);
      expectClose(`dlogits row ${r}`, grad.subarray(r * V, (r + 1) * V), ref.dlogits.subarray(r * V, (r + 1) * V), GRAD_BOUND, rng);
    }
    for (const t of [logits, targets, rowLoss, nValid]) gpu.free(t);
  });

  it('all targets ignored: zero loss, zero mean, only the L2Wrap gradient', async () => {
    const gpu = await getGpu();
    const rng = freshRng();
    const [M, V] = [4, 9];
    const x = randomLogits(rng, M * V);
    const tgt = new Int32Array(M).fill(IGNORE);
    const ref = refCrossEntropy(x, tgt, M, V, true, 1, M);
    const logits = gpu.upload(f32(x), [M, V], 'f32', 'logits');
    const targets = gpu.upload(tgt, [M], 'i32', 'targets');
    const rowLoss = gpu.tensor([M], 'f32', 'rowLoss');
    const nValid = gpu.tensor([1], 'u32', 'nValid');
    const mean = gpu.tensor([1], 'f32', 'mean');
    poison(gpu, rowLoss, nValid, mean);
    countValidTargets(gpu, targets, V, nValid);
    crossEntropy(gpu, logits, targets, logits, rowLoss, { l2wrap: true, nValid });
    meanLoss(gpu, rowLoss, nValid, mean);
    expect((await gpu.readU32(nValid))[0]).toBe(0);
    expect(Array.from(await gpu.readF32(rowLoss))).toEqual([0, 0, 0, 0]);
    expect((await gpu.readF32(mean))[0]).toBe(0);
    expectClose('dlogits', await gpu.readF32(logits), ref.dlogits, GRAD_BOUND, rng);
    for (const t of [logits, targets, rowLoss, nValid, mean]) gpu.free(t);
  });

  it('names the offending tensor on bad shapes and dtypes', async () => {
    const gpu = await getGpu();
    const logits = gpu.tensor([4, 10], 'f32', 'logits');
    const targets = gpu.tensor([4], 'i32', 'targets');
    const rowLoss = gpu.tensor([4], 'f32', 'rowLoss');
    const nValid = gpu.tensor([1], 'u32', 'nValid');
    const opts = { l2wrap: true, nValid };
    const badTargets = gpu.tensor([4], 'u32', 'tgtU32');
    const shortLoss = gpu.tensor([3], 'f32', 'lossShort');
    const badLogits = gpu.tensor([40], 'f32', 'flatLogits');
    expect(() => crossEntropy(gpu, logits, badTargets, logits, rowLoss, opts)).toThrow(/tgtU32 must be i32 \[4\], found tgtU32\[4\]:u32/);
    expect(() => crossEntropy(gpu, logits, targets, logits, shortLoss, opts)).toThrow(/lossShort must be f32 \[4\], found lossShort\[3\]:f32/);
    expect(() => crossEntropy(gpu, badLogits, targets, badLogits, rowLoss, opts)).toThrow(/flatLogits must be f32 \[M, V\]/);
    expect(() => crossEntropy(gpu, logits, targets, logits, rowLoss, { ...opts, gradScale: 0 })).toThrow(/gradScale must be a positive/);
    expect(() => meanLoss(gpu, rowLoss, rowLoss, rowLoss)).toThrow(/rowLoss must be u32 \[1\]/);
    expect(() => countValidTargets(gpu, badTargets, 10, nValid)).toThrow(/tgtU32 must be i32 \[M\]/);
    // A chunk's rows must lie inside the batch's targets and row losses, which must agree.
    const chunk = gpu.tensor([3, 10], 'f32', 'chunk');
    expect(() => crossEntropy(gpu, chunk, targets, chunk, rowLoss, { ...opts, firstRow: 2 })).toThrow(/rows 2\.\.4 of chunk lie outside the 4 rows of targets/);
    expect(() => crossEntropy(gpu, chunk, targets, chunk, shortLoss, { ...opts, firstRow: 0 })).toThrow(/lossShort must be f32 \[4\]/);
    expect(() => crossEntropy(gpu, chunk, targets, chunk, rowLoss, opts)).toThrow(/targets must be i32 \[3\]/);
    for (const t of [logits, targets, rowLoss, nValid, badTargets, shortLoss, badLogits, chunk]) gpu.free(t);
  });

  // A model never holds [B·T, V] whole: chunks of rows must give exactly the batch's loss
  // and gradient, with the mean over the batch's valid count and L2Wrap over its B·T.
  for (const l2wrap of [false, true]) {
    it(`chunks of rows with firstRow match the float64 reference of the whole batch (l2wrap=${l2wrap})`, async () => {
      const gpu = await getGpu();
      const rng = freshRng();
      const [M, V, gradScale] = [23, 300, 0.5];
      const x = randomLogits(rng, M * V);
      const tgt = randomTargets(rng, M, V, true);
      // One whole chunk (rows 10..14) ignored: it must still get L2Wrap and zero CE gradient.
      for (let r = 10; r < 15; r++) tgt[r] = IGNORE;
      const ref = refCrossEntropy(x, tgt, M, V, l2wrap, gradScale, M);
      const targets = gpu.upload(tgt, [M], 'i32', 'targets');
      const rowLoss = gpu.tensor([M], 'f32', 'rowLoss');
      const nValid = gpu.tensor([1], 'u32', 'nValid');
      const mean = gpu.tensor([1], 'f32', 'mean');
      poison(gpu, rowLoss, nValid, mean);
      countValidTargets(gpu, targets, V, nValid);
      const dlogits = new Float32Array(M * V);
      const chunk = 5; // 23 = 4·5 + 3: a partial last chunk
      for (let first = 0; first < M; first += chunk) {
        const n = Math.min(chunk, M - first);
        const logits = gpu.upload(f32(x.subarray(first * V, (first + n) * V)), [n, V], 'f32', `logits ${first}`);
        crossEntropy(gpu, logits, targets, logits, rowLoss, { l2wrap, gradScale, l2wrapTokens: M, nValid, firstRow: first });
        dlogits.set(await gpu.readF32(logits), first * V);
        gpu.free(logits);
      }
      meanLoss(gpu, rowLoss, nValid, mean);
      expect((await gpu.readU32(nValid))[0]).toBe(ref.nValid);
      expectClose('rowLoss', await gpu.readF32(rowLoss), ref.rowLoss, LOSS_BOUND, rng);
      expectClose('dlogits', dlogits, ref.dlogits, GRAD_BOUND, rng);
      expectClose('meanLoss', await gpu.readF32(mean), [ref.mean], LOSS_BOUND, rng);
      for (const t of [targets, rowLoss, nValid, mean]) gpu.free(t);
    });
  }
});
