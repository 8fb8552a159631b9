import { describe, expect, it } from 'vitest';
import type { GpuRuntime } from '../../src/gpu/device.js';
import type { Tensor } from '../../src/gpu/tensor.js';
import { allocWkv7Saved, wkv7Backward, wkv7Forward, wkv7Plan, type Wkv7Dims, type Wkv7Plan } from '../../src/kernels/wkv7.js';
import { expectClose, f32, finiteDiff, freshRng, getGpu, poison, type Rng } from '../helpers.js';
import { wkv7RefBackward, wkv7RefForward, type Wkv7RefGrads, type Wkv7RefInputs } from '../reference/wkv7.js';

const INPUTS = ['r', 'w', 'k', 'v', 'a', 'b'] as const;
const GRADS = ['dr', 'dw', 'dk', 'dv', 'da', 'db'] as const;

/**
 * Inputs as the model produces them: kk unit-norm per head, a = −kk, b = kk⊙α with α ∈ (0,1),
 * w_raw ∈ (−6, 5) so decay spans (0.547, 0.9985), r, k̃, v ~ N(0,1), s0 ~ N(0, 0.3²).
 */
function modelLikeInputs(rng: Rng, d: Wkv7Dims, withS0: boolean): Wkv7RefInputs {
  const n = d.B * d.T * d.H * d.N;
  const kk = rng.normals(n);
  for (let o = 0; o < n; o += d.N) {
    let norm = 0;
    for (let j = 0; j < d.N; j++) norm += kk[o + j] ** 2;
    for (let j = 0; j < d.N; j++) kk[o + j] /= Math.sqrt(norm);
  }
  const alpha = rng.array(n, 0, 1);
  return {
    ...d,
    r: rng.normals(n),
    w: rng.array(n, -6, 5),
    k: rng.normals(n),
    v: rng.normals(n),
    a: kk.map((x) => -x),
    b: kk.map((x, i) => x * alpha[i]),
    s0: withS0 ? rng.normals(d.B * d.H * d.N * d.N, 0.3) : undefined,
  };
}

/** The reference's state checkpoints [B, H, ceil(T/16)+1, N, N]: slot 0 the initial state, slot c+1 after step min(16c+15, T−1). */
function refStates(x: Wkv7RefInputs): Float64Array {
  const { B, T, H, N } = x;
  const slots = Math.ceil(T / 16) + 1;
  const out = new Float64Array(B * H * slots * N * N);
  for (let c = 0; c < slots; c++) {
    const Tc = Math.min(16 * c, T);
    let S: Float64Array;
    if (Tc === 0) S = x.s0 ? Float64Array.from(x.s0) : new Float64Array(B * H * N * N);
    else {
      const cut = (v: ArrayLike<number>): Float64Array => {
        const o = new Float64Array(B * Tc * H * N);
        for (let bb = 0; bb < B; bb++) o.set(Array.prototype.slice.call(v, bb * T * H * N, (bb * T + Tc) * H * N) as number[], bb * Tc * H * N);
        return o;
      };
      S = wkv7RefForward({ ...x, T: Tc, r: cut(x.r), w: cut(x.w), k: cut(x.k), v: cut(x.v), a: cut(x.a), b: cut(x.b) }).sT;
    }
    for (let bh = 0; bh < B * H; bh++) out.set(S.subarray(bh * N * N, (bh + 1) * N * N), (bh * slots + c) * N * N);
  }
  return out;
}

function upload(gpu: GpuRuntime, x: ArrayLike<number>, shape: number[], label: string): Tensor {
  return gpu.upload(f32(x), shape, 'f32', label);
}

