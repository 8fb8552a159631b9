/**
 * The RWKV World tokenizer: UTF-8 bytes, then at each position the longest vocabulary
 * token that matches there (greedy), found by walking a trie over bytes. No
 * normalisation, nothing added. Token 0 is end of text and has no bytes.
 */
import { hexBytes } from './hex.js';
import { readVocab, type VocabEntry } from './vocab.js';

export const END_OF_TEXT = 0;

const utf8 = new TextEncoder();
const utf8Decoder = new TextDecoder('utf-8');

/** Trie edges live in one open-addressing hash table keyed by node·256 + byte. */
const HASH_MUL = 0x9e3779b1;

export class WorldTokenizer {
  /** Largest id + 1. */
  readonly vocabSize: number;
  private readonly tokenStart: Int32Array;
  private readonly tokenEnd: Int32Array;
  private readonly tokenData: Uint8Array;
  private readonly edgeKeys: Int32Array;
  private readonly edgeNodes: Int32Array;
  private readonly hashShift: number;
  /** Token id ending at each trie node, −1 where none. */
  private readonly nodeToken: Int32Array;

  static fromFile(path: string): WorldTokenizer {
    return new WorldTokenizer(readVocab(path), path);
  }

  /** `source` names the vocabulary in errors. */
  constructor(entries: readonly VocabEntry[], readonly source: string) {
    let maxId = 0;
    let totalBytes = 0;
    for (const e of entries) {
      maxId = Math.max(maxId, e.id);
      totalBytes += e.bytes.length;
    }
    this.vocabSize = maxId + 1;
    this.tokenStart = new Int32Array(this.vocabSize).fill(-1);
    this.tokenEnd = new Int32Array(this.vocabSize).fill(-1);
    this.tokenData = new Uint8Array(totalBytes);
    if (totalBytes >= 2 ** 23) throw new Error(`${source}: vocabulary of ${totalBytes} bytes is too large for the trie`);

    // At most one node per vocabulary byte, plus the root; the table stays under half full.
    const maxNodes = totalBytes + 1;
    const bits = Math.max(8, Math.ceil(Math.log2(maxNodes * 2)));
    this.hashShift = 32 - bits;
    this.edgeKeys = new Int32Array(1 << bits).fill(-1);
    this.edgeNodes = new Int32Array(1 << bits);
    this.nodeToken = new Int32Array(maxNodes).fill(-1);
    let nodes = 1;
    let at = 0;
    for (const { id, bytes } of entries) {
      this.tokenStart[id] = at;
      this.tokenData.set(bytes, at);
      at += bytes.length;
      this.tokenEnd[id] = at;
      let node = 0;
      for (const b of bytes) {
        let next = this.child(node, b);
        if (next < 0) next = this.addEdge(node, b, nodes++);
        node = next;
      }
      if (this.nodeToken[node] >= 0) {
        throw new Error(`${source}: tokens ${this.nodeToken[node]} and ${id} have the same bytes ${hexBytes(bytes)}`);
      }
      this.nodeToken[node] = id;
    }
  }

  private slot(key: number): number {
    return Math.imul(key, HASH_MUL) >>> this.hashShift;
  }

  private child(node: number, byte: number): number {
    const key = node * 256 + byte;
    const mask = this.edgeKeys.length - 1;
    for (let h = this.slot(key); ; h = (h + 1) & mask) {
      const k = this.edgeKeys[h];
      if (k === key) return this.edgeNodes[h];
      if (k < 0) return -1;
    }
  }

  private addEdge(node: number, byte: number, next: number): number {
    const key = node * 256 + byte;
    const mask = this.edgeKeys.length - 1;
    let h = this.slot(key);
    while (this.edgeKeys[h] >= 0) h = (h + 1) & mask;
    this.edgeKeys[h] = key;
    this.edgeNodes[h] = next;
    return next;
  }

  /** Token ids of a string (encoded as UTF-8) or of raw bytes. */
  encode(text: string | Uint8Array): number[] {
    const bytes = typeof text === 'string' ? utf8.encode(text) : text;
    const out: number[] = [];
    // The lookup is inlined: this loop is the tokenizer's whole cost.
    const keys = this.edgeKeys;
    const nodesAt = this.edgeNodes;
    const nodeToken = this.nodeToken;
    const mask = keys.length - 1;
    const shift = this.hashShift;
    const n = bytes.length;
    let pos = 0;
    while (pos < n) {
      let node = 0;
      let best = -1;
      let bestEnd = pos;
      for (let j = pos; j < n; j++) {
        const key = node * 256 + bytes[j];
        let h = Math.imul(key, HASH_MUL) >>> shift;
        let k = keys[h];
        while (k !== key && k >= 0) {
          h = (h + 1) & mask;
          k = keys[h];
        }
        if (k < 0) break;
        node = nodesAt[h];
        const t = nodeToken[node];
        if (t >= 0) {
          best = t;
          bestEnd = j + 1;
        }
      }
      if (best < 0) {
        throw new Error(`${this.source}: no token for byte 0x${bytes[pos].toString(16).padStart(2, '0')} at byte ${pos} of the input`);
      }
      out.push(best);
      pos = bestEnd;
    }
    return out;
  }

  /** The bytes of a token; end of text (0) has none. */
  tokenBytes(id: number): Uint8Array {
    if (id === END_OF_TEXT) return new Uint8Array(0);
    if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize || this.tokenStart[id] < 0) {
      throw new Error(`${this.source}: token id ${id} is not in the vocabulary (ids 1..${this.vocabSize - 1}, 0 = end of text)`);
    }
    return this.tokenData.subarray(this.tokenStart[id], this.tokenEnd[id]);
  }

  decodeBytes(ids: ArrayLike<number>): Uint8Array {
    const parts: Uint8Array[] = [];
    let n = 0;
    for (let i = 0; i < ids.length; i++) {
      const b = this.tokenBytes(ids[i]);
      parts.push(b);
      n += b.length;
    }
    const out = new Uint8Array(n);
    let at = 0;
    for (const b of parts) {
      out.set(b, at);
      at += b.length;
    }
    return out;
  }

  /** Concatenated token bytes as UTF-8; invalid sequences become U+FFFD. */
  decode(ids: ArrayLike<number>): string {
    return utf8Decoder.decode(this.decodeBytes(ids));
  }
}
