/**
 * PyTorch `.pth` checkpoints (the zip format torch has written since 1.6):
 * reading any state dict of tensors, by position, views included, and writing
 * one that torch.load (also with weights_only=True and mmap=True) accepts.
 */
import { basename, extname } from 'node:path';
import { writeAtomic, type WriteOptions } from './atomic_write.js';
import { MemorySink, type ByteSink } from './byte_sink.js';
import { hexBytes, startsWith, type ByteSource } from './byte_source.js';
import { CheckpointError } from './errors.js';
import {
  checkTensors,
  contiguousStrides,
  FILE_DTYPE_BYTES,
  readableDType,
  shapeNumel,
  type CheckpointReader,
  type CheckpointTensor,
  type TensorInfo,
} from './host_tensor.js';
import { isTensorRef, PyDict, PyGlobal, show, STORAGE_CLASSES, unpickle, type PyValue, type StorageRef, type TensorRef } from './pickle_read.js';
import { pickleStateDict } from './pickle_write.js';
import { ZipReader, type ZipEntry } from './zip_read.js';
import { ZipWriter } from './zip_write.js';

/** First bytes of the pre-1.6 format: pickle(PROTO 2, LONG1 of the magic number 0x1950a86a20f9469cfc6c). */
export const LEGACY_PTH_MAGIC = Uint8Array.of(0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46);
export const ZIP_MAGIC = Uint8Array.of(0x50, 0x4b, 0x03, 0x04);

const LEGACY_PTH_MESSAGE =
  'this is the legacy (pre-1.6) torch serialization format, which is not supported; convert it once with PyTorch: ' +
  `python -c "import torch; torch.save(torch.load('in.pth', map_location='cpu'), 'out.pth')"`;

/** RWKV-LM saves through Lightning wrappers whose keys carry this prefix; RWKV-LM strips it on load, and so do we. */
const WRAPPER_PREFIX = '_forward_module.';

interface PthTensor extends TensorInfo {
  readonly ref: TensorRef;
  readonly entry: ZipEntry;
}

export class PthReader implements CheckpointReader {
  readonly format = 'pth';
  readonly metadata: Readonly<Record<string, string>> = {};
  readonly tensors: readonly PthTensor[];
  readonly file: string;
  private readonly zip: ZipReader;
  private readonly byName = new Map<string, PthTensor>();

  constructor(private readonly source: ByteSource) {
    this.file = source.name;
    if (source.size === 0) throw new CheckpointError(this.file, 'the file is empty (0 bytes)');
    const head = source.read(0, Math.min(source.size, 8), 'file signature');
    if (startsWith(head, LEGACY_PTH_MAGIC)) throw new CheckpointError(this.file, LEGACY_PTH_MESSAGE);
    if (head.length < ZIP_MAGIC.length && startsWith(ZIP_MAGIC, head)) {
      throw new CheckpointError(this.file, `truncated: the file has only ${head.length} bytes`);
    }
    if (!startsWith(head, ZIP_MAGIC)) {
      throw new CheckpointError(this.file, `not a torch zip checkpoint: expected the bytes PK\\x03\\x04, found ${hexBytes(head)}`);
    }
    this.zip = new ZipReader(source);
    const first = this.zip.entries[0]?.name ?? '';
    const slash = first.indexOf('/');
    if (slash <= 0) throw new CheckpointError(this.file, `zip entry '${first}' is not inside an archive folder as torch writes it`);
    const prefix = first.slice(0, slash + 1);
    const byteorder = this.zip.get(`${prefix}byteorder`);
    if (byteorder) {
      const order = new TextDecoder().decode(this.zip.read(byteorder, 0, Math.min(byteorder.size, 16)));
      if (order !== 'little') throw new CheckpointError(this.file, `${prefix}byteorder is '${order}'; only little-endian checkpoints are supported`);
    }
    const pkl = this.zip.get(`${prefix}data.pkl`);
    if (!pkl) throw new CheckpointError(this.file, `no ${prefix}data.pkl in the archive (is this a torch checkpoint?)`);
    const storages = new Map<string, StorageRef>();
    const root = unpickle(this.zip.read(pkl), {
      file: this.file,
      record: `${prefix}data.pkl`,
      persistentLoad: (pid) => this.storage(pid, prefix, storages),
    });
    this.tensors = this.collect(root, prefix);
    for (const t of this.tensors) this.byName.set(t.name, t);
  }

