/**
 * Megatron binidx token files as RWKV-LM and RWKV-PEFT use them: `<prefix>.idx` (header,
 * per-document sizes and byte pointers) and `<prefix>.bin` (the tokens, uint16 or int32
 * little-endian, no header). The reader keeps the index in memory and reads the .bin
 * sample by sample at file offsets, so a .bin of any size works. The writer is atomic.
 */
import { closeSync, existsSync, fstatSync, openSync, readFileSync, readSync, renameSync, rmSync, writeSync } from 'node:fs';
import { hexBytes } from './hex.js';
import type { DocumentSource, TokenStream } from './sampling.js';

export type TokenDtype = 'uint16' | 'int32';

/** The World model's vocabulary size (ids 65530..65535 are unused but valid). */
export const DEFAULT_VOCAB_SIZE = 65536;

const MAGIC = Uint8Array.from([0x4d, 0x4d, 0x49, 0x44, 0x49, 0x44, 0x58, 0x00, 0x00]); // "MMIDIDX\0\0"
const HEADER_BYTES = 34;
const DTYPE_CODE: Record<TokenDtype, number> = { uint16: 8, int32: 4 };
const CODE_NAME: Record<number, string> = { 1: 'uint8', 2: 'int8', 3: 'int16', 4: 'int32', 5: 'int64', 6: 'float64', 7: 'double', 8: 'uint16' };
const ITEM_SIZE: Record<TokenDtype, number> = { uint16: 2, int32: 4 };

/** `x`, `x.idx` and `x.bin` all name the pair `x.idx`/`x.bin`. */
export function binidxPaths(prefix: string): { prefix: string; idx: string; bin: string } {
  const p = prefix.replace(/\.(idx|bin)$/, '');
  return { prefix: p, idx: `${p}.idx`, bin: `${p}.bin` };
}

export interface BinidxIndex {
  dtype: TokenDtype;
  /** Tokens per document. */
  sizes: Int32Array;
  /** Token offset of each document in the .bin (the stored byte pointers / item size). */
  starts: Float64Array;
  /** Total tokens, which the .bin length must match. */
  tokenCount: number;
}

/** Parses and checks an .idx against the length of its .bin; every error names the file and field. */
export function parseIndex(bytes: Uint8Array, idxFile: string, binFile: string, binBytes: number): BinidxIndex {
  const fail = (field: string, expected: string, found: string | number | bigint): never => {
    throw new Error(`${idxFile}: ${field}: expected ${expected}, found ${found}`);
  };
  if (bytes.length === 0) fail('file', 'a binidx index starting with the magic "MMIDIDX\\0\\0"', 'an empty file');
  if (bytes.length < HEADER_BYTES) fail('header', `${HEADER_BYTES} bytes`, `a file of ${bytes.length} bytes`);
  for (let i = 0; i < MAGIC.length; i++) {
    if (bytes[i] !== MAGIC[i]) fail('magic', '4d 4d 49 44 49 44 58 00 00 ("MMIDIDX\\0\\0")', hexBytes(bytes.subarray(0, MAGIC.length)));
  }
  // The header and arrays are not aligned: read through a DataView.
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const version = view.getBigUint64(9, true);
  if (version !== 1n) fail('version', '1', version);
  const code = view.getUint8(17);
  const dtype = (Object.keys(DTYPE_CODE) as TokenDtype[]).find((d) => DTYPE_CODE[d] === code);
  if (!dtype) fail('dtype', 'code 8 (uint16) or 4 (int32) token ids', `code ${code}${CODE_NAME[code] ? ` (${CODE_NAME[code]})` : ''}`);
  const len = view.getBigUint64(18, true);
  const docCount = view.getBigUint64(26, true);
  if (len === 0n) fail('len', 'at least 1 document', 0);
  const need = BigInt(HEADER_BYTES) + 12n * len + 8n * docCount;
  if (need !== BigInt(bytes.length)) {
    fail('len/doc_count', `a file of ${need} bytes for len ${len} and doc_count ${docCount}`, `${bytes.length} bytes`);
  }
  const n = Number(len);
  const itemSize = ITEM_SIZE[dtype!];
  const sizes = new Int32Array(n);
  const starts = new Float64Array(n);
  const pointersAt = HEADER_BYTES + 4 * n;
  let tokens = 0;
  for (let i = 0; i < n; i++) {
    const size = view.getInt32(HEADER_BYTES + 4 * i, true);
    if (size < 0) fail(`sizes[${i}]`, 'a token count >= 0', size);
    // Every producer writes the documents back to back; readers rely on it.
    const pointer = view.getBigInt64(pointersAt + 8 * i, true);
    if (pointer !== BigInt(tokens * itemSize)) fail(`pointers[${i}]`, `${tokens * itemSize} (the sum of the sizes before it × ${itemSize} bytes)`, pointer);
    sizes[i] = size;
    starts[i] = tokens;
    tokens += size;
  }
  const docIdxAt = pointersAt + 8 * n;
  let previous = 0n;
  for (let i = 0; i < Number(docCount); i++) {
    const d = view.getBigInt64(docIdxAt + 8 * i, true);
    if (d < previous || d > len) fail(`doc_idx[${i}]`, `a document index in ${previous}..${len}`, d);
    previous = d;
  }
  if (binBytes !== tokens * itemSize) {
    throw new Error(
      `${binFile}: length: expected ${tokens * itemSize} bytes (the sizes in ${idxFile} add up to ${tokens} ${dtype} tokens), found ${binBytes} bytes`,
    );
  }
  return { dtype: dtype!, sizes, starts, tokenCount: tokens };
}

