/**
 * The Ai00 / web-rwkv safetensors layout: the converter's key renames and
 * transposes on x070 and x060 names, f16 rounding against hand-computed bits,
 * the Rust reader's header rules checked on the bytes, reading back in the .pth
 * orientation, and the merged model and Ai00 LoRA checked against W + (α/r)·B·A
 * computed in float64 here.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ai00Name, pthName, toAi00Lora, toAi00Model, writeAi00Lora, writeAi00Model } from '../../src/io/ai00.js';
import { fileSource } from '../../src/io/byte_source.js';
import { hostFromF32, hostToF16, hostToF32, type CheckpointTensor } from '../../src/io/host_tensor.js';
import { loraMetaTensors } from '../../src/io/lora_meta.js';
import { loadCheckpoint, modelInfo, openCheckpoint, writeCheckpoint } from '../../src/io/model_file.js';
import { SafetensorsReader, writeSafetensors } from '../../src/io/safetensors.js';
import { rwkv7Shapes, type Rwkv7Dims } from '../../src/model/rwkv7_config.js';
import { readAdapter } from '../../src/train/adapter.js';
import { mergeLora } from '../../src/train/merge.js';
import { freshRng, relErr } from '../helpers.js';

const dir = mkdtempSync(join(tmpdir(), 'rwkv-io-ai00-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** C = 8 and every low-rank size differs from it, so a transpose always shows in the shape. */
const DIMS: Rwkv7Dims = { nLayer: 2, nEmbd: 8, headSize: 4, nHead: 2, vocab: 11, ffnHidden: 32, dW: 4, dA: 6, dV: 2, dG: 5 };
const rng = freshRng();

function randomTensors(shapes: Iterable<[string, number[]]>, std = 0.1, dtype: 'bf16' | 'f32' = 'bf16'): CheckpointTensor[] {
  return [...shapes].map(([name, shape]) => hostFromF32(name, shape, Array.from(rng.normals(shape.reduce((a, b) => a * b, 1), std)), dtype));
}

const bitsOf = (t: CheckpointTensor): number[] => Array.from(new Uint16Array(t.data.slice().buffer));
const byName = (ts: Iterable<CheckpointTensor>): Map<string, CheckpointTensor> => new Map([...ts].map((t) => [t.name, t]));

/**
 * float64 W + (alpha/r)·B·A with B(o, k) and A(k, i) read through accessors (the .pth and
 * the Ai00 layouts store them differently), and each element's scale |W| + (alpha/r)·Σ|B·A|.
 */
function mergeRef(
  w: ArrayLike<number>,
  B: (o: number, k: number) => number,
  A: (k: number, i: number) => number,
  nOut: number,
  nIn: number,
  r: number,
  alpha: number,
): { ref: Float64Array; scale: Float64Array } {
  const ref = new Float64Array(nOut * nIn);
  const scale = new Float64Array(nOut * nIn);
  for (let o = 0; o < nOut; o++) {
    for (let i = 0; i < nIn; i++) {
      let sum = 0;
      let abs = 0;
      for (let k = 0; k < r; k++) {
        sum += B(o, k) * A(k, i);
        abs += Math.abs(B(o, k) * A(k, i));
      }
      ref[o * nIn + i] = w[o * nIn + i] + (alpha / r) * sum;
      scale[o * nIn + i] = Math.abs(w[o * nIn + i]) + (alpha / r) * abs;
    }
  }
  return { ref, scale };
}

/** |got − want| within half an f16 ulp of want (2^-11 relative; 2^-25 in the subnormal range) plus `slack`. */
function expectWithinF16(got: ArrayLike<number>, want: ArrayLike<number>, what: string, slack: (i: number) => number = () => 0): void {
  expect(got.length, what).toBe(want.length);
  for (let i = 0; i < want.length; i++) {
    const bound = Math.abs(want[i]) * 2 ** -11 + 2 ** -25 + slack(i);
    if (!(Math.abs(got[i] - want[i]) <= bound)) {
      throw new Error(`${what}[${i}]: ${got[i]} vs ${want[i]} (bound ${bound}) [seed ${rng.seed}]`);
    }
  }
}

