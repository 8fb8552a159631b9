import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { BinidxReader, writeBinidx } from '../../src/data/binidx.js';
import { magicPrimeOffset } from '../../src/data/magic_prime.js';
import { DocumentSampler, IGNORE_INDEX, MagicPrimeSampler } from '../../src/data/sampling.js';
import { freshRng, type Rng } from '../helpers.js';
import { tempDir } from './fixtures.js';

/** RWKV-PEFT binidx.py `pad` + dataset.py, written out on plain arrays. */
function peftReference(docs: number[][], idx: number, ctxLen: number): { x: number[]; y: number[] } {
  const flat = docs.flat();
  const ptr = docs.slice(0, idx).reduce((s, d) => s + d.length, 0);
  const size = docs[idx].length;
  const length = ctxLen + 1;
  const dix = ptr + length <= flat.length ? flat.slice(ptr, ptr + length) : [...docs[idx], ...flat.slice(0, length - size)];
  const x = dix.slice(0, -1);
  const minLen = Math.min(size, length);
  for (let k = minLen; k < dix.length; k++) dix[k] = IGNORE_INDEX;
  return { x, y: dix.slice(1) };
}

function randomDocs(rng: Rng, sizes: number[]): number[][] {
  return sizes.map((n) => [...Array.from({ length: n - 1 }, () => 1 + rng.int(65529)), 0]);
}

function openDocs(docs: number[][]): BinidxReader {
  const prefix = join(tempDir(), 'docs');
  writeBinidx(prefix, docs);
  return BinidxReader.open(prefix);
}

describe('per-document sampling (RWKV-PEFT --dataload pad)', () => {
  it('builds every row exactly as RWKV-PEFT does, over two shuffled epochs', () => {
    const rng = freshRng();
    const docs = randomDocs(rng, [1, 17, 129, 1000, 3, 2, 40, 130, 1, 18, 600, 5]);
    const reader = openDocs(docs);
    for (const ctxLen of [1, 17, 129, 1000]) {
      const sampler = new DocumentSampler(reader, { ctxLen, microBsz: 3, seed: rng.u32() });
      expect(sampler.stepsPerEpoch).toBe(4);
      for (let epoch = 0; epoch < 2; epoch++) {
        const seen: number[] = [];
        for (let s = 0; s < 4; s++) {
          const b = sampler.batch(epoch * 4 + s);
          expect([b.batch, b.ctxLen, b.inputs.length, b.labels.length]).toEqual([3, ctxLen, 3 * ctxLen, 3 * ctxLen]);
          for (const [row, doc] of b.origin.entries()) {
            const ref = peftReference(docs, doc, ctxLen);
            const what = `seed ${rng.seed} ctx ${ctxLen} doc ${doc}`;
            expect(Array.from(b.inputs.subarray(row * ctxLen, (row + 1) * ctxLen)), what).toEqual(ref.x);
            expect(Array.from(b.labels.subarray(row * ctxLen, (row + 1) * ctxLen)), what).toEqual(ref.y);
          }
          seen.push(...b.origin);
        }
        expect(seen.slice().sort((a, b) => a - b)).toEqual(docs.map((_, i) => i));
      }
    }
    reader.close();
  });

  it('is a deterministic function of seed and step; epochs differ; no shuffle is file order', () => {
    const rng = freshRng();
    const reader = openDocs(randomDocs(rng, Array.from({ length: 40 }, () => 2 + rng.int(30))));
    const seed = rng.u32();
    const a = new DocumentSampler(reader, { ctxLen: 8, microBsz: 4, seed });
    const b = new DocumentSampler(reader, { ctxLen: 8, microBsz: 4, seed });
    const epoch = (s: DocumentSampler, e: number): number[] => Array.from({ length: 10 }, (_, k) => s.documentsForStep(e * 10 + k)).flat();
    // Asking out of order gives the same answers.
    const b1 = epoch(b, 1);
    expect(epoch(a, 0)).toEqual(epoch(b, 0));
    expect(epoch(a, 1)).toEqual(b1);
    expect(a.batch(13)).toEqual(b.batch(13));
    expect(epoch(a, 0)).not.toEqual(epoch(a, 1));
    expect(epoch(new DocumentSampler(reader, { ctxLen: 8, microBsz: 4, seed: seed + 1 }), 0)).not.toEqual(epoch(a, 0));
    const ordered = new DocumentSampler(reader, { ctxLen: 8, microBsz: 4, seed, shuffle: false });
    expect(ordered.documentsForStep(0)).toEqual([0, 1, 2, 3]);
    expect(ordered.documentsForStep(11)).toEqual([4, 5, 6, 7]);
    // A subset per epoch: only the first documents, the last partial batch dropped.
    const head = new DocumentSampler(reader, { ctxLen: 8, microBsz: 4, seed, samplesPerEpoch: 10 });
    expect(head.stepsPerEpoch).toBe(2);
    const used = [head.documentsForStep(0), head.documentsForStep(1)].flat();
    expect(new Set(used).size).toBe(8);
    expect(used.every((d) => d < 10)).toBe(true);
    reader.close();
  });

  it('rejects settings the data cannot serve, naming the data and the field', () => {
    const reader = openDocs([[1, 2, 0], [3, 4, 5, 6, 0]]);
    const p = reader.name;
    const make = (o: object) => () => new DocumentSampler(reader, { ctxLen: 4, microBsz: 1, seed: 1, ...o });
    expect(make({ ctxLen: 6 })).toThrow(`${p}: ctx_len: expected at most 5, the longest document's token count, found 6: every sample would end in padding`);
    expect(make({ samplesPerEpoch: 3 })).toThrow(`${p}: samples per epoch: expected at most the 2 documents the data has (each sample is one document), found 3`);
    expect(make({ microBsz: 3 })).toThrow(`${p}: samples per epoch: expected at least micro_bsz = 3, found 2`);
    expect(make({ ctxLen: 0 })).toThrow('DocumentSampler ctx_len: expected a positive integer, found 0');
    expect(make({ microBsz: 1.5 })).toThrow('DocumentSampler micro_bsz: expected a positive integer, found 1.5');
    expect(() => new DocumentSampler(reader, { ctxLen: 4, microBsz: 1, seed: 1 }).batch(-1)).toThrow(`${p}: step: expected an integer >= 0, found -1`);
    reader.close();
  });
});

