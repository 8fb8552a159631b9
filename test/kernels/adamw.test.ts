import { describe, expect, it } from 'vitest';
import { ADAMW_STATE, ADAMW_STATE_LEN, adamwStep, adamwStepState, writeAdamwStepState, type AdamwHyper } from '../../src/kernels/adamw.js';
import { expectClose, f32, freshRng, getGpu } from '../helpers.js';

interface RefState {
  p: Float64Array;
  m: Float64Array;
  v: Float64Array;
}

/**
 * Float64 reference of one DeepSpeed FusedAdam (adam_w_mode) step with global-norm clipping.
 * The state is rounded to f32 afterwards, as the GPU stores it, so the comparison measures
 * the kernel's arithmetic rather than the storage precision both share.
 */
function refStep(s: RefState, g: Float64Array, t: number, h: AdamwHyper, sqNorm: number | undefined, maxNorm: number): void {
  const clip = sqNorm === undefined ? 1 : Math.min(1, maxNorm / (Math.sqrt(sqNorm) + 1e-6));
  const bc1 = 1 - h.beta1 ** t;
  const bc2 = 1 - h.beta2 ** t;
  // The hyperparameters as the kernel receives them (f32, as DeepSpeed's kernel does too):
  // 1 − β2 for β2 = 0.99 differs by 1e-6 relative between f32 and f64.
  const [lr, b1, b2, eps, wd] = [h.lr, h.beta1, h.beta2, h.eps, h.weightDecay].map(Math.fround);
  for (let i = 0; i < g.length; i++) {
    const gi = g[i] * clip;
    const m = b1 * s.m[i] + (1 - b1) * gi;
    const v = b2 * s.v[i] + (1 - b2) * gi * gi;
    const update = m / bc1 / (Math.sqrt(v / bc2) + eps) + wd * s.p[i];
    s.p[i] = Math.fround(s.p[i] - lr * update);
    s.m[i] = Math.fround(m);
    s.v[i] = Math.fround(v);
  }
}

describe('adamwStepState', () => {
  it('lays out the fields and bias corrections for step t', () => {
    const s = adamwStepState(3, { lr: 1e-3, beta1: 0.9, beta2: 0.99, eps: 1e-8, weightDecay: 0.01 });
    expect(s.length).toBe(ADAMW_STATE_LEN);
    expect(s[ADAMW_STATE.lr]).toBe(Math.fround(1e-3));
    expect(s[ADAMW_STATE.weightDecay]).toBe(Math.fround(0.01));
    expect(s[ADAMW_STATE.biasCorrection1]).toBe(Math.fround(1 - 0.9 ** 3));
    expect(s[ADAMW_STATE.biasCorrection2]).toBe(Math.fround(1 - 0.99 ** 3));
    expect(() => adamwStepState(0, { lr: 1, beta1: 0.9, beta2: 0.99, eps: 1e-8, weightDecay: 0 })).toThrow(/step must be an integer >= 1, found 0/);
    expect(() => adamwStepState(1, { lr: 1, beta1: 1, beta2: 0.99, eps: 1e-8, weightDecay: 0 })).toThrow(/betas must lie in \[0, 1\)/);
  });
});

