import { describe, expect, it } from 'vitest';
import type { GpuRuntime } from '../../src/gpu/device.js';
import type { Tensor } from '../../src/gpu/tensor.js';
import {
  addBias,
  bonusGate,
  bonusGateBackward,
  keyPrep,
  keyPrepBackward,
  sigmoidBias,
  sigmoidBiasBackward,
  tokenShiftLerp,
  tokenShiftLerpBackward,
  valueResidual,
  valueResidualBackward,
} from '../../src/kernels/rwkv7_ops.js';
import { expectClose, f32, finiteDiff, freshRng, getGpu, poison, type Rng } from '../helpers.js';
import {
  addBiasRef,
  bonusGateBackwardRef,
  bonusGateRef,
  keyPrepBackwardRef,
  keyPrepRef,
  sigmoidBiasBackwardRef,
  sigmoidBiasRef,
  tokenShiftLerpBackwardRef,
  tokenShiftLerpRef,
  valueResidualBackwardRef,
  valueResidualRef,
} from '../reference/rwkv7_ops.js';

// f32 storage and arithmetic, exp within a few ulp, per-head sums of ≤128 terms in a
// tree: measured errors are ~1e-7; the bound leaves room for unlucky cancellation.
const BOUND = 1e-5;
// Float64 central differences with h = 1e-6 on smooth functions of O(1) inputs: ~1e-9.
const FD_BOUND = 1e-6;

const dot = (a: Float64Array, b: Float64Array): number => a.reduce((s, v, i) => s + v * b[i], 0);
const plus = (a: Float64Array, b: Float64Array): Float64Array => a.map((v, i) => v + b[i]);

/** Checks a reference gradient against central differences of L(x) over every element of x. */
function checkFd(what: string, loss: (x: Float64Array) => number, x: Float64Array, grad: Float64Array, rng: Rng): void {
  expectClose(what, grad, finiteDiff(loss, x, [...x.keys()]), FD_BOUND, rng);
}

// ---- references against central differences (small sizes; two sequences, two heads) ----

