/**
 * A ZIP writer that lays entries out as PyTorch's writer (miniz) does: stored,
 * general-purpose flags 0x0808 with a data descriptor after each non-empty entry, zero
 * dates, each entry's data 64-byte aligned through an "FB" padding extra field,
 * per-entry Zip64 extras when a size or offset reaches 4 GiB, and always a Zip64
 * end record. torch.load with mmap=True maps storages at those aligned offsets.
 */
import { crc32 } from 'node:zlib';
import type { ByteSink } from './byte_sink.js';

const U16_MAX = 0xffff;
const U32_MAX = 0xffffffff;
const ALIGN = 64;
/** UTF-8 names, and bit 3: sizes and CRC follow the data in a descriptor. Empty entries, whose zeros are already right, have none. */
const FLAGS = 0x0808;
const FLAGS_EMPTY = 0x0800;

interface Written {
  name: Uint8Array;
  crc: number;
  size: number;
  offset: number;
  flags: number;
}

class Fields {
  private readonly dv: DataView;
  readonly bytes: Uint8Array;
  private at = 0;
  constructor(n: number) {
    this.bytes = new Uint8Array(n);
    this.dv = new DataView(this.bytes.buffer);
  }
  u16(v: number): this {
    this.dv.setUint16(this.at, v, true);
    this.at += 2;
    return this;
  }
  u32(v: number): this {
    this.dv.setUint32(this.at, v, true);
    this.at += 4;
    return this;
  }
  u64(v: number): this {
    this.dv.setBigUint64(this.at, BigInt(v), true);
    this.at += 8;
    return this;
  }
  raw(b: Uint8Array): this {
    this.bytes.set(b, this.at);
    this.at += b.length;
    return this;
  }
}

/** The Zip64 extra field (id 1) holding the 8-byte sizes and/or offset that do not fit in 4 bytes. */
function zip64Extra(size: number, offset: number): Uint8Array {
  const big = size >= U32_MAX;
  const far = offset >= U32_MAX;
  if (!big && !far) return new Uint8Array(0);
  const f = new Fields(4 + (big ? 16 : 0) + (far ? 8 : 0));
  f.u16(1).u16(f.bytes.length - 4);
  if (big) f.u64(size).u64(size);
  if (far) f.u64(offset);
  return f.bytes;
}

export class ZipWriter {
  private readonly written: Written[] = [];
  private readonly encoder = new TextEncoder();

  constructor(private readonly sink: ByteSink) {}

  add(name: string, chunks: readonly Uint8Array[]): void {
    const nameBytes = this.encoder.encode(name);
    if (nameBytes.length > U16_MAX) throw new Error(`zip entry name is ${nameBytes.length} bytes long, the limit is ${U16_MAX}`);
    let size = 0;
    let crc = 0;
    for (const c of chunks) {
      size += c.length;
      crc = crc32(c, crc);
    }
    const offset = this.sink.position;
    const z64 = zip64Extra(size, offset);
    const start = offset + 30 + nameBytes.length + z64.length + 4;
    const pad = (ALIGN - (start % ALIGN)) % ALIGN;
    const flags = size ? FLAGS : FLAGS_EMPTY;
    const local = new Fields(30 + nameBytes.length + z64.length + 4 + pad);
    local.u32(0x04034b50).u16(0).u16(flags).u16(0).u16(0).u16(0).u32(0).u32(0).u32(0);
    local.u16(nameBytes.length).u16(z64.length + 4 + pad).raw(nameBytes).raw(z64);
    local.u16(0x4246).u16(pad).raw(new Uint8Array(pad).fill(0x5a)); // 'F','B', pad × 'Z'
    this.sink.write(local.bytes);
    for (const c of chunks) this.sink.write(c);
    if (size) {
      const descriptor = new Fields(z64.length ? 24 : 16).u32(0x08074b50).u32(crc);
      if (z64.length) descriptor.u64(size).u64(size);
      else descriptor.u32(size).u32(size);
      this.sink.write(descriptor.bytes);
    }
    this.written.push({ name: nameBytes, crc, size, offset, flags });
  }

  finish(): void {
    const cdOffset = this.sink.position;
    for (const e of this.written) {
      const z64 = zip64Extra(e.size, e.offset);
      const c = new Fields(46 + e.name.length + z64.length);
      c.u32(0x02014b50).u16(0).u16(0).u16(e.flags).u16(0).u16(0).u16(0).u32(e.crc);
      c.u32(Math.min(e.size, U32_MAX)).u32(Math.min(e.size, U32_MAX));
      c.u16(e.name.length).u16(z64.length).u16(0).u16(0).u16(0).u32(0).u32(Math.min(e.offset, U32_MAX));
      c.raw(e.name).raw(z64);
      this.sink.write(c.bytes);
    }
    const cdSize = this.sink.position - cdOffset;
    const n = this.written.length;
    const eocd64At = this.sink.position;
    const end = new Fields(56 + 20 + 22);
    end.u32(0x06064b50).u64(44).u16(0x031e).u16(0x2d).u32(0).u32(0).u64(n).u64(n).u64(cdSize).u64(cdOffset);
    end.u32(0x07064b50).u32(0).u64(eocd64At).u32(1);
    end.u32(0x06054b50).u16(0).u16(0).u16(Math.min(n, U16_MAX)).u16(Math.min(n, U16_MAX));
    end.u32(Math.min(cdSize, U32_MAX)).u32(Math.min(cdOffset, U32_MAX)).u16(0);
    this.sink.write(end.bytes);
  }
}
