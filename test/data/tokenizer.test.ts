import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { decodePyLiteral } from '../../src/data/py_literal.js';
import { WorldTokenizer } from '../../src/data/tokenizer.js';
import { parseVocab, readVocab, type VocabEntry } from '../../src/data/vocab.js';
import { freshRng, type Rng } from '../helpers.js';
import { demoJsonl, realVocab, tempDir, writeSmallVocab } from './fixtures.js';

const bytesOf = (s: string): number[] => Array.from(new TextEncoder().encode(s));

/** Greedy longest match by brute force over every entry: the reference for the trie. */
function referenceEncode(entries: readonly VocabEntry[], bytes: Uint8Array): number[] {
  const out: number[] = [];
  for (let pos = 0; pos < bytes.length; ) {
    let best: VocabEntry | undefined;
    for (const e of entries) {
      if (best && e.bytes.length <= best.bytes.length) continue;
      if (pos + e.bytes.length > bytes.length) continue;
      let match = true;
      for (let k = 0; k < e.bytes.length && match; k++) match = bytes[pos + k] === e.bytes[k];
      if (match) best = e;
    }
    out.push(best!.id);
    pos += best!.bytes.length;
  }
  return out;
}

describe('Python literals', () => {
  const lit = (s: string): number[] => Array.from(decodePyLiteral(s, 'test'));
  it('decodes str literals to UTF-8 and bytes literals to raw bytes', () => {
    expect(lit(`'abc'`)).toEqual([0x61, 0x62, 0x63]);
    expect(lit(`'\\x80'`)).toEqual([0xc2, 0x80]);
    expect(lit(`b'\\x80'`)).toEqual([0x80]);
    expect(lit(`'\\u4f60'`)).toEqual(bytesOf('你'));
    expect(lit(`'\\U0001F389'`)).toEqual(bytesOf('🎉'));
    expect(lit(`'\\n\\t\\r\\\\\\''`)).toEqual([10, 9, 13, 0x5c, 0x27]);
    expect(lit(`"it's"`)).toEqual(bytesOf("it's"));
    expect(lit(`'\\"'`)).toEqual([0x22]);
    expect(lit(`'\\0\\101\\7'`)).toEqual([0, 0x41, 7]);
    expect(lit(`'\\a\\b\\f\\v'`)).toEqual([7, 8, 12, 11]);
    // Python keeps the backslash of an unknown escape, and \u is not an escape in bytes.
    expect(lit(`'\\d'`)).toEqual([0x5c, 0x64]);
    expect(lit(`b'\\u0041'`)).toEqual(bytesOf('\\u0041'));
    expect(lit(`'   '`)).toEqual([32, 32, 32]);
    expect(lit(`'🎉'`)).toEqual(bytesOf('🎉'));
  });
  it('rejects malformed literals, naming where and why', () => {
    expect(() => lit(`abc`)).toThrow(/test: invalid Python literal "abc": expected a quoted/);
    expect(() => lit(`'abc"`)).toThrow(/expected a quoted/);
    expect(() => lit(`'a'b'`)).toThrow(/unescaped ' inside/);
    expect(() => lit(`'\\x8'`)).toThrow(/\\x needs 2 hex digits/);
    expect(() => lit(`'\\u12'`)).toThrow(/\\u needs 4 hex digits/);
    expect(() => lit(`'\\`)).toThrow(/expected a quoted/);
    expect(() => lit(`'a\\'`)).toThrow(/expected a quoted|trailing backslash/);
    expect(() => lit(`b'é'`)).toThrow(/non-ASCII character in a bytes literal/);
    expect(() => lit(`b'\\777'`)).toThrow(/byte value 511 is over 255/);
    expect(() => lit(`'\\N{DASH}'`)).toThrow(/\\N\{…\} escapes are not supported/);
  });
});

describe('vocabulary file', () => {
  it('parses the small vocabulary the same with LF and CRLF line endings', () => {
    const dir = tempDir();
    const lf = readVocab(writeSmallVocab(dir));
    const crlf = parseVocab(readFileSync(writeSmallVocab(tempDir(), true), 'utf8'), 'crlf');
    expect(crlf).toEqual(lf);
    expect(lf.length).toBe(256 + 21);
    expect(lf.find((e) => e.id === 129)!.bytes).toEqual(Uint8Array.from([0x80]));
    expect(Array.from(lf.find((e) => e.id === 263)!.bytes)).toEqual(bytesOf("it's"));
    expect(Array.from(lf.find((e) => e.id === 267)!.bytes)).toEqual(bytesOf('été'));
    expect(Array.from(lf.find((e) => e.id === 270)!.bytes)).toEqual([0xc2, 0x80]);
  });

  it('rejects bad lines, naming the file, the line, and what was expected', () => {
    const bad = (text: string): (() => void) => () => parseVocab(text, 'v.txt');
    expect(bad(`1 'a' 2\n`)).toThrow(/v\.txt line 1: token 1 is 1 bytes but the line states 2/);
    expect(bad(`1 'a' 1\n1 'b' 1\n`)).toThrow(/v\.txt line 2: id 1 appears twice/);
    expect(bad(`0 'a' 1\n`)).toThrow(/v\.txt line 1: id: 0 is reserved for end of text/);
    expect(bad(`x 'a' 1\n`)).toThrow(/v\.txt line 1: id: expected a positive integer, found "x"/);
    expect(bad(`1 'a' one\n`)).toThrow(/v\.txt line 1: byte length: expected an integer, found "one"/);
    expect(bad(`1 'a 1\n`)).toThrow(/v\.txt line 1: invalid Python literal "'a"/);
    expect(bad(`1\n`)).toThrow(/v\.txt line 1: expected "<id> <literal> <byte length>", found "1"/);
    expect(bad(`1 '' 0\n`)).toThrow(/v\.txt line 1: token 1 is empty/);
    expect(bad(``)).toThrow(/v\.txt: no tokens \(empty vocabulary file\)/);
  });

  it('says which file is needed and where it comes from when it is missing', () => {
    const path = join(tempDir(), 'nope.txt');
    expect(() => WorldTokenizer.fromFile(path)).toThrow(
      new RegExp(`vocabulary file ${path} not found: .*rwkv_vocab_v20230424\\.txt from BlinkDL/RWKV-LM`),
    );
  });

  it('rejects two tokens with the same bytes', () => {
    const entries = parseVocab(`1 'a' 1\n2 '\\x61' 1\n`, 'dup.txt');
    expect(() => new WorldTokenizer(entries, 'dup.txt')).toThrow(/dup\.txt: tokens 1 and 2 have the same bytes 61/);
  });
});

describe('World tokenizer on a small vocabulary', () => {
  const path = writeSmallVocab(tempDir());
  const entries = readVocab(path);
  const tok = WorldTokenizer.fromFile(path);

  it('picks the longest match at each position', () => {
    expect(tok.encode('hello world')).toEqual([260, 261]);
    expect(tok.encode('help')).toEqual([259, 'p'.charCodeAt(0) + 1]);
    expect(tok.encode('aaaaaaa')).toEqual([275, 276, 98]);
    expect(tok.encode('你好你')).toEqual([269, 268, 0xa0 + 1]);
    expect(tok.encode('User: x\n\nAssistant:')).toEqual([272, 33, 121, 257, 273]);
    expect(tok.encode(' Assistant:')).toEqual([274]);
    expect(tok.encode('\u0080')).toEqual([270]);
    expect(tok.encode('')).toEqual([]);
  });

  function randomText(rng: Rng, pieces: number): Uint8Array {
    const alphabet = ['he', 'l', 'lo', 'o', ' ', 'wor', 'ld', 'a', 'é', 'té', '你', '好', '\n', '\t', "'", '\\', '"q', 'it', 's', 'User:', 'Assistant:', '\u0080'];
    const parts: number[] = [];
    for (let i = 0; i < pieces; i++) {
      if (rng.next() < 0.1) parts.push(rng.int(256));
      else parts.push(...bytesOf(alphabet[rng.int(alphabet.length)]));
    }
    return Uint8Array.from(parts);
  }

  it('agrees with brute-force greedy matching and round-trips, on random text and raw bytes', () => {
    const rng = freshRng();
    for (const n of [1, 17, 129, 1000]) {
      const bytes = randomText(rng, n);
      const ids = tok.encode(bytes);
      expect(ids, `seed ${rng.seed}, ${n} pieces`).toEqual(referenceEncode(entries, bytes));
      expect(tok.decodeBytes(ids)).toEqual(bytes);
      const text = new TextDecoder().decode(bytes);
      if (!text.includes('\ufffd')) expect(tok.decode(tok.encode(text))).toBe(text);
    }
  });

  it('decodes end of text to nothing and rejects ids not in the vocabulary', () => {
    expect(tok.decode([260, 0, 261])).toBe('hello world');
    expect(() => tok.decode([278])).toThrow(/small_vocab\.txt: token id 278 is not in the vocabulary \(ids 1\.\.277, 0 = end of text\)/);
    expect(() => tok.decode([-1])).toThrow(/token id -1 is not in the vocabulary/);
    expect(() => tok.decode([1.5])).toThrow(/token id 1\.5 is not in the vocabulary/);
  });

  it('names the byte it cannot encode when the vocabulary lacks it', () => {
    const partial = new WorldTokenizer(parseVocab(`1 'a' 1\n2 'b' 1\n`, 'ab.txt'), 'ab.txt');
    expect(() => partial.encode('abc')).toThrow(/ab\.txt: no token for byte 0x63 at byte 2 of the input/);
  });
});

describe('World tokenizer on the real vocabulary', () => {
  let tok: WorldTokenizer;
  beforeAll(() => {
    tok = WorldTokenizer.fromFile(realVocab());
  });

  it('loads 65529 tokens, ids 1..65529', () => {
    expect(readVocab(realVocab()).length).toBe(65529);
    expect(tok.vocabSize).toBe(65530);
    expect(Array.from(tok.tokenBytes(129))).toEqual([0x80]);
    expect(Array.from(tok.tokenBytes(2423))).toEqual([0xc2, 0x80]);
    expect(tok.decode([65529])).toBe(' '.repeat(128));
  });

  it('reproduces the spec test vectors', () => {
    const vectors: [string, number[]][] = [
      ['Hello world', [33155, 40213]],
      ['Hello, world!', [33155, 45, 40213, 34]],
      ['User: hi\n\nAssistant:', [24281, 59, 4571, 261, 5585, 41693, 59]],
      ['User:', [24281, 59]],
      ['Assistant:', [5585, 41693, 59]],
      [' Assistant:', [58683, 59]],
      ['\n\n', [261]],
      ['你好，世界', [10464, 11685, 19137, 10267, 14610]],
      ['\x00', [1]],
      ['\x17', [24]],
      ['é', [2503]],
      ['\r\n', [263]],
      ['🎉', [3319, 143, 138]],
      ['The Eiffel tower is in the city of', [6699, 304, 25740, 109, 39990, 4600, 4596, 22590, 30449, 4706]],
      ['<think>\n</think>', [61, 35762, 63, 11, 754, 35762, 63]],
      ['User: hi\n\nAssistant: Hello!', [24281, 59, 4571, 261, 5585, 41693, 59, 36786, 34]],
    ];
    for (const [text, ids] of vectors) {
      expect(tok.encode(text), JSON.stringify(text)).toEqual(ids);
      expect(tok.decode(ids)).toBe(text);
    }
  });

  it('round-trips demo.jsonl and measures the encoding rate', () => {
    const texts = readFileSync(demoJsonl(), 'utf8')
      .split('\n')
      .filter((l) => l.trim())
      .map((l) => (JSON.parse(l) as { text: string }).text);
    for (const t of texts) expect(tok.decode(tok.encode(t))).toBe(t);
    // About 4 MB of real text; the rate is reported, not asserted.
    const big = new TextEncoder().encode(texts.join('\n').repeat(14));
    const t0 = performance.now();
    const ids = tok.encode(big);
    const s = (performance.now() - t0) / 1000;
    const rate = `${(big.length / 1e6 / s).toFixed(1)} MB/s (${(big.length / 1e6).toFixed(1)} MB -> ${ids.length} tokens in ${s.toFixed(2)} s)`;
    console.log(`World tokenizer encode rate: ${rate}`);
    expect(Buffer.from(tok.decodeBytes(ids)).equals(big)).toBe(true);
  });
});