describe('reference backwards match central differences', () => {
  const [B, T, C, N] = [2, 3, 8, 4];
  const M = B * T * C;

  it('token shift with lerps', () => {
    const rng = freshRng();
    const x = rng.normals(M);
    const mixes = [rng.array(C, 0, 1), rng.array(C, 0, 1), rng.array(C, -0.2, 1.2)];
    const douts = mixes.map(() => rng.normals(M));
    const loss = (xv: Float64Array): number => tokenShiftLerpRef(xv, mixes, B, T, C).reduce((s, o, m) => s + dot(o, douts[m]), 0);
    checkFd('dx', loss, x, tokenShiftLerpBackwardRef(douts, mixes, B, T, C), rng);
  });

  it('sigmoid with bias', () => {
    const rng = freshRng();
    const z = rng.normals(M, 2);
    const bias = rng.normals(C);
    const dout = rng.normals(M);
    const loss = (zv: Float64Array): number => dot(sigmoidBiasRef(zv, bias), dout);
    checkFd('dz', loss, z, sigmoidBiasBackwardRef(dout, sigmoidBiasRef(z, bias)), rng);
  });

  it('value residual', () => {
    const rng = freshRng();
    const [v, vf, zv, dout] = [rng.normals(M), rng.normals(M), rng.normals(M, 2), rng.normals(M)];
    const v0 = rng.normals(C);
    const g = valueResidualBackwardRef(dout, v, vf, zv, v0);
    checkFd('dv', (x) => dot(valueResidualRef(x, vf, zv, v0), dout), v, g.dv, rng);
    checkFd('dv_first', (x) => dot(valueResidualRef(v, x, zv, v0), dout), vf, g.dvfirst, rng);
    checkFd('dz_v', (x) => dot(valueResidualRef(v, vf, x, v0), dout), zv, g.dz, rng);
  });

  it('kk, k̃ and the WKV a, b inputs', () => {
    const rng = freshRng();
    const [k, a] = [rng.normals(M), rng.array(M, 0, 1)];
    const [kK, kA] = [rng.array(C, 0.3, 1.5), rng.array(C, 0.3, 1.5)];
    const [dkt, daw, dbw] = [rng.normals(M), rng.normals(M), rng.normals(M)];
    const loss = (kv: Float64Array, av: Float64Array): number => {
      const o = keyPrepRef(kv, av, kK, kA, N);
      return dot(o.kt, dkt) + dot(o.aw, daw) + dot(o.bw, dbw);
    };
    const g = keyPrepBackwardRef(dkt, daw, dbw, k, a, kK, kA, N);
    checkFd('dk', (x) => loss(x, a), k, g.dk, rng);
    checkFd('da', (x) => loss(k, x), a, g.da, rng);
  });

  it('bonus and output gate', () => {
    const rng = freshRng();
    const [gn, r, kt, v, g, dout] = [rng.normals(M), rng.normals(M), rng.normals(M), rng.normals(M), rng.normals(M), rng.normals(M)];
    const rK = rng.normals(C, 0.5);
    const grads = bonusGateBackwardRef(dout, gn, r, kt, v, rK, g, N);
    const L = (o: Partial<Record<'gn' | 'r' | 'kt' | 'v' | 'g', Float64Array>>): number =>
      dot(bonusGateRef(o.gn ?? gn, o.r ?? r, o.kt ?? kt, o.v ?? v, rK, o.g ?? g, N), dout);
    checkFd('dgn', (x) => L({ gn: x }), gn, grads.dgn, rng);
    checkFd('dr', (x) => L({ r: x }), r, grads.dr, rng);
    checkFd('dk̃', (x) => L({ kt: x }), kt, grads.dkt, rng);
    checkFd('dv', (x) => L({ v: x }), v, grads.dv, rng);
    checkFd('dg', (x) => L({ g: x }), g, grads.dg, rng);
  });

  it('kk of an all-zero head is zero, not NaN (the 1e-12 clamp)', () => {
    const k = new Float64Array(C);
    k.fill(1, N);
    const { kk } = keyPrepRef(k, new Float64Array(C), new Float64Array(C).fill(1), new Float64Array(C), N);
    expect([...kk]).toEqual([0, 0, 0, 0, 0.5, 0.5, 0.5, 0.5]);
  });
});

// ---- GPU against the references ----

/** Uploads values as f32; returns the tensor and the values as the GPU sees them. */
function input(gpu: GpuRuntime, owned: Tensor[], values: Float64Array, label: string): [Tensor, Float64Array] {
  const t = gpu.upload(f32(values), [values.length], 'f32', label);
  owned.push(t);
  return [t, Float64Array.from(f32(values))];
}

/** A NaN-poisoned f32 [rows, C] output. */
function output(gpu: GpuRuntime, owned: Tensor[], rows: number, C: number, label: string): Tensor {
  const t = gpu.tensor([rows, C], 'f32', label);
  poison(gpu, t);
  owned.push(t);
  return t;
}

interface Case {
  B: number;
  T: number;
  C: number;
  N: number;
}

// T = 17 puts sequence starts mid-workgroup; heads of 16 pack several per row, 128 makes
// each thread cover two channels.
const CASES: Case[] = [];
for (const [C, N] of [[64, 64], [128, 64], [64, 16], [128, 128]]) {
  for (const B of [1, 3]) for (const T of [1, 17]) CASES.push({ B, T, C, N });
}
const name = (c: Case): string => `B=${c.B} T=${c.T} C=${c.C} N=${c.N}`;

/** Runs `body` with a fresh rng and frees its tensors afterwards. */
async function withGpu(body: (gpu: GpuRuntime, rng: Rng, owned: Tensor[]) => Promise<void>): Promise<void> {
  const gpu = await getGpu();
  const owned: Tensor[] = [];
  try {
    await body(gpu, freshRng(), owned);
  } finally {
    for (const t of owned) gpu.free(t);
  }
}

