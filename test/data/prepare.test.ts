import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { BinidxReader } from '../../src/data/binidx.js';
import { magicPrime } from '../../src/data/magic_prime.js';
import { prepare } from '../../src/data/prepare.js';
import { WorldTokenizer } from '../../src/data/tokenizer.js';
import { demoJsonl, realVocab, SPEC_BIN, SPEC_IDX, tempDir, writeSmallVocab } from './fixtures.js';

function readAll(r: BinidxReader): number[][] {
  return Array.from({ length: r.documents }, (_, d) => {
    const out = new Int32Array(r.docSize(d));
    r.readTokens(r.docStart(d), out);
    return Array.from(out);
  });
}

describe('prepare: jsonl to binidx', () => {
  const dir = tempDir();
  const vocabPath = writeSmallVocab(dir);
  const tok = WorldTokenizer.fromFile(vocabPath);

  it('writes every shape as one item ending in 0, and reports counts, prompt tokens and the magic prime', () => {
    const jsonl = join(dir, 'mixed.jsonl');
    const records = [
      { text: 'hello world' },
      { text: '' },
      { prompt: 'hi', response: 'hello' },
      { instruction: 'a', output: 'b' },
      { text: 'aaaa'.repeat(200) },
    ];
    writeFileSync(jsonl, records.map((r) => JSON.stringify(r)).join('\n'));
    const res = prepare(jsonl, join(dir, 'out'), { vocabPath, ctxLen: 16 });
    const r = BinidxReader.open(join(dir, 'out'));
    const docs = readAll(r);
    r.close();
    expect(docs.map((d) => d[d.length - 1])).toEqual([0, 0, 0, 0]);
    const sftPrompt =
      'Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n### Instruction:\na\n\n### Response:';
    expect(docs.map((d) => tok.decode(d))).toEqual([
      'hello world',
      'User: hi\n\nAssistant: hello',
      `${sftPrompt}b\n\x17`,
      'aaaa'.repeat(200),
    ]);
    const tokens = docs.flat().length;
    expect(res).toEqual({
      idx: join(dir, 'out.idx'),
      bin: join(dir, 'out.bin'),
      documents: 4,
      tokens,
      skipped: 1,
      promptTokens: tok.encode('User: hi\n\nAssistant:').length + tok.encode(sftPrompt).length,
      magicPrime: magicPrime(tokens, 16),
    });
    expect(res.magicPrime).not.toBeNull();
    expect(readFileSync(res.idx)[17]).toBe(8);
    expect(prepare(jsonl, join(dir, 'out32'), { vocabPath, dtype: 'int32' })).toMatchObject({ tokens, magicPrime: null });
    expect(readFileSync(join(dir, 'out32.idx'))[17]).toBe(4);
    expect(prepare(jsonl, join(dir, 'small'), { vocabPath, ctxLen: 100_000 }).magicPrime).toBeNull();
  });

  it('fails clearly and leaves no output on bad input', () => {
    const out = tempDir();
    const empty = join(out, 'empty.jsonl');
    writeFileSync(empty, '');
    expect(() => prepare(empty, join(out, 'x'), { vocabPath })).toThrow(`${empty}: expected at least one document, found none (no records)`);
    const bad = join(out, 'bad.jsonl');
    writeFileSync(bad, '{"text":"ok"}\n{"text":1}\n');
    expect(() => prepare(bad, join(out, 'x'), { vocabPath })).toThrow(`${bad} line 2: field "text": expected a string, found 1`);
    expect(() => prepare(bad, join(out, 'x'), { vocabPath: join(out, 'missing.txt') })).toThrow(/vocabulary file .*missing\.txt not found: the World tokenizer needs .*rwkv_vocab_v20230424\.txt/);
    expect(() => prepare(bad, join(out, 'x'), { vocabPath, ctxLen: 0 })).toThrow('prepare: ctxLen: expected a positive integer, found 0');
    expect(readdirSync(out).sort()).toEqual(['bad.jsonl', 'empty.jsonl']);
  });

  it('reproduces the spec binidx test vector from text with the real vocabulary', () => {
    const out = tempDir();
    const jsonl = join(out, 'spec.jsonl');
    writeFileSync(jsonl, ['Hello world', 'User: hi\n\nAssistant: Hello!'].map((text) => JSON.stringify({ text })).join('\n') + '\n');
    const res = prepare(jsonl, join(out, 'spec'), { vocabPath: realVocab() });
    expect([res.documents, res.tokens, res.promptTokens]).toEqual([2, 13, 0]);
    expect(new Uint8Array(readFileSync(res.idx))).toEqual(SPEC_IDX);
    expect(new Uint8Array(readFileSync(res.bin))).toEqual(SPEC_BIN);
  });

  it('prepares demo.jsonl: 182 documents that decode back to their text', () => {
    const out = tempDir();
    const res = prepare(demoJsonl(), join(out, 'demo'), { vocabPath: realVocab(), ctxLen: 512 });
    const texts = readFileSync(demoJsonl(), 'utf8')
      .split('\n')
      .filter((l) => l.trim())
      .map((l) => (JSON.parse(l) as { text: string }).text);
    const real = WorldTokenizer.fromFile(realVocab());
    const r = BinidxReader.open(res.idx);
    const docs = readAll(r);
    r.close();
    expect([res.documents, docs.length]).toEqual([182, 182]);
    expect(docs.map((d) => real.decode(d.slice(0, -1)))).toEqual(texts);
    expect(docs.every((d) => d[d.length - 1] === 0)).toBe(true);
    expect(res.tokens).toBe(docs.flat().length);
    expect(res.magicPrime).toBe(magicPrime(res.tokens, 512));
    console.log(`demo.jsonl: ${res.documents} documents, ${res.tokens} tokens, magic prime ${res.magicPrime} at ctx_len 512`);
  });
});
