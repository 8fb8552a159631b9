import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CheckpointError } from '../../src/io/errors.js';
import { hostFromF32, hostToF32, type CheckpointTensor } from '../../src/io/host_tensor.js';
import { loadCheckpoint, openCheckpoint, openCheckpointBytes } from '../../src/io/model_file.js';
import { encodeSafetensors, writeSafetensors } from '../../src/io/safetensors.js';
import { freshRng } from '../helpers.js';
import { cat, u64 } from './hand_made.js';

const dir = mkdtempSync(join(tmpdir(), 'rwkv-io-st-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A safetensors file from a header object and a data buffer, as any writer could lay it out. */
function stFile(header: unknown, data: Uint8Array, pad = 0): Uint8Array {
  const json = JSON.stringify(header) + ' '.repeat(pad);
  return cat(u64(Buffer.byteLength(json)), json, data);
}

function fail(name: string, bytes: Uint8Array): string {
  try {
    const r = openCheckpointBytes(name, bytes);
    for (const t of r.tensors) r.read(t.name);
  } catch (e) {
    expect(e).toBeInstanceOf(CheckpointError);
    return (e as Error).message;
  }
  throw new Error(`${name}: no error`);
}

describe('safetensors writing', () => {
  it("matches the reference implementation's bytes for its test vector", () => {
    const t = hostFromF32('attn.0', [1, 2, 3], [0, 1, 2, 3, 4, 5], 'f32');
    const bytes = encodeSafetensors([t]);
    const json = '{"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}}';
    expect(Buffer.from(bytes).equals(Buffer.from(cat(0x40, 0, 0, 0, 0, 0, 0, 0, json, t.data)))).toBe(true);
    // one byte more of name needs 7 spaces of padding
    const padded = encodeSafetensors([{ ...t, name: 'attn.00' }]);
    expect(new TextDecoder().decode(padded.subarray(8, 80))).toBe(`${json.replace('attn.0', 'attn.00')}       `);
    expect(padded[0]).toBe(72);
  });

  it('orders tensors by descending dtype, then name bytes, with __metadata__ first and the header padded to 8', () => {
    const ts = [
      hostFromF32('b', [1], [1], 'f16'),
      hostFromF32('a', [1], [1], 'f16'),
      hostFromF32('z', [1], [1], 'bf16'),
      hostFromF32('B', [1], [1], 'f32'),
      hostFromF32('a2', [1], [1], 'f32'),
    ];
    const bytes = encodeSafetensors(ts, { format: 'pt' });
    const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
    expect(n % 8).toBe(0);
    const header = new TextDecoder().decode(bytes.subarray(8, 8 + n));
    expect(Object.keys(JSON.parse(header))).toEqual(['__metadata__', 'B', 'a2', 'z', 'a', 'b']);
    expect(header.trimEnd().endsWith('}')).toBe(true);
  });

  it('round-trips bf16, f16 and f32 bit-exactly through a file, with metadata', () => {
    const rng = freshRng();
    const tensors: CheckpointTensor[] = [];
    for (const dtype of ['bf16', 'f16', 'f32'] as const) {
      for (const shape of [[], [0], [1], [17], [3, 129], [1, 1, 1000]]) {
        const n = shape.reduce((a, b) => a * b, 1);
        const data = new Uint8Array(n * (dtype === 'f32' ? 4 : 2));
        for (let i = 0; i < data.length; i++) data[i] = rng.int(256);
        tensors.push({ name: `blocks.${tensors.length}.${dtype}`, dtype, shape, data });
      }
    }
    const path = join(dir, 'model.st');
    writeSafetensors(path, tensors, { metadata: { format: 'pt', note: 'ünïcode' } });
    const r = openCheckpoint(path);
    expect(r.format).toBe('safetensors');
    expect(r.metadata).toEqual({ format: 'pt', note: 'ünïcode' });
    r.close();
    const got = loadCheckpoint(path);
    expect(got.size).toBe(tensors.length);
    for (const t of tensors) {
      const g = got.get(t.name)!;
      expect([g.dtype, g.shape]).toEqual([t.dtype, t.shape]);
      expect(Buffer.from(g.data).equals(Buffer.from(t.data)), t.name).toBe(true);
    }
    expect(readdirSync(dir).filter((f) => f.includes('.tmp-'))).toEqual([]);
  });

  it('reads files from other writers: unsorted header, padding, other dtypes listed', () => {
    const data = cat(...new Uint8Array(Float32Array.of(1, 2).buffer), 7, 0, 0, 0, 0, 0, 0, 0);
    const file = stFile({ step: { dtype: 'I64', shape: [], data_offsets: [8, 16] }, x: { dtype: 'F32', shape: [2], data_offsets: [0, 8], extra: 1 } }, data, 5);
    const r = openCheckpointBytes('other.safetensors', file);
    expect(r.tensors.map((t) => [t.name, t.dtype])).toEqual([['x', 'f32'], ['step', 'i64']]);
    expect(Array.from(hostToF32(r.read('x')))).toEqual([1, 2]);
    expect(() => r.read('step')).toThrow('other.safetensors: tensor step has dtype i64; only bf16, f16 and f32 tensors can be read');
  });

  it('refuses to overwrite, and leaves no temporary file behind a failed write', () => {
    const path = join(dir, 'once.safetensors');
    const t = hostFromF32('x', [2], [1, 2], 'f32');
    writeSafetensors(path, [t]);
    expect(() => writeSafetensors(path, [t])).toThrow(/already exists; refusing to overwrite it/);
    writeSafetensors(path, [hostFromF32('y', [1], [3], 'f16')], { overwrite: true });
    expect([...loadCheckpoint(path).keys()]).toEqual(['y']);
    const bad = { ...t, data: new Uint8Array(3) };
    expect(() => writeSafetensors(join(dir, 'bad.st'), [bad])).toThrow(/tensor x \[2\]:f32 needs 8 bytes of data, found 3/);
    expect(readdirSync(dir).filter((f) => f.startsWith('bad.st'))).toEqual([]);
    expect(() => encodeSafetensors([t, t])).toThrow('<memory>: tensor x is given twice');
    expect(readFileSync(path).length).toBeGreaterThan(8);
  });
});

describe('safetensors bad input (the reference implementation rejects all of these)', () => {
  const good = encodeSafetensors([hostFromF32('a', [3], [1, 2, 3], 'f32'), hostFromF32('b', [2, 2], [1, 2, 3, 4], 'bf16')], { format: 'pt' });
  const x = { dtype: 'F32', shape: [2], data_offsets: [0, 8] };
  const eight = new Uint8Array(8);

  it('an empty file and one shorter than the length field', () => {
    expect(fail('e.st', new Uint8Array(0))).toBe('e.st: the file is empty (0 bytes)');
    expect(fail('e.st', new Uint8Array(5))).toBe('e.st: 5 bytes is too short for a safetensors header length (8 bytes)');
  });

  it('truncated at every length', () => {
    for (let n = 1; n < good.length; n++) {
      expect(fail('cut.st', good.subarray(0, n)), `cut at ${n}`).toMatch(/^cut\.st: .*(too short|runs past the end of the file|truncated)/);
    }
  });

  it('header length past the end, or over the limit', () => {
    expect(fail('h.st', cat(u64(1000), '{}'))).toBe('h.st: safetensors header length 1000 runs past the end of the file (10 bytes): truncated or corrupt');
    expect(fail('h.st', cat(u64(100_000_001), '{}'))).toMatch(/header length 100000001 is larger than the limit 100000000/);
    expect(fail('h.st', cat(0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, '{}'))).toMatch(/is larger than the limit/);
  });

  it('a header that is not UTF-8, not an object, or not JSON', () => {
    expect(fail('u.st', cat(u64(3), 0x7b, 0xff, 0x7d))).toBe('u.st: safetensors header is not valid UTF-8');
    expect(fail('u.st', cat(u64(2), '[]'))).toBe(`u.st: safetensors header must start with '{', found "[]"`);
    expect(fail('u.st', cat(u64(3), '{a}'))).toMatch(/^u\.st: safetensors header is not valid JSON/);
  });

  it('bad entries: dtype, shape, offsets, metadata', () => {
    expect(fail('d.st', stFile({ x: { ...x, dtype: 'F128' } }, eight))).toMatch(/tensor x: dtype "F128" is not one of BOOL, U8/);
    expect(fail('d.st', stFile({ x: { ...x, dtype: 'constructor' } }, eight))).toMatch(/tensor x: dtype "constructor" is not one of/);
    expect(fail('d.st', stFile({ x: { ...x, shape: [2, -1] } }, eight))).toMatch(/tensor x: shape \[2,-1\] has a dimension -1 that is not a size/);
    expect(fail('d.st', stFile({ x: { ...x, shape: 'ab' } }, eight))).toMatch(/tensor x: shape "ab" is not a list/);
    expect(fail('d.st', stFile({ x: { ...x, data_offsets: [0] } }, eight))).toMatch(/tensor x: data_offsets \[0\] is not \[begin, end\]/);
    expect(fail('d.st', stFile({ x: 5 }, eight))).toMatch(/header entry x is 5, expected \{dtype, shape, data_offsets\}/);
    expect(fail('d.st', stFile({ __metadata__: { a: 1 }, x }, eight))).toBe('d.st: safetensors __metadata__.a is 1, expected a string');
  });

  it('offsets with a gap, an overlap, a size that disagrees with the shape, or data left over', () => {
    expect(fail('o.st', stFile({ x: { ...x, data_offsets: [4, 12] } }, new Uint8Array(12)))).toBe(
      'o.st: tensor x: data_offsets [4,12] should start at 0 (tensors must be contiguous, without gaps or overlaps)',
    );
    const y = { dtype: 'F32', shape: [1], data_offsets: [4, 8] };
    expect(fail('o.st', stFile({ x, y }, new Uint8Array(8)))).toMatch(/tensor y: data_offsets \[4,8\] should start at 8/);
    expect(fail('o.st', stFile({ x: { ...x, shape: [3] } }, eight))).toBe('o.st: tensor x: data_offsets [0,8] span 8 bytes but shape [3] of f32 needs 12');
    expect(fail('o.st', stFile({ x }, new Uint8Array(9)))).toMatch(/data should end at byte \d+ .* but the file has \d+ bytes$/);
    expect(fail('o.st', stFile({ x }, new Uint8Array(7)))).toMatch(/but the file has \d+ bytes: truncated$/);
  });
});
