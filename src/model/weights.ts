/**
 * Frozen base weights on the GPU. Matrices (every tensor a matmul reads) take two bytes
 * an element, so a model never costs more GPU memory than its bf16 checkpoint: f16 where
 * tensor cores will read them (exact for bf16 values in f16's normal range, the rounding
 * the shader would otherwise do on every read), else bf16; vectors are small and kept as f32.
 */
import type { GpuRuntime } from '../gpu/device.js';
import { bf16BitsToF32, f16BitsToF32, f32ToBf16Bits, f32ToF16Bits, type Tensor } from '../gpu/tensor.js';
import { preferredWeightDtype, type WeightDtype } from '../kernels/matmul.js';

/** A checkpoint tensor on the host: raw little-endian bytes, contiguous. */
export interface HostTensor {
  readonly dtype: 'bf16' | 'f16' | 'f32';
  readonly shape: readonly number[];
  readonly data: Uint8Array;
}

export function hostToF32(t: HostTensor): Float32Array {
  const n = t.shape.reduce((a, b) => a * b, 1);
  const dv = new DataView(t.data.buffer, t.data.byteOffset, t.data.byteLength);
  const out = new Float32Array(n);
  if (t.dtype === 'f32') for (let i = 0; i < n; i++) out[i] = dv.getFloat32(4 * i, true);
  else if (t.dtype === 'bf16') for (let i = 0; i < n; i++) out[i] = bf16BitsToF32(dv.getUint16(2 * i, true));
  else for (let i = 0; i < n; i++) out[i] = f16BitsToF32(dv.getUint16(2 * i, true));
  return out;
}

/** bf16 bits of a host tensor (exact for bf16; f32 and f16 are rounded to nearest even). */
export function hostToBf16(t: HostTensor): Uint16Array {
  const n = t.shape.reduce((a, b) => a * b, 1);
  if (t.dtype === 'bf16') {
    const bits = new Uint16Array(n + (n & 1));
    bits.set(new Uint16Array(t.data.buffer.slice(t.data.byteOffset, t.data.byteOffset + 2 * n)));
    return bits;
  }
  const f = hostToF32(t);
  const bits = new Uint16Array(n + (n & 1));
  for (let i = 0; i < n; i++) bits[i] = f32ToBf16Bits(f[i]);
  return bits;
}

/** bf16 bits of a host tensor: a view of a bf16 one (no copy), else hostToBf16's rounded copy. */
export function hostBf16Bits(t: HostTensor): Uint16Array {
  const n = t.shape.reduce((a, b) => a * b, 1);
  if (t.dtype === 'bf16' && t.data.byteOffset % 2 === 0) return new Uint16Array(t.data.buffer, t.data.byteOffset, n);
  return hostToBf16(t);
}

export function f32Host(shape: readonly number[], values: ArrayLike<number>): HostTensor {
  const f = Float32Array.from(values);
  return { dtype: 'f32', shape, data: new Uint8Array(f.buffer) };
}

let bf16ToF16Table: Uint16Array | undefined;

/**
 * f16 bits of bf16 bits (rounded to nearest even; below f16's normal range precision is
 * lost, as it would be in the shader), padded with a zero to whole u32s, or undefined if
 * a value is beyond f16's range (|x| >= 65520 rounds to infinity) or not finite: such a
 * matrix stays bf16.
 */
export function bf16ToF16(bits: Uint16Array): Uint16Array | undefined {
  if (!bf16ToF16Table) {
    bf16ToF16Table = new Uint16Array(65536);
    for (let b = 0; b < 65536; b++) bf16ToF16Table[b] = f32ToF16Bits(bf16BitsToF32(b));
  }
  const table = bf16ToF16Table;
  const out = new Uint16Array(bits.length + (bits.length & 1));
  // 0x4780 is bf16 65536, the first magnitude that overflows f16; inf and NaN lie above.
  let over = 0;
  for (let i = 0; i < bits.length; i++) {
    const b = bits[i];
    over |= +((b & 0x7fff) >= 0x4780);
    out[i] = table[b];
  }
  return over ? undefined : out;
}

export class GpuWeights {
  private readonly tensors = new Map<string, Tensor>();
  /** matrixDtype: how matrices are stored (a matrix beyond f16's range stays bf16). */
  constructor(
    private readonly gpu: GpuRuntime,
    private readonly matrixDtype: WeightDtype = preferredWeightDtype(gpu),
  ) {}

  uploadMatrix(name: string, t: HostTensor): Tensor {
    const f16 = this.matrixDtype === 'f16' ? bf16ToF16(hostBf16Bits(t)) : undefined;
    const g = f16 ? this.gpu.upload(f16, t.shape, 'f16', name, true) : this.gpu.upload(hostToBf16(t), t.shape, 'bf16', name, true);
    this.tensors.set(name, g);
    return g;
  }

  /** A vector (or small table) as f32, flattened to one dimension. */
  uploadVector(name: string, t: HostTensor): Tensor {
    const f = hostToF32(t);
    const g = this.gpu.upload(f, [f.length], 'f32', name, true);
    this.tensors.set(name, g);
    return g;
  }

  get(name: string): Tensor {
    const t = this.tensors.get(name);
    if (!t) throw new Error(`weight ${name} was not uploaded`);
    return t;
  }

  free(): void {
    for (const t of this.tensors.values()) this.gpu.free(t);
    this.tensors.clear();
  }
}
