/**
 * A ZIP reader for torch checkpoints: the end-of-central-directory record (and
 * its Zip64 form, which torch always writes), the central directory, and each
 * entry's bytes read by position. Entries are normally stored; deflated ones
 * (a checkpoint re-zipped by another tool) are inflated whole.
 */
import { inflateRawSync } from 'node:zlib';
import { LeReader, type ByteSource } from './byte_source.js';
import { CheckpointError } from './errors.js';

export interface ZipEntry {
  readonly name: string;
  readonly flags: number;
  readonly method: number;
  readonly crc32: number;
  readonly compressedSize: number;
  readonly size: number;
  readonly localHeaderOffset: number;
}

const SIG_EOCD = 0x06054b50;
const SIG_EOCD64 = 0x06064b50;
const SIG_LOCATOR64 = 0x07064b50;
const SIG_CENTRAL = 0x02014b50;
const SIG_LOCAL = 0x04034b50;
const EOCD_SIZE = 22;
const CENTRAL_SIZE = 46;
const LOCAL_SIZE = 30;
const U16_MAX = 0xffff;
const U32_MAX = 0xffffffff;
const EXTRA_ZIP64 = 0x0001;

const utf8 = new TextDecoder('utf-8');

export class ZipReader {
  readonly entries: ZipEntry[];
  private readonly byName = new Map<string, ZipEntry>();
  private readonly dataOffsets = new Map<ZipEntry, number>();

  constructor(readonly source: ByteSource) {
    this.entries = readCentralDirectory(source);
    for (const e of this.entries) if (!this.byName.has(e.name)) this.byName.set(e.name, e);
  }

  get(name: string): ZipEntry | undefined {
    return this.byName.get(name);
  }

  /** Bytes [start, start + length) of an entry's uncompressed content. */
  read(entry: ZipEntry, start = 0, length = entry.size - start): Uint8Array {
    const what = `zip entry ${entry.name}`;
    if (!(start >= 0 && length >= 0 && start + length <= entry.size)) {
      throw new CheckpointError(this.source.name, `${what}: bytes ${start}..${start + length} are past its size ${entry.size}`);
    }
    if (entry.flags & 1) throw new CheckpointError(this.source.name, `${what} is encrypted, which checkpoints never are`);
    const at = this.dataOffset(entry);
    if (entry.method === 0) {
      if (entry.compressedSize !== entry.size) {
        throw new CheckpointError(
          this.source.name,
          `${what} is stored but its compressed size ${entry.compressedSize} differs from its size ${entry.size}`,
        );
      }
      return this.source.read(at + start, length, what);
    }
    if (entry.method !== 8) {
      throw new CheckpointError(this.source.name, `${what} uses compression method ${entry.method}; expected 0 (stored) or 8 (deflate)`);
    }
    const packed = this.source.read(at, entry.compressedSize, what);
    let whole: Uint8Array;
    try {
      whole = inflateRawSync(packed, { maxOutputLength: Math.max(entry.size, 1) });
    } catch (e) {
      throw new CheckpointError(this.source.name, `${what}: deflate data is corrupt (${(e as Error).message})`);
    }
    if (whole.length !== entry.size) {
      throw new CheckpointError(this.source.name, `${what} inflates to ${whole.length} bytes, expected ${entry.size}`);
    }
    return whole.subarray(start, start + length);
  }

  /** Where an entry's data starts: after its local header, whose name and extra lengths may differ from the central ones. */
  dataOffset(entry: ZipEntry): number {
    let at = this.dataOffsets.get(entry);
    if (at === undefined) {
      const what = `local header of zip entry ${entry.name}`;
      const h = new LeReader(this.source.read(entry.localHeaderOffset, LOCAL_SIZE, what));
      if (h.u32(0) !== SIG_LOCAL) {
        throw new CheckpointError(
          this.source.name,
          `${what} at byte ${entry.localHeaderOffset}: wrong signature 0x${h.u32(0).toString(16)}, expected 0x${SIG_LOCAL.toString(16)}`,
        );
      }
      at = entry.localHeaderOffset + LOCAL_SIZE + h.u16(26) + h.u16(28);
      if (!(at + entry.compressedSize <= this.source.size)) {
        throw new CheckpointError(
          this.source.name,
          `truncated or corrupt: zip entry ${entry.name} needs bytes ${at}..${at + entry.compressedSize} but the file has ${this.source.size} bytes`,
        );
      }
      this.dataOffsets.set(entry, at);
    }
    return at;
  }
}

function findEocd(src: ByteSource): number {
  if (src.size < EOCD_SIZE) {
    throw new CheckpointError(src.name, `not a zip archive, or truncated: ${src.size} bytes is shorter than an end-of-central-directory record`);
  }
  const tailStart = Math.max(0, src.size - EOCD_SIZE - U16_MAX);
  const tail = src.read(tailStart, src.size - tailStart, 'zip end-of-central-directory search');
  const r = new LeReader(tail);
  for (let p = tail.length - EOCD_SIZE; p >= 0; p--) {
    if (r.u32(p) === SIG_EOCD && p + EOCD_SIZE + r.u16(p + 20) <= tail.length) return tailStart + p;
  }
  throw new CheckpointError(src.name, 'not a zip archive, or truncated: no end-of-central-directory record (PK\\x05\\x06) near the end');
}