describe('key renames and transposes', () => {
  it('x070: keeps the names, transposes exactly att.{w,a,g,v}{1,2}, values moved not changed', () => {
    const src = randomTensors(rwkv7Shapes(DIMS));
    const out = toAi00Model(src);
    expect(out.map((t) => t.name)).toEqual(src.map((t) => t.name));
    const transposed = new Set(['blocks.0.att.w1', 'blocks.0.att.w2', 'blocks.0.att.a1', 'blocks.0.att.a2', 'blocks.0.att.g1', 'blocks.0.att.g2',
      'blocks.1.att.w1', 'blocks.1.att.w2', 'blocks.1.att.a1', 'blocks.1.att.a2', 'blocks.1.att.g1', 'blocks.1.att.g2', 'blocks.1.att.v1', 'blocks.1.att.v2']);
    for (const [i, t] of out.entries()) {
      const s = src[i];
      expect(t.dtype, t.name).toBe('f16');
      const want = hostToF32(hostToF16(s));
      const got = hostToF32(t);
      if (transposed.has(t.name)) {
        const [rows, cols] = s.shape;
        expect(t.shape, t.name).toEqual([cols, rows]);
        for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) expect(got[c * rows + r]).toBe(want[r * cols + c]);
      } else {
        expect(t.shape, t.name).toEqual(s.shape);
        expect(got, t.name).toEqual(want);
      }
    }
    expect(out.filter((t) => t.shape.join() !== src.find((s) => s.name === t.name)!.shape.join()).map((t) => t.name).sort()).toEqual([...transposed].sort());
  });

  it('x060, LoRA and state names: renamed by substring, then transposed by the new name', () => {
    // [.pth name, .pth shape, converted name, converted shape], written out by hand from convert_safetensors.py's lists
    const table: [string, number[], string, number[]][] = [
      ['emb.weight', [11, 8], 'emb.weight', [11, 8]],
      ['blocks.0.ln1.weight', [8], 'blocks.0.ln1.weight', [8]],
      ['blocks.0.att.time_maa_x', [1, 1, 8], 'blocks.0.att.time_mix_x', [1, 1, 8]],
      ['blocks.0.att.time_maa_w', [1, 1, 8], 'blocks.0.att.time_mix_w', [1, 1, 8]],
      ['blocks.0.att.time_maa_w1', [8, 10], 'blocks.0.att.time_mix_w1', [10, 8]],
      ['blocks.0.att.time_maa_w2', [5, 2, 8], 'blocks.0.att.time_mix_w2', [5, 8, 2]],
      ['blocks.0.att.time_decay', [1, 1, 8], 'blocks.0.att.time_decay', [1, 1, 8]],
      ['blocks.0.att.time_decay_w1', [8, 4], 'blocks.0.att.time_decay_w1', [4, 8]],
      ['blocks.0.att.time_decay_w2', [4, 8], 'blocks.0.att.time_decay_w2', [8, 4]],
      ['blocks.0.att.time_faaaa', [2, 4], 'blocks.0.att.time_first', [2, 4]],
      ['blocks.0.att.gate.weight', [8, 8], 'blocks.0.att.gate.weight', [8, 8]],
      ['blocks.0.ffn.time_maa_k', [1, 1, 8], 'blocks.0.ffn.time_mix_k', [1, 1, 8]],
      ['blocks.0.ffn.key.weight', [28, 8], 'blocks.0.ffn.key.weight', [28, 8]],
      ['blocks.1.att.time_state', [2, 3, 4], 'blocks.1.att.time_state', [2, 4, 3]],
      ['blocks.1.att.key.lora_A', [4, 8], 'blocks.1.att.key.lora.0', [8, 4]],
      ['blocks.1.att.key.lora_B', [8, 4], 'blocks.1.att.key.lora.1', [8, 4]],
    ];
    const src = randomTensors(table.map(([n, s]) => [n, s]));
    const out = toAi00Model(src);
    expect(out.map((t) => [t.name, t.shape])).toEqual(table.map(([, , n, s]) => [n, s]));
    for (const [name] of table) expect(pthName(ai00Name(name))).toBe(name);
    // 3-D: each [D, C] plane of time_maa_w2 transposed
    const w2 = hostToF32(hostToF16(src[5]));
    const got = hostToF32(out[5]);
    for (let b = 0; b < 5; b++) for (let d = 0; d < 2; d++) for (let c = 0; c < 8; c++) expect(got[b * 16 + c * 2 + d]).toBe(w2[b * 16 + d * 8 + c]);
  });
});

