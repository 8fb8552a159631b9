import { describe, expect, it } from 'vitest';
import type { GpuRuntime } from '../../src/gpu/device.js';
import { groupNorm, groupNormBackward } from '../../src/kernels/layernorm.js';
import { expectClose, f32, finiteDiff, freshRng, getGpu, poison, relErr, type Rng } from '../helpers.js';

// ---- float64 references ----

interface Stats {
  mean: Float64Array;
  rstd: Float64Array;
}

function statsRef(x: Float64Array, G: number, eps: number): Stats {
  const groups = x.length / G;
  const mean = new Float64Array(groups);
  const rstd = new Float64Array(groups);
  for (let g = 0; g < groups; g++) {
    let m = 0;
    for (let j = 0; j < G; j++) m += x[g * G + j];
    m /= G;
    let v = 0;
    for (let j = 0; j < G; j++) v += (x[g * G + j] - m) ** 2;
    mean[g] = m;
    rstd[g] = 1 / Math.sqrt(v / G + eps);
  }
  return { mean, rstd };
}

function forwardRef(x: Float64Array, w: Float64Array, b: Float64Array, G: number, eps: number): Float64Array {
  const C = w.length;
  const { mean, rstd } = statsRef(x, G, eps);
  return x.map((v, i) => (v - mean[Math.floor(i / G)]) * rstd[Math.floor(i / G)] * w[i % C] + b[i % C]);
}

function backwardRef(dy: Float64Array, x: Float64Array, w: Float64Array, G: number, eps: number): { dx: Float64Array; dw: Float64Array; db: Float64Array } {
  const C = w.length;
  const { mean, rstd } = statsRef(x, G, eps);
  const dx = new Float64Array(x.length);
  const dw = new Float64Array(C);
  const db = new Float64Array(C);
  for (let g = 0; g < x.length / G; g++) {
    let m1 = 0;
    let m2 = 0;
    for (let j = 0; j < G; j++) {
      const i = g * G + j;
      const xh = (x[i] - mean[g]) * rstd[g];
      const gh = dy[i] * w[i % C];
      m1 += gh / G;
      m2 += (gh * xh) / G;
      dw[i % C] += dy[i] * xh;
      db[i % C] += dy[i];
    }
    for (let j = 0; j < G; j++) {
      const i = g * G + j;
      const xh = (x[i] - mean[g]) * rstd[g];
      dx[i] = rstd[g] * (dy[i] * w[i % C] - m1 - xh * m2);
    }
  }
  return { dx, dw, db };
}

/** Activations like the residual stream: per-row offset and scale, so variance is not 1. */
function activations(rng: Rng, rows: number, C: number): Float64Array {
  const x = new Float64Array(rows * C);
  for (let r = 0; r < rows; r++) {
    const offset = rng.uniform(-3, 3);
    const scale = rng.uniform(0.2, 5);
    for (let c = 0; c < C; c++) x[r * C + c] = offset + scale * rng.normal();
  }
  return x;
}

const dot = (a: Float64Array, b: Float64Array): number => a.reduce((s, v, i) => s + v * b[i], 0);

describe('group norm references', () => {
  for (const [rows, C, G] of [
    [3, 8, 8],
    [2, 12, 4],
  ]) {
    it(`backward matches central differences (rows ${rows}, C ${C}, G ${G})`, () => {
      const rng = freshRng();
      const eps = 1e-5;
      const x = activations(rng, rows, C);
      const w = rng.normals(C).map((v) => 1 + 0.3 * v);
      const b = rng.normals(C, 0.3);
      const R = rng.normals(rows * C);
      const { dx, dw, db } = backwardRef(R, x, w, G, eps);
      const all = [...Array(rows * C).keys()];
      const cols = [...Array(C).keys()];
      expectClose('dx vs FD', dx, finiteDiff((v) => dot(forwardRef(v, w, b, G, eps), R), x, all), 1e-6, rng);
      expectClose('dγ vs FD', dw, finiteDiff((v) => dot(forwardRef(x, v, b, G, eps), R), w, cols), 1e-6, rng);
      expectClose('dβ vs FD', db, finiteDiff((v) => dot(forwardRef(x, w, v, G, eps), R), b, cols), 1e-6, rng);
    });
  }
});

// f32 kernels against the float64 reference: measured errors are ~1e-7 to 3e-7.
const FWD_BOUND = 1e-5;
const BWD_BOUND = 1e-5;

