/**
 * Test fixtures for the data tests: where the real vocabulary and corpus live (they are
 * never copied into the repo), a small vocabulary in the same file format that the tests
 * write themselves, and the spec's binidx test vector.
 */
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

// ../shared/data next to the checkout (CI has it); RWKV_SHARED_DATA names another folder
// holding the same files (the GPU machine gets them carried in).
const SHARED_DATA = process.env.RWKV_SHARED_DATA ?? new URL('../../../shared/data', import.meta.url).pathname;

/** A file of the shared data; its absence fails the test that needs it, never skips it. */
function sharedFile(name: string): string {
  const path = join(SHARED_DATA, name);
  if (!existsSync(path)) throw new Error(`${path} is missing: the data tests read ${name} from ../shared/data (or RWKV_SHARED_DATA)`);
  return path;
}

export const realVocab = (): string => sharedFile('rwkv_vocab_v20230424.txt');
export const demoJsonl = (): string => sharedFile('demo.jsonl');

export function tempDir(): string {
  return mkdtempSync(join(tmpdir(), 'rwkv-data-'));
}

/** One line per token, as the real file writes them: ids 1..256 are the single bytes 0..255. */
function byteLine(b: number): string {
  const id = b + 1;
  if (b >= 0x80) return `${id} b'\\x${b.toString(16).padStart(2, '0')}' 1`;
  const named: Record<number, string> = { 0x09: '\\t', 0x0a: '\\n', 0x0d: '\\r', 0x27: "\\'", 0x5c: '\\\\' };
  if (named[b]) return `${id} '${named[b]}' 1`;
  if (b < 0x20 || b === 0x7f) return `${id} '\\x${b.toString(16).padStart(2, '0')}' 1`;
  return `${id} '${String.fromCharCode(b)}' 1`;
}

/**
 * Multi-byte tokens covering every literal form the real file uses: plain and escaped
 * str, double quotes around a single quote, bytes fragments of UTF-8, \u escapes, a
 * str \x escape above 0x7f (2 UTF-8 bytes), embedded spaces, and prefixes of each other
 * so that greedy longest match matters.
 */
export const SMALL_VOCAB_EXTRA: readonly string[] = [
  `257 '\\n\\n' 2`,
  `258 'he' 2`,
  `259 'hel' 3`,
  `260 'hello' 5`,
  `261 ' world' 6`,
  `262 'wor' 3`,
  `263 "it's" 4`,
  `264 '\\\\n' 2`,
  `265 '\\t\\t' 2`,
  `266 'é' 2`,
  `267 '\\u00e9t\\u00e9' 5`,
  `268 b'\\xe4\\xbd' 2`,
  `269 '你好' 6`,
  `270 '\\x80' 2`,
  `271 '   ' 3`,
  `272 'User:' 5`,
  `273 'Assistant:' 10`,
  `274 ' Assistant:' 11`,
  `275 'aaaa' 4`,
  `276 'aa' 2`,
  `277 '\\"q' 2`,
];

/** Writes the small vocabulary (CRLF line endings when asked) and returns its path. */
export function writeSmallVocab(dir: string, crlf = false): string {
  const lines = [...Array.from({ length: 256 }, (_, b) => byteLine(b)), ...SMALL_VOCAB_EXTRA];
  const path = join(dir, 'small_vocab.txt');
  writeFileSync(path, lines.join(crlf ? '\r\n' : '\n') + (crlf ? '\r\n' : '\n'));
  return path;
}

const hexToBytes = (s: string): Uint8Array => Uint8Array.from(s.trim().split(/\s+/), (h) => parseInt(h, 16));

// file-formats.md §1.3: "Hello world" and "User: hi\n\nAssistant: Hello!", each ended by 0.
export const SPEC_DOCS = [
  [33155, 40213, 0],
  [24281, 59, 4571, 261, 5585, 41693, 59, 36786, 34, 0],
];
export const SPEC_IDX = hexToBytes(`
  4d 4d 49 44 49 44 58 00 00  01 00 00 00 00 00 00 00  08  02 00 00 00 00 00 00 00  03 00 00 00 00 00 00 00
  03 00 00 00  0a 00 00 00
  00 00 00 00 00 00 00 00  06 00 00 00 00 00 00 00
  00 00 00 00 00 00 00 00  01 00 00 00 00 00 00 00  02 00 00 00 00 00 00 00`);
export const SPEC_BIN = hexToBytes('83 81 15 9d 00 00 d9 5e 3b 00 db 11 05 01 d1 15 dd a2 3b 00 b2 8f 22 00 00 00');