describe('magic-prime sampling (RWKV-LM)', () => {
  it('reads ctx_len+1 tokens of the flat stream at each sample offset, covering every chunk once per pass', () => {
    const rng = freshRng();
    // 10 000 tokens in uneven documents; ctx_len 128 gives p = 71 (the spec example).
    const sizes = [1, 17, 129, 1000, 8853];
    const docs = randomDocs(rng, sizes);
    const flat = docs.flat();
    const reader = openDocs(docs);
    const sampler = new MagicPrimeSampler(reader, { ctxLen: 128, microBsz: 4 });
    expect([sampler.magicPrime, sampler.stepsPerPass]).toEqual([71, 17]);
    const chunks = new Set<number>();
    for (let step = 0; step < 18; step++) {
      const b = sampler.batch(step);
      for (let row = 0; row < 4; row++) {
        const offset = magicPrimeOffset(71, 128, step * 4 + row);
        expect(b.origin[row]).toBe(offset);
        expect(Array.from(b.inputs.subarray(row * 128, row * 128 + 128))).toEqual(flat.slice(offset, offset + 128));
        expect(Array.from(b.labels.subarray(row * 128, row * 128 + 128))).toEqual(flat.slice(offset + 1, offset + 129));
        if (step * 4 + row < 71) chunks.add(offset / 128);
      }
    }
    expect(chunks.size).toBe(71);
    // A given prime is checked as RWKV-LM checks it, plus the last read staying in the file.
    expect(new MagicPrimeSampler(reader, { ctxLen: 128, microBsz: 4, magicPrime: 71 }).magicPrime).toBe(71);
    const p = reader.name;
    const given = (magicPrime: number) => () => new MagicPrimeSampler(reader, { ctxLen: 128, microBsz: 4, magicPrime });
    expect(given(77)).toThrow(`${p}: magic_prime: expected a prime, found 77`);
    expect(given(73)).toThrow(`${p}: magic_prime: expected a prime ≡ 2 (mod 3), found 73`);
    expect(given(59)).toThrow(`${p}: magic_prime: expected a prime in (0.9·78, 78] for 10000 tokens at ctx_len 128 (largest valid: 71), found 59`);
    expect(given(83)).toThrow(/magic_prime: expected a prime in .*, found 83/);
    reader.close();
  });

  it('rejects a ctx_len too long for the data and a micro-batch larger than the prime', () => {
    const reader = openDocs([Array.from({ length: 99 }, (_, i) => i + 1).concat(0)]);
    const p = reader.name;
    expect(() => new MagicPrimeSampler(reader, { ctxLen: 34, microBsz: 1 })).toThrow(
      `${p}: ctx_len: expected at most 33 (the data has 100 tokens, the magic-prime sampler needs 3·ctx_len), found 34`,
    );
    expect(new MagicPrimeSampler(reader, { ctxLen: 33, microBsz: 1 }).magicPrime).toBe(2);
    expect(() => new MagicPrimeSampler(reader, { ctxLen: 33, microBsz: 3 })).toThrow(`${p}: micro_bsz: expected at most magic_prime = 2, found 3`);
    expect(() => new MagicPrimeSampler(reader, { ctxLen: 4, microBsz: 1 }).batch(0.5)).toThrow(`${p}: step: expected an integer >= 0, found 0.5`);
    reader.close();
  });
});
