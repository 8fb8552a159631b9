/**
 * Reads an RWKV World vocabulary file (`rwkv_vocab_v20230424.txt`): one token per line,
 * `<id> <Python str or bytes literal> <byte length>`. Token 0 (end of text) is not in it.
 */
import { existsSync, readFileSync } from 'node:fs';
import { decodePyLiteral } from './py_literal.js';

export interface VocabEntry {
  id: number;
  bytes: Uint8Array;
}

const SOURCE =
  'the RWKV World vocabulary rwkv_vocab_v20230424.txt from BlinkDL/RWKV-LM (RWKV-v7/rwkv_vocab_v20230424.txt, Apache-2.0)';

/** Parses the vocabulary text; `file` names it in errors. */
export function parseVocab(text: string, file: string): VocabEntry[] {
  const entries: VocabEntry[] = [];
  const seen = new Set<number>();
  // Some copies of the file are CRLF; the literal itself never contains a raw CR.
  const lines = text.split('\n');
  for (let k = 0; k < lines.length; k++) {
    const line = lines[k].endsWith('\r') ? lines[k].slice(0, -1) : lines[k];
    if (line === '') continue;
    const where = `${file} line ${k + 1}`;
    // The literal may itself contain spaces: the id ends at the first space, the length starts after the last.
    const first = line.indexOf(' ');
    const last = line.lastIndexOf(' ');
    if (first < 0 || last <= first) {
      throw new Error(`${where}: expected "<id> <literal> <byte length>", found ${JSON.stringify(line)}`);
    }
    const idText = line.slice(0, first);
    const lenText = line.slice(last + 1);
    if (!/^\d+$/.test(idText)) throw new Error(`${where}: id: expected a positive integer, found ${JSON.stringify(idText)}`);
    if (!/^\d+$/.test(lenText)) throw new Error(`${where}: byte length: expected an integer, found ${JSON.stringify(lenText)}`);
    const id = Number(idText);
    if (id === 0) throw new Error(`${where}: id: 0 is reserved for end of text, expected an id >= 1`);
    if (seen.has(id)) throw new Error(`${where}: id ${id} appears twice`);
    seen.add(id);
    const bytes = decodePyLiteral(line.slice(first + 1, last), where);
    if (bytes.length !== Number(lenText)) {
      throw new Error(`${where}: token ${id} is ${bytes.length} bytes but the line states ${lenText}`);
    }
    if (bytes.length === 0) throw new Error(`${where}: token ${id} is empty`);
    entries.push({ id, bytes });
  }
  if (entries.length === 0) throw new Error(`${file}: no tokens (empty vocabulary file); expected ${SOURCE}`);
  return entries;
}

/** Reads and parses a vocabulary file; a missing file says which file is needed and where it comes from. */
export function readVocab(path: string): VocabEntry[] {
  if (!existsSync(path)) throw new Error(`vocabulary file ${path} not found: the World tokenizer needs ${SOURCE}`);
  return parseVocab(readFileSync(path, 'utf8'), path);
}
