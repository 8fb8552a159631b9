/**
 * A restricted unpickler for torch checkpoints. It interprets the pickle opcodes
 * a state dict uses (protocols 2 to 5) and knows a short allowlist of globals
 * (OrderedDict, torch's tensor rebuild functions, storage classes and dtypes),
 * much like torch.load(weights_only=True). Any other global is refused by name
 * when it is first named; nothing from the file is ever executed.
 */
import { CheckpointError } from './errors.js';
import type { FileDType } from './host_tensor.js';

/** A global the allowlist admits, e.g. torch.BFloat16Storage. */
export class PyGlobal {
  constructor(
    readonly module: string,
    readonly name: string,
  ) {}
  get qualified(): string {
    return `${this.module}.${this.name}`;
  }
}

export class PyDict {
  readonly items = new Map<unknown, PyValue>();
}

/** What persistent_load returned for a storage: the caller checks it against the archive. */
export interface StorageRef {
  readonly kind: 'storage';
  readonly key: string;
  /** Element type of the storage (u8 for an untyped storage). */
  readonly dtype: FileDType;
  readonly numel: number;
}

export interface TensorRef {
  readonly kind: 'tensor';
  readonly storage: StorageRef;
  readonly dtype: FileDType;
  /** In elements of `dtype`, like the stride. */
  readonly offset: number;
  readonly shape: number[];
  readonly stride: number[];
}

export type PyValue = null | boolean | number | bigint | string | Uint8Array | PyValue[] | PyDict | PyGlobal | StorageRef | TensorRef;

/** torch storage classes by name, and the element type each holds. */
export const STORAGE_CLASSES: ReadonlyMap<string, FileDType> = new Map(Object.entries({
  'torch.DoubleStorage': 'f64',
  'torch.FloatStorage': 'f32',
  'torch.HalfStorage': 'f16',
  'torch.BFloat16Storage': 'bf16',
  'torch.LongStorage': 'i64',
  'torch.IntStorage': 'i32',
  'torch.ShortStorage': 'i16',
  'torch.CharStorage': 'i8',
  'torch.ByteStorage': 'u8',
  'torch.BoolStorage': 'bool',
  'torch.UntypedStorage': 'u8',
  'torch.storage.UntypedStorage': 'u8',
} as const));

/** torch dtypes as _rebuild_tensor_v3 names them. */
const DTYPES: ReadonlyMap<string, FileDType> = new Map(Object.entries({
  'torch.float64': 'f64',
  'torch.float32': 'f32',
  'torch.float16': 'f16',
  'torch.bfloat16': 'bf16',
  'torch.int64': 'i64',
  'torch.int32': 'i32',
  'torch.int16': 'i16',
  'torch.int8': 'i8',
  'torch.uint8': 'u8',
  'torch.bool': 'bool',
} as const));

const FUNCTIONS = new Set([
  'collections.OrderedDict',
  'torch._utils._rebuild_tensor_v2',
  'torch._utils._rebuild_tensor_v3',
  'torch._utils._rebuild_parameter',
  'torch._utils._rebuild_parameter_with_state',
]);

function isAllowed(q: string): boolean {
  return FUNCTIONS.has(q) || STORAGE_CLASSES.has(q) || DTYPES.has(q);
}

export function isTensorRef(v: unknown): v is TensorRef {
  return typeof v === 'object' && v !== null && (v as TensorRef).kind === 'tensor';
}

function isStorageRef(v: unknown): v is StorageRef {
  return typeof v === 'object' && v !== null && (v as StorageRef).kind === 'storage';
}

export interface UnpickleContext {
  /** File and record for error messages. */
  readonly file: string;
  readonly record: string;
  /** Turns a persistent id (BINPERSID) into a storage. */
  persistentLoad(pid: PyValue): StorageRef;
}

const MARK = Symbol('mark');
const utf8 = new TextDecoder('utf-8');
/** Longest GLOBAL line (module or name) a checkpoint could need. */
const MAX_GLOBAL_LINE = 256;