  private storage(pid: PyValue, prefix: string, storages: Map<string, StorageRef>): StorageRef {
    const what = `${prefix}data.pkl: persistent id`;
    if (!Array.isArray(pid) || pid.length !== 5 || pid[0] !== 'storage') {
      throw new CheckpointError(this.file, `${what} is ${show(pid)}, expected ('storage', StorageClass, key, location, numel)`);
    }
    const [, cls, key, , numel] = pid;
    const dtype = cls instanceof PyGlobal ? STORAGE_CLASSES.get(cls.qualified) : undefined;
    if (!dtype || !(cls instanceof PyGlobal)) throw new CheckpointError(this.file, `${what} names ${show(cls)}, expected a torch storage class`);
    if (typeof key !== 'string') throw new CheckpointError(this.file, `${what} has key ${show(key)}, expected a string`);
    if (typeof numel !== 'number' || !Number.isSafeInteger(numel) || numel < 0) {
      throw new CheckpointError(this.file, `${what} for storage ${key} has element count ${show(numel)}`);
    }
    const known = storages.get(key);
    if (known) return known;
    const entry = this.zip.get(`${prefix}data/${key}`);
    if (!entry) throw new CheckpointError(this.file, `storage ${key} has no record ${prefix}data/${key} in the archive`);
    const bytes = numel * FILE_DTYPE_BYTES[dtype];
    if (entry.size !== bytes) {
      throw new CheckpointError(
        this.file,
        `${prefix}data/${key} holds ${entry.size} bytes but data.pkl declares ${cls.qualified} of ${numel} elements (${bytes} bytes)`,
      );
    }
    const ref: StorageRef = { kind: 'storage', key, dtype, numel };
    storages.set(key, ref);
    return ref;
  }

  /** The tensors of the top-level dict, or of its 'state_dict' entry; other values (e.g. _metadata) are ignored. */
  private collect(root: PyValue, prefix: string): PthTensor[] {
    if (!(root instanceof PyDict)) throw new CheckpointError(this.file, `${prefix}data.pkl holds ${show(root)}, expected a dict of tensors`);
    const inner = root.items.get('state_dict');
    const dict = inner instanceof PyDict ? inner : root;
    const out: PthTensor[] = [];
    const seen = new Set<string>();
    for (const [k, v] of dict.items) {
      if (typeof k !== 'string' || !isTensorRef(v)) continue;
      const name = k.startsWith(WRAPPER_PREFIX) ? k.slice(WRAPPER_PREFIX.length) : k;
      if (seen.has(name)) throw new CheckpointError(this.file, `tensor ${name} appears twice`);
      seen.add(name);
      const entry = this.zip.get(`${prefix}data/${v.storage.key}`)!;
      this.checkView(name, v);
      out.push({ name, dtype: v.dtype, shape: v.shape, ref: v, entry });
    }
    return out;
  }

  /** The view must lie inside its storage: the last element it touches is offset + Σ (size−1)·stride. */
  private checkView(name: string, t: TensorRef): void {
    const n = shapeNumel(t.shape, this.file, `tensor ${name}`);
    const storageBytes = t.storage.numel * FILE_DTYPE_BYTES[t.storage.dtype];
    const es = FILE_DTYPE_BYTES[t.dtype];
    let last = t.offset;
    for (let k = 0; k < t.shape.length; k++) last += Math.max(t.shape[k] - 1, 0) * t.stride[k];
    const end = n === 0 ? 0 : (last + 1) * es;
    if (!(end <= storageBytes)) {
      throw new CheckpointError(
        this.file,
        `tensor ${name}: shape [${t.shape.join(',')}] with stride [${t.stride.join(',')}] at storage offset ${t.offset} ` +
          `needs ${end} bytes of storage ${t.storage.key}, which holds ${t.storage.numel} ${t.storage.dtype} elements (${storageBytes} bytes)`,
      );
    }
  }

