import { describe, expect, it } from 'vitest';
import type { GpuRuntime } from '../../src/gpu/device.js';
import { bf16BitsToF32, packBf16, type Tensor } from '../../src/gpu/tensor.js';
import { embedding, embeddingBackward } from '../../src/kernels/embedding.js';
import { expectClose, f32, finiteDiff, freshRng, getGpu, poison, relErr, type Rng } from '../helpers.js';

// ---- float64 references (ids ≥ V give zero rows and no gradient) ----

function forwardRef(ids: ArrayLike<number>, table: Float64Array, V: number, C: number): Float64Array {
  const out = new Float64Array(ids.length * C);
  for (let m = 0; m < ids.length; m++) {
    const id = ids[m] >>> 0;
    if (id < V) for (let c = 0; c < C; c++) out[m * C + c] = table[id * C + c];
  }
  return out;
}

function backwardRef(ids: ArrayLike<number>, dOut: Float64Array, V: number, C: number): Float64Array {
  const dTable = new Float64Array(V * C);
  for (let m = 0; m < ids.length; m++) {
    const id = ids[m] >>> 0;
    if (id < V) for (let c = 0; c < C; c++) dTable[id * C + c] += dOut[m * C + c];
  }
  return dTable;
}

/** Token ids drawn from a few ids (so most repeat), plus some out of range. */
function tokenIds(rng: Rng, M: number, V: number, signed: boolean): number[] {
  const pool = Array.from({ length: Math.min(V, 1 + rng.int(40)) }, () => rng.int(V));
  return Array.from({ length: M }, (_, m) => {
    if (m % 13 === 5) return [V, V + 7, signed ? -1 : 0xffffffff][rng.int(3)];
    return rng.next() < 0.7 ? pool[rng.int(pool.length)] : rng.int(V);
  });
}

function uploadIds(gpu: GpuRuntime, ids: number[], signed: boolean): Tensor {
  return signed ? gpu.upload(Int32Array.from(ids), [ids.length], 'i32', 'ids') : gpu.upload(Uint32Array.from(ids), [ids.length], 'u32', 'ids');
}

const dot = (a: Float64Array, b: Float64Array): number => a.reduce((s, v, i) => s + v * b[i], 0);

describe('embedding references', () => {
  it('backward matches central differences, repeats and out-of-range ids included', () => {
    const rng = freshRng();
    const [V, C] = [5, 3];
    const ids = [1, 3, 1, 9, 1, 0];
    const table = rng.normals(V * C);
    const R = rng.normals(ids.length * C);
    const fd = finiteDiff((t) => dot(forwardRef(ids, t, V, C), R), table, [...Array(V * C).keys()]);
    expectClose('dTable vs FD', backwardRef(ids, R, V, C), fd, 1e-7, rng);
  });
});

// (M, V, C): partial workgroups throughout (C not a multiple of 256, M odd).
const sizes: [number, number, number][] = [
  [1, 50, 64],
  [17, 300, 96],
  [129, 1000, 128],
  [1000, 3000, 768],
];

describe('embedding forward', () => {
  for (const [M, V, C] of sizes) {
    for (const dtype of ['bf16', 'f32'] as const) {
      for (const signed of [false, true]) {
        it(`M ${M}, V ${V}, C ${C}, ${dtype} table, ${signed ? 'i32' : 'u32'} ids`, async () => {
          const gpu = await getGpu();
          const rng = freshRng();
          const ids = tokenIds(rng, M, V, signed);
          let table = rng.normals(V * C, 0.5);
          let tt: Tensor;
          if (dtype === 'bf16') {
            const bits = packBf16(table);
            table = Float64Array.from(bits.subarray(0, V * C), bf16BitsToF32);
            tt = gpu.upload(bits, [V, C], 'bf16', 'emb.weight');
          } else {
            tt = gpu.upload(f32(table), [V, C], 'f32', 'emb.weight');
            table = Float64Array.from(f32(table));
          }
          const tids = uploadIds(gpu, ids, signed);
          const out = gpu.tensor([M, C], 'f32', 'x');
          poison(gpu, out);
          embedding(gpu, tids, tt, out);
          // A copy: exact.
          expectClose('embedding', await gpu.readF32(out), forwardRef(ids, table, V, C), 0, rng);
          for (const t of [tt, tids, out]) gpu.free(t);
        });
      }
    }
  }
});

