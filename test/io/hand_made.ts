/**
 * Hand-built checkpoint bytes for the io tests, written independently of the
 * writers under test: pickle opcodes spelled out as the spec lists them, a plain
 * ZIP (optionally in Zip64 form), and sparse sources that stand for files of
 * many GiB without allocating them.
 */
import { crc32, deflateRawSync } from 'node:zlib';
import { CheckpointError } from '../../src/io/errors.js';
import type { ByteSource } from '../../src/io/byte_source.js';

export type Part = number | readonly number[] | Uint8Array | string;

/** Concatenates bytes, byte arrays and latin-1/ASCII strings. */
export function cat(...parts: Part[]): Uint8Array {
  const out: number[] = [];
  for (const p of parts) {
    if (typeof p === 'number') out.push(p);
    else if (typeof p === 'string') for (const c of new TextEncoder().encode(p)) out.push(c);
    else out.push(...p);
  }
  return Uint8Array.from(out);
}

export const u16 = (v: number): number[] => [v & 0xff, (v >>> 8) & 0xff];
export const u32 = (v: number): number[] => [v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, (v >>> 24) & 0xff];
export function u64(v: number): number[] {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt(v), true);
  return [...b];
}

// ---- pickle opcodes (protocol 2, as torch.save writes them) ----
export const PROTO2 = [0x80, 0x02];
export const MARK = 0x28;
export const STOP = 0x2e;
export const EMPTY_TUPLE = 0x29;
export const EMPTY_DICT = 0x7d;
export const TUPLE = 0x74;
export const TUPLE1 = 0x85;
export const TUPLE2 = 0x86;
export const REDUCE = 0x52;
export const BINPERSID = 0x51;
export const NEWFALSE = 0x89;
export const SETITEM = 0x73;
export const SETITEMS = 0x75;
export const BUILD = 0x62;
export const binput = (i: number): number[] => [0x71, i];
export const binget = (i: number): number[] => [0x68, i];
export const bin = (s: string): Uint8Array => {
  const b = new TextEncoder().encode(s);
  return cat(0x58, u32(b.length), b);
};
export const glob = (module: string, name: string): Uint8Array => cat(0x63, `${module}\n${name}\n`);
/** Smallest int opcode, as Python's pickler picks it. */
export function int(v: number): number[] {
  if (v <= 0xff) return [0x4b, v];
  if (v <= 0xffff) return [0x4d, ...u16(v)];
  if (v <= 0x7fffffff) return [0x4a, ...u32(v)];
  const bytes: number[] = [];
  for (let x = BigInt(v); x > 0n; x >>= 8n) bytes.push(Number(x & 0xffn));
  if (bytes[bytes.length - 1] & 0x80) bytes.push(0);
  return [0x8a, bytes.length, ...bytes];
}
export function tuple(items: readonly number[]): number[] {
  if (items.length === 0) return [EMPTY_TUPLE];
  return [MARK, ...items.flatMap(int), TUPLE];
}

/** One `_rebuild_tensor_v2(...)` value, fully spelled out (no memo). */
export function rebuildV2(storageClass: string, key: string, numel: number, offset: number, size: number[], stride: number[]): Uint8Array {
  return cat(
    glob('torch._utils', '_rebuild_tensor_v2'),
    MARK,
    MARK,
    bin('storage'),
    glob('torch', storageClass),
    bin(key),
    bin('cpu'),
    int(numel),
    TUPLE,
    BINPERSID,
    int(offset),
    tuple(size),
    tuple(stride),
    NEWFALSE,
    glob('collections', 'OrderedDict'),
    EMPTY_TUPLE,
    REDUCE,
    TUPLE,
    REDUCE,
  );
}

/** A pickle of a plain dict {key: value-bytes} (EMPTY_DICT, MARK, pairs, SETITEMS). */
export function dictPickle(items: [string, Uint8Array][]): Uint8Array {
  return cat(PROTO2, EMPTY_DICT, MARK, ...items.flatMap(([k, v]) => [bin(k), v]), SETITEMS, STOP);
}

// ---- ZIP ----

export interface HandEntry {
  name: string;
  data: Uint8Array;
  /** Bytes of data this entry stands for; larger than data.length in a sparse file (the rest reads as zeros). */
  size?: number;
  /** crc32 to record (sparse entries cannot compute it). */
  crc?: number;
  /** Store it deflated (method 8), as a re-zipping tool might. */
  deflate?: boolean;
}

