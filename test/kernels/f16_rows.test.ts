import { describe, expect, it, vi } from 'vitest';
import type { GpuRuntime } from '../../src/gpu/device.js';
import { f16BitsToF32, type Tensor } from '../../src/gpu/tensor.js';
import { f16Rows, type F16Layout } from '../../src/kernels/f16_rows.js';
import { appendInputs, expectClose, f32, freshRng, getGpu, poison, relErr } from '../helpers.js';

/** The exponent the kernel must pick: max·2^e in [2^14, 2^15), 0 for a zero row. */
function refExponent(max: number): number {
  if (max === 0) return 0;
  return Math.max(-60, Math.min(60, 14 - Math.floor(Math.log2(max))));
}

// [R, K, Rp, Kp]: single elements, partial tiles, padding on both sides. For 'rows': K or
// Kp not a multiple of 4 (scalar loads or stores), several quads per invocation, and K past
// the 16384 held in registers (the row read twice).
const SHAPES: [number, number, number, number][] = [
  [1, 1, 16, 32],
  [17, 129, 32, 160],
  [129, 17, 144, 32],
  [5, 1000, 5, 1000],
  [6, 8, 8, 10],
  [200, 64, 256, 64],
  [3, 2047, 4, 2048],
  [4, 3000, 8, 3008],
  [3, 16390, 4, 16392],
  [2, 16500, 4, 16512],
];

// Round to nearest f16 of a value scaled into [2^14, 2^15): relative error <= 2^-11 per
// element, so per row too (values far below the row's max lose bits to f16 subnormals,
// but they are too small against the row's norm to matter).
const BOUND = 2 ** -11;

/** f16Rows, or without `subgroups` as on an adapter lacking the feature (the workgroup-memory max). */
function convert(gpu: GpuRuntime, subgroups: boolean, ...args: [Tensor, F16Layout, Tensor, Tensor]): void {
  if (subgroups) return f16Rows(gpu, ...args);
  const spy = vi.spyOn(gpu, 'hasSubgroups', 'get').mockReturnValue(false);
  try {
    f16Rows(gpu, ...args);
  } finally {
    spy.mockRestore();
  }
}

async function checkCopy(layout: F16Layout, [r, k, rp, kp]: [number, number, number, number], subgroups: boolean): Promise<void> {
  const gpu = await getGpu();
  const rng = freshRng();
  // op(X) row i has magnitude 10^s_i: gradients of 1e-9 and activations of 1e5 alike.
  const rowsVal = new Float64Array(r * k);
  for (let i = 0; i < r; i++) {
    const s = i === r - 1 && r > 1 ? 0 : 10 ** rng.uniform(-12, 6);
    for (let j = 0; j < k; j++) rowsVal[i * k + j] = rng.normal() * s;
  }
  const stored = new Float32Array(r * k);
  for (let i = 0; i < r; i++) {
    for (let j = 0; j < k; j++) stored[layout === 'rows' ? i * k + j : j * r + i] = rowsVal[i * k + j];
  }
  const opX = f32(rowsVal);
  const x = gpu.upload(stored, layout === 'rows' ? [r, k] : [k, r], 'f32', 'x');
  const out = gpu.tensor([rp, kp], 'f16', 'x16');
  const e = gpu.tensor([rp], 'i32', 'exps');
  poison(gpu, out, e);
  convert(gpu, subgroups, x, layout, out, e);
  const bits = new Uint16Array(await gpu.read(out), 0, rp * kp);
  const exps = new Int32Array(await gpu.read(e), 0, rp);
  for (let i = 0; i < rp; i++) {
    let max = 0;
    for (let j = 0; i < r && j < k; j++) max = Math.max(max, Math.abs(opX[i * k + j]));
    expect(exps[i], `exponent of row ${i} [seed ${rng.seed}]`).toBe(i < r ? refExponent(max) : 0);
    const got = Float64Array.from({ length: kp }, (_, j) => f16BitsToF32(bits[i * kp + j]) * 2 ** -exps[i]);
    const want = Float64Array.from({ length: kp }, (_, j) => (i < r && j < k ? opX[i * k + j] : 0));
    if (i >= r || max === 0) expect(relErr(got, want), `padding/zero row ${i} [seed ${rng.seed}]`).toBe(0);
    else expectClose(`row ${i} of ${r}x${k}`, got, want, BOUND, rng);
    for (let j = k; j < kp; j++) expect(bits[i * kp + j], `padding column ${j} of row ${i}`).toBe(0);
  }
  for (const t of [x, out, e]) gpu.free(t);
}

