/** Tensors: a shape and a dtype over a GPU buffer (or a window of one). */

export type DType = 'f32' | 'f16' | 'bf16' | 'u32' | 'i32';

/** Bytes per element. f16 and bf16 are stored packed, two per u32. */
export function dtypeBytes(dtype: DType): number {
  return dtype === 'f16' || dtype === 'bf16' ? 2 : 4;
}

export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/** Buffer bytes for `n` elements, rounded up to whole u32 words (WGSL reads 16-bit data as packed u32). */
export function storageBytes(dtype: DType, n: number): number {
  return Math.ceil((n * dtypeBytes(dtype)) / 4) * 4;
}

export interface Tensor {
  readonly buffer: GPUBuffer;
  /** Byte offset of element 0 inside `buffer`. */
  readonly offset: number;
  readonly shape: readonly number[];
  readonly dtype: DType;
  /** Bytes this tensor occupies (rounded to whole u32 words). */
  readonly byteLength: number;
  readonly label: string;
}

export function describe(t: Tensor): string {
  return `${t.label}[${t.shape.join(',')}]:${t.dtype}`;
}

// ---- host-side conversions (exact) ----

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

/** float -> bf16 bits, round to nearest even (as torch does). */
export function f32ToBf16Bits(x: number): number {
  f32Scratch[0] = x;
  const u = u32Scratch[0];
  if ((u & 0x7f800000) === 0x7f800000 && (u & 0x7fffff) !== 0) return 0x7fc0; // NaN
  const rounded = u + 0x7fff + ((u >>> 16) & 1);
  return (rounded >>> 16) & 0xffff;
}

export function bf16BitsToF32(b: number): number {
  u32Scratch[0] = (b & 0xffff) << 16;
  return f32Scratch[0];
}

/** Packs values as bf16, two per u32 (element 2i in the low half). */
export function packBf16(values: ArrayLike<number>): Uint16Array {
  const out = new Uint16Array(values.length + (values.length & 1));
  for (let i = 0; i < values.length; i++) out[i] = f32ToBf16Bits(values[i]);
  return out;
}

export function unpackBf16(bits: Uint16Array, n = bits.length): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = bf16BitsToF32(bits[i]);
  return out;
}

/** float -> IEEE half bits, round to nearest even. */
export function f32ToF16Bits(x: number): number {
  f32Scratch[0] = x;
  const u = u32Scratch[0];
  const sign = (u >>> 16) & 0x8000;
  const exp = (u >>> 23) & 0xff;
  let mant = u & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    let m = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    if (rem > half || (rem === half && (m & 1))) m++;
    return sign | m;
  }
  let m = mant >>> 13;
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (m & 1))) {
    m++;
    if (m === 0x400) {
      m = 0;
      e++;
      if (e >= 0x1f) return sign | 0x7c00;
    }
  }
  return sign | (e << 10) | m;
}

export function f16BitsToF32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

/** A tensor over part of another's buffer, starting `offsetElems` elements in (views of a flat parameter buffer). */
export function view(t: Tensor, offsetElems: number, shape: readonly number[], label: string): Tensor {
  const n = numel(shape);
  const offset = t.offset + offsetElems * dtypeBytes(t.dtype);
  const byteLength = storageBytes(t.dtype, n);
  if (offset % 4 !== 0) throw new Error(`view ${label}: byte offset ${offset} is not a whole u32 word`);
  if (offset + byteLength > t.offset + t.byteLength) {
    throw new Error(`view ${label}[${shape.join(',')}] at element ${offsetElems} runs past ${describe(t)}`);
  }
  return { buffer: t.buffer, offset, shape: [...shape], dtype: t.dtype, byteLength, label };
}