// Bounds from the worst relative errors seen over 78 runs of the cases below (fresh seeds):
// y, sa, sT 3.7e-7; dk, dv, db, ds0 (from dS and saved values only) 3.8e-7, 7.8e-7 at T=1;
// dr, dw, da use states recovered by backstepping (dividing by decay ≥ 0.547 for up to 15 steps) 2.8e-5.
// The kernels with scaled states (95c2f11), 7 runs on lavapipe and the H200: 2.7e-7, 3.4e-7, 1.2e-5.
// dw from the column pass's scalar recurrence (2e3c81d), 13 runs on lavapipe: 1.6e-5 (1.5e-5 before, same seeds).
// A wrong index gives an error of order 1.
const FWD_BOUND = 2e-6;
const GRAD_BOUND: Record<keyof Wkv7RefGrads, number> = { dr: 1e-4, dw: 1e-4, da: 1e-4, dk: 2e-6, dv: 2e-6, db: 2e-6, ds0: 2e-6 };

interface Case extends Wkv7Dims {
  s0: boolean;
  /** Also ask for sT and ds0 (with accumulate when 'acc'). */
  outs: 'none' | 'all' | 'acc';
  /** A forced plan; the automatic one otherwise (on lavapipe 8 lanes, 4 row groups, 4 column lanes, 2 chunks per column workgroup). */
  plan?: Wkv7Plan;
}

// N = 64 is every released RWKV-7 model's head size; 48 checks that nothing assumes 64. (Smaller N
// do not make this file faster: lavapipe unrolls their loops and compiles for 10-30 s.)
// T=1 runs several heads: one head's T=1 gradients are one dot product times a vector, so a
// single unlucky (cancelling) dot product would decide the whole relative error.
const CASES: Case[] = [
  { B: 3, T: 1, H: 3, N: 64, s0: true, outs: 'all' },
  { B: 2, T: 15, H: 1, N: 64, s0: true, outs: 'all' },
  { B: 3, T: 16, H: 2, N: 64, s0: false, outs: 'none' },
  { B: 1, T: 17, H: 2, N: 64, s0: false, outs: 'all' },
  { B: 3, T: 33, H: 1, N: 64, s0: true, outs: 'acc' },
  { B: 1, T: 64, H: 2, N: 64, s0: true, outs: 'all' },
  { B: 2, T: 18, H: 3, N: 48, s0: true, outs: 'all' },
];

// Every lane count, row-group count, column-lane count and chunks per column workgroup (with
// T leaving the last workgroup fewer chunks), and odd and small N. lanes 1 is the
// path of adapters without subgroups (lavapipe compiles its N=64 kernels for about 45 s, small
// workgroups too: hence few such cases); lanes 8 fills a whole lavapipe subgroup; 2x1/2 is the
// H200's plan for many heads.
const PLAN_CASES: Case[] = [
  { B: 1, T: 17, H: 2, N: 64, s0: true, outs: 'acc', plan: { lanes: 1, groups: 1, colLanes: 1, colChunks: 2 } },
  { B: 1, T: 100, H: 2, N: 64, s0: true, outs: 'all', plan: { lanes: 8, groups: 2, colLanes: 8, colChunks: 4 } },
  { B: 3, T: 1, H: 3, N: 64, s0: true, outs: 'all', plan: { lanes: 8, groups: 1, colLanes: 2, colChunks: 4 } },
  { B: 2, T: 100, H: 2, N: 64, s0: true, outs: 'acc', plan: { lanes: 2, groups: 1, colLanes: 2, colChunks: 4 } },
  { B: 3, T: 100, H: 1, N: 3, s0: true, outs: 'all', plan: { lanes: 4, groups: 1, colLanes: 4, colChunks: 2 } },
  { B: 3, T: 15, H: 1, N: 8, s0: false, outs: 'all', plan: { lanes: 2, groups: 4, colLanes: 2, colChunks: 1 } },
  { B: 2, T: 33, H: 2, N: 20, s0: true, outs: 'acc', plan: { lanes: 4, groups: 2, colLanes: 4, colChunks: 2 } },
];