interface Directory {
  count: number;
  size: number;
  offset: number;
  /** Where the directory must end: the first end record. */
  limit: number;
}

function readDirectoryLocation(src: ByteSource): Directory {
  const eocdAt = findEocd(src);
  const e = new LeReader(src.read(eocdAt, EOCD_SIZE, 'zip end-of-central-directory record'));
  if (e.u16(4) !== 0 || e.u16(6) !== 0) throw new CheckpointError(src.name, 'multi-disk zip archives are not supported');
  const classic: Directory = { count: e.u16(10), size: e.u32(12), offset: e.u32(16), limit: eocdAt };
  if (eocdAt < 20) return classic;
  const loc = new LeReader(src.read(eocdAt - 20, 20, 'zip64 end-of-central-directory locator'));
  if (loc.u32(0) !== SIG_LOCATOR64) {
    if (classic.count === U16_MAX || classic.size === U32_MAX || classic.offset === U32_MAX) {
      throw new CheckpointError(src.name, 'zip end record says Zip64 but there is no Zip64 locator before it');
    }
    return classic;
  }
  const at = loc.u64(8);
  const z = new LeReader(src.read(at, 56, 'zip64 end-of-central-directory record'));
  if (z.u32(0) !== SIG_EOCD64) {
    throw new CheckpointError(
      src.name,
      `zip64 end-of-central-directory record at byte ${at}: wrong signature 0x${z.u32(0).toString(16)}, expected 0x${SIG_EOCD64.toString(16)}`,
    );
  }
  return { count: z.u64(32), size: z.u64(40), offset: z.u64(48), limit: at };
}

function readCentralDirectory(src: ByteSource): ZipEntry[] {
  const dir = readDirectoryLocation(src);
  if (!(dir.offset + dir.size <= dir.limit)) {
    throw new CheckpointError(
      src.name,
      `zip central directory (bytes ${dir.offset}..${dir.offset + dir.size}) overlaps its end record at byte ${dir.limit}: truncated or corrupt`,
    );
  }
  if (dir.count * CENTRAL_SIZE > dir.size) {
    throw new CheckpointError(src.name, `zip central directory of ${dir.size} bytes cannot hold the ${dir.count} entries the end record claims`);
  }
  const cd = src.read(dir.offset, dir.size, 'zip central directory');
  const r = new LeReader(cd);
  const entries: ZipEntry[] = [];
  let p = 0;
  for (let i = 0; i < dir.count; i++) {
    const what = `zip central directory entry ${i}`;
    if (p + CENTRAL_SIZE > cd.length) throw new CheckpointError(src.name, `${what} runs past the directory`);
    if (r.u32(p) !== SIG_CENTRAL) {
      throw new CheckpointError(src.name, `${what}: wrong signature 0x${r.u32(p).toString(16)}, expected 0x${SIG_CENTRAL.toString(16)}`);
    }
    const nameLen = r.u16(p + 28);
    const extraLen = r.u16(p + 30);
    const end = p + CENTRAL_SIZE + nameLen + extraLen + r.u16(p + 32);
    if (end > cd.length) throw new CheckpointError(src.name, `${what} runs past the directory`);
    const name = utf8.decode(cd.subarray(p + CENTRAL_SIZE, p + CENTRAL_SIZE + nameLen));
    let size = r.u32(p + 24);
    let compressedSize = r.u32(p + 20);
    let localHeaderOffset = r.u32(p + 42);
    if (r.u16(p + 34) !== 0) throw new CheckpointError(src.name, `zip entry ${name} starts on another disk`);
    // Zip64 extra: 8-byte values for exactly the fields saturated above, in this order.
    const extra = cd.subarray(p + CENTRAL_SIZE + nameLen, p + CENTRAL_SIZE + nameLen + extraLen);
    const x = new LeReader(extra);
    for (let q = 0; q + 4 <= extra.length; ) {
      const id = x.u16(q);
      const len = x.u16(q + 2);
      if (q + 4 + len > extra.length) throw new CheckpointError(src.name, `zip entry ${name}: extra field ${id} runs past its extra data`);
      if (id === EXTRA_ZIP64) {
        let f = q + 4;
        const take = (): number => {
          if (f + 8 > q + 4 + len) throw new CheckpointError(src.name, `zip entry ${name}: Zip64 extra field is too short`);
          f += 8;
          return x.u64(f - 8);
        };
        if (size === U32_MAX) size = take();
        if (compressedSize === U32_MAX) compressedSize = take();
        if (localHeaderOffset === U32_MAX) localHeaderOffset = take();
      }
      q += 4 + len;
    }
    entries.push({
      name,
      flags: r.u16(p + 8),
      method: r.u16(p + 10),
      crc32: r.u32(p + 16),
      compressedSize,
      size,
      localHeaderOffset,
    });
    p = end;
  }
  return entries;
}