  read(name: string): CheckpointTensor {
    const t = this.byName.get(name);
    if (!t) throw new CheckpointError(this.file, `no tensor named ${name}`);
    const dtype = readableDType(t, this.file);
    const { shape, stride, offset } = t.ref;
    const es = FILE_DTYPE_BYTES[dtype];
    const n = shape.reduce((a, d) => a * d, 1);
    if (n === 0) return { name, dtype, shape: [...shape], data: new Uint8Array(0) };
    const dense = contiguousStrides(shape);
    if (shape.every((d, k) => d === 1 || stride[k] === dense[k])) {
      return { name, dtype, shape: [...shape], data: this.zip.read(t.entry, offset * es, n * es) };
    }
    let last = 0;
    for (let k = 0; k < shape.length; k++) last += (shape[k] - 1) * stride[k];
    const span = this.zip.read(t.entry, offset * es, (last + 1) * es);
    return { name, dtype, shape: [...shape], data: gather(span, shape, stride, es) };
  }

  get size(): number {
    return this.source.size;
  }

  close(): void {
    this.source.close();
  }
}

/** Copies a strided view into C order, element by element (views are rare in checkpoints). */
function gather(span: Uint8Array, shape: readonly number[], stride: readonly number[], es: number): Uint8Array {
  const n = shape.reduce((a, d) => a * d, 1);
  const out = new Uint8Array(n * es);
  const idx = new Array<number>(shape.length).fill(0);
  let src = 0;
  for (let i = 0; i < n; i++) {
    out.set(span.subarray(src * es, src * es + es), i * es);
    for (let k = shape.length - 1; k >= 0; k--) {
      idx[k]++;
      src += stride[k];
      if (idx[k] < shape[k]) break;
      src -= idx[k] * stride[k];
      idx[k] = 0;
    }
  }
  return out;
}

// ---- writing ----

export interface PthWriteOptions extends WriteOptions {
  /** The folder every entry sits in; torch uses the file name without its extension. */
  archiveName?: string;
}

const text = (s: string): Uint8Array[] => [new TextEncoder().encode(s)];

function writePthTo(sink: ByteSink, tensors: readonly CheckpointTensor[], archiveName: string, file: string): void {
  checkTensors(tensors, file);
  const zip = new ZipWriter(sink);
  const a = `${archiveName}/`;
  // Records in the order torch.save writes them; storage keys are 0, 1, … in dict order (.format_version 1).
  zip.add(`${a}data.pkl`, [pickleStateDict(tensors.map((t, i) => ({ ...t, storageKey: String(i) })))]);
  zip.add(`${a}.format_version`, text('1'));
  zip.add(`${a}.storage_alignment`, text('64'));
  zip.add(`${a}byteorder`, text('little'));
  tensors.forEach((t, i) => zip.add(`${a}data/${i}`, [t.data]));
  zip.add(`${a}version`, text('3\n'));
  zip.finish();
}

/** A .pth in memory (tests, small files). */
export function encodePth(tensors: Iterable<CheckpointTensor>, archiveName = 'archive'): Uint8Array {
  const sink = new MemorySink();
  writePthTo(sink, [...tensors], archiveName, '<memory>');
  return sink.bytes();
}

/** Writes a state dict (an OrderedDict, in the given order) atomically; refuses to overwrite unless told to. */
export function writePth(path: string, tensors: Iterable<CheckpointTensor>, opts: PthWriteOptions = {}): void {
  const list = [...tensors];
  const archiveName = opts.archiveName ?? (basename(path, extname(path)) || 'archive');
  writeAtomic(path, opts, (sink) => writePthTo(sink, list, archiveName, path));
}