describe('f16 rounding', () => {
  it('rounds f32 to nearest even, ties and subnormals included, as hand-computed', () => {
    const cases: [number, number][] = [
      [1, 0x3c00],
      [1 + 2 ** -11, 0x3c00], // tie between 0x3c00 and 0x3c01: even
      [1 + 3 * 2 ** -11, 0x3c02], // tie between 0x3c01 and 0x3c02: even
      [1 + 2 ** -11 + 2 ** -20, 0x3c01], // just above the tie
      [-(1 + 3 * 2 ** -11), 0xbc02],
      [65504, 0x7bff],
      [65519, 0x7bff], // below the 65520 midpoint
      [2 ** -14, 0x0400], // smallest normal
      [2 ** -14 - 2 ** -25, 0x0400], // 1023.5 × 2^-24: tie, up to the even 1024
      [2 ** -24, 0x0001], // smallest subnormal
      [2 ** -25, 0x0000], // tie between 0 and 2^-24: even
      [2 ** -25 + 2 ** -35, 0x0001],
      [3 * 2 ** -25, 0x0002], // 1.5 × 2^-24: even
      [5 * 2 ** -26, 0x0001], // 1.25 × 2^-24
      [-(2 ** -25), 0x8000],
      [0, 0x0000],
      [Infinity, 0x7c00], // already infinite: kept, not an overflow
    ];
    const t = hostFromF32('x', [cases.length], cases.map((c) => c[0]), 'f16');
    expect(bitsOf(t).map((b) => b.toString(16))).toEqual(cases.map((c) => c[1].toString(16)));
  });

  it('rounds bf16 weights (which are exact in f16 except below 2^-14) in the conversion', () => {
    const cases: [number, number][] = [
      [1.5, 0x3e00],
      [-2, 0xc000],
      [65280, 0x7bf8], // the largest bf16 below 65504
      [2 ** -18 * (1 + 2 ** -7), 0x0040], // 64.5 × 2^-24: tie, even 64
      [2 ** -18 * (1 + 3 * 2 ** -7), 0x0042], // 65.5 × 2^-24: tie, even 66
      [3 * 2 ** -25, 0x0002],
      [2 ** -25, 0x0000],
    ];
    const bf16 = hostFromF32('blocks.0.ln1.weight', [cases.length], cases.map((c) => c[0]), 'bf16');
    expect(Array.from(hostToF32(bf16))).toEqual(cases.map((c) => c[0])); // the inputs are exact in bf16
    const [out] = toAi00Model([bf16]);
    expect(bitsOf(out).map((b) => b.toString(16))).toEqual(cases.map((c) => c[1].toString(16)));
  });

  it('a value beyond the f16 range is an error naming the tensor, not an infinity', () => {
    expect(() => hostFromF32('x', [2], [1, 65520], 'f16')).toThrow('tensor x: value 65520 (element 1) is beyond the f16 range (±65504)');
    const big = hostFromF32('blocks.1.att.key.weight', [3], [0, -65536, 1], 'bf16');
    expect(() => toAi00Model([big])).toThrow('tensor blocks.1.att.key.weight: value -65536 (element 1) is beyond the f16 range');
    expect(() => writeAi00Model(join(dir, 'overflow.st'), [big])).toThrow(/blocks\.1\.att\.key\.weight/);
  });
});

