/**
 * safetensors (`.safetensors`, `.st`): u64 header length, a JSON header, then the
 * data. The reader applies the checks of the reference implementation
 * (huggingface/safetensors), which web-rwkv and Ai00 use; the writer lays files
 * out as the reference does (tensors by descending dtype, then name; header
 * padded with spaces to 8 bytes).
 */
import { writeAtomic, type WriteOptions } from './atomic_write.js';
import { MemorySink, type ByteSink } from './byte_sink.js';
import type { ByteSource } from './byte_source.js';
import { CheckpointError } from './errors.js';
import {
  checkTensors,
  FILE_DTYPE_BYTES,
  readableDType,
  shapeNumel,
  type CheckpointReader,
  type CheckpointTensor,
  type FileDType,
  type FloatDType,
  type TensorInfo,
} from './host_tensor.js';

/** The reference implementation's limit on the header. */
const MAX_HEADER_BYTES = 100_000_000;

const DTYPES: ReadonlyMap<string, FileDType> = new Map(Object.entries({
  BOOL: 'bool',
  U8: 'u8',
  I8: 'i8',
  F8_E5M2: 'f8_e5m2',
  F8_E4M3: 'f8_e4m3',
  I16: 'i16',
  U16: 'u16',
  F16: 'f16',
  BF16: 'bf16',
  I32: 'i32',
  U32: 'u32',
  F32: 'f32',
  F64: 'f64',
  I64: 'i64',
  U64: 'u64',
} as const));
const DTYPE_NAMES: Record<FloatDType, string> = { f16: 'F16', bf16: 'BF16', f32: 'F32' };
/** Position in the reference's Dtype enum, which orders the tensors it writes (descending). */
const DTYPE_RANK: Record<FloatDType, number> = { f16: 0, bf16: 1, f32: 2 };

interface StTensor extends TensorInfo {
  readonly begin: number;
  readonly end: number;
}

export class SafetensorsReader implements CheckpointReader {
  readonly format = 'safetensors';
  readonly file: string;
  readonly tensors: readonly StTensor[];
  readonly metadata: Readonly<Record<string, string>>;
  private readonly dataStart: number;
  private readonly byName = new Map<string, StTensor>();

  constructor(private readonly source: ByteSource) {
    const file = (this.file = source.name);
    if (source.size === 0) throw new CheckpointError(file, 'the file is empty (0 bytes)');
    if (source.size < 8) throw new CheckpointError(file, `${source.size} bytes is too short for a safetensors header length (8 bytes)`);
    const lengthField = source.read(0, 8, 'safetensors header length');
    const n64 = new DataView(lengthField.buffer, lengthField.byteOffset, 8).getBigUint64(0, true);
    if (n64 > BigInt(MAX_HEADER_BYTES)) {
      throw new CheckpointError(file, `safetensors header length ${n64} is larger than the limit ${MAX_HEADER_BYTES} (not a safetensors file?)`);
    }
    const n = Number(n64);
    if (8 + n > source.size) {
      throw new CheckpointError(file, `safetensors header length ${n} runs past the end of the file (${source.size} bytes): truncated or corrupt`);
    }
    let json: string;
    try {
      json = new TextDecoder('utf-8', { fatal: true }).decode(source.read(8, n, 'safetensors header'));
    } catch {
      throw new CheckpointError(file, 'safetensors header is not valid UTF-8');
    }
    if (!json.startsWith('{')) throw new CheckpointError(file, `safetensors header must start with '{', found ${JSON.stringify(json.slice(0, 16))}`);
    let header: unknown;
    try {
      header = JSON.parse(json);
    } catch (e) {
      throw new CheckpointError(file, `safetensors header is not valid JSON (${(e as Error).message})`);
    }
    const entries = Object.entries(header as Record<string, unknown>);
    this.metadata = {};
    const list: StTensor[] = [];
    for (const [name, info] of entries) {
      if (name === '__metadata__') this.metadata = readMetadata(file, info);
      else list.push(readInfo(file, name, info));
    }
    // Sorted by offsets, tensors must tile the data buffer from 0 with no gap or overlap, to the end of the file.
    list.sort((a, b) => a.begin - b.begin || a.end - b.end);
    let at = 0;
    for (const t of list) {
      if (t.begin !== at || t.end < t.begin) {
        throw new CheckpointError(
          file,
          `tensor ${t.name}: data_offsets [${t.begin},${t.end}] should start at ${at} (tensors must be contiguous, without gaps or overlaps)`,
        );
      }
      const bytes = shapeNumel(t.shape, file, `tensor ${t.name}`) * FILE_DTYPE_BYTES[t.dtype];
      if (t.end - t.begin !== bytes) {
        throw new CheckpointError(
          file,
          `tensor ${t.name}: data_offsets [${t.begin},${t.end}] span ${t.end - t.begin} bytes but shape [${t.shape.join(',')}] of ${t.dtype} needs ${bytes}`,
        );
      }
      at = t.end;
    }
    this.dataStart = 8 + n;
    if (this.dataStart + at !== source.size) {
      throw new CheckpointError(
        file,
        `safetensors data should end at byte ${this.dataStart + at} (header ${n} bytes, data ${at} bytes) but the file has ${source.size} bytes` +
          (this.dataStart + at > source.size ? ': truncated' : ''),
      );
    }
    this.tensors = list;
    for (const t of list) this.byName.set(t.name, t);
  }