describe('adamwStep', () => {
  // Bounds: each step's update is a handful of f32 operations (~1e-7 relative); the moments
  // are compared directly and the parameters through their total change over the steps, since
  // the change is ~1e-2 of the parameter and would hide errors in it. The change's bound also
  // covers the stored parameter rounding to the other f32 neighbour now and then (1 ulp).
  const MOMENT_BOUND = 2e-6;
  const DELTA_BOUND = 1e-5;
  const STEPS = 5;
  const configs = [
    { name: 'wd=0, no clipping', wd: 0, clip: 'none', zeroGrad: false },
    { name: 'wd=0.1, clipping active', wd: 0.1, clip: 'active', zeroGrad: true },
    { name: 'wd=0.01, clipping inactive', wd: 0.01, clip: 'inactive', zeroGrad: false },
  ] as const;

  for (const n of [1, 17, 1000, 70_001]) {
    for (const c of configs) {
      it(`n=${n} ${c.name}${c.zeroGrad ? ', zeroing grads' : ''}: ${STEPS} steps`, async () => {
        const gpu = await getGpu();
        const rng = freshRng();
        const p0 = Float64Array.from(f32(rng.normals(n, 0.02)));
        const ref: RefState = { p: p0.slice(), m: new Float64Array(n), v: new Float64Array(n) };
        const param = gpu.upload(f32(p0), [n], 'f32', 'param');
        const grad = gpu.tensor([n], 'f32', 'grad');
        const m = gpu.tensor([n], 'f32', 'm');
        const v = gpu.tensor([n], 'f32', 'v');
        gpu.fill(m, 0);
        gpu.fill(v, 0);
        const stepState = gpu.tensor([ADAMW_STATE_LEN], 'f32', 'stepState');
        const sqNormT = gpu.tensor([1], 'f32', 'sqNorm');
        // Each grad keeps its sign's tendency over the steps, so the parameter moves ~lr per step
        // and its total change stands well above the 1-ulp rounding of the stored parameter.
        const trend = rng.normals(n);
        let g = new Float64Array(n);
        for (let t = 1; t <= STEPS; t++) {
          // A different scale each step, so the clip factor and the moments vary too.
          const scale = 10 ** rng.uniform(-3, -1);
          g = Float64Array.from(f32(trend.map((x) => scale * x * (1 + 0.5 * rng.normal()))));
          const h: AdamwHyper = { lr: rng.uniform(3e-4, 1e-3), beta1: 0.9, beta2: 0.99, eps: 1e-8, weightDecay: c.wd };
          const sq = Math.fround(g.reduce((acc, x) => acc + x * x, 0));
          const norm = Math.sqrt(sq);
          const maxNorm = c.clip === 'active' ? 0.3 * norm : 3 * norm + 1;
          gpu.write(grad, f32(g));
          gpu.write(sqNormT, f32([sq]));
          writeAdamwStepState(gpu, stepState, t, h);
          const clip = c.clip === 'none' ? {} : { sqNorm: sqNormT, maxNorm };
          adamwStep(gpu, { param, grad, m, v, stepState, zeroGrad: c.zeroGrad, ...clip });
          // The next step's writes must not overtake this step's dispatch.
          gpu.submit();
          refStep(ref, g, t, h, c.clip === 'none' ? undefined : sq, maxNorm);
        }
        const pGpu = await gpu.readF32(param);
        expectClose('param change', pGpu.map((x, i) => x - p0[i]), ref.p.map((x, i) => x - p0[i]), DELTA_BOUND, rng);
        expectClose('m', await gpu.readF32(m), ref.m, MOMENT_BOUND, rng);
        expectClose('v', await gpu.readF32(v), ref.v, MOMENT_BOUND, rng);
        const gAfter = await gpu.readF32(grad);
        if (c.zeroGrad) expect(gAfter.every((x) => x === 0)).toBe(true);
        else expect(Array.from(gAfter)).toEqual(Array.from(f32(g)));
        for (const x of [param, grad, m, v, stepState, sqNormT]) gpu.free(x);
      });
    }
  }

  it('names the offending tensor on bad sizes and dtypes', async () => {
    const gpu = await getGpu();
    const param = gpu.tensor([10], 'f32', 'param');
    const grad = gpu.tensor([10], 'f32', 'grad');
    const m = gpu.tensor([10], 'f32', 'm');
    const v = gpu.tensor([9], 'f32', 'vShort');
    const v16 = gpu.tensor([10], 'bf16', 'vBf16');
    const stepState = gpu.tensor([ADAMW_STATE_LEN], 'f32', 'stepState');
    const badState = gpu.tensor([4], 'f32', 'smallState');
    const sqNorm = gpu.tensor([2], 'f32', 'sqNorm2');
    const ok = { param, grad, m, v: m, stepState };
    expect(() => adamwStep(gpu, { ...ok, v })).toThrow(/vShort must be f32 with 10 elements \(as param\), found vShort\[9\]:f32/);
    expect(() => adamwStep(gpu, { ...ok, v: v16 })).toThrow(/vBf16 must be f32 with 10 elements/);
    expect(() => adamwStep(gpu, { ...ok, stepState: badState })).toThrow(/smallState must be f32 \[7\] \(the step state\), found smallState\[4\]:f32/);
    expect(() => adamwStep(gpu, { ...ok, sqNorm, maxNorm: 1 })).toThrow(/sqNorm2 must be f32 \[1\]/);
    expect(() => adamwStep(gpu, { ...ok, maxNorm: 1 })).toThrow(/sqNorm and maxNorm go together/);
    expect(() => writeAdamwStepState(gpu, badState, 1, { lr: 1, beta1: 0.9, beta2: 0.99, eps: 1e-8, weightDecay: 0 })).toThrow(/smallState must be f32 \[7\]/);
    for (const t of [param, grad, m, v, v16, stepState, badState, sqNorm]) gpu.free(t);
  });
});