describe('wkv7 float64 reference', () => {
  // L = Σ y·g; every gradient (and ds0) against central differences at every index.
  for (const d of [
    { B: 1, T: 5, H: 1, N: 4 },
    { B: 2, T: 3, H: 2, N: 3 },
  ]) {
    it(`backward matches finite differences B=${d.B} T=${d.T} H=${d.H} N=${d.N}`, () => {
      const rng = freshRng();
      const x = modelLikeInputs(rng, d, true);
      const g = rng.normals(d.B * d.T * d.H * d.N);
      const grads = wkv7RefBackward(x, g);
      const loss = (): number => wkv7RefForward(x).y.reduce((s, y, i) => s + y * g[i], 0);
      const named: [string, Float64Array, Float64Array][] = [
        ...INPUTS.map((name, i): [string, Float64Array, Float64Array] => [name, x[name] as Float64Array, grads[GRADS[i]]]),
        ['s0', x.s0 as Float64Array, grads.ds0],
      ];
      for (const [name, values, grad] of named) {
        const fd = finiteDiff(loss, values, [...values.keys()], 1e-5);
        expectClose(`d${name} vs finite differences`, grad, fd, 1e-7, rng);
      }
    });
  }

  it('sT is the state after the last step', () => {
    const rng = freshRng();
    const d = { B: 1, T: 3, H: 1, N: 5 };
    const x = modelLikeInputs(rng, d, true);
    const { sT } = wkv7RefForward(x);
    // y_T = S_T r_T, so with r_T = e_j, y_T is column j of S_T.
    const last = (d.T - 1) * d.N;
    for (let j = 0; j < d.N; j++) {
      const r = Float64Array.from(x.r as Float64Array);
      r.fill(0, last);
      r[last + j] = 1;
      const y = wkv7RefForward({ ...x, r }).y.subarray(last);
      for (let i = 0; i < d.N; i++) expect(y[i]).toBeCloseTo(sT[i * d.N + j], 12);
    }
  });
});

describe('wkv7 GPU forward and backward', () => {
  for (const c of [...CASES, ...PLAN_CASES]) {
    // The bench's plan syntax (bench/wkv_bench.ts).
    const plan = c.plan ? ` plan=${c.plan.lanes}x${c.plan.groups}/${c.plan.colLanes}/${c.plan.colChunks}` : '';
    // Timeout: with a cold shader cache lavapipe compiles the lanes-1 kernels (a row's 64 values unrolled) in about 80 s.
    it(`B=${c.B} T=${c.T} H=${c.H} N=${c.N} s0=${c.s0} outputs=${c.outs}${plan}`, async () => {
      const gpu = await getGpu();
      const rng = freshRng();
      const x = modelLikeInputs(rng, c, c.s0);
      const dyHost = rng.normals(c.B * c.T * c.H * c.N);
      const tok = [c.B * c.T, c.H * c.N];
      const st = [c.B, c.H, c.N, c.N];
      const ins = Object.fromEntries(INPUTS.map((n) => [n, upload(gpu, x[n], tok, n)])) as Record<(typeof INPUTS)[number], Tensor>;
      const s0 = x.s0 ? upload(gpu, x.s0, st, 's0') : undefined;
      const y = gpu.tensor(tok, 'f32', 'y');
      const saved = allocWkv7Saved(gpu, c);
      const sT = c.outs === 'none' ? undefined : gpu.tensor(st, 'f32', 'sT');
      poison(gpu, y, saved.states, saved.sa, ...(sT ? [sT] : []));
      const d = { B: c.B, T: c.T, H: c.H, N: c.N, plan: c.plan };
      wkv7Forward(gpu, { ...d, ...ins, s0, y, saved, sT });

      const ref = wkv7RefForward(x);
      expectClose('y', await gpu.readF32(y), ref.y, FWD_BOUND, rng);
      expectClose('saved sa', await gpu.readF32(saved.sa), ref.sa, FWD_BOUND, rng);
      expectClose('saved states', await gpu.readF32(saved.states), refStates(x), FWD_BOUND, rng);
      if (sT) expectClose('sT', await gpu.readF32(sT), ref.sT, FWD_BOUND, rng);

      const dy = upload(gpu, dyHost, tok, 'dy');
      const grads = Object.fromEntries(GRADS.map((n) => [n, gpu.tensor(tok, 'f32', n)])) as Record<(typeof GRADS)[number], Tensor>;
      poison(gpu, ...Object.values(grads));
      // With 'acc', every gradient is added into what is there (the model does so for dr, dk, dv).
      const addInto = c.outs === 'acc' ? GRADS : [];
      const priors = new Map(addInto.map((n) => [n, rng.normals(c.B * c.T * c.H * c.N, 0.1)]));
      for (const [n, v] of priors) gpu.write(grads[n], f32(v));
      const ds0 = c.outs === 'none' ? undefined : gpu.tensor(st, 'f32', 'ds0');
      const prior = rng.normals(c.B * c.H * c.N * c.N);
      if (ds0 && c.outs === 'acc') gpu.write(ds0, f32(prior));
      else if (ds0) poison(gpu, ds0);
      wkv7Backward(gpu, { ...d, ...ins, dy, saved, ...grads, ds0, accumulate: c.outs === 'acc', addInto });

      const refG: Wkv7RefGrads = wkv7RefBackward(x, dyHost);
      for (const n of GRADS) {
        const there = priors.get(n);
        const want = there ? refG[n].map((g, i) => g + there[i]) : refG[n];
        expectClose(n, await gpu.readF32(grads[n]), want, GRAD_BOUND[n], rng);
      }
      if (ds0) {
        const want = c.outs === 'acc' ? refG.ds0.map((g, i) => g + prior[i]) : refG.ds0;
        expectClose('ds0', await gpu.readF32(ds0), want, GRAD_BOUND.ds0, rng);
      }
      for (const t of [...Object.values(ins), y, saved.states, saved.sa, dy, ...Object.values(grads)]) gpu.free(t);
      for (const t of [s0, sT, ds0]) if (t) gpu.free(t);
    }, 300_000);
  }
});