export interface HandZip {
  /** Pieces at their file offsets; gaps read as zeros. */
  pieces: { at: number; bytes: Uint8Array }[];
  size: number;
  /** Where each entry's data begins. */
  dataAt: Map<string, number>;
}

/**
 * A ZIP with stored entries and no data descriptors. With `zip64`, every size and
 * offset in the central directory is the 0xFFFFFFFF sentinel with the real value in
 * a Zip64 extra field, and the end records are Zip64 ones with a classic record after.
 */
export function handZip(entries: HandEntry[], zip64 = false): HandZip {
  const pieces: { at: number; bytes: Uint8Array }[] = [];
  const dataAt = new Map<string, number>();
  const central: Uint8Array[] = [];
  let at = 0;
  for (const e of entries) {
    const size = e.size ?? e.data.length;
    const crc = e.crc ?? crc32(e.data);
    const stored = e.deflate ? new Uint8Array(deflateRawSync(e.data)) : e.data;
    const csize = e.deflate ? stored.length : size;
    const method = e.deflate ? 8 : 0;
    const name = new TextEncoder().encode(e.name);
    const local = cat(
      u32(0x04034b50), u16(20), u16(0), u16(method), u16(0), u16(0), u32(crc),
      u32(Math.min(csize, 0xffffffff)), u32(Math.min(size, 0xffffffff)), u16(name.length), u16(0), name,
    );
    pieces.push({ at, bytes: local });
    dataAt.set(e.name, at + local.length);
    pieces.push({ at: at + local.length, bytes: stored });
    const extra = zip64 ? cat(u16(1), u16(24), u64(size), u64(csize), u64(at)) : new Uint8Array(0);
    const [s32, c32, o32] = zip64 ? [0xffffffff, 0xffffffff, 0xffffffff] : [size, csize, at];
    central.push(
      cat(
        u32(0x02014b50), u16(45), u16(45), u16(0), u16(method), u16(0), u16(0), u32(crc), u32(c32), u32(s32),
        u16(name.length), u16(extra.length), u16(0), u16(0), u16(0), u32(0), u32(o32), name, extra,
      ),
    );
    at += local.length + csize;
  }
  const cd = cat(...central);
  const cdAt = at;
  pieces.push({ at: cdAt, bytes: cd });
  at += cd.length;
  const n = entries.length;
  if (zip64) {
    const end64 = cat(u32(0x06064b50), u64(44), u16(45), u16(45), u32(0), u32(0), u64(n), u64(n), u64(cd.length), u64(cdAt));
    const locator = cat(u32(0x07064b50), u32(0), u64(at), u32(1));
    const eocd = cat(u32(0x06054b50), u16(0), u16(0), u16(0xffff), u16(0xffff), u32(0xffffffff), u32(0xffffffff), u16(0));
    const tail = cat(end64, locator, eocd);
    pieces.push({ at, bytes: tail });
    at += tail.length;
  } else {
    const eocd = cat(u32(0x06054b50), u16(0), u16(0), u16(n), u16(n), u32(cd.length), u32(cdAt), u16(0));
    pieces.push({ at, bytes: eocd });
    at += eocd.length;
  }
  return { pieces, size: at, dataAt };
}

/** The whole file in memory (only for zips without sparse entries). */
export function flat(z: HandZip): Uint8Array {
  const out = new Uint8Array(z.size);
  for (const p of z.pieces) out.set(p.bytes, p.at);
  return out;
}

/** A source for a file of `size` bytes of which only `pieces` are stored; the rest reads as zeros. */
export function sparseSource(name: string, size: number, pieces: { at: number; bytes: Uint8Array }[]): ByteSource {
  return {
    name,
    size,
    read(position, length, what) {
      if (position + length > size) throw new CheckpointError(name, `truncated: ${what} past the end`);
      const out = new Uint8Array(length);
      for (const p of pieces) {
        const lo = Math.max(position, p.at);
        const hi = Math.min(position + length, p.at + p.bytes.length);
        if (lo < hi) out.set(p.bytes.subarray(lo - p.at, hi - p.at), lo - position);
      }
      return out;
    },
    close() {},
  };
}