class Unpickler {
  private pos = 0;
  private readonly stack: (PyValue | typeof MARK)[] = [];
  private readonly memo = new Map<number, PyValue>();
  private readonly dv: DataView;

  constructor(
    private readonly bytes: Uint8Array,
    private readonly ctx: UnpickleContext,
  ) {
    this.dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  private fail(detail: string, at = this.pos): never {
    throw new CheckpointError(this.ctx.file, `${this.ctx.record} at byte ${at}: ${detail}`);
  }

  private need(n: number): number {
    if (this.pos + n > this.bytes.length) this.fail(`pickle ends early (needs ${n} more bytes, has ${this.bytes.length - this.pos})`);
    const at = this.pos;
    this.pos += n;
    return at;
  }
  private u8(): number {
    return this.bytes[this.need(1)];
  }
  private u16(): number {
    return this.dv.getUint16(this.need(2), true);
  }
  private u32(): number {
    return this.dv.getUint32(this.need(4), true);
  }
  private u64(): number {
    const v = this.dv.getBigUint64(this.need(8), true);
    if (v > BigInt(this.bytes.length)) this.fail(`length ${v} is larger than the pickle`);
    return Number(v);
  }
  private take(n: number): Uint8Array {
    const at = this.need(n);
    return this.bytes.subarray(at, at + n);
  }
  private line(): string {
    const end = this.bytes.indexOf(0x0a, this.pos);
    if (end < 0 || end - this.pos > MAX_GLOBAL_LINE) this.fail('GLOBAL name is not a newline-terminated line');
    const s = utf8.decode(this.bytes.subarray(this.pos, end));
    this.pos = end + 1;
    return s;
  }

  private push(v: PyValue): void {
    this.stack.push(v);
  }
  private pop(): PyValue {
    const v = this.stack.pop();
    if (v === undefined) this.fail('pickle stack underflow');
    if (v === MARK) this.fail('pickle found a MARK where a value was expected');
    return v;
  }
  private top(): PyValue {
    const v = this.stack[this.stack.length - 1];
    if (v === undefined || v === MARK) this.fail('pickle stack is empty where a value was expected');
    return v;
  }
  private popMark(): PyValue[] {
    const i = this.stack.lastIndexOf(MARK);
    if (i < 0) this.fail('pickle has no MARK to close');
    const items = this.stack.splice(i) as PyValue[];
    items.shift();
    return items;
  }

  private global(module: string, name: string, at: number): PyGlobal {
    const q = `${module}.${name}`;
    if (!isAllowed(q)) {
      this.fail(
        `refusing pickle global '${q}': a tensor checkpoint only uses collections.OrderedDict, ` +
          "torch._utils._rebuild_tensor_v2/v3/_rebuild_parameter, torch storage classes and dtypes (nothing is executed)",
        at,
      );
    }
    return new PyGlobal(module, name);
  }

  private int(v: PyValue, what: string): number {
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) this.fail(`${what} is ${show(v)}, expected a non-negative integer`);
    return v;
  }
  private ints(v: PyValue, what: string): number[] {
    if (!Array.isArray(v)) this.fail(`${what} is ${show(v)}, expected a tuple of integers`);
    return v.map((x, i) => this.int(x, `${what}[${i}]`));
  }