// Sums of up to M f32 values in token order against float64.
const BWD_BOUND = 1e-6;

describe('embeddingBackward', () => {
  const cases: [number, number, number, string][] = [
    ...sizes.map(([M, V, C]) => [M, V, C, 'repeats'] as [number, number, number, string]),
    [1000, 40, 64, 'one id'],
    [8192, 65536, 16, 'World vocabulary, 8192 tokens'],
  ];
  for (const [M, V, C, kind] of cases) {
    for (const accumulate of [false, true]) {
      it(`M ${M}, V ${V}, C ${C}, ${kind}${accumulate ? ', accumulating' : ''}`, async () => {
        const gpu = await getGpu();
        const rng = freshRng();
        const signed = M % 2 === 1;
        const ids = kind === 'one id' ? new Array<number>(M).fill(V - 1) : tokenIds(rng, M, V, signed);
        const dOut = rng.normals(M * C);
        const d0 = accumulate ? rng.normals(V * C) : new Float64Array(V * C);
        const tids = uploadIds(gpu, ids, signed);
        const tdOut = gpu.upload(f32(dOut), [M, C], 'f32', 'dx');
        const tdT = gpu.upload(f32(d0), [V, C], 'f32', 'dEmb');
        if (!accumulate) poison(gpu, tdT);
        embeddingBackward(gpu, tids, tdOut, tdT, { accumulate });
        const ref = backwardRef(ids, Float64Array.from(f32(dOut)), V, C).map((v, i) => v + Math.fround(d0[i]));
        expectClose('dEmb', await gpu.readF32(tdT), ref, BWD_BOUND, rng);
        for (const t of [tids, tdOut, tdT]) gpu.free(t);
      });
    }
  }

  it('is bit-identical from run to run', async () => {
    const gpu = await getGpu();
    const rng = freshRng();
    const [M, V, C] = [1000, 30, 96];
    const ids = tokenIds(rng, M, V, false);
    const tids = uploadIds(gpu, ids, false);
    const tdOut = gpu.upload(f32(rng.normals(M * C)), [M, C], 'f32', 'dx');
    const tdT = gpu.tensor([V, C], 'f32', 'dEmb');
    embeddingBackward(gpu, tids, tdOut, tdT);
    const first = await gpu.readF32(tdT);
    poison(gpu, tdT);
    embeddingBackward(gpu, tids, tdOut, tdT);
    expect(relErr(await gpu.readF32(tdT), first)).toBe(0);
    for (const t of [tids, tdOut, tdT]) gpu.free(t);
  });
});

describe('embedding argument checks', () => {
  it('names the offending tensor', async () => {
    const gpu = await getGpu();
    const ids = gpu.tensor([4], 'u32', 'ids');
    const table = gpu.tensor([10, 8], 'bf16', 'emb.weight');
    const out = gpu.tensor([4, 8], 'f32', 'x');
    expect(() => embedding(gpu, gpu.tensor([4], 'f32', 'fids'), table, out)).toThrow(/fids is f32, expected u32 or i32 token ids/);
    expect(() => embedding(gpu, ids, gpu.tensor([80], 'bf16', 'flat'), out)).toThrow(/flat\[80\]:bf16 should be \[V, C\]/);
    expect(() => embedding(gpu, ids, gpu.tensor([10, 8], 'f16', 'half'), out)).toThrow(/half is f16, expected bf16 or f32/);
    expect(() => embedding(gpu, ids, table, gpu.tensor([4, 7], 'f32', 'x7'))).toThrow(/x7\[4,7\]:f32 should be \[M, C\] = \[4, 8\]/);
    expect(() => embeddingBackward(gpu, ids, out, table)).toThrow(/emb.weight is bf16, expected f32/);
    expect(() => embeddingBackward(gpu, ids, gpu.tensor([3, 8], 'f32', 'dx'), gpu.tensor([10, 8], 'f32', 'dEmb'))).toThrow(/dx\[3,8\]:f32 should be \[M, C\] = \[4, 8\]/);
  });
});