describe('f16Rows', () => {
  for (const layout of ['rows', 'cols'] as F16Layout[]) {
    for (const shape of SHAPES) {
      const [r, k, rp, kp] = shape;
      it(`${layout} R=${r} K=${k} into [${rp},${kp}], rows scaled 1e-12..1e6 and one zero row`, () => checkCopy(layout, shape, true));
    }
  }
  for (const shape of SHAPES) {
    const [r, k, rp, kp] = shape;
    it(`rows without subgroups R=${r} K=${k} into [${rp},${kp}]`, () => checkCopy('rows', shape, false));
  }

  it('rows: the same bits and exponents from every kernel variant', async () => {
    const gpu = await getGpu();
    const rng = freshRng();
    const [r, k] = [3, 16384];
    const x = gpu.upload(
      Float32Array.from({ length: r * k }, (_, i) => (i >= (r - 1) * k ? 0 : rng.normal() * 10 ** rng.uniform(-8, 4))),
      [r, k],
      'f32',
      'x',
    );
    // Kp 16384: vec4, held in registers; 16386: scalar stores, read twice; 16388: vec4, read twice.
    const runs: { bits: Uint16Array; exps: Int32Array; what: string }[] = [];
    for (const subgroups of gpu.hasSubgroups ? [true, false] : [false]) {
      for (const kp of [16384, 16386, 16388]) {
        const out = gpu.tensor([r + 1, kp], 'f16', 'x16');
        const e = gpu.tensor([r + 1], 'i32', 'exps');
        poison(gpu, out, e);
        convert(gpu, subgroups, x, 'rows', out, e);
        const all = new Uint16Array(await gpu.read(out), 0, (r + 1) * kp);
        const bits = Uint16Array.from({ length: (r + 1) * k }, (_, i) => all[Math.floor(i / k) * kp + (i % k)]);
        runs.push({ bits, exps: new Int32Array(await gpu.read(e), 0, r + 1), what: `Kp ${kp}${subgroups ? '' : ' without subgroups'}` });
        for (const t of [out, e]) gpu.free(t);
      }
    }
    for (const run of runs.slice(1)) {
      expect(run.exps, `exponents, ${run.what} [seed ${rng.seed}]`).toEqual(runs[0].exps);
      expect(run.bits.findIndex((b, i) => b !== runs[0].bits[i]), `first differing element, ${run.what} [seed ${rng.seed}]`).toBe(-1);
    }
    gpu.free(x);
  });

  // [R, K1, K2, Rp, Kp]: LoRA's h after an activation (K2 = r), K2 past a staging step, and
  // a row read twice.
  for (const [r, k1, k2, rp, kp] of [
    [5, 64, 64, 8, 128],
    [129, 768, 8, 256, 800],
    [3, 2048, 64, 4, 2112],
    [2, 16384, 64, 4, 16480],
  ] as const) {
    it(`rows with a second matrix appended: R=${r} K=${k1}+${k2} into [${rp},${kp}], one exponent per row`, async () => {
      const gpu = await getGpu();
      const rng = freshRng();
      const scale = 0.5;
      // Rows of magnitudes 1e-6..1e3, the appended part at the row's ×10^±2: either side may set the row's max.
      const { a: xv, a2: hv } = appendInputs(rng, [r, k1, k2, 1], 'f16');
      const x = gpu.upload(xv, [r, k1], 'f32', 'x');
      const h = gpu.upload(hv, [r, k2], 'f32', 'h');
      const out = gpu.tensor([rp, kp], 'f16', 'x16');
      const e = gpu.tensor([rp], 'i32', 'exps');
      poison(gpu, out, e);
      f16Rows(gpu, x, 'rows', out, e, { x: h, scale });
      const bits = new Uint16Array(await gpu.read(out), 0, rp * kp);
      const exps = new Int32Array(await gpu.read(e), 0, rp);
      for (let i = 0; i < rp; i++) {
        const want = Float64Array.from({ length: kp }, (_, j) => (i >= r ? 0 : j < k1 ? xv[i * k1 + j] : j < k1 + k2 ? scale * hv[i * k2 + j - k1] : 0));
        const max = want.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
        expect(exps[i], `exponent of row ${i} [seed ${rng.seed}]`).toBe(refExponent(max));
        const got = Float64Array.from({ length: kp }, (_, j) => f16BitsToF32(bits[i * kp + j]) * 2 ** -exps[i]);
        if (i >= r) expect(relErr(got, want), `padding row ${i}`).toBe(0);
        else expectClose(`row ${i} of [${r},${k1}+${k2}]`, got, want, BOUND, rng);
        for (let j = k1 + k2; j < kp; j++) expect(bits[i * kp + j], `padding column ${j} of row ${i}`).toBe(0);
      }
      for (const t of [x, h, out, e]) gpu.free(t);
    });
  }

  it('appending: rows layout only, widths multiples of 4, the same number of rows', async () => {
    const gpu = await getGpu();
    const x = gpu.tensor([8, 64], 'f32', 'acts');
    const h = gpu.tensor([8, 6], 'f32', 'h');
    const h7 = gpu.tensor([7, 8], 'f32', 'h7');
    const out = gpu.tensor([8, 96], 'f16', 'copy');
    const e = gpu.tensor([8], 'i32', 'e');
    expect(() => f16Rows(gpu, x, 'cols', out, e, { x: h, scale: 1 })).toThrow(/appended to 'rows' copies only/);
    expect(() => f16Rows(gpu, x, 'rows', out, e, { x: h, scale: 1 })).toThrow(/multiples of 4, got acts\[8,64\]:f32 and h\[8,6\]:f32/);
    expect(() => f16Rows(gpu, x, 'rows', out, e, { x: h7, scale: 1 })).toThrow(/appended h7\[7,8\]:f32 should be f32 \[8, K2\]/);
    for (const t of [x, h, h7, out, e]) gpu.free(t);
  });

  it('names the tensor whose shape does not fit', async () => {
    const gpu = await getGpu();
    const x = gpu.tensor([5, 7], 'f32', 'acts');
    const small = gpu.tensor([4, 8], 'f16', 'copy');
    const e = gpu.tensor([4], 'i32', 'e');
    expect(() => f16Rows(gpu, x, 'rows', small, e)).toThrow(/f16Rows: copy\[4,8\]:f16 should be \[Rp >= 5, even Kp >= 7\] for op\(acts\[5,7\]:f32\) read as rows/);
    const out = gpu.tensor([8, 8], 'f16', 'copy');
    expect(() => f16Rows(gpu, x, 'rows', out, e)).toThrow(/e\[4\]:i32 should be i32 \[8\]/);
    for (const t of [x, small, e, out]) gpu.free(t);
  });
});
