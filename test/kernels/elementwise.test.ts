import { describe, expect, it } from 'vitest';
import { f32ToF16Bits, packBf16, unpackBf16 } from '../../src/gpu/tensor.js';
import { activation, activationBackward, add, axpby, fill, mul, narrowF16, widenBf16, type Activation } from '../../src/kernels/elementwise.js';
import { expectClose, f32, finiteDiff, freshRng, getGpu, poison } from '../helpers.js';

describe('axpby', () => {
  for (const n of [1, 17, 255, 1000, 70_001]) {
    it(`n=${n}`, async () => {
      const gpu = await getGpu();
      const rng = freshRng();
      const x = rng.normals(n);
      const y = rng.normals(n);
      const tx = gpu.upload(f32(x), [n], 'f32', 'x');
      const ty = gpu.upload(f32(y), [n], 'f32', 'y');
      axpby(gpu, tx, ty, 0.5, -2);
      const out = await gpu.readF32(ty);
      const ref = x.map((v, i) => 0.5 * v - 2 * y[i]);
      // Relative to the terms' size: at n = 1 the two terms can cancel (0.4% of seeds).
      expectClose('axpby', out, ref, 1e-6, rng, x.map((v, i) => Math.abs(0.5 * v) + Math.abs(2 * y[i])));
      gpu.free(tx);
      gpu.free(ty);
    });
  }
  it('rejects mismatched sizes', async () => {
    const gpu = await getGpu();
    const a = gpu.tensor([3], 'f32', 'a');
    const b = gpu.tensor([4], 'f32', 'b');
    poison(gpu, b);
    expect(() => axpby(gpu, a, b, 1, 1)).toThrow(/b has 4 elements, expected 3/);
  });
});

// ---- the generated family: add, mul, fill, activations and their backward ----

const ACT_REF = {
  sigmoid: { f: (x: number) => 1 / (1 + Math.exp(-x)), df: (x: number) => Math.exp(-x) / (1 + Math.exp(-x)) ** 2 },
  tanh: { f: Math.tanh, df: (x: number) => 1 - Math.tanh(x) ** 2 },
  reluSq: { f: (x: number) => Math.max(x, 0) ** 2, df: (x: number) => 2 * Math.max(x, 0) },
} as const satisfies Record<Activation, unknown>;
const ACTS = Object.keys(ACT_REF) as Activation[];

// f32 arithmetic and exp/tanh within a few ulp: measured errors ~1e-7.
const BOUND = 1e-5;
// Multiples of 4 (1000, 4096) take the vec4 kernels, the others the scalar ones.
const SIZES = [1, 17, 1000, 4096, 70_001];

/**
 * Pre-activations as RWKV sees them: N(0, 3) with an offset, plus saturating values for
 * sigmoid and tanh (relu² of ±60 would dominate the norm and hide errors elsewhere).
 */
function preActivations(rng: ReturnType<typeof freshRng>, n: number, op: Activation): Float64Array {
  const x = rng.normals(n, 3).map((v) => v + 0.5);
  if (op !== 'reluSq') for (let i = 0; i < n; i += 97) x[i] = [-60, 60, -15.5, 16, 0][(i / 97) % 5];
  return Float64Array.from(f32(x));
}

describe('activation references', () => {
  for (const op of ACTS) {
    it(`${op}: derivative matches central differences`, () => {
      const rng = freshRng();
      // Away from 0 for reluSq, whose second derivative jumps there.
      const x = rng.normals(200, 2).map((v) => (Math.abs(v) < 1e-3 ? 0.5 : v));
      const fd = finiteDiff((v) => v.reduce((s, t) => s + ACT_REF[op].f(t), 0), x, [...x.keys()]);
      expectClose(`${op}'`, x.map(ACT_REF[op].df), fd, 1e-7, rng);
    });
  }
});

describe('add and mul', () => {
  for (const n of SIZES) {
    it(`n=${n}`, async () => {
      const gpu = await getGpu();
      const rng = freshRng();
      const a = Float64Array.from(f32(rng.normals(n, 2)));
      const b = Float64Array.from(f32(rng.normals(n).map((v) => v - 1)));
      const ta = gpu.upload(f32(a), [n], 'f32', 'a');
      const tb = gpu.upload(f32(b), [n], 'f32', 'b');
      const out = gpu.tensor([n], 'f32', 'out');
      poison(gpu, out);
      add(gpu, ta, tb, out);
      expectClose('add', await gpu.readF32(out), a.map((v, i) => v + b[i]), BOUND, rng);
      poison(gpu, out);
      mul(gpu, ta, tb, out);
      expectClose('mul', await gpu.readF32(out), a.map((v, i) => v * b[i]), BOUND, rng);
      for (const t of [ta, tb, out]) gpu.free(t);
    });
  }
});

