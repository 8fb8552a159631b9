import { existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { BinidxReader, writeBinidx } from '../../src/data/binidx.js';
import { freshRng } from '../helpers.js';
import { SPEC_BIN, SPEC_DOCS, SPEC_IDX, tempDir } from './fixtures.js';

function readDoc(r: BinidxReader, d: number): number[] {
  const out = new Int32Array(r.docSize(d));
  r.readTokens(r.docStart(d), out);
  return Array.from(out);
}

describe('binidx writer and reader', () => {
  it('writes the spec test vector byte for byte and reads it back', () => {
    const prefix = join(tempDir(), 'spec');
    const w = writeBinidx(prefix, SPEC_DOCS);
    expect(w).toEqual({ idx: `${prefix}.idx`, bin: `${prefix}.bin`, documents: 2, tokens: 13 });
    expect(SPEC_IDX.length).toBe(82);
    expect(new Uint8Array(readFileSync(`${prefix}.idx`))).toEqual(SPEC_IDX);
    expect(new Uint8Array(readFileSync(`${prefix}.bin`))).toEqual(SPEC_BIN);
    for (const name of [prefix, `${prefix}.idx`, `${prefix}.bin`]) {
      const r = BinidxReader.open(name);
      expect([r.dtype, r.documents, r.tokenCount, r.name]).toEqual(['uint16', 2, 13, prefix]);
      expect([readDoc(r, 0), readDoc(r, 1)]).toEqual(SPEC_DOCS);
      r.close();
    }
  });

  it("matches the header of json2binidx_tool's sample (7 documents, uint16, 182 bytes)", () => {
    const prefix = join(tempDir(), 'sample_data_text_document');
    const sizes = [9, 6, 20, 22, 27, 26, 50];
    writeBinidx(prefix, sizes.map((n) => [...Array(n - 1).fill(5), 0]));
    const idx = readFileSync(`${prefix}.idx`);
    const v = new DataView(idx.buffer, idx.byteOffset, idx.byteLength);
    expect(idx.length).toBe(182);
    expect([v.getBigUint64(9, true), v.getUint8(17), v.getBigUint64(18, true), v.getBigUint64(26, true)]).toEqual([1n, 8, 7n, 8n]);
    expect(sizes.map((_, i) => v.getInt32(34 + 4 * i, true))).toEqual(sizes);
    expect(sizes.map((_, i) => Number(v.getBigInt64(34 + 28 + 8 * i, true)))).toEqual([0, 18, 30, 70, 114, 168, 220]);
    expect(Array.from({ length: 8 }, (_, i) => Number(v.getBigInt64(34 + 84 + 8 * i, true)))).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
  });

  it('round-trips random documents in uint16 and int32', () => {
    const rng = freshRng();
    for (const dtype of ['uint16', 'int32'] as const) {
      const docs = [1, 17, 129, 1000, 2, 1].map((n) => Array.from({ length: n }, () => rng.int(65536)));
      const prefix = join(tempDir(), dtype);
      writeBinidx(prefix, docs, { dtype });
      expect(readFileSync(`${prefix}.idx`)[17]).toBe(dtype === 'uint16' ? 8 : 4);
      expect(readFileSync(`${prefix}.bin`).length).toBe(1150 * (dtype === 'uint16' ? 2 : 4));
      const r = BinidxReader.open(prefix);
      expect(r.dtype).toBe(dtype);
      expect(docs.map((_, d) => readDoc(r, d)), `seed ${rng.seed}`).toEqual(docs);
      // Reads at any offset see the flat stream.
      const flat = docs.flat();
      const out = new Int32Array(129);
      r.readTokens(1000, out);
      expect(Array.from(out)).toEqual(flat.slice(1000, 1129));
      r.close();
      expect(() => r.readTokens(0, out)).toThrow(/the reader is closed/);
    }
  });

  it("reads a document's window as RWKV-PEFT's pad does: on into the next documents, else wrapping to the start", () => {
    const prefix = join(tempDir(), 'w');
    writeBinidx(prefix, SPEC_DOCS);
    const r = BinidxReader.open(prefix);
    const flat = SPEC_DOCS.flat();
    const w = new Int32Array(6);
    expect(r.readWindow(0, w)).toBeNull();
    expect(Array.from(w)).toEqual(flat.slice(0, 6));
    r.readWindow(1, w);
    expect(Array.from(w)).toEqual(flat.slice(3, 9));
    const long = new Int32Array(12);
    r.readWindow(1, long);
    expect(Array.from(long)).toEqual([...SPEC_DOCS[1], ...flat.slice(0, 2)]);
    expect(() => r.readWindow(1, new Int32Array(30))).toThrow(/a sample of 30 tokens is longer than the whole dataset \(13 tokens\)/);
    expect(() => r.readWindow(2, w)).toThrow(/document 2 does not exist \(2 documents\)/);
  });

  it('never replaces an existing dataset unless told to', () => {
    const prefix = join(tempDir(), 'a');
    writeBinidx(prefix, SPEC_DOCS);
    expect(() => writeBinidx(prefix, [[7, 0]])).toThrow(`${prefix}.idx: the file already exists; refusing to overwrite it (--overwrite, or overwrite: true, replaces it)`);
    expect(writeBinidx(prefix, [[7, 0]], { overwrite: true })).toMatchObject({ documents: 1, tokens: 2 });
  });

  it('writes atomically: a failed write leaves the old files and no temporaries', () => {
    const dir = tempDir();
    const prefix = join(dir, 'a');
    writeBinidx(prefix, SPEC_DOCS);
    expect(() => writeBinidx(prefix, [[1, 2], [3, 70000]], { overwrite: true })).toThrow(
      new RegExp(`${prefix}\\.bin: document 1 token 1: expected an integer id in 0\\.\\.65535 \\(uint16\\), found 70000`),
    );
    expect(() => writeBinidx(prefix, [[1, 2.5]], { overwrite: true })).toThrow(/document 0 token 1: expected an integer id in 0\.\.65535 \(uint16\), found 2\.5/);
    expect(() => writeBinidx(prefix, [[1, 100]], { vocabSize: 50, overwrite: true })).toThrow(/found 100/);
    expect(() => writeBinidx(prefix, [[1, -1]], { dtype: 'int32', overwrite: true })).toThrow(/expected an integer id in 0\.\.65535 \(int32\), found -1/);
    expect(() => writeBinidx(prefix, [], { overwrite: true })).toThrow(new RegExp(`${prefix}\\.idx: no documents to write`));
    expect(readdirSync(dir).sort()).toEqual(['a.bin', 'a.idx']);
    expect(new Uint8Array(readFileSync(`${prefix}.idx`))).toEqual(SPEC_IDX);
    expect(new Uint8Array(readFileSync(`${prefix}.bin`))).toEqual(SPEC_BIN);
    // int32 holds ids past 65535 when the vocabulary allows them.
    writeBinidx(prefix, [[70000, 0]], { dtype: 'int32', vocabSize: 100000, overwrite: true });
    const r = BinidxReader.open(prefix, { vocabSize: 100000 });
    expect(readDoc(r, 0)).toEqual([70000, 0]);
    r.close();
  });
});

describe('binidx reader on bad input', () => {
  /** Writes the spec pair with the .idx changed by `edit`, returning the prefix. */
  function badPair(edit: (idx: DataView, bytes: Uint8Array) => Uint8Array | void, bin = SPEC_BIN): string {
    const prefix = join(tempDir(), 'bad');
    const bytes = SPEC_IDX.slice();
    const out = edit(new DataView(bytes.buffer), bytes) ?? bytes;
    writeFileSync(`${prefix}.idx`, out);
    writeFileSync(`${prefix}.bin`, bin);
    return prefix;
  }
  const cases: [string, () => string, (p: string) => RegExp][] = [
    ['empty .idx', () => badPair(() => new Uint8Array(0)), (p) => RegExp(`${p}\\.idx: file: expected a binidx index .*, found an empty file`)],
    ['short header', () => badPair((_, b) => b.slice(0, 20)), (p) => RegExp(`${p}\\.idx: header: expected 34 bytes, found a file of 20 bytes`)],
    ['wrong magic', () => badPair((_, b) => void (b[3] = 0x41)), (p) => RegExp(`${p}\\.idx: magic: expected 4d 4d 49 44 49 44 58 00 00 .*, found 4d 4d 49 41 49 44 58 00 00`)],
    ['version 2', () => badPair((v) => v.setBigUint64(9, 2n, true)), (p) => RegExp(`${p}\\.idx: version: expected 1, found 2`)],
    ['float dtype', () => badPair((v) => v.setUint8(17, 6)), (p) => RegExp(`${p}\\.idx: dtype: expected code 8 \\(uint16\\) or 4 \\(int32\\) token ids, found code 6 \\(float64\\)`)],
    ['unknown dtype', () => badPair((v) => v.setUint8(17, 99)), () => /dtype: expected .*, found code 99$/],
    ['no documents', () => badPair((v) => v.setBigUint64(18, 0n, true)), (p) => RegExp(`${p}\\.idx: len: expected at least 1 document, found 0`)],
    ['header past the end', () => badPair((v) => v.setBigUint64(18, 2n ** 60n, true)), (p) => RegExp(`${p}\\.idx: len/doc_count: expected a file of \\d+ bytes for len ${2n ** 60n} and doc_count 3, found 82 bytes`)],
    ['doc_count past the end', () => badPair((v) => v.setBigUint64(26, 4n, true)), () => /len\/doc_count: expected a file of 90 bytes for len 2 and doc_count 4, found 82 bytes/],
    ['trailing bytes', () => badPair((_, b) => Uint8Array.from([...b, 0, 0])), () => /len\/doc_count: expected a file of 82 bytes .*, found 84 bytes/],
    ['negative size', () => badPair((v) => v.setInt32(38, -10, true)), (p) => RegExp(`${p}\\.idx: sizes\\[1\\]: expected a token count >= 0, found -10`)],
    ['pointer off', () => badPair((v) => v.setBigInt64(50, 8n, true)), (p) => RegExp(`${p}\\.idx: pointers\\[1\\]: expected 6 \\(the sum of the sizes before it × 2 bytes\\), found 8`)],
    ['doc_idx past len', () => badPair((v) => v.setBigInt64(74, 3n, true)), () => /doc_idx\[2\]: expected a document index in 1\.\.2, found 3/],
    ['doc_idx decreasing', () => badPair((v) => {
      v.setBigInt64(66, 2n, true);
      v.setBigInt64(74, 1n, true);
    }), () => /doc_idx\[2\]: expected a document index in 2\.\.2, found 1/],
    ['.bin too short', () => badPair(() => undefined, SPEC_BIN.slice(0, 24)), (p) => RegExp(`${p}\\.bin: length: expected 26 bytes \\(the sizes in ${p}\\.idx add up to 13 uint16 tokens\\), found 24 bytes`)],
    ['.bin odd length', () => badPair(() => undefined, Uint8Array.from([...SPEC_BIN, 1])), () => /\.bin: length: expected 26 bytes .*, found 27 bytes/],
    ['sizes disagree with .bin', () => badPair((v) => v.setInt32(38, 11, true)), () => /\.bin: length: expected 28 bytes \(the sizes in .* add up to 14 uint16 tokens\), found 26 bytes/],
  ];
  for (const [name, make, message] of cases) {
    it(`rejects ${name}`, () => {
      const prefix = make();
      expect(() => BinidxReader.open(prefix)).toThrow(message(prefix));
    });
  }

  it('names the missing file', () => {
    const prefix = join(tempDir(), 'x');
    expect(() => BinidxReader.open(prefix)).toThrow(RegExp(`${prefix}\\.idx not found: a binidx dataset needs both ${prefix}\\.idx and ${prefix}\\.bin`));
    writeFileSync(`${prefix}.idx`, SPEC_IDX);
    expect(() => BinidxReader.open(prefix)).toThrow(RegExp(`${prefix}\\.bin not found`));
  });

  it('rejects token ids outside the vocabulary when they are read', () => {
    const prefix = join(tempDir(), 'v');
    writeBinidx(prefix, [[1, 2, 65535, 0]]);
    const r = BinidxReader.open(prefix, { vocabSize: 65530 });
    const out = new Int32Array(4);
    expect(() => r.readTokens(0, out)).toThrow(RegExp(`${prefix}\\.bin: token 2: expected an id in 0\\.\\.65529 \\(vocab size 65530\\), found 65535`));
    expect(() => r.readTokens(1, out)).toThrow(/a read of 4 tokens at token 1 runs past the end \(4 tokens\)/);
    r.close();
    writeBinidx(prefix, [[5, 0]], { dtype: 'int32', overwrite: true });
    const bin = readFileSync(`${prefix}.bin`);
    bin.writeInt32LE(-7, 0);
    writeFileSync(`${prefix}.bin`, bin);
    const r2 = BinidxReader.open(prefix);
    expect(() => r2.readTokens(0, new Int32Array(2))).toThrow(/token 0: expected an id in 0\.\.65535 \(vocab size 65536\), found -7/);
    r2.close();
  });

  it('survives about 3 s of random mutations: every outcome is a result or an Error naming the file', () => {
    const rng = freshRng();
    const dir = tempDir();
    const prefix = join(dir, 'fuzz');
    writeBinidx(prefix, [[1, 2, 3, 0], [7, 0], Array.from({ length: 40 }, (_, i) => i)], { dtype: 'uint16' });
    const goodIdx = new Uint8Array(readFileSync(`${prefix}.idx`));
    const goodBin = new Uint8Array(readFileSync(`${prefix}.bin`));
    const outcomes = { ok: 0, error: 0 };
    const end = performance.now() + 3000;
    while (performance.now() < end) {
      let idx = goodIdx.slice();
      let bin = goodBin.slice();
      for (let m = 1 + rng.int(3); m > 0; m--) {
        const which = rng.int(6);
        const target = rng.next() < 0.8 ? 'idx' : 'bin';
        let f = target === 'idx' ? idx : bin;
        if (which === 0 && f.length) f[rng.int(f.length)] = rng.int(256);
        else if (which === 1) f = f.slice(0, rng.int(f.length + 1));
        else if (which === 2) f = Uint8Array.from([...f, ...Array.from({ length: 1 + rng.int(16) }, () => rng.int(256))]);
        else if (which === 3 && f.length >= 8) {
          // A header-sized integer: often huge, sometimes small.
          const v = new DataView(f.buffer);
          v.setBigUint64(rng.int(f.length - 7), rng.next() < 0.5 ? BigInt(rng.int(100)) : BigInt(rng.u32()) * BigInt(rng.u32()), true);
        } else if (which === 4 && f.length >= 4) new DataView(f.buffer).setInt32(rng.int(f.length - 3), rng.u32() | 0, true);
        else if (f.length) f[rng.int(f.length)] ^= 1 << rng.int(8);
        if (target === 'idx') idx = f;
        else bin = f;
      }
      writeFileSync(`${prefix}.idx`, idx);
      writeFileSync(`${prefix}.bin`, bin);
      try {
        const r = BinidxReader.open(prefix, { vocabSize: 50 });
        try {
          const w = new Int32Array(1 + rng.int(60));
          for (let d = 0; d < r.documents; d++) {
            readDoc(r, d);
            r.readWindow(d, w);
          }
        } finally {
          r.close();
        }
        outcomes.ok++;
      } catch (e) {
        if (!(e instanceof Error) || !e.message.includes(prefix) || e.constructor !== Error) {
          throw new Error(`seed ${rng.seed}: unexpected failure ${String(e)} for idx ${Buffer.from(idx).toString('hex')}`, { cause: e });
        }
        outcomes.error++;
      }
    }
    console.log(`binidx fuzz: ${outcomes.ok} valid, ${outcomes.error} rejected`);
    expect(outcomes.ok + outcomes.error).toBeGreaterThan(100);
    expect(outcomes.error).toBeGreaterThan(0);
    rmSync(dir, { recursive: true });
    expect(existsSync(prefix + '.idx')).toBe(false);
  });
});
