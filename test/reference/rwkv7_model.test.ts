import { describe, expect, it } from 'vitest';
import { expectClose, finiteDiff, freshRng, type Rng } from '../helpers.js';
import { backwardRef, forwardRef, lnParamNames, modelDims, refModel, timeMixRef, type RefLora, type RefWeights } from './rwkv7_model.js';
import { tinyLora, tinyX070Weights, type TinyX070Config } from './tiny_model.js';
import { wkv7RefBackward, wkv7RefForward } from './wkv7.js';

// Distinct small dims so a swapped axis cannot go unnoticed.
const CFG: TinyX070Config = { nLayer: 2, C: 16, headSize: 8, vocab: 20, dW: 4, dA: 6, dV: 5, dG: 8 };
const B = 2;
const T = 5;
const H = CFG.C / CFG.headSize;
const NN = CFG.headSize * CFG.headSize;
// Five-point differences in float64. h trades truncation (~h⁴) against rounding (~1e-16·|f|/h):
// over 12 seeds the worst error was 1.6e-8 at h = 3e-6 and 4.5e-9 at 1e-5, but some seeds
// bend sharply: at seed 1043142746 (L2Wrap, receptance.lora_A) 1e-5 gave 1.2e-7, 3e-6 8e-10.
const FD_H = 3e-6;
const FD_BOUND = 1e-7;

interface Setup {
  rng: Rng;
  weights: RefWeights;
  lora: RefLora;
  ids: number[];
  labels: number[];
  initStates: Float64Array[];
}

function setup(): Setup {
  const rng = freshRng();
  const weights = tinyX070Weights(rng, CFG);
  const lora = tinyLora(rng, weights, { rank: 4, alpha: 8 });
  const ids = Array.from({ length: B * T }, () => rng.int(CFG.vocab));
  const labels = Array.from({ length: B * T }, () => rng.int(CFG.vocab));
  labels[0] = -100;
  labels[7] = -100;
  // Layer 0: one state shared by the batch (time_state); layer 1: one per sequence.
  const initStates = [rng.normals(H * NN, 0.5), rng.normals(B * H * NN, 0.5)];
  return { rng, weights, lora, ids, labels, initStates };
}

/** Every element of `data` against central differences of `f`. */
function checkGrad(what: string, f: () => number, data: Float64Array, grad: Float64Array | undefined, rng: Rng): void {
  expect(grad, `${what}: no gradient returned`).toBeDefined();
  const idx = Array.from({ length: data.length }, (_, i) => i);
  const fd = finiteDiff(() => f(), data, idx, FD_H);
  expectClose(`${what} vs finite differences`, grad!, fd, FD_BOUND, rng);
}

function maxLogitPenalty(logits: Float64Array, V: number): number {
  let s = 0;
  for (let row = 0; row < logits.length / V; row++) s += Math.max(...logits.subarray(row * V, (row + 1) * V)) ** 2;
  return (1e-4 / (2 * B * T)) * s;
}