describe('token shift with lerps on the GPU', () => {
  for (const c of CASES) {
    for (const k of [6, 1]) {
      it(`${name(c)}, ${k} lerp${k > 1 ? 's' : ''}`, () =>
        withGpu(async (gpu, rng, owned) => {
          const rows = c.B * c.T;
          const M = rows * c.C;
          const [x, xv] = input(gpu, owned, rng.normals(M), 'x');
          const mixes = Array.from({ length: k }, (_, m) => input(gpu, owned, rng.array(c.C, 0, 1), `mix${m}`));
          const outs = mixes.map((_, m) => output(gpu, owned, rows, c.C, `out${m}`));
          tokenShiftLerp(gpu, x, mixes.map(([t]) => t), outs, c);
          const ref = tokenShiftLerpRef(xv, mixes.map(([, v]) => v), c.B, c.T, c.C);
          for (let m = 0; m < k; m++) expectClose(`out${m}`, await gpu.readF32(outs[m]), ref[m], BOUND, rng);

          const douts = mixes.map((_, m) => input(gpu, owned, rng.normals(M), `dout${m}`));
          const dx = output(gpu, owned, rows, c.C, 'dx');
          tokenShiftLerpBackward(gpu, douts.map(([t]) => t), mixes.map(([t]) => t), dx, c);
          const dref = tokenShiftLerpBackwardRef(douts.map(([, v]) => v), mixes.map(([, v]) => v), c.B, c.T, c.C);
          expectClose('dx', await gpu.readF32(dx), dref, BOUND, rng);
          const init = rng.normals(M);
          gpu.write(dx, f32(init));
          tokenShiftLerpBackward(gpu, douts.map(([t]) => t), mixes.map(([t]) => t), dx, c, { accumulate: true });
          expectClose('dx, accumulating', await gpu.readF32(dx), plus(dref, Float64Array.from(f32(init))), BOUND, rng);
        }));
    }
  }
});

// The per-channel gates do not depend on B, T or heads: a few shapes with partial workgroups.
const GATE_SHAPES: [rows: number, C: number][] = [[1, 64], [17, 64], [51, 128]];