export interface BinidxReaderOptions {
  /** Token ids must be below this (default 65536, the World model's). */
  vocabSize?: number;
}

export class BinidxReader implements DocumentSource, TokenStream {
  readonly name: string;
  readonly dtype: TokenDtype;
  readonly documents: number;
  readonly tokenCount: number;
  private readonly binFile: string;
  private readonly itemSize: number;
  private readonly vocabSize: number;
  private fd: number | undefined;

  private constructor(private readonly index: BinidxIndex, paths: { prefix: string; bin: string }, fd: number, vocabSize: number) {
    this.name = paths.prefix;
    this.binFile = paths.bin;
    this.dtype = index.dtype;
    this.itemSize = ITEM_SIZE[index.dtype];
    this.documents = index.sizes.length;
    this.tokenCount = index.tokenCount;
    this.vocabSize = vocabSize;
    this.fd = fd;
  }

  static open(prefix: string, options: BinidxReaderOptions = {}): BinidxReader {
    const paths = binidxPaths(prefix);
    for (const f of [paths.idx, paths.bin]) {
      if (!existsSync(f)) throw new Error(`${f} not found: a binidx dataset needs both ${paths.idx} and ${paths.bin}`);
    }
    const fd = openSync(paths.bin, 'r');
    try {
      const index = parseIndex(readFileSync(paths.idx), paths.idx, paths.bin, fstatSync(fd).size);
      return new BinidxReader(index, paths, fd, options.vocabSize ?? DEFAULT_VOCAB_SIZE);
    } catch (e) {
      closeSync(fd);
      throw e;
    }
  }

  docSize(doc: number): number {
    this.checkDoc(doc);
    return this.index.sizes[doc];
  }

  /** Token offset of a document's first token in the flat stream. */
  docStart(doc: number): number {
    this.checkDoc(doc);
    return this.index.starts[doc];
  }

  private checkDoc(doc: number): void {
    if (!Number.isInteger(doc) || doc < 0 || doc >= this.documents) {
      throw new Error(`${this.name}: document ${doc} does not exist (${this.documents} documents)`);
    }
  }

  /** Reads out.length tokens of the flat stream starting at token `offset`, checking every id. */
  readTokens(offset: number, out: Int32Array): void {
    if (this.fd === undefined) throw new Error(`${this.name}: the reader is closed`);
    if (!Number.isInteger(offset) || offset < 0 || offset + out.length > this.tokenCount) {
      throw new Error(`${this.binFile}: a read of ${out.length} tokens at token ${offset} runs past the end (${this.tokenCount} tokens)`);
    }
    const bytes = new Uint8Array(out.length * this.itemSize);
    for (let got = 0; got < bytes.length; ) {
      const n = readSync(this.fd, bytes, got, bytes.length - got, offset * this.itemSize + got);
      if (n === 0) throw new Error(`${this.binFile}: the file ended early at byte ${offset * this.itemSize + got}`);
      got += n;
    }
    const view = new DataView(bytes.buffer);
    for (let i = 0; i < out.length; i++) {
      const t = this.itemSize === 2 ? view.getUint16(2 * i, true) : view.getInt32(4 * i, true);
      if (t < 0 || t >= this.vocabSize) {
        throw new Error(`${this.binFile}: token ${offset + i}: expected an id in 0..${this.vocabSize - 1} (vocab size ${this.vocabSize}), found ${t}`);
      }
      out[i] = t;
    }
  }

  /**
   * RWKV-PEFT's `pad` read: out.length tokens from the document's start, running on into
   * the documents after it; where that passes the end of the file, the document followed by
   * tokens from the start of the file instead. Every token of the document counts in the loss.
   */
  readWindow(doc: number, out: Int32Array): null {
    const start = this.docStart(doc);
    if (start + out.length <= this.tokenCount) {
      this.readTokens(start, out);
      return null;
    }
    const size = this.index.sizes[doc];
    if (out.length - size > this.tokenCount) {
      throw new Error(`${this.name}: a sample of ${out.length} tokens is longer than the whole dataset (${this.tokenCount} tokens)`);
    }
    this.readTokens(start, out.subarray(0, size));
    this.readTokens(0, out.subarray(size));
    return null;
  }