const cases: [rows: number, C: number, G: number, eps: number][] = [
  [1, 64, 64, 1e-5],
  [17, 96, 96, 1e-5],
  [17, 96, 24, 1e-5],
  [129, 128, 64, 64e-5],
  [1000, 768, 768, 1e-5],
  [1000, 768, 64, 64e-5],
];

function upload(gpu: GpuRuntime, a: Float64Array, shape: number[], label: string) {
  return gpu.upload(f32(a), shape, 'f32', label);
}

describe('groupNorm forward', () => {
  for (const [rows, C, G, eps] of cases) {
    it(`rows ${rows}, C ${C}, G ${G}`, async () => {
      const gpu = await getGpu();
      const rng = freshRng();
      const x = activations(rng, rows, C);
      const w = rng.normals(C).map((v) => 1 + 0.3 * v);
      const b = rng.normals(C, 0.3);
      const tx = upload(gpu, x, [rows, C], 'x');
      const tw = upload(gpu, w, [C], 'weight');
      const tb = upload(gpu, b, [C], 'bias');
      const ty = gpu.tensor([rows, C], 'f32', 'y');
      const ts = gpu.tensor([(rows * C) / G, 2], 'f32', 'stats');
      poison(gpu, ty, ts);
      groupNorm(gpu, tx, tw, tb, ty, { groupSize: G, eps, stats: ts });
      expectClose('y', await gpu.readF32(ty), forwardRef(x, w, b, G, eps), FWD_BOUND, rng);
      const stats = await gpu.readF32(ts);
      const ref = statsRef(x, G, eps);
      expectClose('mean', stats.filter((_, i) => i % 2 === 0), ref.mean, FWD_BOUND, rng);
      expectClose('rstd', stats.filter((_, i) => i % 2 === 1), ref.rstd, FWD_BOUND, rng);

      // Without stats: same y, from the variant that saves nothing.
      poison(gpu, ty);
      groupNorm(gpu, tx, tw, tb, ty, { groupSize: G, eps });
      expectClose('y (no stats)', await gpu.readF32(ty), forwardRef(x, w, b, G, eps), FWD_BOUND, rng);
      for (const t of [tx, tw, tb, ty, ts]) gpu.free(t);
    });
  }
});

describe('groupNormBackward', () => {
  // 2000 rows: dγ from 32 chunk partials; 5000 rows: 79 partials, themselves summed in two passes.
  for (const [rows, C, G, eps] of [...cases, [2000, 128, 64, 64e-5] as const, [5000, 64, 64, 64e-5] as const]) {
    for (const accumulate of [false, true]) {
      it(`rows ${rows}, C ${C}, G ${G}${accumulate ? ', accumulating' : ''}`, async () => {
        const gpu = await getGpu();
        const rng = freshRng();
        const x = activations(rng, rows, C);
        const w = rng.normals(C).map((v) => 1 + 0.3 * v);
        const b = rng.normals(C, 0.3);
        const dy = rng.normals(rows * C, 0.1);
        const tx = upload(gpu, x, [rows, C], 'x');
        const tw = upload(gpu, w, [C], 'weight');
        const tb = upload(gpu, b, [C], 'bias');
        const tdy = upload(gpu, dy, [rows, C], 'dy');
        const ty = gpu.tensor([rows, C], 'f32', 'y');
        const ts = gpu.tensor([(rows * C) / G, 2], 'f32', 'stats');
        poison(gpu, ty, ts);
        groupNorm(gpu, tx, tw, tb, ty, { groupSize: G, eps, stats: ts });

        const ref = backwardRef(dy, x, w, G, eps);
        // Accumulation starts from existing gradients; otherwise outputs start as NaN.
        const dx0 = accumulate ? rng.normals(rows * C, 0.1) : new Float64Array(rows * C);
        const dw0 = accumulate ? rng.normals(C) : new Float64Array(C);
        const db0 = accumulate ? rng.normals(C) : new Float64Array(C);
        const tdx = upload(gpu, dx0, [rows, C], 'dx');
        const tdw = upload(gpu, dw0, [C], 'dWeight');
        const tdb = upload(gpu, db0, [C], 'dBias');
        if (!accumulate) poison(gpu, tdx, tdw, tdb);
        groupNormBackward(gpu, tdy, tx, tw, ts, tdx, {
          groupSize: G,
          accumulateDx: accumulate,
          dWeight: tdw,
          dBias: tdb,
          accumulateParams: accumulate,
        });
        expectClose('dx', await gpu.readF32(tdx), ref.dx.map((v, i) => v + dx0[i]), BWD_BOUND, rng);
        expectClose('dγ', await gpu.readF32(tdw), ref.dw.map((v, i) => v + dw0[i]), BWD_BOUND, rng);
        expectClose('dβ', await gpu.readF32(tdb), ref.db.map((v, i) => v + db0[i]), BWD_BOUND, rng);
        for (const t of [tx, tw, tb, tdy, ty, ts, tdx, tdw, tdb]) gpu.free(t);
      });
    }
  }

  it('dx alone leaves absent parameter gradients alone and is deterministic', async () => {
    const gpu = await getGpu();
    const rng = freshRng();
    const [rows, C, G, eps] = [129, 128, 64, 64e-5];
    const x = activations(rng, rows, C);
    const w = rng.normals(C).map((v) => 1 + 0.3 * v);
    const dy = rng.normals(rows * C);
    const tx = upload(gpu, x, [rows, C], 'x');
    const tw = upload(gpu, w, [C], 'weight');
    const tb = upload(gpu, new Float64Array(C), [C], 'bias');
    const tdy = upload(gpu, dy, [rows, C], 'dy');
    const ty = gpu.tensor([rows, C], 'f32', 'y');
    const ts = gpu.tensor([(rows * C) / G, 2], 'f32', 'stats');
    const tdx = gpu.tensor([rows, C], 'f32', 'dx');
    groupNorm(gpu, tx, tw, tb, ty, { groupSize: G, eps, stats: ts });
    poison(gpu, tdx);
    groupNormBackward(gpu, tdy, tx, tw, ts, tdx, { groupSize: G });
    const first = await gpu.readF32(tdx);
    expectClose('dx', first, backwardRef(dy, x, w, G, eps).dx, BWD_BOUND, rng);
    poison(gpu, tdx);
    groupNormBackward(gpu, tdy, tx, tw, ts, tdx, { groupSize: G });
    expect(relErr(await gpu.readF32(tdx), first)).toBe(0);
    for (const t of [tx, tw, tb, tdy, ty, ts, tdx]) gpu.free(t);
  });
});

