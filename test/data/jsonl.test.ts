import { statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { JsonlDocuments, jsonlDocuments, recordSegments, tokenizeSegments, type Segment } from '../../src/data/jsonl.js';
import { DocumentSampler, IGNORE_INDEX } from '../../src/data/sampling.js';
import { WorldTokenizer } from '../../src/data/tokenizer.js';
import { freshRng } from '../helpers.js';
import { tempDir, writeSmallVocab } from './fixtures.js';

const tok = WorldTokenizer.fromFile(writeSmallVocab(tempDir()));

function writeJsonl(lines: (string | object)[], name = 'data.jsonl'): string {
  const path = join(tempDir(), name);
  writeFileSync(path, lines.map((l) => (typeof l === 'string' ? l : JSON.stringify(l))).join('\n') + '\n');
  return path;
}

/** Tokens of the trained and untrained parts, read back through the mask. */
function split(segments: Segment[]): { trained: string; prompt: string; endTrained: boolean } {
  const { tokens, mask } = tokenizeSegments(segments, tok);
  expect(tokens[tokens.length - 1]).toBe(0);
  const body = Array.from(tokens.subarray(0, -1));
  const m = (k: number): number => (mask === null ? 1 : mask[k]);
  expect(tok.decode(body)).toBe(segments.map((s) => s.text).join(''));
  return {
    trained: tok.decode(body.filter((_, k) => m(k) === 1)),
    prompt: tok.decode(body.filter((_, k) => m(k) === 0)),
    endTrained: m(tokens.length - 1) === 1,
  };
}

describe('jsonl record shapes and templates', () => {
  it('{"text"}: the text as is, every token trained, ended by 0', () => {
    const segs = recordSegments({ text: 'hello world\n\nit\'s' }, 'f line 1')!;
    expect(segs).toEqual([{ text: "hello world\n\nit's", train: true }]);
    const doc = tokenizeSegments(segs, tok);
    expect(Array.from(doc.tokens)).toEqual([260, 261, 257, 263, 0]);
    expect(doc.mask).toBeNull();
    expect(recordSegments({ text: '' }, 'f')).toBeNull();
  });

  it('{"prompt","response"}: User/Assistant chat, only the response and the end trained', () => {
    const segs = recordSegments({ prompt: ' hi\r\n\r\n\r\nthere ', response: 'hello\n\nworld' }, 'f')!;
    expect(segs).toEqual([
      { text: 'User: hi\nthere', train: false },
      { text: '\n\n', train: false },
      { text: 'Assistant:', train: false },
      { text: ' hello\nworld', train: true },
    ]);
    expect(split(segs)).toEqual({ prompt: 'User: hi\nthere\n\nAssistant:', trained: ' hello\nworld', endTrained: true });
  });

  it('{"instruction","input"?,"output"}: RWKV-PEFT sft (Alpaca) prompt masked, "{output}\\n\\x17" trained', () => {
    const plain = recordSegments({ instruction: 'Say hi.', output: 'hello' }, 'f')!;
    const prompt =
      'Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n### Instruction:\nSay hi.\n\n### Response:';
    expect(plain).toEqual([
      { text: prompt, train: false },
      { text: 'hello\n\x17', train: true },
    ]);
    expect(recordSegments({ instruction: 'Say hi.', input: '', output: 'hello' }, 'f')).toEqual(plain);
    const withInput = recordSegments({ instruction: 'Greet $&.', input: 'Bob', output: 'hello Bob' }, 'f')!;
    expect(withInput[0].text).toBe(
      'Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately completes the request.\n\n### Instruction:\nGreet $&.\n\n### Input:\nBob\n\n### Response:',
    );
    expect(split(withInput)).toEqual({ prompt: withInput[0].text, trained: 'hello Bob\n\x17', endTrained: true });
  });

  it('{"messages"}: every assistant turn and the separator after it trained, the rest masked', () => {
    const segs = recordSegments(
      {
        messages: [
          { role: 'system', content: 'Be brief.' },
          { role: 'user', content: 'hello' },
          { role: 'assistant', content: 'hel\n\nlo' },
          { role: 'user', content: "it's" },
          { role: 'assistant', content: 'world' },
        ],
      },
      'f',
    )!;
    expect(segs.map((s) => s.text).join('')).toBe("System: Be brief.\n\nUser: hello\n\nAssistant: hel\nlo\n\nUser: it's\n\nAssistant: world");
    const parts = split(segs);
    expect(parts.trained).toBe(' hel\nlo\n\n world');
    expect(parts.prompt).toBe("System: Be brief.\n\nUser: hello\n\nAssistant:User: it's\n\nAssistant:");
    expect(parts.endTrained).toBe(true);
    // Ending on a user turn: the end-of-text token follows untrained text and is not trained.
    const userLast = recordSegments({ messages: [{ role: 'assistant', content: 'hi' }, { role: 'user', content: 'bye' }] }, 'f')!;
    expect(split(userLast)).toEqual({ trained: ' hi\n\n', prompt: 'Assistant:User: bye', endTrained: false });
  });

  it('rejects records of no known shape or wrong field types, naming the line and field', () => {
    const bad = (r: unknown) => () => recordSegments(r, 'd.jsonl line 3');
    expect(bad([1])).toThrow(/d\.jsonl line 3: expected a JSON object, one of \{"text"\}.*, found an array/);
    expect(bad('x')).toThrow(/d\.jsonl line 3: expected a JSON object, .*found "x"/);
    expect(bad({ body: 'x' })).toThrow(/d\.jsonl line 3: expected one of \{"text"\}, \{"prompt","response"\}, \{"instruction","input"\?,"output"\} or \{"messages":\[\{"role","content"\}\]\}, found keys \["body"\]/);
    expect(bad({ text: 5 })).toThrow('d.jsonl line 3: field "text": expected a string, found 5');
    expect(bad({ prompt: 'x' })).toThrow('d.jsonl line 3: field "response": expected a string, found nothing');
    expect(bad({ instruction: 'x', input: 3, output: 'y' })).toThrow('d.jsonl line 3: field "input": expected a string, found 3');
    expect(bad({ messages: 'x' })).toThrow(/d\.jsonl line 3: field "messages": expected an array/);
    expect(bad({ messages: [{ role: 'bot', content: 'x' }] })).toThrow(/d\.jsonl line 3: messages\[0\]: expected \{"role": "system"\|"user"\|"assistant", "content": string\}, found \{"role":"bot","content":"x"\}/);
    expect(bad({ messages: [{ role: 'user', content: 'x' }] })).toThrow('d.jsonl line 3: messages: expected at least one assistant turn (nothing else is trained), found roles ["user"]');
  });
});

describe('jsonl files', () => {
  it('reads documents in order, skipping blank lines and empty texts, with a BOM and CRLF', () => {
    const path = join(tempDir(), 'mixed.jsonl');
    writeFileSync(
      path,
      '\uFEFF{"text":"hello"}\r\n\r\n{"text":""}\n{"prompt":"hi","response":"world"}\n   \n{"instruction":"a","output":"b"}',
    );
    const docs = JsonlDocuments.load(path, tok);
    expect([docs.documents, docs.skipped, docs.name]).toEqual([3, 1, path]);
    expect(tok.decode(docs.document(0).tokens)).toBe('hello');
    expect(tok.decode(docs.document(1).tokens)).toBe('User: hi\n\nAssistant: world');
    expect(() => docs.document(3)).toThrow(`${path}: document 3 does not exist (3 documents)`);
  });

  it('reads files past the 1 MiB read chunk, with multi-byte characters across chunk edges', () => {
    const rng = freshRng();
    const alphabet = ['hello', ' world', 'é', '你好', '🎉', '\n', 'a'];
    const texts = Array.from({ length: 300 }, () => Array.from({ length: 1500 }, () => alphabet[rng.int(alphabet.length)]).join(''));
    const path = writeJsonl(texts.map((text) => ({ text })));
    expect(statSync(path).size).toBeGreaterThan(1 << 20);
    let k = 0;
    for (const doc of jsonlDocuments(path, tok)) expect(tok.decode(doc.tokens), `seed ${rng.seed} doc ${k}`).toBe(texts[k++]);
    expect(k).toBe(300);
  });

  it('rejects bad files, naming the file, line and problem', () => {
    const dir = tempDir();
    const load = (p: string) => () => JsonlDocuments.load(p, tok);
    expect(load(join(dir, 'none.jsonl'))).toThrow(`${join(dir, 'none.jsonl')} not found: expected a jsonl file of training documents`);
    const empty = writeJsonl([], 'empty.jsonl');
    expect(load(empty)).toThrow(`${empty}: expected at least one document, found none (no records)`);
    const blank = writeJsonl([{ text: '' }, { text: '' }], 'blank.jsonl');
    expect(load(blank)).toThrow(`${blank}: expected at least one document, found none (2 records with empty text)`);
    const broken = writeJsonl([{ text: 'a' }, '{"text": "b"'], 'broken.jsonl');
    expect(load(broken)).toThrow(new RegExp(`${broken} line 2: not valid JSON \\(`));
    const shape = writeJsonl([{ text: 'a' }, { txt: 'b' }], 'shape.jsonl');
    expect(load(shape)).toThrow(`${shape} line 2: expected one of`);
  });

  it('samples jsonl documents per document: truncated to ctx_len+1, padded with 0, labels only on trained tokens', () => {
    const rng = freshRng();
    const pieces = ['hello', ' world', "it's", 'é', 'x'];
    const text = (n: number): string => Array.from({ length: n }, () => pieces[rng.int(pieces.length)]).join('');
    const records = [
      { text: text(1) },
      { prompt: text(17), response: text(129) },
      { messages: [{ role: 'user', content: text(3) }, { role: 'assistant', content: text(40) }, { role: 'user', content: text(5) }, { role: 'assistant', content: text(2) }] },
      { instruction: text(10), input: text(4), output: text(1000) },
    ];
    const docs = JsonlDocuments.load(writeJsonl(records), tok);
    for (const ctxLen of [1, 17, 129]) {
      const sampler = new DocumentSampler(docs, { ctxLen, microBsz: 2, seed: rng.u32() });
      for (let step = 0; step < 4; step++) {
        const b = sampler.batch(step);
        for (const [row, d] of b.origin.entries()) {
          const { tokens, mask } = docs.document(d);
          const valid = Math.min(tokens.length, ctxLen + 1);
          for (let t = 0; t < ctxLen; t++) {
            const what = `seed ${rng.seed} ctx ${ctxLen} doc ${d} t ${t}`;
            expect(b.inputs[row * ctxLen + t], what).toBe(t < tokens.length ? tokens[t] : 0);
            const trained = t + 1 < valid && (mask === null || mask[t + 1] === 1);
            expect(b.labels[row * ctxLen + t], what).toBe(trained ? tokens[t + 1] : IGNORE_INDEX);
          }
        }
      }
    }
  });
});