/** The header checks of huggingface/safetensors' Rust reader (which web-rwkv and Ai00 use), on the raw bytes. */
function checkRustReaderRules(bytes: Uint8Array): { metadata: unknown; entries: [string, { dtype: string; shape: number[]; data_offsets: [number, number] }][] } {
  const n = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
  expect(n % 8, 'data starts 8-aligned').toBe(0);
  const text = new TextDecoder().decode(bytes.subarray(8, 8 + n));
  expect(text.startsWith('{')).toBe(true);
  expect(text.slice(text.lastIndexOf('}') + 1)).toMatch(/^ *$/);
  const header = JSON.parse(text) as Record<string, unknown>;
  const { __metadata__: metadata, ...rest } = header;
  const entries = Object.entries(rest) as [string, { dtype: string; shape: number[]; data_offsets: [number, number] }][];
  const sorted = [...entries].sort((a, b) => a[1].data_offsets[0] - b[1].data_offsets[0]);
  let at = 0;
  for (const [name, e] of sorted) {
    expect(e.data_offsets[0], `${name} starts where the previous tensor ends`).toBe(at);
    const size = { F16: 2, F32: 4, BF16: 2 }[e.dtype]!;
    expect(e.data_offsets[1] - e.data_offsets[0], `${name} spans its shape`).toBe(e.shape.reduce((a, b) => a * b, 1) * size);
    at = e.data_offsets[1];
  }
  expect(8 + n + at, 'the data ends at the end of the file').toBe(bytes.length);
  return { metadata, entries: sorted };
}

describe('Ai00 merged model files', () => {
  const src = randomTensors(rwkv7Shapes(DIMS));
  const path = join(dir, 'model.st');
  writeAi00Model(path, src);

  it("passes the Rust reader's header rules: format pt, F16 only, sorted by name, contiguous, exact length", () => {
    const { metadata, entries } = checkRustReaderRules(readFileSync(path));
    expect(metadata).toEqual({ format: 'pt' });
    expect(entries.every(([, e]) => e.dtype === 'F16')).toBe(true);
    const names = entries.map(([n]) => n);
    expect(names).toEqual([...names].sort());
    expect(names.length).toBe(src.length);
    expect(Object.fromEntries(entries)['blocks.1.att.v1'].shape).toEqual([DIMS.dV, DIMS.nEmbd]);
  });

  it('reads back in the .pth names and orientation, equal to the bf16 source within f16 rounding', () => {
    const r = openCheckpoint(path);
    try {
      expect(r.ai00Layout).toBe(true);
    } finally {
      r.close();
    }
    const back = loadCheckpoint(path);
    expect([...back.keys()].sort()).toEqual(src.map((t) => t.name).sort());
    for (const t of src) {
      const b = back.get(t.name)!;
      expect([b.dtype, b.shape], t.name).toEqual(['f16', t.shape]);
      expectWithinF16(hostToF32(b), hostToF32(t), t.name);
    }
    const info = modelInfo(path);
    expect(info).toContain('Ai00/web-rwkv layout');
    expect(info).toContain('architecture: RWKV-7 (x070), full model');
    expect(info).toContain('dimensions: layers 2, n_embd 8, heads 2 × 4, vocab 11, ffn 32');
    expect(info).toContain('low-rank sizes: w 4, a 6, v 2, g 5');
    expect(info).not.toContain('problem');
  });

  it('leaves safetensors in the .pth layout as they are, F16 and format pt included', () => {
    const f16 = src.map(hostToF16);
    const plain = join(dir, 'plain-f16.st');
    writeSafetensors(plain, f16, { metadata: { format: 'pt' } });
    const r = openCheckpoint(plain);
    try {
      expect(r.ai00Layout).toBeUndefined();
      expect(r.tensors.find((t) => t.name === 'blocks.0.att.w1')!.shape).toEqual([DIMS.nEmbd, DIMS.dW]);
    } finally {
      r.close();
    }
    // transposed but bf16: not something web-rwkv loads, so not taken for its layout
    const bf16 = join(dir, 'transposed-bf16.st');
    writeSafetensors(bf16, src.map((t) => (/att\.[wagv][12]$/.test(t.name) ? { ...t, shape: [t.shape[1], t.shape[0]] } : t)), { metadata: { format: 'pt' } });
    expect(loadCheckpoint(bf16).get('blocks.0.att.w1')!.shape).toEqual([DIMS.dW, DIMS.nEmbd]);
  });
});