describe('group norm argument checks', () => {
  it('names the offending tensor', async () => {
    const gpu = await getGpu();
    const x = gpu.tensor([4, 96], 'f32', 'x');
    const w = gpu.tensor([96], 'f32', 'ln.weight');
    const b = gpu.tensor([96], 'f32', 'ln.bias');
    const y = gpu.tensor([4, 96], 'f32', 'y');
    const s = gpu.tensor([8, 2], 'f32', 'stats');
    expect(() => groupNorm(gpu, x, w, b, y, { groupSize: 64, eps: 1e-5 })).toThrow(/group size 64 does not divide C = 96 of x/);
    expect(() => groupNorm(gpu, x, gpu.tensor([64], 'f32', 'short'), b, y, { groupSize: 64, eps: 1e-5 })).toThrow(/x\[4,96\]:f32 should be \[rows, C\] with C = 64/);
    expect(() => groupNorm(gpu, x, w, gpu.tensor([95], 'f32', 'ln.bias'), y, { groupSize: 96, eps: 1e-5 })).toThrow(/ln.bias\[95\]:f32 has 95 elements, expected 96/);
    expect(() => groupNorm(gpu, x, w, b, gpu.tensor([4, 95], 'f32', 'yy'), { groupSize: 96, eps: 1e-5 })).toThrow(/yy\[4,95\]:f32 should have the shape of x\[4,96\]:f32/);
    expect(() => groupNorm(gpu, x, w, b, y, { groupSize: 96, eps: 1e-5, stats: s })).toThrow(/stats\[8,2\]:f32 has 16 elements, expected 8 \(\(mean, rstd\) for each of rows·C\/G = 4 groups\)/);
    expect(() => groupNorm(gpu, gpu.tensor([4, 96], 'bf16', 'xb'), w, b, y, { groupSize: 96, eps: 1e-5 })).toThrow(/xb is bf16, expected f32/);
    expect(() => groupNormBackward(gpu, gpu.tensor([4, 48], 'f32', 'dy'), x, w, s, y, { groupSize: 48 })).toThrow(/dy\[4,48\]:f32 should have the shape of x/);
    expect(() => groupNormBackward(gpu, y, x, w, s, y, { groupSize: 48, dWeight: gpu.tensor([1], 'f32', 'dW') })).toThrow(/dW\[1\]:f32 has 1 elements, expected 96/);
  });
});