describe('bias, sigmoid gate and value residual on the GPU', () => {
  for (const [rows, C] of GATE_SHAPES) {
    it(`w_raw = w0 + z and a = σ(a0 + z), rows=${rows} C=${C}`, () =>
      withGpu(async (gpu, rng, owned) => {
        const M = rows * C;
        const [z, zv] = input(gpu, owned, rng.normals(M, 1.5), 'z');
        const [bias, bv] = input(gpu, owned, rng.normals(C), 'bias');
        const [x, xv] = input(gpu, owned, rng.normals(M), 'x');
        addBias(gpu, x, bias);
        expectClose('x + bias', await gpu.readF32(x), addBiasRef(xv, bv), BOUND, rng);

        const out = output(gpu, owned, rows, C, 'a');
        sigmoidBias(gpu, z, bias, out);
        const ref = sigmoidBiasRef(zv, bv);
        expectClose('σ(z + bias)', await gpu.readF32(out), ref, BOUND, rng);

        // The backward reads the forward output as the GPU stored it.
        const sv = Float64Array.from(await gpu.readF32(out));
        const [dout, dv] = input(gpu, owned, rng.normals(M), 'da');
        const dz = output(gpu, owned, rows, C, 'dz');
        sigmoidBiasBackward(gpu, dout, out, dz);
        const dref = sigmoidBiasBackwardRef(dv, sv);
        expectClose('dz', await gpu.readF32(dz), dref, BOUND, rng);
        const init = rng.normals(M);
        gpu.write(dz, f32(init));
        sigmoidBiasBackward(gpu, dout, out, dz, { accumulate: true });
        expectClose('dz, accumulating', await gpu.readF32(dz), plus(dref, Float64Array.from(f32(init))), BOUND, rng);
      }));

    it(`value residual, rows=${rows} C=${C}`, () =>
      withGpu(async (gpu, rng, owned) => {
        const M = rows * C;
        const [v, vv] = input(gpu, owned, rng.normals(M), 'v');
        const [vf, vfv] = input(gpu, owned, rng.normals(M), 'v_first');
        const [zv, zvv] = input(gpu, owned, rng.normals(M, 1.5), 'z_v');
        const [v0, v0v] = input(gpu, owned, rng.normals(C), 'v0');
        const out = output(gpu, owned, rows, C, 'vmix');
        valueResidual(gpu, v, vf, zv, v0, out);
        expectClose('v mixed', await gpu.readF32(out), valueResidualRef(vv, vfv, zvv, v0v), BOUND, rng);

        const [dout, doutv] = input(gpu, owned, rng.normals(M), 'dvmix');
        const ref = valueResidualBackwardRef(doutv, vv, vfv, zvv, v0v);
        const grads = { dv: output(gpu, owned, rows, C, 'dv'), dvfirst: output(gpu, owned, rows, C, 'dv_first'), dz: output(gpu, owned, rows, C, 'dz_v') };
        // dv_first sums over layers: it accumulates by default.
        const vfInit = Float64Array.from(f32(rng.normals(M)));
        gpu.write(grads.dvfirst, f32(vfInit));
        valueResidualBackward(gpu, dout, v, vf, zv, v0, grads);
        expectClose('dv', await gpu.readF32(grads.dv), ref.dv, BOUND, rng);
        expectClose('dz_v', await gpu.readF32(grads.dz), ref.dz, BOUND, rng);
        expectClose('dv_first, accumulated', await gpu.readF32(grads.dvfirst), plus(ref.dvfirst, vfInit), BOUND, rng);

        const init = { dv: rng.normals(M), dz: rng.normals(M) };
        gpu.write(grads.dv, f32(init.dv));
        gpu.write(grads.dz, f32(init.dz));
        poison(gpu, grads.dvfirst);
        valueResidualBackward(gpu, dout, v, vf, zv, v0, grads, { accumulate: true, accumulateDvfirst: false });
        expectClose('dv, accumulating', await gpu.readF32(grads.dv), plus(ref.dv, Float64Array.from(f32(init.dv))), BOUND, rng);
        expectClose('dz_v, accumulating', await gpu.readF32(grads.dz), plus(ref.dz, Float64Array.from(f32(init.dz))), BOUND, rng);
        expectClose('dv_first, overwritten', await gpu.readF32(grads.dvfirst), ref.dvfirst, BOUND, rng);
      }));
  }
});

