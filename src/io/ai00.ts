/**
 * The Ai00 / web-rwkv safetensors layout (spec file-formats.md §3.2, §5.1(c),
 * §5.4), which those apps and RWKV Runner's WebGPU backend load. It is what
 * their converter, convert_safetensors.py, makes of a .pth: each key renamed by
 * substring (time_faaaa→time_first, time_maa→time_mix, lora_A→lora.0,
 * lora_B→lora.1) and lowercased, every tensor F16 (web-rwkv refuses any other
 * dtype), the last two dims transposed when the new name contains one of
 * TRANSPOSED, and `__metadata__ {"format": "pt"}`.
 *
 * - A merged model: every model tensor so converted.
 * - An Ai00 LoRA: `<module>.lora.0` = Aᵀ [in, r], `<module>.lora.1` = B [out, r]
 *   and the trained vectors under their model names. Ai00 computes
 *   W += (alpha/r)·(lora.1 @ lora.0ᵀ) with alpha from `[[lora]] alpha`, so
 *   alpha = lora_alpha reproduces the training; it replaces vectors but *adds*
 *   any other full matrix it finds, so a LoRA file never holds one.
 *
 * Reading: an Ai00-layout file is opened as a reader that gives back the .pth
 * names and orientation, so every command takes it like a .pth.
 */
import { isLoraMetaKey } from './lora_meta.js';
import { hostToF16, FILE_DTYPE_BYTES, type CheckpointReader, type CheckpointTensor, type TensorInfo } from './host_tensor.js';
import type { WriteOptions } from './atomic_write.js';
import { writeSafetensors, type SafetensorsReader } from './safetensors.js';

/** Applied in this order, to every occurrence, as convert_safetensors.py does. */
const RENAMES: readonly (readonly [string, string])[] = [
  ['time_faaaa', 'time_first'],
  ['time_maa', 'time_mix'],
  ['lora_A', 'lora.0'],
  ['lora_B', 'lora.1'],
];

/** Substrings of a converted name whose tensor has its last two dims swapped (convert_safetensors.py's list). */
const TRANSPOSED = ['time_mix_w1', 'time_mix_w2', 'time_decay_w1', 'time_decay_w2', 'w1', 'w2', 'a1', 'a2', 'g1', 'g2', 'v1', 'v2', 'time_state', 'lora.0'];

const METADATA = { format: 'pt' };

export function ai00Name(name: string): string {
  let n = name;
  for (const [from, to] of RENAMES) n = n.replaceAll(from, to);
  return n.toLowerCase();
}

/** The .pth name of a converted one (RWKV keys have no capitals but lora_A/lora_B, so undoing the renames is enough). */
export function pthName(name: string): string {
  let n = name;
  for (const [from, to] of [...RENAMES].reverse()) n = n.replaceAll(to, from);
  return n;
}

function isTransposed(ai00: string): boolean {
  return TRANSPOSED.some((s) => ai00.includes(s));
}

function swapLast2(shape: readonly number[]): number[] {
  const s = [...shape];
  if (s.length >= 2) [s[s.length - 2], s[s.length - 1]] = [s[s.length - 1], s[s.length - 2]];
  return s;
}

/** The tensor with its last two dims transposed, as contiguous bytes (1-D and 0-D tensors unchanged, as in torch). */
function transposeLast2(t: CheckpointTensor, name: string): CheckpointTensor {
  if (t.shape.length < 2) return { ...t, name };
  const [rows, cols] = t.shape.slice(-2);
  const size = FILE_DTYPE_BYTES[t.dtype];
  const plane = rows * cols * size;
  const out = new Uint8Array(t.data.byteLength);
  for (let base = 0; base < t.data.byteLength; base += plane) {
    for (let i = 0; i < rows; i++) {
      for (let j = 0; j < cols; j++) {
        const from = base + (i * cols + j) * size;
        out.set(t.data.subarray(from, from + size), base + (j * rows + i) * size);
      }
    }
  }
  return { name, dtype: t.dtype, shape: swapLast2(t.shape), data: out };
}

