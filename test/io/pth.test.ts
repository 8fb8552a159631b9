import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { bytesSource } from '../../src/io/byte_source.js';
import { MemorySink, type ByteSink } from '../../src/io/byte_sink.js';
import { CheckpointError } from '../../src/io/errors.js';
import { hostFromF32, hostToF32, type CheckpointTensor, type FloatDType } from '../../src/io/host_tensor.js';
import { loadCheckpoint, openCheckpointBytes } from '../../src/io/model_file.js';
import { encodePth, PthReader, writePth } from '../../src/io/pth.js';
import { ZipReader } from '../../src/io/zip_read.js';
import { ZipWriter } from '../../src/io/zip_write.js';
import { freshRng, type Rng } from '../helpers.js';
import {
  bin, binget, binput, BUILD, cat, dictPickle, EMPTY_DICT, EMPTY_TUPLE, flat, glob, handZip, int, MARK, PROTO2,
  rebuildV2, REDUCE, SETITEM, SETITEMS, sparseSource, STOP, TUPLE, u16, u32, u64, type HandEntry,
} from './hand_made.js';

const dir = mkdtempSync(join(tmpdir(), 'rwkv-io-pth-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const BYTES: Record<FloatDType, number> = { bf16: 2, f16: 2, f32: 4 };

/** A tensor of random bit patterns (NaN payloads, infinities, subnormals included): round trips must keep bits. */
function randomTensor(rng: Rng, name: string, dtype: FloatDType, shape: number[]): CheckpointTensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const data = new Uint8Array(n * BYTES[dtype]);
  for (let i = 0; i < data.length; i++) data[i] = rng.int(256);
  return { name, dtype, shape, data };
}

function expectSame(got: Map<string, CheckpointTensor>, want: CheckpointTensor[]): void {
  expect([...got.keys()]).toEqual(want.map((t) => t.name));
  for (const t of want) {
    const g = got.get(t.name)!;
    expect({ name: g.name, dtype: g.dtype, shape: g.shape }).toEqual({ name: t.name, dtype: t.dtype, shape: t.shape });
    expect(Buffer.from(g.data).equals(Buffer.from(t.data)), `bytes of ${t.name}`).toBe(true);
  }
}

function readBytes(name: string, bytes: Uint8Array): Map<string, CheckpointTensor> {
  const r = openCheckpointBytes(name, bytes);
  return new Map(r.tensors.map((t) => [t.name, r.read(t.name)]));
}

const pthOf = (entries: HandEntry[], zip64 = false): Uint8Array => flat(handZip(entries, zip64));
const f32Bytes = (v: number[]): Uint8Array => new Uint8Array(Float32Array.from(v).buffer);

describe('.pth round trip', () => {
  it('writes and reads back bf16, f16 and f32 tensors bit-exactly, 0-d and empty ones included', () => {
    const rng = freshRng();
    const shapes = [[], [0], [1], [17], [3, 129], [2, 1, 5], [1, 1, 1000]];
    const tensors: CheckpointTensor[] = [];
    for (const dtype of ['bf16', 'f16', 'f32'] as const) {
      shapes.forEach((s, i) => tensors.push(randomTensor(rng, `blocks.${i}.${dtype}.w`, dtype, s)));
    }
    const path = join(dir, 'round.pth');
    writePth(path, tensors);
    expectSame(loadCheckpoint(path), tensors);
  });

  it('keeps dict order over more than one SETITEMS batch (1000 pairs)', () => {
    const rng = freshRng();
    const tensors = Array.from({ length: 1203 }, (_, i) => randomTensor(rng, `t${(i * 7919) % 1203}`, 'bf16', [2]));
    expectSame(readBytes('many.pth', encodePth(tensors)), tensors);
  });

  it('round-trips values through hostFromF32/hostToF32', () => {
    const rng = freshRng();
    const v = Array.from(rng.normals(129));
    const got = readBytes('v.pth', encodePth([hostFromF32('x', [129], v, 'f32'), hostFromF32('y', [3, 43], v, 'bf16')]));
    expect(Array.from(hostToF32(got.get('x')!))).toEqual(Array.from(Float32Array.from(v)));
    const y = hostToF32(got.get('y')!);
    v.forEach((x, i) => expect(Math.abs(y[i] - x)).toBeLessThanOrEqual(Math.abs(x) * 2 ** -8));
  });
});

describe('.pth layout as torch.save writes it', () => {
  const t = hostFromF32('w', [2, 3], [1, 2, 3, 4, 5, 6], 'bf16');
  const path = join(dir, 'my-model.pth');
  writePth(path, [t, hostFromF32('b', [5], [1, 2, 3, 4, 5], 'f32')]);
  const bytes = new Uint8Array(readFileSync(path));
  const zip = new ZipReader(bytesSource(path, bytes));

  it('has the records torch writes, in its order, under the file name as archive folder', () => {
    expect(zip.entries.map((e) => e.name)).toEqual([
      'my-model/data.pkl',
      'my-model/.format_version',
      'my-model/.storage_alignment',
      'my-model/byteorder',
      'my-model/data/0',
      'my-model/data/1',
      'my-model/version',
    ]);
    const text = (n: string): string => new TextDecoder().decode(zip.read(zip.get(`my-model/${n}`)!));
    expect([text('byteorder'), text('version'), text('.format_version'), text('.storage_alignment')]).toEqual(['little', '3\n', '1', '64']);
  });

  it('stores entries with flags 0x0808, 64-byte aligned data through an FB extra field, a data descriptor and a Zip64 end record', () => {
    const dv = new DataView(bytes.buffer, bytes.byteOffset);
    for (const e of zip.entries) {
      const at = zip.dataOffset(e);
      expect(at % 64, e.name).toBe(0);
      const h = e.localHeaderOffset;
      expect(dv.getUint16(h + 6, true)).toBe(0x0808);
      expect(dv.getUint16(h + 8, true)).toBe(0);
      const nameLen = dv.getUint16(h + 26, true);
      expect(String.fromCharCode(bytes[h + 30 + nameLen], bytes[h + 31 + nameLen])).toBe('FB');
      expect(dv.getUint32(at + e.size, true)).toBe(0x08074b50);
      expect(dv.getUint32(at + e.size + 4, true)).toBe(e.crc32);
      expect(e.method).toBe(0);
    }
    const eocd = bytes.length - 22;
    expect(dv.getUint32(eocd, true)).toBe(0x06054b50);
    expect(dv.getUint32(eocd - 20, true)).toBe(0x07064b50);
    expect(dv.getUint32(eocd - 20 - 56, true)).toBe(0x06064b50);
  });

  it('writes an empty storage as torch does: flags 0x0800 and no data descriptor', () => {
    const e = encodePth([hostFromF32('e', [0, 3], [], 'f16')]);
    const z = new ZipReader(bytesSource('e.pth', e));
    const entry = z.get('archive/data/0')!;
    const dv = new DataView(e.buffer);
    expect(entry.size).toBe(0);
    expect(dv.getUint16(entry.localHeaderOffset + 6, true)).toBe(0x0800);
    expect(dv.getUint32(z.dataOffset(entry), true)).toBe(0x04034b50); // the next local header follows at once
  });

  it('writes the pickle byte for byte as the spec disassembles torch.save', () => {
    const want = cat(
      PROTO2, glob('collections', 'OrderedDict'), binput(0), EMPTY_TUPLE, REDUCE, MARK,
      bin('w'), glob('torch._utils', '_rebuild_tensor_v2'), binput(1), MARK, MARK,
      bin('storage'), binput(2), glob('torch', 'BFloat16Storage'), binput(3), bin('0'), bin('cpu'), binput(4), int(6), TUPLE, 0x51,
      int(0), int(2), int(3), 0x86, int(3), int(1), 0x86, 0x89, binget(0), EMPTY_TUPLE, REDUCE, TUPLE, REDUCE,
      bin('b'), binget(1), MARK, MARK,
      binget(2), glob('torch', 'FloatStorage'), binput(5), bin('1'), binget(4), int(5), TUPLE, 0x51,
      int(0), int(5), 0x85, int(1), 0x85, 0x89, binget(0), EMPTY_TUPLE, REDUCE, TUPLE, REDUCE,
      SETITEMS, STOP,
    );
    expect(Buffer.from(zip.read(zip.get('my-model/data.pkl')!)).equals(Buffer.from(want))).toBe(true);
  });
});

describe('.pth hand-made fixtures', () => {
  const w = [1.5, -2, 3.25, 0, 65504, -1e-3];
  const wBits = hostFromF32('w', [2, 3], w, 'bf16').data;

  it('reads a plain-dict checkpoint in any archive folder, without the optional records', () => {
    const pkl = dictPickle([
      ['emb.weight', rebuildV2('BFloat16Storage', '0', 6, 0, [2, 3], [3, 1])],
      ['ln_out.bias', rebuildV2('FloatStorage', '1', 4, 0, [4], [1])],
    ]);
    const file = pthOf([
      { name: 'rwkv-final/data.pkl', data: pkl },
      { name: 'rwkv-final/data/0', data: wBits },
      { name: 'rwkv-final/data/1', data: f32Bytes([1, 2, 3, 4]) },
      { name: 'rwkv-final/version', data: cat('3') },
    ]);
    const got = readBytes('hand.pth', file);
    expect([...got.keys()]).toEqual(['emb.weight', 'ln_out.bias']);
    expect(got.get('emb.weight')!.shape).toEqual([2, 3]);
    expect(Array.from(hostToF32(got.get('emb.weight')!))).toEqual(Array.from(hostToF32({ dtype: 'bf16', shape: [6], data: wBits })));
    expect(Array.from(hostToF32(got.get('ln_out.bias')!))).toEqual([1, 2, 3, 4]);
  });

  it("ignores an OrderedDict's _metadata (BUILD), unwraps 'state_dict' and strips '_forward_module.'", () => {
    const inner = cat(
      glob('collections', 'OrderedDict'), EMPTY_TUPLE, REDUCE, MARK,
      bin('_forward_module.blocks.0.ln1.weight'), rebuildV2('FloatStorage', '0', 4, 0, [4], [1]),
      SETITEMS,
      EMPTY_DICT, bin('_metadata'), glob('collections', 'OrderedDict'), EMPTY_TUPLE, REDUCE, bin(''), EMPTY_DICT, bin('version'), int(1), SETITEM, SETITEM, SETITEM, BUILD,
    );
    const pkl = cat(PROTO2, EMPTY_DICT, bin('epoch'), int(3), SETITEM, bin('state_dict'), inner, SETITEM, STOP);
    const got = readBytes('wrapped.pth', pthOf([{ name: 'a/data.pkl', data: pkl }, { name: 'a/data/0', data: f32Bytes([9, 8, 7, 6]) }]));
    expect([...got.keys()]).toEqual(['blocks.0.ln1.weight']);
    expect(Array.from(hostToF32(got.get('blocks.0.ln1.weight')!))).toEqual([9, 8, 7, 6]);
  });

  it('makes views contiguous: storage offsets, transposed strides, shared storages, expanded (stride 0) dims', () => {
    const base = Array.from({ length: 24 }, (_, i) => i * 1.5 - 7);
    const views: [string, number, number[], number[]][] = [
      ['slice', 5, [2, 3], [3, 1]],
      ['transposed', 3, [3, 4], [1, 5]],
      ['expanded', 2, [3, 2], [0, 1]],
      ['size1', 7, [2, 1, 3], [4, 99, 1]],
      ['strided3d', 1, [2, 2, 3], [11, 3, 2]],
      ['contiguous with odd size-1 stride', 4, [1, 3], [99, 1]],
    ];
    const pkl = dictPickle(views.map(([n, off, size, stride]) => [n, rebuildV2('FloatStorage', '0', 24, off, size, stride)]));
    const got = readBytes('views.pth', pthOf([{ name: 'v/data.pkl', data: pkl }, { name: 'v/data/0', data: f32Bytes(base) }]));
    for (const [n, off, size, stride] of views) {
      const want: number[] = [];
      const walk = (k: number, at: number): void => {
        if (k === size.length) want.push(base[at]);
        else for (let i = 0; i < size[k]; i++) walk(k + 1, at + i * stride[k]);
      };
      walk(0, off);
      expect(got.get(n)!.shape, n).toEqual(size);
      expect(Array.from(hostToF32(got.get(n)!)), n).toEqual(want);
    }
  });

  it('reads _rebuild_parameter, _rebuild_tensor_v3 over an untyped storage, and protocol-4 opcodes', () => {
    const v3 = cat(
      0x8c, 7, '_utils.', // SHORT_BINUNICODE, only to exercise it before STACK_GLOBAL below
      0x30, // POP
      glob('torch._utils', '_rebuild_tensor_v3'), MARK, MARK, bin('storage'), glob('torch', 'UntypedStorage'), bin('0'), bin('cuda:0'), int(12), TUPLE, 0x51,
      int(0), int(2), int(3), 0x86, int(3), int(1), 0x86, 0x89, glob('collections', 'OrderedDict'), EMPTY_TUPLE, REDUCE,
      glob('torch', 'bfloat16'), TUPLE, REDUCE,
    );
    const param = cat(
      0x8c, 12, 'torch._utils', 0x94, 0x8c, 18, '_rebuild_parameter', 0x94, 0x93, 0x94, // STACK_GLOBAL with MEMOIZE
      rebuildV2('FloatStorage', '1', 2, 0, [2], [1]), 0x89, glob('collections', 'OrderedDict'), EMPTY_TUPLE, REDUCE, 0x87, REDUCE,
    );
    const pkl = cat(
      0x80, 4, 0x95, u64(0), // PROTO 4, FRAME
      EMPTY_DICT, 0x72, u32(300), MARK, bin('v3'), v3, bin('p'), param, SETITEMS, 0x6a, u32(300), 0x30, STOP, // LONG_BINPUT/LONG_BINGET
    );
    const got = readBytes('v3.pth', pthOf([
      { name: 'p/data.pkl', data: pkl },
      { name: 'p/data/0', data: wBits },
      { name: 'p/data/1', data: f32Bytes([0.5, 0.25]) },
    ]));
    expect(got.get('v3')!.dtype).toBe('bf16');
    expect(Buffer.from(got.get('v3')!.data).equals(Buffer.from(wBits))).toBe(true);
    expect(Array.from(hostToF32(got.get('p')!))).toEqual([0.5, 0.25]);
  });

  it('reads deflated entries (a checkpoint re-zipped by another tool)', () => {
    const pkl = dictPickle([['x', rebuildV2('FloatStorage', '0', 3, 1, [2], [1])]]);
    const got = readBytes('deflate.pth', pthOf([{ name: 'd/data.pkl', data: pkl, deflate: true }, { name: 'd/data/0', data: f32Bytes([1, 2, 3]), deflate: true }]));
    expect(Array.from(hostToF32(got.get('x')!))).toEqual([2, 3]);
  });

  it('reads a Zip64 archive whose sizes and offsets are all in Zip64 extra fields', () => {
    const pkl = dictPickle([['x', rebuildV2('BFloat16Storage', '0', 6, 0, [6], [1])]]);
    const file = pthOf([{ name: 'z/data.pkl', data: pkl }, { name: 'z/data/0', data: wBits }, { name: 'z/version', data: cat('3\n') }], true);
    expect(Buffer.from(readBytes('zip64.pth', file).get('x')!.data).equals(Buffer.from(wBits))).toBe(true);
  });

  it('reads tensors past 4 GiB of a 5 GiB file by position, never the whole file', () => {
    const G = 2 ** 30;
    const storageBytes = 5 * G;
    const numel = storageBytes / 2;
    const far = numel - 10; // element offset whose bytes are past 4 GiB
    const deep = 2 ** 31 + 5;
    const pkl = dictPickle([
      ['tail', rebuildV2('BFloat16Storage', '0', numel, far, [2, 3], [1, 2])],
      ['deep', rebuildV2('BFloat16Storage', '0', numel, deep, [4], [1])],
    ]);
    const marker = hostFromF32('m', [10], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 'bf16').data;
    const z = handZip(
      [
        { name: 'big/data.pkl', data: pkl },
        { name: 'big/data/0', data: new Uint8Array(0), size: storageBytes, crc: 0 },
        { name: 'big/version', data: cat('3\n') },
      ],
      true,
    );
    const d0 = z.dataAt.get('big/data/0')!;
    z.pieces.push({ at: d0 + 2 * far, bytes: marker }, { at: d0 + 2 * deep, bytes: marker.subarray(0, 8) });
    const r = new PthReader(sparseSource('big.pth', z.size, z.pieces));
    expect(r.size).toBeGreaterThan(5 * G);
    expect(Array.from(hostToF32(r.read('tail')))).toEqual([1, 3, 5, 2, 4, 6]);
    expect(Array.from(hostToF32(r.read('deep')))).toEqual([1, 2, 3, 4]);
  });
});

/** A sink whose first byte sits at `base` (standing for `base` bytes written before). */
class OffsetSink implements ByteSink {
  readonly inner = new MemorySink();
  constructor(readonly base: number) {}
  get position(): number {
    return this.base + this.inner.position;
  }
  write(b: Uint8Array): void {
    this.inner.write(b);
  }
}

describe('zip writer past 4 GiB', () => {
  it('writes Zip64 extras for entries at offsets >= 4 GiB, which the reader follows', () => {
    const sink = new OffsetSink(2 ** 32 + 7);
    const zw = new ZipWriter(sink);
    zw.add('a/one', [cat('hello')]);
    zw.add('a/two', [f32Bytes([1, 2, 3])]);
    zw.finish();
    const bytes = sink.inner.bytes();
    const zip = new ZipReader(sparseSource('far.zip', sink.position, [{ at: sink.base, bytes }]));
    expect(zip.entries.map((e) => [e.name, e.size])).toEqual([['a/one', 5], ['a/two', 12]]);
    for (const e of zip.entries) {
      expect(e.localHeaderOffset).toBeGreaterThan(2 ** 32);
      expect(zip.dataOffset(e) % 64).toBe(0);
    }
    expect(new TextDecoder().decode(zip.read(zip.entries[0]))).toBe('hello');
    expect(Array.from(new Float32Array(zip.read(zip.entries[1]).slice().buffer))).toEqual([1, 2, 3]);
    // local header: the Zip64 extra (id 1, the 8-byte offset) comes before the FB padding, as torch writes it
    expect([...bytes.subarray(30 + 5, 30 + 5 + 4)]).toEqual([...u16(1), ...u16(8)]);
  });
});

describe('.pth bad input', () => {
  const good = encodePth([hostFromF32('w', [2, 3], [1, 2, 3, 4, 5, 6], 'bf16'), hostFromF32('b', [3], [1, 2, 3], 'f32')]);
  const fail = (name: string, bytes: Uint8Array): string => {
    try {
      readBytes(name, bytes);
    } catch (e) {
      expect(e).toBeInstanceOf(CheckpointError);
      return (e as Error).message;
    }
    throw new Error(`${name}: no error`);
  };

  it('an empty file', () => {
    expect(fail('empty.pth', new Uint8Array(0))).toBe('empty.pth: the file is empty (0 bytes)');
  });

  it('truncated at every length', () => {
    for (let n = 1; n < good.length; n++) {
      expect(fail('cut.pth', good.subarray(0, n)), `cut at ${n}`).toMatch(/^cut\.pth: .*truncated/);
    }
  });

  it('the middle missing (end records kept)', () => {
    const holed = cat(good.subarray(0, 700), good.subarray(900));
    expect(fail('holed.pth', holed)).toMatch(/^holed\.pth: .*(truncated or corrupt|wrong signature)/);
  });

  it('corrupted magic, and a legacy-format file', () => {
    const bad = good.slice();
    bad[0] = 0x51;
    expect(fail('magic.pth', bad)).toBe('magic.pth: not a torch zip checkpoint: expected the bytes PK\\x03\\x04, found 51 4b 03 04 00 00 08 08');
    const legacy = cat(0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, 0x2e);
    expect(fail('old.pth', legacy)).toMatch(/^old\.pth: this is the legacy \(pre-1\.6\) torch serialization format.*torch\.save\(torch\.load/);
  });

  it('storage sizes that disagree with the pickle, and views past their storage', () => {
    const declares = dictPickle([['x', rebuildV2('FloatStorage', '0', 10, 0, [10], [1])]]);
    expect(fail('size.pth', pthOf([{ name: 'a/data.pkl', data: declares }, { name: 'a/data/0', data: new Uint8Array(24) }]))).toBe(
      'size.pth: a/data/0 holds 24 bytes but data.pkl declares torch.FloatStorage of 10 elements (40 bytes)',
    );
    const past = dictPickle([['blocks.0.att.r_k', rebuildV2('FloatStorage', '0', 6, 2, [5, 5], [5, 1])]]);
    expect(fail('view.pth', pthOf([{ name: 'a/data.pkl', data: past }, { name: 'a/data/0', data: new Uint8Array(24) }]))).toBe(
      'view.pth: tensor blocks.0.att.r_k: shape [5,5] with stride [5,1] at storage offset 2 needs 108 bytes of storage 0, which holds 6 f32 elements (24 bytes)',
    );
    const missing = dictPickle([['x', rebuildV2('FloatStorage', '7', 1, 0, [1], [1])]]);
    expect(fail('nostore.pth', pthOf([{ name: 'a/data.pkl', data: missing }]))).toBe('nostore.pth: storage 7 has no record a/data/7 in the archive');
  });

  it('refuses unknown globals by name, before anything could run', () => {
    const evil = cat(PROTO2, glob('os', 'system'), bin('echo hi'), 0x85, REDUCE, STOP);
    expect(fail('evil.pth', pthOf([{ name: 'a/data.pkl', data: evil }]))).toMatch(
      /^evil\.pth: a\/data\.pkl at byte 2: refusing pickle global 'os\.system'/,
    );
    const stacked = cat(0x80, 4, 0x8c, 8, 'builtins', 0x8c, 4, 'eval', 0x93, STOP);
    expect(fail('evil2.pth', pthOf([{ name: 'a/data.pkl', data: stacked }]))).toMatch(/refusing pickle global 'builtins\.eval'/);
    const call = cat(PROTO2, glob('torch', 'FloatStorage'), EMPTY_TUPLE, REDUCE, STOP);
    expect(fail('call.pth', pthOf([{ name: 'a/data.pkl', data: call }]))).toMatch(/torch\.FloatStorage cannot be called/);
  });

  it('other structural faults', () => {
    expect(fail('nopkl.pth', pthOf([{ name: 'a/version', data: cat('3') }]))).toBe('nopkl.pth: no a/data.pkl in the archive (is this a torch checkpoint?)');
    expect(fail('flat.pth', pthOf([{ name: 'data.pkl', data: cat(PROTO2, EMPTY_DICT, STOP) }]))).toMatch(/zip entry 'data\.pkl' is not inside an archive folder/);
    const big = pthOf([{ name: 'a/data.pkl', data: cat(PROTO2, EMPTY_DICT, STOP) }, { name: 'a/byteorder', data: cat('big') }]);
    expect(fail('big.pth', big)).toMatch(/a\/byteorder is 'big'; only little-endian/);
    expect(fail('op.pth', pthOf([{ name: 'a/data.pkl', data: cat(PROTO2, 0x49, STOP) }]))).toMatch(/a\/data\.pkl at byte 2: unsupported pickle opcode 0x49/);
    expect(fail('list.pth', pthOf([{ name: 'a/data.pkl', data: cat(PROTO2, 0x5d, STOP) }]))).toMatch(/a\/data\.pkl holds a sequence of 0, expected a dict of tensors/);
    expect(fail('short.pth', pthOf([{ name: 'a/data.pkl', data: cat(PROTO2, 0x58, u32(100), 'ab') }]))).toMatch(/pickle ends early/);
  });

  it('lists a tensor of a non-float dtype but refuses to read it', () => {
    const pkl = dictPickle([['step', rebuildV2('LongStorage', '0', 1, 0, [], [])]]);
    const r = openCheckpointBytes('long.pth', pthOf([{ name: 'a/data.pkl', data: pkl }, { name: 'a/data/0', data: new Uint8Array(8) }]));
    expect(r.tensors.map((t) => [t.name, t.dtype])).toEqual([['step', 'i64']]);
    expect(() => r.read('step')).toThrow('long.pth: tensor step has dtype i64; only bf16, f16 and f32 tensors can be read');
    expect(() => r.read('nope')).toThrow('long.pth: no tensor named nope');
  });

  it('writing: wrong data lengths, duplicate names and existing files are refused', () => {
    const bad: CheckpointTensor = { name: 'w', dtype: 'bf16', shape: [2, 3], data: new Uint8Array(10) };
    expect(() => writePth(join(dir, 'bad.pth'), [bad])).toThrow(`${join(dir, 'bad.pth')}: tensor w [2,3]:bf16 needs 12 bytes of data, found 10`);
    const t = hostFromF32('w', [1], [1], 'f32');
    expect(() => encodePth([t, t])).toThrow('<memory>: tensor w is given twice');
    const path = join(dir, 'exists.pth');
    writeFileSync(path, 'keep me');
    expect(() => writePth(path, [t])).toThrow(`${path}: the file already exists; refusing to overwrite it (--overwrite, or overwrite: true, replaces it)`);
    expect(readFileSync(path, 'utf8')).toBe('keep me');
    writePth(path, [t], { overwrite: true });
    expect([...loadCheckpoint(path).keys()]).toEqual(['w']);
  });
});
