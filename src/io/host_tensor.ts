/**
 * Checkpoint tensors on the host: a name, a dtype, a shape and raw little-endian
 * bytes in C order. The model code's `HostTensor` is the same thing without the
 * name, so checkpoint tensors go straight into it.
 */
import { f32ToBf16Bits, f32ToF16Bits } from '../gpu/tensor.js';
import { hostToF32, type HostTensor } from '../model/weights.js';
import { CheckpointError } from './errors.js';

export { hostToF32 };

/** Dtypes a tensor can have in a file. Only the float ones can be read into a `CheckpointTensor`. */
export type FileDType =
  | 'bf16'
  | 'f16'
  | 'f32'
  | 'f64'
  | 'f8_e5m2'
  | 'f8_e4m3'
  | 'i64'
  | 'i32'
  | 'i16'
  | 'i8'
  | 'u64'
  | 'u32'
  | 'u16'
  | 'u8'
  | 'bool';
export type FloatDType = HostTensor['dtype'];

export interface CheckpointTensor extends HostTensor {
  readonly name: string;
}

/** What a reader knows about a tensor before reading its bytes. */
export interface TensorInfo {
  readonly name: string;
  readonly dtype: FileDType;
  readonly shape: readonly number[];
}

export const FILE_DTYPE_BYTES: Record<FileDType, number> = {
  bf16: 2,
  f16: 2,
  f32: 4,
  f64: 8,
  f8_e5m2: 1,
  f8_e4m3: 1,
  i64: 8,
  i32: 4,
  i16: 2,
  i8: 1,
  u64: 8,
  u32: 4,
  u16: 2,
  u8: 1,
  bool: 1,
};

export function isFloatDType(d: FileDType): d is FloatDType {
  return d === 'bf16' || d === 'f16' || d === 'f32';
}

/** Element count of a shape from an untrusted file (or a caller); `what` names the tensor in the error. */
export function shapeNumel(shape: readonly unknown[], file: string, what: string): number {
  let n = 1;
  for (const d of shape) {
    if (typeof d !== 'number' || !Number.isSafeInteger(d) || d < 0) {
      throw new CheckpointError(file, `${what}: shape [${shape.join(',')}] has a dimension ${String(d)} that is not a size`);
    }
    n *= d;
  }
  if (!Number.isSafeInteger(n)) throw new CheckpointError(file, `${what}: shape [${shape.join(',')}] has too many elements`);
  return n;
}

/** Row-major strides in elements. */
export function contiguousStrides(shape: readonly number[]): number[] {
  const s = new Array<number>(shape.length);
  let acc = 1;
  for (let k = shape.length - 1; k >= 0; k--) {
    s[k] = acc;
    acc *= shape[k];
  }
  return s;
}

/**
 * A tensor from float values, rounded to nearest even when the dtype is narrower
 * than f32. A finite value that f16 cannot hold (|x| >= 65520, which rounds past
 * 65504) is an error naming the tensor: a silent infinity would break the model.
 */
export function hostFromF32(name: string, shape: readonly number[], values: ArrayLike<number>, dtype: FloatDType): CheckpointTensor {
  const n = shapeNumel(shape, 'hostFromF32', name);
  if (values.length !== n) throw new Error(`hostFromF32: ${name}: ${values.length} values for shape [${shape.join(',')}] (${n} elements)`);
  if (dtype === 'f32') return { name, dtype, shape: [...shape], data: new Uint8Array(Float32Array.from(values).buffer) };
  const bits = new Uint16Array(n);
  const round = dtype === 'bf16' ? f32ToBf16Bits : f32ToF16Bits;
  for (let i = 0; i < n; i++) bits[i] = round(values[i]);
  if (dtype === 'f16') {
    for (let i = 0; i < n; i++) {
      if ((bits[i] & 0x7fff) === 0x7c00 && Number.isFinite(values[i])) {
        throw new RangeError(`tensor ${name}: value ${values[i]} (element ${i}) is beyond the f16 range (±65504), so it cannot be stored as f16`);
      }
    }
  }
  return { name, dtype, shape: [...shape], data: new Uint8Array(bits.buffer) };
}

/** The tensor in f16 (f16 kept as it is; bf16 and f32 rounded to nearest even, out-of-range values an error). */
export function hostToF16(t: CheckpointTensor): CheckpointTensor {
  return t.dtype === 'f16' ? t : hostFromF32(t.name, t.shape, hostToF32(t), 'f16');
}

/** Checks tensors about to be written: float dtypes, bytes matching their shapes, no name twice. */
export function checkTensors(tensors: readonly CheckpointTensor[], file: string): void {
  const seen = new Set<string>();
  for (const t of tensors) {
    if (!isFloatDType(t.dtype)) throw new CheckpointError(file, `tensor ${t.name} has dtype ${String(t.dtype)}, expected bf16, f16 or f32`);
    const want = shapeNumel(t.shape, file, `tensor ${t.name}`) * FILE_DTYPE_BYTES[t.dtype];
    if (t.data.byteLength !== want) {
      throw new CheckpointError(
        file,
        `tensor ${t.name} [${t.shape.join(',')}]:${t.dtype} needs ${want} bytes of data, found ${t.data.byteLength}`,
      );
    }
    if (seen.has(t.name)) throw new CheckpointError(file, `tensor ${t.name} is given twice`);
    seen.add(t.name);
  }
}

/** The dtype of a tensor about to be read, which must be one a `CheckpointTensor` can hold. */
export function readableDType(info: TensorInfo, file: string): FloatDType {
  if (!isFloatDType(info.dtype)) {
    throw new CheckpointError(file, `tensor ${info.name} has dtype ${info.dtype}; only bf16, f16 and f32 tensors can be read`);
  }
  return info.dtype;
}

/** What every reader offers: the tensor list up front, each tensor's bytes on demand. */
export interface CheckpointReader {
  readonly file: string;
  readonly format: 'pth' | 'safetensors';
  /** File size in bytes. */
  readonly size: number;
  /** In file order. */
  readonly tensors: readonly TensorInfo[];
  /** safetensors `__metadata__` (empty for .pth). */
  readonly metadata: Readonly<Record<string, string>>;
  /** True for a file in the Ai00/web-rwkv layout (src/io/ai00.ts), which the reader gives back in .pth names and orientation. */
  readonly ai00Layout?: boolean;
  /** One tensor's bytes, contiguous; only bf16, f16 and f32 tensors can be read. */
  read(name: string): CheckpointTensor;
  close(): void;
}