/** One tensor converted as convert_safetensors.py does: renamed, F16 (an out-of-range value is an error), maybe transposed. */
function toAi00Tensor(t: CheckpointTensor): CheckpointTensor {
  const name = ai00Name(t.name);
  const f16 = hostToF16(t);
  return isTransposed(name) ? transposeLast2(f16, name) : { ...f16, name };
}

/** A model's tensors (.pth names and orientation, any float dtype) in the Ai00 merged-model layout. */
export function toAi00Model(tensors: Iterable<CheckpointTensor>): CheckpointTensor[] {
  return [...tensors].map(toAi00Tensor);
}

/**
 * An adapter (lora_A [r, in], lora_B [out, r], trained vectors, the lora_alpha/
 * lora_r records) in the Ai00 LoRA layout. The two records stay f32 so alpha is
 * exact; web-rwkv looks tensors up by model names and never reads them.
 */
export function toAi00Lora(tensors: Iterable<CheckpointTensor>): CheckpointTensor[] {
  return [...tensors].map((t) => {
    if (isLoraMetaKey(t.name)) return t;
    const isPair = /\.lora_[AB]$/.test(t.name);
    if (!isPair && t.shape.filter((d) => d > 1).length > 1) {
      throw new Error(
        `tensor ${t.name} [${t.shape.join(',')}] cannot go into an Ai00 LoRA file: Ai00 adds a full matrix to the base weight ` +
          'instead of replacing it; only lora_A/lora_B pairs and vectors (LayerNorm weights) can',
      );
    }
    return toAi00Tensor(t);
  });
}

export function writeAi00Model(path: string, tensors: Iterable<CheckpointTensor>, opts: WriteOptions = {}): void {
  writeSafetensors(path, toAi00Model(tensors), { ...opts, metadata: METADATA });
}

export function writeAi00Lora(path: string, tensors: Iterable<CheckpointTensor>, opts: WriteOptions = {}): void {
  writeSafetensors(path, toAi00Lora(tensors), { ...opts, metadata: METADATA });
}

/**
 * Whether a safetensors file is in the Ai00 layout: {"format": "pt"} metadata,
 * every tensor F16 (the lora_alpha/lora_r records aside), and a sign that only
 * the converter leaves: lora.0/lora.1 keys, x060's renamed time_mix_w1, or x070
 * low-rank matrices `att.{w,a,g,v}1` stored [D, C] instead of [C, D] (C from
 * emb.weight). A plain safetensors in the .pth layout has none of these.
 */
export function isAi00Layout(tensors: readonly TensorInfo[], metadata: Readonly<Record<string, string>>): boolean {
  if (metadata.format !== 'pt') return false;
  const own = tensors.filter((t) => !isLoraMetaKey(t.name));
  if (own.length === 0 || own.some((t) => t.dtype !== 'f16')) return false;
  if (own.some((t) => /\.lora\.[01]$|\.att\.time_mix_w1$/.test(t.name))) return true;
  const C = own.find((t) => t.name === 'emb.weight')?.shape[1];
  return own.some((t) => /\.att\.[wagv]1$/.test(t.name) && t.shape.length === 2 && t.shape[1] === C && t.shape[0] !== C);
}

/** An Ai00-layout safetensors file read in the .pth names and orientation. */
export class Ai00Reader implements CheckpointReader {
  readonly format = 'safetensors';
  readonly ai00Layout = true;
  readonly tensors: readonly TensorInfo[];
  private readonly stored = new Map<string, string>();

  constructor(private readonly st: SafetensorsReader) {
    this.tensors = st.tensors.map((t) => {
      const name = isLoraMetaKey(t.name) ? t.name : pthName(t.name);
      this.stored.set(name, t.name);
      return { name, dtype: t.dtype, shape: isTransposed(t.name) ? swapLast2(t.shape) : t.shape };
    });
  }

  get file(): string {
    return this.st.file;
  }

  get size(): number {
    return this.st.size;
  }

  get metadata(): Readonly<Record<string, string>> {
    return this.st.metadata;
  }

  read(name: string): CheckpointTensor {
    const stored = this.stored.get(name) ?? name;
    const t = this.st.read(stored);
    return isTransposed(stored) ? transposeLast2(t, name) : { ...t, name };
  }

  close(): void {
    this.st.close();
  }
}