describe('rwkv7 reference forward', () => {
  it('derives the dims from the weight shapes', () => {
    const { weights } = setup();
    expect(modelDims(weights)).toEqual({ nLayer: 2, C: 16, H: 2, N: 8, V: 20, hidden: 64, dW: 4, dA: 6, dV: 5, dG: 8 });
  });

  it('names the tensor in shape and token errors', () => {
    const { weights, lora, ids } = setup();
    const w2 = new Map(weights);
    w2.set('blocks.1.att.w2', { shape: [5, 16], data: new Float64Array(80) });
    expect(() => forwardRef(w2, undefined, ids, B, T)).toThrow(/blocks\.1\.att\.w2 has shape \[5,16\].*expected \[4,16\]/);
    const w3 = new Map(weights);
    w3.delete('blocks.1.att.v0');
    expect(() => forwardRef(w3, undefined, ids, B, T)).toThrow(/missing tensor blocks\.1\.att\.v0/);
    const l2: RefLora = { alpha: 8, tensors: new Map(lora.tensors) };
    l2.tensors.set('blocks.0.ffn.value.lora_A', { shape: [4, 16], data: new Float64Array(64) });
    expect(() => forwardRef(weights, l2, ids, B, T)).toThrow(/blocks\.0\.ffn\.value\.lora_A has shape \[4,16\], expected \[r,64\]/);
    expect(() => forwardRef(weights, lora, ids.slice(1), B, T)).toThrow(/ids: length 9, expected B·T = 10/);
    expect(() => forwardRef(weights, lora, ids, B, T, { labels: ids.map(() => 20) })).toThrow(/labels\[0\] = 20/);
    expect(() => forwardRef(weights, lora, ids, B, T, { initStates: [new Float64Array(3)] })).toThrow(/initStates\[0\]: 3 values/);
  });

  it('keeps the x070 invariants (decay range, unit kk, v_first, causality, batch independence)', () => {
    const { rng, weights, lora, ids, labels } = setup();
    const fwd = forwardRef(weights, lora, ids, B, T, { labels });
    expect(Number.isFinite(fwd.loss)).toBe(true);
    for (const L of fwd.cache.layers) {
      for (const d of L.att.decay) expect(d > Math.exp(-Math.exp(-0.5)) && d < 1).toBe(true);
      for (let rh = 0; rh < B * T * H; rh++) {
        let s = 0;
        for (let j = 0; j < CFG.headSize; j++) s += L.att.kk[rh * CFG.headSize + j] ** 2;
        expect(s).toBeCloseTo(1, 12);
      }
    }
    expect(fwd.cache.layers[0].att.v).toBe(fwd.cache.layers[0].att.vRaw);
    expect(fwd.cache.layers[0].att.vGate).toBeUndefined();

    // Sequence 1 alone, and with its last token changed: rows before it must not move.
    const V = CFG.vocab;
    const alone = forwardRef(weights, lora, ids.slice(T), 1, T);
    expectClose('sequence 1 run alone', alone.logits, fwd.logits.subarray(T * V), 1e-13, rng);
    const changed = ids.slice(T);
    changed[T - 1] = (changed[T - 1] + 1) % V;
    const after = forwardRef(weights, lora, changed, 1, T);
    expectClose('causality', after.logits.subarray(0, (T - 1) * V), fwd.logits.subarray(T * V, (2 * T - 1) * V), 1e-14, rng);
    expect(after.logits[(T - 1) * V]).not.toBe(fwd.logits[(2 * T - 1) * V]);
  });

  it('LoRA forward equals the merged model W + (alpha/r)·B·A', () => {
    const { rng, weights, lora, ids } = setup();
    const merged: RefWeights = new Map(weights);
    for (const [key, A] of lora.tensors) {
      if (!key.endsWith('.lora_A')) continue;
      const module = key.slice(0, -'.lora_A'.length);
      const W = weights.get(`${module}.weight`)!;
      const Bm = lora.tensors.get(`${module}.lora_B`)!;
      const [out, inp] = W.shape;
      const r = A.shape[0];
      const data = Float64Array.from(W.data);
      for (let o = 0; o < out; o++) for (let i = 0; i < inp; i++) for (let j = 0; j < r; j++) data[o * inp + i] += (lora.alpha / r) * Bm.data[o * r + j] * A.data[j * inp + i];
      merged.set(`${module}.weight`, { shape: W.shape, data });
    }
    expectClose('LoRA vs merged', forwardRef(weights, lora, ids, B, T).logits, forwardRef(merged, undefined, ids, B, T).logits, 1e-12, rng);
  });

  it('WKV7 matches the matrix form S_t = S_{t−1}(diag(w) − κ(κ⊙α)ᵀ) + v k̃ᵀ, y = S_t r', () => {
    const { rng, weights, lora, initStates } = setup();
    const model = refModel(weights, lora);
    const N = CFG.headSize;
    const C = CFG.C;
    const x = rng.normals(B * T * C);
    const vFirst = rng.normals(B * T * C);
    const act = timeMixRef(model, 1, x, vFirst, B, T, initStates[1]);
    const yRef = new Float64Array(B * T * C);
    const finalRef = new Float64Array(B * H * NN);
    for (let b = 0; b < B; b++) {
      for (let h = 0; h < H; h++) {
        let S = initStates[1].slice((b * H + h) * NN, (b * H + h + 1) * NN);
        for (let t = 0; t < T; t++) {
          const o = (b * T + t) * C + h * N;
          const M = new Float64Array(NN); // diag(w) − κ(κ⊙α)ᵀ
          for (let p = 0; p < N; p++) {
            for (let q = 0; q < N; q++) M[p * N + q] = (p === q ? act.decay[o + q] : 0) - act.kk[o + p] * act.kk[o + q] * act.a[o + q];
          }
          const next = new Float64Array(NN);
          for (let i = 0; i < N; i++) {
            for (let j = 0; j < N; j++) {
              let s = act.v[o + i] * act.kt[o + j];
              for (let p = 0; p < N; p++) s += S[i * N + p] * M[p * N + j];
              next[i * N + j] = s;
            }
          }
          S = next;
          for (let i = 0; i < N; i++) for (let j = 0; j < N; j++) yRef[o + i] += S[i * N + j] * act.r[o + j];
        }
        finalRef.set(S, (b * H + h) * NN);
      }
    }
    expectClose('WKV7 y', act.y, yRef, 1e-13, rng);
    expectClose('WKV7 final state', act.finalState, finalRef, 1e-13, rng);
  });

  it('WKV7 forward and backward agree with the standalone WKV7 reference (wkv7.ts)', () => {
    const { rng, weights, lora, ids, labels, initStates } = setup();
    const fwd = forwardRef(weights, lora, ids, B, T, { labels, initStates });
    const bwd = backwardRef(fwd);
    const act = fwd.cache.layers[1].att;
    const g = bwd.layers[1].att;
    const inputs = {
      B, T, H, N: CFG.headSize, r: act.r, w: act.wRaw, k: act.kt, v: act.v,
      a: act.kk.map((v) => -v), b: act.kk.map((v, i) => v * act.a[i]), s0: initStates[1],
    };
    // wkv7.ts rounds W_SCALE to 10 digits (−0.6065306597 vs −e^{−0.5}): ~1e-11 relative.
    const ws = wkv7RefForward(inputs);
    expectClose('y vs wkv7.ts', act.y, ws.y, 1e-9, rng);
    expectClose('final state vs wkv7.ts', act.finalState, ws.sT, 1e-9, rng);
    const wg = wkv7RefBackward(inputs, g.dy);
    expectClose('dw_raw vs wkv7.ts', g.dwRaw, wg.dw, 1e-9, rng);
    expectClose('dkk vs wkv7.ts', g.dkk, wg.da.map((d, i) => -d + wg.db[i] * act.a[i]), 1e-9, rng);
    expectClose('dS0 vs wkv7.ts', g.dState0, wg.ds0, 1e-9, rng);
  });

  it('zero initial states equal no initial states', () => {
    const { rng, weights, lora, ids } = setup();
    const zeros = [new Float64Array(H * NN), new Float64Array(B * H * NN)];
    const a = forwardRef(weights, lora, ids, B, T).logits;
    const b = forwardRef(weights, lora, ids, B, T, { initStates: zeros }).logits;
    expectClose('zero states', b, a, 0, rng);
  });
});