describe('activations', () => {
  for (const op of ACTS) {
    for (const n of SIZES) {
      it(`${op} n=${n}`, async () => {
        const gpu = await getGpu();
        const rng = freshRng();
        const x = preActivations(rng, n, op);
        const dy = rng.normals(n);
        const dx0 = rng.normals(n);
        const tx = gpu.upload(f32(x), [n], 'f32', 'x');
        const tdy = gpu.upload(f32(dy), [n], 'f32', 'dy');
        const ty = gpu.tensor([n], 'f32', 'y');
        const tdx = gpu.tensor([n], 'f32', 'dx');
        poison(gpu, ty, tdx);
        activation(gpu, op, tx, ty);
        activationBackward(gpu, op, tx, tdy, tdx);
        expectClose(`${op}`, await gpu.readF32(ty), x.map(ACT_REF[op].f), BOUND, rng);
        const grad = x.map((v, i) => dy[i] * ACT_REF[op].df(v));
        expectClose(`${op} backward`, await gpu.readF32(tdx), grad, BOUND, rng);
        gpu.write(tdx, f32(dx0));
        activationBackward(gpu, op, tx, tdy, tdx, { accumulate: true });
        // Relative to the terms' size: at n = 1 the gradient and dx0 can cancel.
        const terms = grad.map((v, i) => Math.abs(v) + Math.abs(dx0[i]));
        expectClose(`${op} backward, accumulating`, await gpu.readF32(tdx), grad.map((v, i) => v + dx0[i]), BOUND, rng, terms);
        for (const t of [tx, tdy, ty, tdx]) gpu.free(t);
      });
    }
  }
});

describe('widenBf16', () => {
  for (const n of [1, 2, 513, 70_002]) {
    it(`n=${n}: exact`, async () => {
      const gpu = await getGpu();
      const rng = freshRng();
      const bits = packBf16(rng.normals(n, 1e3));
      const x = gpu.upload(bits, [n], 'bf16', 'rows');
      const y = gpu.tensor([n], 'f32', 'y');
      poison(gpu, y);
      widenBf16(gpu, x, y);
      expect(Array.from(await gpu.readF32(y))).toEqual(Array.from(unpackBf16(bits, n)));
      gpu.free(x);
      gpu.free(y);
    });
  }
  it('names mismatched tensors', async () => {
    const gpu = await getGpu();
    const x = gpu.tensor([4], 'bf16', 'rows');
    expect(() => widenBf16(gpu, x, gpu.tensor([5], 'f32', 'y'))).toThrow(/widenBf16: rows\[4\]:bf16 should be bf16 with the 5 elements of y\[5\]:f32/);
  });
});

describe('fill', () => {
  it('writes every element, across a 2-D workgroup grid', async () => {
    const gpu = await getGpu();
    // 256·65535 + 17 elements: more workgroups than one grid dimension holds.
    const n = 256 * 65535 + 17;
    const t = gpu.tensor([n], 'f32', 'big');
    poison(gpu, t);
    fill(gpu, t, -0.25);
    const out = await gpu.readF32(t);
    expect(out.every((v) => v === -0.25)).toBe(true);
    gpu.free(t);
  });

  it('names mismatched tensors', async () => {
    const gpu = await getGpu();
    const a = gpu.tensor([3], 'f32', 'a');
    expect(() => add(gpu, a, gpu.tensor([3], 'f32', 'b'), gpu.tensor([4], 'f32', 'sum'))).toThrow(/add: a has 3 elements, expected 4/);
    expect(() => activation(gpu, 'tanh', gpu.tensor([3], 'bf16', 'h'), a)).toThrow(/tanh: h is bf16, expected f32/);
    expect(() => activationBackward(gpu, 'sigmoid', a, gpu.tensor([2], 'f32', 'dy'), a)).toThrow(/sigmoidBackward: dy has 2 elements, expected 3/);
    expect(() => fill(gpu, gpu.tensor([3], 'u32', 'ids'), 0)).toThrow(/fill: ids is u32, expected f32/);
  });
});

describe('narrowF16', () => {
  for (const n of [2, 514, 70_002]) {
    it(`n=${n}: round to nearest even, as the host does, from f16 subnormals to 6e4`, async () => {
      const gpu = await getGpu();
      const rng = freshRng();
      const v = f32(Array.from({ length: n }, () => rng.normal() * 10 ** rng.uniform(-9, 4)));
      const x = gpu.upload(v, [n], 'f32', 'x');
      const y = gpu.tensor([n], 'f16', 'y');
      poison(gpu, y);
      narrowF16(gpu, x, y);
      const got = new Uint16Array(await gpu.read(y), 0, n);
      const want = Uint16Array.from(v, f32ToF16Bits);
      expect(got.findIndex((b, i) => b !== want[i]), `first element unlike the host's rounding [seed ${rng.seed}]`).toBe(-1);
      gpu.free(x);
      gpu.free(y);
    });
  }

  it('refuses an odd count and a wrong output', async () => {
    const gpu = await getGpu();
    const x = gpu.tensor([3], 'f32', 'x');
    const y = gpu.tensor([3], 'f16', 'y');
    const z = gpu.tensor([4], 'f16', 'z');
    expect(() => narrowF16(gpu, x, y)).toThrow(/x\[3\]:f32 has an odd number of elements/);
    expect(() => narrowF16(gpu, x, z)).toThrow(/z\[4\]:f16 should be f16 with the 3 elements of x\[3\]:f32/);
    for (const t of [x, y, z]) gpu.free(t);
  });
});