  private reduce(fn: PyValue, args: PyValue): PyValue {
    if (!(fn instanceof PyGlobal)) this.fail(`REDUCE calls ${show(fn)}, which is not a global`);
    if (!Array.isArray(args)) this.fail(`REDUCE arguments for ${fn.qualified} are ${show(args)}, expected a tuple`);
    switch (fn.qualified) {
      case 'collections.OrderedDict': {
        const d = new PyDict();
        const pairs = args[0];
        if (Array.isArray(pairs)) {
          for (const p of pairs) {
            if (!Array.isArray(p) || p.length !== 2) this.fail('OrderedDict argument is not a list of pairs');
            d.items.set(p[0], p[1]);
          }
        }
        return d;
      }
      case 'torch._utils._rebuild_tensor_v2':
      case 'torch._utils._rebuild_tensor_v3': {
        const [storage, offset, size, stride] = args;
        if (!isStorageRef(storage)) this.fail(`${fn.qualified}: first argument is ${show(storage)}, expected a storage`);
        let dtype = storage.dtype;
        if (fn.name === '_rebuild_tensor_v3') {
          const g = args[6];
          const d = g instanceof PyGlobal ? DTYPES.get(g.qualified) : undefined;
          if (!d) this.fail(`_rebuild_tensor_v3: dtype argument is ${show(g)}, expected a torch dtype`);
          dtype = d;
        }
        const shape = this.ints(size, 'tensor size');
        const strides = this.ints(stride, 'tensor stride');
        if (shape.length !== strides.length) this.fail(`tensor size [${shape}] and stride [${strides}] have different lengths`);
        return { kind: 'tensor', storage, dtype, offset: this.int(offset, 'storage offset'), shape, stride: strides };
      }
      case 'torch._utils._rebuild_parameter':
      case 'torch._utils._rebuild_parameter_with_state':
        if (!isTensorRef(args[0])) this.fail(`${fn.qualified}: first argument is ${show(args[0])}, expected a tensor`);
        return args[0];
      default:
        return this.fail(`${fn.qualified} cannot be called`);
    }
  }

  run(): PyValue {
    for (;;) {
      const at = this.pos;
      const op = this.u8();
      switch (op) {
        case 0x80: // PROTO
          if (this.u8() > 5) this.fail('pickle protocol is newer than 5', at);
          break;
        case 0x95: // FRAME: framing is only a hint for buffered readers
          this.u64();
          break;
        case 0x2e: // STOP
          return this.pop();
        case 0x28: // MARK
          this.stack.push(MARK);
          break;
        case 0x4e: // NONE
          this.push(null);
          break;
        case 0x88: // NEWTRUE
          this.push(true);
          break;
        case 0x89: // NEWFALSE
          this.push(false);
          break;
        case 0x4b: // BININT1
          this.push(this.u8());
          break;
        case 0x4d: // BININT2
          this.push(this.u16());
          break;
        case 0x4a: // BININT
          this.push(this.dv.getInt32(this.need(4), true));
          break;
        case 0x8a: // LONG1
          this.push(decodeLong(this.take(this.u8())));
          break;
        case 0x8b: // LONG4
          this.push(decodeLong(this.take(this.u32())));
          break;
        case 0x47: // BINFLOAT (big-endian)
          this.push(this.dv.getFloat64(this.need(8), false));
          break;
        case 0x58: // BINUNICODE
          this.push(utf8.decode(this.take(this.u32())));
          break;
        case 0x8c: // SHORT_BINUNICODE
          this.push(utf8.decode(this.take(this.u8())));
          break;
        case 0x8d: // BINUNICODE8
          this.push(utf8.decode(this.take(this.u64())));
          break;
        case 0x43: // SHORT_BINBYTES
          this.push(this.take(this.u8()).slice());
          break;
        case 0x42: // BINBYTES
          this.push(this.take(this.u32()).slice());
          break;
        case 0x29: // EMPTY_TUPLE
        case 0x5d: // EMPTY_LIST
          this.push([]);
          break;
        case 0x7d: // EMPTY_DICT
          this.push(new PyDict());
          break;
        case 0x85: // TUPLE1
          this.push([this.pop()]);
          break;
        case 0x86: {
          // TUPLE2
          const b = this.pop();
          this.push([this.pop(), b]);
          break;
        }
        case 0x87: {
          // TUPLE3
          const c = this.pop();
          const b = this.pop();
          this.push([this.pop(), b, c]);
          break;
        }
        case 0x74: // TUPLE
        case 0x6c: // LIST
          this.push(this.popMark());
          break;
        case 0x64: {
          // DICT
          const items = this.popMark();
          const d = new PyDict();
          this.setItems(d, items);
          this.push(d);
          break;
        }
        case 0x61: {
          // APPEND
          const v = this.pop();
          this.list(this.top()).push(v);
          break;
        }
        case 0x65: {
          // APPENDS
          const items = this.popMark();
          const list = this.list(this.top());
          for (const v of items) list.push(v);
          break;
        }
        case 0x73: {
          // SETITEM
          const v = this.pop();
          const k = this.pop();
          this.setItems(this.top(), [k, v]);
          break;
        }
        case 0x75: {
          // SETITEMS
          const items = this.popMark();
          this.setItems(this.top(), items);
          break;
        }
        case 0x62: {
          // BUILD: state for a dict (OrderedDict._metadata) or a tensor; a checkpoint reader needs neither
          this.pop();
          const obj = this.top();
          if (!(obj instanceof PyDict) && !isTensorRef(obj)) this.fail(`BUILD on ${show(obj)}`, at);
          break;
        }
        case 0x63: {
          // GLOBAL
          const module = this.line();
          this.push(this.global(module, this.line(), at));
          break;
        }
        case 0x93: {
          // STACK_GLOBAL
          const name = this.pop();
          const module = this.pop();
          if (typeof module !== 'string' || typeof name !== 'string') this.fail('STACK_GLOBAL needs two strings', at);
          this.push(this.global(module, name, at));
          break;
        }
        case 0x52: {
          // REDUCE
          const args = this.pop();
          this.push(this.reduce(this.pop(), args));
          break;
        }
        case 0x51: // BINPERSID
          this.push(this.ctx.persistentLoad(this.pop()));
          break;
        case 0x71: // BINPUT
          this.memo.set(this.u8(), this.top());
          break;
        case 0x72: // LONG_BINPUT
          this.memo.set(this.u32(), this.top());
          break;
        case 0x94: // MEMOIZE
          this.memo.set(this.memo.size, this.top());
          break;
        case 0x68: // BINGET
        case 0x6a: {
          // LONG_BINGET
          const i = op === 0x68 ? this.u8() : this.u32();
          const v = this.memo.get(i);
          if (v === undefined) this.fail(`memo entry ${i} was never stored`, at);
          this.push(v);
          break;
        }
        case 0x30: // POP
          if (this.stack.pop() === undefined) this.fail('pickle stack underflow', at);
          break;
        case 0x31: // POP_MARK
          this.popMark();
          break;
        case 0x32: // DUP
          this.push(this.top());
          break;
        default:
          this.fail(`unsupported pickle opcode 0x${op.toString(16).padStart(2, '0')}`, at);
      }
    }
  }