describe('kk, k̃ and the WKV a, b inputs on the GPU', () => {
  for (const c of CASES) {
    it(name(c), () =>
      withGpu(async (gpu, rng, owned) => {
        const rows = c.B * c.T;
        const M = rows * c.C;
        const kHost = rng.normals(M);
        // One all-zero head exercises the norm clamp (kk = 0 there, not NaN).
        if (rows > 1) kHost.fill(0, c.C, c.C + c.N);
        const [k, kv] = input(gpu, owned, kHost, 'k');
        const [a, av] = input(gpu, owned, rng.array(M, 0, 1), 'a');
        const [kK, kKv] = input(gpu, owned, rng.array(c.C, 0.3, 1.5), 'k_k');
        const [kA, kAv] = input(gpu, owned, rng.array(c.C, 0.3, 1.5), 'k_a');
        const out = { kk: output(gpu, owned, rows, c.C, 'kk'), kt: output(gpu, owned, rows, c.C, 'k̃'), aw: output(gpu, owned, rows, c.C, 'aw'), bw: output(gpu, owned, rows, c.C, 'bw') };
        keyPrep(gpu, k, a, kK, kA, out, { headSize: c.N });
        const ref = keyPrepRef(kv, av, kKv, kAv, c.N);
        for (const key of ['kk', 'kt', 'aw', 'bw'] as const) expectClose(key, await gpu.readF32(out[key]), ref[key], BOUND, rng);

        // The backward on random keys: at the clamp its gradient is 1e12-sized and would swamp the norm.
        const [k2, k2v] = input(gpu, owned, rng.normals(M), 'k');
        keyPrep(gpu, k2, a, kK, kA, out, { headSize: c.N });
        const [dkt, dktv] = input(gpu, owned, rng.normals(M), 'dk̃');
        const [daw, dawv] = input(gpu, owned, rng.normals(M), 'daw');
        const [dbw, dbwv] = input(gpu, owned, rng.normals(M), 'dbw');
        const grads = { dk: output(gpu, owned, rows, c.C, 'dk'), da: output(gpu, owned, rows, c.C, 'da') };
        keyPrepBackward(gpu, dkt, daw, dbw, k2, a, kK, kA, out.kk, grads, { headSize: c.N });
        const dref = keyPrepBackwardRef(dktv, dawv, dbwv, k2v, av, kKv, kAv, c.N);
        expectClose('dk', await gpu.readF32(grads.dk), dref.dk, BOUND, rng);
        expectClose('da', await gpu.readF32(grads.da), dref.da, BOUND, rng);
        const init = { dk: Float64Array.from(f32(rng.normals(M))), da: Float64Array.from(f32(rng.normals(M))) };
        gpu.write(grads.dk, f32(init.dk));
        gpu.write(grads.da, f32(init.da));
        keyPrepBackward(gpu, dkt, daw, dbw, k2, a, kK, kA, out.kk, grads, { headSize: c.N, accumulate: true });
        expectClose('dk, accumulating', await gpu.readF32(grads.dk), plus(dref.dk, init.dk), BOUND, rng);
        expectClose('da, accumulating', await gpu.readF32(grads.da), plus(dref.da, init.da), BOUND, rng);
      }));
  }
});

describe('bonus and output gate on the GPU', () => {
  for (const c of CASES) {
    it(name(c), () =>
      withGpu(async (gpu, rng, owned) => {
        const rows = c.B * c.T;
        const M = rows * c.C;
        const acts = (['gn', 'r', 'k̃', 'v', 'g'] as const).map((l) => input(gpu, owned, rng.normals(M), l));
        const [[gn, gnv], [r, rv], [kt, ktv], [v, vv], [g, gv]] = acts;
        const rKt = gpu.upload(f32(rng.normals(c.C, 0.5)), [c.C / c.N, c.N], 'f32', 'r_k');
        owned.push(rKt);
        const rKv = Float64Array.from(await gpu.readF32(rKt));
        const out = output(gpu, owned, rows, c.C, 'o');
        bonusGate(gpu, gn, r, kt, v, rKt, g, out, { headSize: c.N });
        expectClose('o', await gpu.readF32(out), bonusGateRef(gnv, rv, ktv, vv, rKv, gv, c.N), BOUND, rng);

        const [dout, doutv] = input(gpu, owned, rng.normals(M), 'do');
        const keys = ['dgn', 'dr', 'dkt', 'dv', 'dg'] as const;
        const grads = { dgn: output(gpu, owned, rows, c.C, 'dgn'), dr: output(gpu, owned, rows, c.C, 'dr'), dkt: output(gpu, owned, rows, c.C, 'dk̃'), dv: output(gpu, owned, rows, c.C, 'dv'), dg: output(gpu, owned, rows, c.C, 'dg') };
        bonusGateBackward(gpu, dout, gn, r, kt, v, rKt, g, grads, { headSize: c.N });
        const ref = bonusGateBackwardRef(doutv, gnv, rv, ktv, vv, rKv, gv, c.N);
        // dr and dk̃ are one head's Σ dout·g·v times a vector, dv its Σ r·k̃·r_k times one: with
        // one head (B = T = 1, C = N) a sum that cancels decides the whole error (7.95e-5 at
        // seed 86856918), so errors are measured against the size of the sums' terms.
        const abs = (x: Float64Array): Float64Array => x.map(Math.abs);
        const size = bonusGateBackwardRef(abs(doutv), abs(gnv), abs(rv), abs(ktv), abs(vv), abs(rKv), abs(gv), c.N);
        for (const key of keys) expectClose(key, await gpu.readF32(grads[key]), ref[key], BOUND, rng, size[key]);
        const init = keys.map(() => Float64Array.from(f32(rng.normals(M))));
        keys.forEach((key, m) => gpu.write(grads[key], f32(init[m])));
        bonusGateBackward(gpu, dout, gn, r, kt, v, rKt, g, grads, { headSize: c.N, accumulate: true });
        for (const [m, key] of keys.entries()) {
          expectClose(`${key}, accumulating`, await gpu.readF32(grads[key]), plus(ref[key], init[m]), BOUND, rng, plus(size[key], abs(init[m])));
        }
      }));
  }
});

