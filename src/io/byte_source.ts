/**
 * Random access to a checkpoint's bytes by position, from a file or from memory.
 * Files are never read whole: models can be larger than memory and than 4 GiB,
 * so readers fetch the directory, then each tensor's bytes at its offset.
 */
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { CheckpointError } from './errors.js';

export interface ByteSource {
  /** The file's path (or a label for bytes in memory), used in every error message. */
  readonly name: string;
  readonly size: number;
  /** A fresh copy of `length` bytes at `position`; `what` names them for the error if the source is too short. */
  read(position: number, length: number, what: string): Uint8Array;
  close(): void;
}

function checkRange(name: string, size: number, position: number, length: number, what: string): void {
  if (!Number.isSafeInteger(position) || !Number.isSafeInteger(length) || position < 0 || length < 0) {
    throw new CheckpointError(name, `${what}: invalid byte range (position ${position}, length ${length})`);
  }
  if (position + length > size) {
    throw new CheckpointError(
      name,
      `truncated or corrupt: ${what} needs bytes ${position}..${position + length} but the file has ${size} bytes`,
    );
  }
}

/** Node reads at most 2 GiB per call. */
const MAX_READ = 0x7fff_f000;

export function fileSource(path: string): ByteSource {
  const fd = openSync(path, 'r');
  let size: number;
  try {
    size = fstatSync(fd).size;
  } catch (e) {
    closeSync(fd);
    throw e;
  }
  let open = true;
  return {
    name: path,
    size,
    read(position, length, what) {
      checkRange(path, size, position, length, what);
      const out = new Uint8Array(length);
      let done = 0;
      while (done < length) {
        const n = readSync(fd, out, done, Math.min(length - done, MAX_READ), position + done);
        if (n === 0) throw new CheckpointError(path, `${what}: the file ended early (was it truncated while reading?)`);
        done += n;
      }
      return out;
    },
    close() {
      if (open) closeSync(fd);
      open = false;
    },
  };
}

export function bytesSource(name: string, bytes: Uint8Array): ByteSource {
  return {
    name,
    size: bytes.length,
    read(position, length, what) {
      checkRange(name, bytes.length, position, length, what);
      return bytes.slice(position, position + length);
    },
    close() {},
  };
}

export function startsWith(bytes: Uint8Array, magic: Uint8Array): boolean {
  return bytes.length >= magic.length && magic.every((v, i) => bytes[i] === v);
}

/** Bytes as hex pairs, for messages about unexpected content. */
export function hexBytes(bytes: Uint8Array): string {
  return [...bytes].map((b) => b.toString(16).padStart(2, '0')).join(' ');
}

/** Little-endian field access over a small header read from a source. */
export class LeReader {
  private readonly dv: DataView;
  constructor(readonly bytes: Uint8Array) {
    this.dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }
  u16(at: number): number {
    return this.dv.getUint16(at, true);
  }
  u32(at: number): number {
    return this.dv.getUint32(at, true);
  }
  /** A u64 as a number; values past 2^53 cannot be valid offsets or sizes, so they become Infinity. */
  u64(at: number): number {
    const v = this.dv.getBigUint64(at, true);
    return v > BigInt(Number.MAX_SAFE_INTEGER) ? Infinity : Number(v);
  }
}