  close(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }
}

export interface WriteBinidxOptions {
  /** uint16 (RWKV-LM make_data.py, code 8; the default) or int32 (json2binidx_tool, code 4). */
  dtype?: TokenDtype;
  vocabSize?: number;
  /** Replace existing prefix.idx / prefix.bin (default false: refuse). */
  overwrite?: boolean;
}

export interface WrittenBinidx {
  idx: string;
  bin: string;
  documents: number;
  tokens: number;
}

/**
 * Writes one item per document, with doc_idx 0..n as RWKV's tools do. The caller appends
 * the end-of-document token 0 to each document. Both files go to temporary names first and
 * are renamed into place only when complete.
 */
export function writeBinidx(prefix: string, docs: Iterable<ArrayLike<number>>, options: WriteBinidxOptions = {}): WrittenBinidx {
  const paths = binidxPaths(prefix);
  const refuseExisting = (): void => {
    for (const f of [paths.idx, paths.bin]) {
      if (!options.overwrite && existsSync(f)) throw new Error(`${f}: the file already exists; refusing to overwrite it (--overwrite, or overwrite: true, replaces it)`);
    }
  };
  refuseExisting();
  const dtype = options.dtype ?? 'uint16';
  const itemSize = ITEM_SIZE[dtype];
  const maxId = Math.min(options.vocabSize ?? DEFAULT_VOCAB_SIZE, dtype === 'uint16' ? 65536 : 2 ** 31) - 1;
  const tag = `.tmp-${process.pid}-${Date.now().toString(36)}`;
  const binTmp = paths.bin + tag;
  const idxTmp = paths.idx + tag;
  const sizes: number[] = [];
  let tokens = 0;
  let fd: number | undefined = openSync(binTmp, 'w');
  try {
    // Tokens go out in chunks of about 1 MiB.
    const chunk = new DataView(new ArrayBuffer(1 << 20));
    let used = 0;
    const flush = (): void => {
      writeSync(fd!, new Uint8Array(chunk.buffer, 0, used));
      used = 0;
    };
    for (const doc of docs) {
      for (let i = 0; i < doc.length; i++) {
        const t = doc[i];
        if (!Number.isInteger(t) || t < 0 || t > maxId) {
          throw new Error(`${paths.bin}: document ${sizes.length} token ${i}: expected an integer id in 0..${maxId} (${dtype}), found ${t}`);
        }
        if (used === chunk.byteLength) flush();
        if (itemSize === 2) chunk.setUint16(used, t, true);
        else chunk.setInt32(used, t, true);
        used += itemSize;
      }
      sizes.push(doc.length);
      tokens += doc.length;
    }
    flush();
    closeSync(fd);
    fd = undefined;
    if (sizes.length === 0) throw new Error(`${paths.idx}: no documents to write`);
    writeIndexFile(idxTmp, dtype, sizes);
    refuseExisting();
    renameSync(binTmp, paths.bin);
    renameSync(idxTmp, paths.idx);
  } catch (e) {
    if (fd !== undefined) closeSync(fd);
    rmSync(binTmp, { force: true });
    rmSync(idxTmp, { force: true });
    throw e;
  }
  return { idx: paths.idx, bin: paths.bin, documents: sizes.length, tokens };
}

function writeIndexFile(path: string, dtype: TokenDtype, sizes: readonly number[]): void {
  const n = sizes.length;
  const bytes = new Uint8Array(HEADER_BYTES + 12 * n + 8 * (n + 1));
  const view = new DataView(bytes.buffer);
  bytes.set(MAGIC, 0);
  view.setBigUint64(9, 1n, true);
  view.setUint8(17, DTYPE_CODE[dtype]);
  view.setBigUint64(18, BigInt(n), true);
  view.setBigUint64(26, BigInt(n + 1), true);
  const pointersAt = HEADER_BYTES + 4 * n;
  const docIdxAt = pointersAt + 8 * n;
  let pointer = 0;
  for (let i = 0; i < n; i++) {
    view.setInt32(HEADER_BYTES + 4 * i, sizes[i], true);
    view.setBigInt64(pointersAt + 8 * i, BigInt(pointer), true);
    view.setBigInt64(docIdxAt + 8 * i, BigInt(i), true);
    pointer += sizes[i] * ITEM_SIZE[dtype];
  }
  view.setBigInt64(docIdxAt + 8 * n, BigInt(n), true);
  const fd = openSync(path, 'w');
  try {
    writeSync(fd, bytes);
  } finally {
    closeSync(fd);
  }
}