describe('merge to Ai00 and the Ai00 LoRA', () => {
  const C = DIMS.nEmbd;
  const F = DIMS.ffnHidden;
  const r = 4;
  const alpha = 8;
  const modules: [string, number, number][] = []; // [prefix, in, out]
  for (let l = 0; l < DIMS.nLayer; l++) {
    for (const m of ['receptance', 'key', 'value', 'output']) modules.push([`blocks.${l}.att.${m}`, C, C]);
    modules.push([`blocks.${l}.ffn.key`, C, F], [`blocks.${l}.ffn.value`, F, C]);
  }
  const vectors: [string, number[]][] = [['blocks.1.ln1.weight', [C]], ['blocks.0.att.ln_x.bias', [C]]];
  const base = randomTensors(rwkv7Shapes(DIMS));
  const adapter = [
    ...randomTensors(modules.flatMap(([p, nIn, nOut]): [string, number[]][] => [[`${p}.lora_A`, [r, nIn]], [`${p}.lora_B`, [nOut, r]]]), 0.3),
    ...randomTensors(vectors, 0.5),
    ...loraMetaTensors(alpha, r),
  ];
  const basePath = join(dir, 'base.pth');
  const loraPath = join(dir, 'lora.pth');
  const mergedPath = join(dir, 'merged.st');
  writeCheckpoint(basePath, base);
  writeCheckpoint(loraPath, adapter);
  const W = byName(base);

  it('writes W + (alpha/r)·B·A (float64 here) in the Ai00 layout, within f16 rounding', () => {
    const res = mergeLora({ base: basePath, lora: loraPath, out: mergedPath });
    expect([res.alpha, res.r, res.warnings]).toEqual([alpha, r, []]);
    const raw = new SafetensorsReader(fileSource(mergedPath));
    try {
      expect(raw.metadata).toEqual({ format: 'pt' });
      expect(raw.tensors.every((t) => t.dtype === 'f16')).toBe(true);
      expect(raw.tensors.find((t) => t.name === 'blocks.0.att.g1')!.shape).toEqual([DIMS.dG, C]);
    } finally {
      raw.close();
    }
    const merged = loadCheckpoint(mergedPath);
    const A = byName(adapter);
    let moved = 0;
    for (const [p, nIn, nOut] of modules) {
      const w = hostToF32(W.get(`${p}.weight`)!);
      const a = hostToF32(A.get(`${p}.lora_A`)!);
      const b = hostToF32(A.get(`${p}.lora_B`)!);
      const { ref, scale } = mergeRef(w, (o, k) => b[o * r + k], (k, i) => a[k * nIn + i], nOut, nIn, r, alpha);
      for (let e = 0; e < ref.length; e++) if (Math.abs(ref[e] - w[e]) > 1e-2) moved++;
      // slack: the f32 arithmetic of the merge (a few roundings of 2^-24 relative to the terms)
      expectWithinF16(hostToF32(merged.get(`${p}.weight`)!), ref, p, (i) => 2 ** -20 * scale[i]);
    }
    expect(moved).toBeGreaterThan(100);
    for (const [name] of vectors) expect(hostToF32(merged.get(name)!), name).toEqual(hostToF32(hostToF16(A.get(name)!)));
    for (const name of ['emb.weight', 'blocks.0.att.w1', 'blocks.1.att.r_k', 'head.weight']) expectWithinF16(hostToF32(merged.get(name)!), hostToF32(W.get(name)!), name);
  });

  it("the Ai00 LoRA file holds lora.0 = Aᵀ, lora.1 = B and the vectors; Ai00's W + (alpha/r)·(lora.1 @ lora.0ᵀ) gives the merge", () => {
    const path = join(dir, 'lora.st');
    writeAi00Lora(path, loadCheckpoint(loraPath).values());
    const { metadata, entries } = checkRustReaderRules(readFileSync(path));
    expect(metadata).toEqual({ format: 'pt' });
    const want = [
      ...modules.flatMap(([p, nIn, nOut]) => [[`${p}.lora.0`, 'F16', [nIn, r]], [`${p}.lora.1`, 'F16', [nOut, r]]]),
      ...vectors.map(([n, s]) => [n, 'F16', s]),
      ['lora_alpha', 'F32', []],
      ['lora_r', 'F32', []],
    ];
    expect(entries.map(([n, e]) => [n, e.dtype, e.shape]).sort()).toEqual(want.sort());

    const raw = new SafetensorsReader(fileSource(path));
    const merged = loadCheckpoint(mergedPath);
    try {
      for (const [p, nIn, nOut] of modules) {
        const x = raw.read(`${p}.lora.0`); // [in, r]
        const y = raw.read(`${p}.lora.1`); // [out, r]
        const rank = x.shape[1];
        const xv = hostToF32(x);
        const yv = hostToF32(y);
        const w = hostToF32(W.get(`${p}.weight`)!);
        const { ref, scale } = mergeRef(w, (o, k) => yv[o * rank + k], (k, i) => xv[i * rank + k], nOut, nIn, rank, alpha);
        expectWithinF16(hostToF32(merged.get(`${p}.weight`)!), ref, p, (i) => 2 ** -20 * scale[i]);
      }
      // Ai00 replaces vectors with the LoRA file's
      for (const [name] of vectors) expect(hostToF32(raw.read(name)), name).toEqual(hostToF32(merged.get(name)!));
    } finally {
      raw.close();
    }

    // Read back as an adapter: the .pth names and orientation, alpha and r.
    const back = readAdapter(path);
    expect([back.alpha, back.r]).toEqual([alpha, r]);
    const A = byName(adapter);
    expect([...back.tensors.keys()].sort()).toEqual(adapter.filter((t) => !/^lora_(alpha|r)$/.test(t.name)).map((t) => t.name).sort());
    for (const [name, v] of back.tensors) {
      expect(back.shapes.get(name), name).toEqual(A.get(name)!.shape);
      expectWithinF16(v, hostToF32(A.get(name)!), name);
    }
    expect(modelInfo(path)).toContain(`LoRA: r ${r}, alpha ${alpha}, targets att.key, att.output, att.receptance, att.value, ffn.key, ffn.value`);
  });

  it('refuses full matrices other than LoRA pairs in an Ai00 LoRA (Ai00 would add them to the weights)', () => {
    const [w1] = randomTensors([['blocks.0.att.w1', [C, DIMS.dW]]]);
    expect(() => toAi00Lora([w1])).toThrow('tensor blocks.0.att.w1 [8,4] cannot go into an Ai00 LoRA file');
    const [xr] = randomTensors([['blocks.0.att.x_r', [1, 1, C]]]);
    expect(toAi00Lora([xr])[0].shape).toEqual([1, 1, C]);
  });

  it('takes an Ai00 merged model as the base of another merge', () => {
    const baseSt = join(dir, 'base.st');
    writeAi00Model(baseSt, base);
    const fromSt = join(dir, 'from-st.pth');
    const fromPth = join(dir, 'from-pth.pth');
    mergeLora({ base: baseSt, lora: loraPath, out: fromSt });
    mergeLora({ base: basePath, lora: loraPath, out: fromPth });
    const a = loadCheckpoint(fromSt);
    const b = loadCheckpoint(fromPth);
    expect([...a.keys()].sort()).toEqual([...b.keys()].sort());
    // bf16 weights are exact in f16 (but for the rare subnormal), so both merges agree to bf16 rounding
    for (const [name, t] of b) expect(relErr(hostToF32(a.get(name)!), hostToF32(t)), name).toBeLessThan(2 ** -8);
  });
});