describe('wkv7 argument checks', () => {
  const d = { B: 1, T: 4, H: 2, N: 8 };
  const tok = [d.B * d.T, d.H * d.N];
  async function setup(): Promise<{ gpu: GpuRuntime; t: (label: string, shape?: number[]) => Tensor }> {
    const gpu = await getGpu();
    return { gpu, t: (label, shape = tok) => gpu.tensor(shape, 'f32', label) };
  }

  it('names a tensor of the wrong size', async () => {
    const { gpu, t } = await setup();
    const args = { ...d, r: t('r'), w: t('w'), k: t('k', [4, 15]), v: t('v'), a: t('a'), b: t('b'), y: t('y'), saved: allocWkv7Saved(gpu, d) };
    expect(() => wkv7Forward(gpu, args)).toThrow(/wkv7Forward: k has shape \[4,15\] \(60 elements\), expected \[B,T,H,N\] = \[1,4,2,8\] \(64 elements\)/);
  });

  it('names a tensor of the wrong dtype', async () => {
    const { gpu, t } = await setup();
    const a = gpu.tensor(tok, 'bf16', 'a');
    const args = { ...d, r: t('r'), w: t('w'), k: t('k'), v: t('v'), a, b: t('b'), y: t('y'), saved: allocWkv7Saved(gpu, d) };
    expect(() => wkv7Forward(gpu, args)).toThrow(/wkv7Forward: a is bf16, expected f32/);
  });

  it('checks saved tensors and ds0 in the backward', async () => {
    const { gpu, t } = await setup();
    const base = { ...d, r: t('r'), w: t('w'), k: t('k'), v: t('v'), a: t('a'), b: t('b'), dy: t('dy') };
    const grads = { dr: t('dr'), dw: t('dw'), dk: t('dk'), dv: t('dv'), da: t('da'), db: t('db') };
    const short = allocWkv7Saved(gpu, { ...d, T: 3 }, 'short');
    expect(() => wkv7Backward(gpu, { ...base, ...grads, saved: short })).toThrow(
      /wkv7Backward: short.sa has shape \[1,3,2,8\] \(48 elements\), expected \[B,T,H,N\] = \[1,4,2,8\]/,
    );
    const saved = allocWkv7Saved(gpu, { ...d, T: 33 }, 'long');
    expect(() => wkv7Backward(gpu, { ...base, ...grads, saved })).toThrow(
      /long.states has shape \[1,2,4,8,8\] \(512 elements\), expected \[B,H,ceil\(T\/16\)\+1,N,N\] = \[1,2,2,8,8\]/,
    );
    const ok = allocWkv7Saved(gpu, d);
    expect(() => wkv7Backward(gpu, { ...base, ...grads, saved: ok, ds0: t('ds0', [2, 8, 4]) })).toThrow(
      /ds0 has shape \[2,8,4\] \(64 elements\), expected \[B,H,N,N\] = \[1,2,8,8\]/,
    );
  });

  it('rejects a head size above 64 and non-integer dims', async () => {
    const { gpu, t } = await setup();
    const args = { r: t('r'), w: t('w'), k: t('k'), v: t('v'), a: t('a'), b: t('b'), y: t('y'), saved: allocWkv7Saved(gpu, d) };
    expect(() => wkv7Forward(gpu, { ...d, N: 65, ...args })).toThrow(/head size N = 65, expected at most 64/);
    expect(() => wkv7Forward(gpu, { ...d, T: 0, ...args })).toThrow(/T = 0, expected a positive integer/);
  });

  it('plans subgroup lanes where the adapter has subgroups, and rejects impossible plans', async () => {
    const { gpu } = await setup();
    const info = gpu.adapter.info as GPUAdapterInfo & { subgroupMinSize?: number };
    const sg = gpu.hasSubgroups ? (info.subgroupMinSize ?? 0) : 0;
    const cap = sg >= 2 ? Math.min(8, 2 ** Math.floor(Math.log2(sg))) : 1;
    // Few heads: many lanes and row groups (lavapipe's subgroups hold 8).
    expect(wkv7Plan(gpu, { B: 1, T: 1024, H: 12, N: 64 })).toEqual({ lanes: cap, groups: 4, colLanes: Math.min(4, cap), colChunks: 2 });
    expect(wkv7Plan(gpu, { B: 1, T: 1024, H: 40, N: 64 })).toEqual({ lanes: cap, groups: 4, colLanes: Math.min(4, cap), colChunks: 2 });
    // Many heads: 2 lanes, 1 group, 4 chunks per column workgroup.
    expect(wkv7Plan(gpu, { B: 2, T: 1024, H: 48, N: 64 })).toEqual({ lanes: Math.min(2, cap), groups: 1, colLanes: Math.min(2, cap), colChunks: 4 });
    expect(wkv7Plan(gpu, { B: 8, T: 1024, H: 32, N: 64 })).toEqual({ lanes: Math.min(2, cap), groups: 1, colLanes: Math.min(2, cap), colChunks: 4 });
    expect(() => wkv7Plan(gpu, d, { lanes: 3 })).toThrow(/lanes = 3, expected 1, 2, 4 or 8/);
    expect(() => wkv7Plan(gpu, d, { colLanes: 64 })).toThrow(/colLanes = 64, expected 1, 2, 4 or 8/);
    expect(() => wkv7Plan(gpu, d, { groups: 8 })).toThrow(/groups = 8, expected 1, 2 or 4/);
    expect(() => wkv7Plan(gpu, d, { colChunks: 3 })).toThrow(/colChunks = 3, expected 1, 2 or 4/);
    if (sg < 8) expect(() => wkv7Plan(gpu, d, { lanes: 8 })).toThrow(/needs subgroups of at least 8 invocations/);
  });

});