  private list(v: PyValue): PyValue[] {
    if (!Array.isArray(v)) this.fail(`APPEND to ${show(v)}, expected a list`);
    return v;
  }

  private setItems(target: PyValue, items: PyValue[]): void {
    if (!(target instanceof PyDict)) this.fail(`SETITEM on ${show(target)}, expected a dict`);
    if (items.length % 2) this.fail('SETITEMS has an odd number of keys and values');
    for (let i = 0; i < items.length; i += 2) target.items.set(items[i], items[i + 1]);
  }
}

/** Two's-complement little-endian integer (LONG1/LONG4); a number when it fits exactly. */
function decodeLong(b: Uint8Array): number | bigint {
  if (b.length === 0) return 0;
  let v = 0n;
  for (let i = b.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[i]);
  v = BigInt.asIntN(8 * b.length, v);
  return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
}

/** A short description of a value for error messages. */
export function show(v: PyValue | undefined): string {
  if (v === null) return 'None';
  if (v === undefined) return 'nothing';
  if (Array.isArray(v)) return `a sequence of ${v.length}`;
  if (v instanceof PyDict) return `a dict of ${v.items.size}`;
  if (v instanceof PyGlobal) return v.qualified;
  if (v instanceof Uint8Array) return `${v.length} bytes`;
  if (typeof v === 'object') return `a ${v.kind}`;
  if (typeof v === 'string') return JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}…` : v);
  return String(v);
}

export function unpickle(bytes: Uint8Array, ctx: UnpickleContext): PyValue {
  return new Unpickler(bytes, ctx).run();
}
