/**
 * Writes a state dict's data.pkl as torch.save does with pickle protocol 2: an
 * OrderedDict of tensors, each `_rebuild_tensor_v2(storage, 0, size, stride,
 * False, OrderedDict())` over its own storage, the storage a persistent id
 * ('storage', torch.<Dtype>Storage, key, 'cpu', numel) resolved to data/<key>.
 */
import type { FloatDType } from './host_tensor.js';
import { contiguousStrides } from './host_tensor.js';

export interface PickledTensor {
  readonly name: string;
  readonly dtype: FloatDType;
  readonly shape: readonly number[];
  /** Storage record name under data/. */
  readonly storageKey: string;
}

const STORAGE_CLASS: Record<FloatDType, string> = { bf16: 'BFloat16Storage', f16: 'HalfStorage', f32: 'FloatStorage' };
/** Python's pickler writes SETITEMS in batches of this many pairs. */
const BATCH = 1000;

class PickleBuilder {
  private readonly parts: number[] = [];
  private readonly memo = new Map<string, number>();
  private readonly encoder = new TextEncoder();

  op(...bytes: number[]): this {
    for (const b of bytes) this.parts.push(b);
    return this;
  }
  u32(v: number): this {
    return this.op(v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, (v >>> 24) & 0xff);
  }
  raw(b: Uint8Array): this {
    for (const x of b) this.parts.push(x);
    return this;
  }
  str(s: string): this {
    const b = this.encoder.encode(s);
    return this.op(0x58).u32(b.length).raw(b); // BINUNICODE
  }
  /** Non-negative integer with the smallest opcode Python's pickler would pick. */
  int(v: number): this {
    if (v <= 0xff) return this.op(0x4b, v); // BININT1
    if (v <= 0xffff) return this.op(0x4d, v & 0xff, v >>> 8); // BININT2
    if (v <= 0x7fffffff) return this.op(0x4a).u32(v); // BININT
    const bytes: number[] = [];
    for (let x = BigInt(v); x > 0n; x >>= 8n) bytes.push(Number(x & 0xffn));
    if (bytes[bytes.length - 1] & 0x80) bytes.push(0); // keep it positive in two's complement
    return this.op(0x8a, bytes.length, ...bytes); // LONG1
  }
  tuple(items: readonly number[]): this {
    if (items.length === 0) return this.op(0x29); // EMPTY_TUPLE
    if (items.length > 3) this.op(0x28); // MARK
    for (const v of items) this.int(v);
    return this.op(items.length > 3 ? 0x74 : 0x84 + items.length); // TUPLE or TUPLE1..3
  }
  /** A value stored once in the memo (BINPUT) and fetched again with BINGET. */
  memoized(key: string, write: () => void): this {
    const i = this.memo.get(key);
    if (i !== undefined) return i < 256 ? this.op(0x68, i) : this.op(0x6a).u32(i);
    write();
    const j = this.memo.size;
    this.memo.set(key, j);
    return j < 256 ? this.op(0x71, j) : this.op(0x72).u32(j);
  }
  global(module: string, name: string): this {
    return this.memoized(`global ${module}.${name}`, () => this.op(0x63).raw(this.encoder.encode(`${module}\n${name}\n`)));
  }
  bytes(): Uint8Array {
    return Uint8Array.from(this.parts);
  }
}

export function pickleStateDict(tensors: readonly PickledTensor[]): Uint8Array {
  const p = new PickleBuilder();
  p.op(0x80, 2); // PROTO 2
  p.global('collections', 'OrderedDict').op(0x29, 0x52); // OrderedDict()
  for (let b = 0; b < tensors.length; b += BATCH) {
    p.op(0x28); // MARK
    for (const t of tensors.slice(b, b + BATCH)) {
      const numel = t.shape.reduce((a, d) => a * d, 1);
      p.str(t.name);
      p.global('torch._utils', '_rebuild_tensor_v2');
      p.op(0x28, 0x28); // MARK (arguments), MARK (persistent id)
      p.memoized('str storage', () => p.str('storage'));
      p.global('torch', STORAGE_CLASS[t.dtype]);
      p.str(t.storageKey);
      p.memoized('str cpu', () => p.str('cpu'));
      p.int(numel).op(0x74, 0x51); // TUPLE, BINPERSID
      p.int(0).tuple(t.shape).tuple(contiguousStrides(t.shape));
      p.op(0x89); // NEWFALSE: requires_grad
      p.global('collections', 'OrderedDict').op(0x29, 0x52); // backward_hooks = OrderedDict()
      p.op(0x74, 0x52); // TUPLE, REDUCE
    }
    p.op(0x75); // SETITEMS
  }
  return p.op(0x2e).bytes(); // STOP
}