describe('argument errors name the tensor', () => {
  it('shapes, dtypes, head sizes and counts', async () => {
    const gpu = await getGpu();
    const act = (label: string, n = 4 * 64): Tensor => gpu.tensor([n / 64, 64], 'f32', label);
    const vec = (label: string, n = 64): Tensor => gpu.tensor([n], 'f32', label);
    const seq = { B: 2, T: 2 };
    expect(() => tokenShiftLerp(gpu, act('x', 3 * 64), [vec('x_r')], [act('xr')], seq)).toThrow(/rwkv7TokenShiftLerp: x has shape \[3,64\] \(192 elements\), expected \[4,64\]/);
    expect(() => tokenShiftLerp(gpu, act('x'), [vec('x_r'), vec('x_w')], [act('xr')], seq)).toThrow(/2 mix vectors for 1 lerp tensors/);
    expect(() => tokenShiftLerp(gpu, act('x'), [vec('x_r'), vec('x_w', 32)], [act('xr'), act('xw')], seq)).toThrow(/x_w has shape \[32\] \(32 elements\), expected C = 64 elements like x_r/);
    expect(() => tokenShiftLerpBackward(gpu, [act('dxr')], [vec('x_r')], act('dx'), { B: 0, T: 4 })).toThrow(/B = 0, expected a positive integer/);
    expect(() => sigmoidBias(gpu, gpu.tensor([4, 64], 'bf16', 'z_a'), vec('a0'), act('a'))).toThrow(/rwkv7SigmoidBias: z_a is bf16, expected f32/);
    expect(() => addBias(gpu, vec('w_raw', 100), vec('w0'))).toThrow(/w_raw has shape \[100\] \(100 elements\), expected \[rows, C\] with C = 64/);
    expect(() => valueResidual(gpu, act('v'), act('v_first', 128), act('z_v'), vec('v0'), act('vmix'))).toThrow(/v_first has shape \[2,64\] \(128 elements\), expected \[4,64\]/);
    const kp = { kk: act('kk'), kt: act('kt'), aw: act('aw'), bw: act('bw') };
    expect(() => keyPrep(gpu, act('k'), act('a'), vec('k_k'), vec('k_a'), kp, { headSize: 48 })).toThrow(/rwkv7KeyPrep: head size 48 does not divide C = 64/);
    expect(() => keyPrepBackward(gpu, act('dk̃'), act('daw'), act('dbw', 64), act('k'), act('a'), vec('k_k'), vec('k_a'), act('kk'), { dk: act('dk'), da: act('da') }, { headSize: 64 })).toThrow(
      /rwkv7KeyPrepBackward: dbw has shape \[1,64\] \(64 elements\), expected \[4,64\]/,
    );
    const rK = gpu.tensor([4, 16], 'f32', 'r_k');
    expect(() => bonusGate(gpu, act('gn'), act('r'), act('kt'), act('v'), rK, act('g'), act('o'), { headSize: 32 })).toThrow(/r_k has shape \[4,16\], expected \[H, N\] = \[2,32\]/);
  });
});