  read(name: string): CheckpointTensor {
    const t = this.byName.get(name);
    if (!t) throw new CheckpointError(this.file, `no tensor named ${name}`);
    const dtype = readableDType(t, this.file);
    const data = this.source.read(this.dataStart + t.begin, t.end - t.begin, `tensor ${name}`);
    return { name, dtype, shape: [...t.shape], data };
  }

  get size(): number {
    return this.source.size;
  }

  close(): void {
    this.source.close();
  }
}

function readMetadata(file: string, v: unknown): Record<string, string> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) {
    throw new CheckpointError(file, 'safetensors __metadata__ must be an object of strings');
  }
  for (const [k, s] of Object.entries(v)) {
    if (typeof s !== 'string') throw new CheckpointError(file, `safetensors __metadata__.${k} is ${JSON.stringify(s)}, expected a string`);
  }
  return { ...(v as Record<string, string>) };
}

function isOffset(x: unknown): x is number {
  return typeof x === 'number' && Number.isSafeInteger(x) && x >= 0;
}

function readInfo(file: string, name: string, v: unknown): StTensor {
  const o = v as { dtype?: unknown; shape?: unknown; data_offsets?: unknown } | null;
  if (typeof o !== 'object' || o === null || Array.isArray(o)) {
    throw new CheckpointError(file, `safetensors header entry ${name} is ${JSON.stringify(v)}, expected {dtype, shape, data_offsets}`);
  }
  const dtype = typeof o.dtype === 'string' ? DTYPES.get(o.dtype) : undefined;
  if (!dtype) {
    throw new CheckpointError(file, `tensor ${name}: dtype ${JSON.stringify(o.dtype)} is not one of ${[...DTYPES.keys()].join(', ')}`);
  }
  if (!Array.isArray(o.shape)) throw new CheckpointError(file, `tensor ${name}: shape ${JSON.stringify(o.shape)} is not a list`);
  shapeNumel(o.shape, file, `tensor ${name}`);
  const off = o.data_offsets;
  if (!Array.isArray(off) || off.length !== 2 || !isOffset(off[0]) || !isOffset(off[1])) {
    throw new CheckpointError(file, `tensor ${name}: data_offsets ${JSON.stringify(off)} is not [begin, end]`);
  }
  return { name, dtype, shape: o.shape as number[], begin: off[0], end: off[1] };
}

// ---- writing ----

export interface SafetensorsWriteOptions extends WriteOptions {
  /** `__metadata__`; web-rwkv's converter writes {"format": "pt"}. */
  metadata?: Record<string, string>;
}

function compareBytes(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}

function writeSafetensorsTo(sink: ByteSink, tensors: readonly CheckpointTensor[], metadata: Record<string, string> | undefined, file: string): void {
  checkTensors(tensors, file);
  if (tensors.some((t) => t.name === '__metadata__')) throw new CheckpointError(file, 'a tensor cannot be named __metadata__');
  const order = [...tensors].sort(
    (a, b) => DTYPE_RANK[b.dtype] - DTYPE_RANK[a.dtype] || compareBytes(a.name, b.name),
  );
  const fields: string[] = [];
  if (metadata) fields.push(`"__metadata__":${JSON.stringify(metadata)}`);
  let at = 0;
  for (const t of order) {
    const end = at + t.data.byteLength;
    fields.push(
      `${JSON.stringify(t.name)}:{"dtype":"${DTYPE_NAMES[t.dtype]}","shape":[${t.shape.join(',')}],"data_offsets":[${at},${end}]}`,
    );
    at = end;
  }
  const json = new TextEncoder().encode(`{${fields.join(',')}}`);
  const n = Math.ceil(json.length / 8) * 8;
  const head = new Uint8Array(8 + n).fill(0x20, 8);
  new DataView(head.buffer).setBigUint64(0, BigInt(n), true);
  head.set(json, 8);
  sink.write(head);
  for (const t of order) sink.write(t.data);
}

export function encodeSafetensors(tensors: Iterable<CheckpointTensor>, metadata?: Record<string, string>): Uint8Array {
  const sink = new MemorySink();
  writeSafetensorsTo(sink, [...tensors], metadata, '<memory>');
  return sink.bytes();
}

export function writeSafetensors(path: string, tensors: Iterable<CheckpointTensor>, opts: SafetensorsWriteOptions = {}): void {
  const list = [...tensors];
  writeAtomic(path, opts, (sink) => writeSafetensorsTo(sink, list, opts.metadata, path));
}