describe('rwkv7 reference backward vs central finite differences', () => {
  it('every LoRA A/B, LayerNorm/GroupNorm parameter and initial state', () => {
    const { rng, weights, lora, ids, labels, initStates } = setup();
    const fwd = forwardRef(weights, lora, ids, B, T, { labels, initStates });
    const { grads } = backwardRef(fwd, { trainLn: true });
    const loss = () => forwardRef(weights, lora, ids, B, T, { labels, initStates }).loss;

    const names = [...lora.tensors.keys(), ...lnParamNames(CFG.nLayer)];
    expect(names.length).toBe(2 * 6 * CFG.nLayer + 2 + 6 * CFG.nLayer + 2);
    for (const [key, t] of lora.tensors) checkGrad(key, loss, t.data, grads.get(key), rng);
    for (const key of lnParamNames(CFG.nLayer)) checkGrad(key, loss, weights.get(key)!.data, grads.get(key), rng);
    for (let n = 0; n < CFG.nLayer; n++) {
      const key = `blocks.${n}.att.time_state`;
      expect(grads.get(key)!.length).toBe(initStates[n].length);
      checkGrad(key, loss, initStates[n], grads.get(key), rng);
    }
    expect([...grads.keys()].sort()).toEqual([...names, 'blocks.0.att.time_state', 'blocks.1.att.time_state'].sort());
  });

  it('without trainLn or states only the LoRA gradients come back', () => {
    const { weights, lora, ids, labels } = setup();
    const { grads } = backwardRef(forwardRef(weights, lora, ids, B, T, { labels }));
    expect([...grads.keys()].sort()).toEqual([...lora.tensors.keys()].sort());
  });

  it('L2Wrap: gradient of loss + 1e-4/(2·B·T)·Σ max logit², unscaled by gradOutput', () => {
    const { rng, weights, lora, ids, labels } = setup();
    const fwd = forwardRef(weights, lora, ids, B, T, { labels });
    const withL2 = backwardRef(fwd, { l2wrap: true, trainLn: true }).grads;
    const lossL2 = () => {
      const f = forwardRef(weights, lora, ids, B, T, { labels });
      return f.loss + maxLogitPenalty(f.logits, CFG.vocab);
    };
    for (const key of ['blocks.0.att.receptance.lora_A', 'blocks.1.ffn.value.lora_B']) {
      checkGrad(`${key} with L2Wrap`, lossL2, lora.tensors.get(key)!.data, withL2.get(key), rng);
    }
    checkGrad('ln_out.weight with L2Wrap', lossL2, weights.get('ln_out.weight')!.data, withL2.get('ln_out.weight'), rng);

    // gradOutput = 0 leaves exactly L2Wrap's part: check it alone against the penalty.
    const onlyL2 = backwardRef(fwd, { l2wrap: true, gradOutput: 0 }).grads;
    const penalty = () => maxLogitPenalty(forwardRef(weights, lora, ids, B, T).logits, CFG.vocab);
    checkGrad('blocks.0.att.key.lora_B, L2Wrap alone', penalty, lora.tensors.get('blocks.0.att.key.lora_B')!.data, onlyL2.get('blocks.0.att.key.lora_B'), rng);

    // gradOutput scales the loss gradient only.
    const ce = backwardRef(fwd).grads;
    const scaled = backwardRef(fwd, { l2wrap: true, gradOutput: 0.25 }).grads;
    for (const [key, g] of scaled) {
      const expected = ce.get(key)!.map((v, i) => 0.25 * v + onlyL2.get(key)![i]);
      expectClose(`${key} with gradOutput 0.25`, g, expected, 1e-13, rng);
    }
  });

  it('all labels −100: loss NaN, only L2Wrap drives the gradient', () => {
    const { weights, lora, ids } = setup();
    const fwd = forwardRef(weights, lora, ids, B, T, { labels: ids.map(() => -100) });
    expect(fwd.loss).toBeNaN();
    const { dLogits } = backwardRef(fwd, { l2wrap: true });
    expect(dLogits.filter((v) => v !== 0).length).toBe(B * T);
  });
});
