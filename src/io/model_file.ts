/**
 * Any model file: opens a .pth or safetensors checkpoint by its first bytes
 * (falling back on the extension to explain a damaged one; a safetensors file in
 * the Ai00 layout comes back in the .pth names and orientation), loads its
 * tensors, writes one in the format its extension names, and describes it for `info`.
 */
import { extname } from 'node:path';
import { Ai00Reader, isAi00Layout } from './ai00.js';
import { bytesSource, fileSource, hexBytes, startsWith, type ByteSource } from './byte_source.js';
import { describeModel, formatModelInfo } from './describe_model.js';
import { CheckpointError } from './errors.js';
import type { CheckpointReader, CheckpointTensor } from './host_tensor.js';
import { isLoraMetaKey } from './lora_meta.js';
import { LEGACY_PTH_MAGIC, PthReader, writePth, ZIP_MAGIC, type PthWriteOptions } from './pth.js';
import { SafetensorsReader, writeSafetensors, type SafetensorsWriteOptions } from './safetensors.js';

const PTH_EXT = new Set(['.pth', '.pt', '.ckpt', '.bin']);
const ST_EXT = new Set(['.safetensors', '.st']);

function formatOf(name: string, head: Uint8Array): 'pth' | 'safetensors' | undefined {
  if (startsWith(head, ZIP_MAGIC) || startsWith(head, LEGACY_PTH_MAGIC)) return 'pth';
  // safetensors: a u64 header length, then the header's '{'
  if (head.length >= 9 && head[8] === 0x7b) return 'safetensors';
  const ext = extname(name).toLowerCase();
  return PTH_EXT.has(ext) ? 'pth' : ST_EXT.has(ext) ? 'safetensors' : undefined;
}

function openSource(src: ByteSource): CheckpointReader {
  try {
    if (src.size === 0) throw new CheckpointError(src.name, 'the file is empty (0 bytes)');
    const head = src.read(0, Math.min(src.size, 9), 'file signature');
    const format = formatOf(src.name, head);
    if (format === 'pth') return new PthReader(src);
    if (format === 'safetensors') {
      const st = new SafetensorsReader(src);
      return isAi00Layout(st.tensors, st.metadata) ? new Ai00Reader(st) : st;
    }
    throw new CheckpointError(
      src.name,
      `not a model checkpoint: expected a PyTorch .pth (a zip, starting PK\\x03\\x04) or safetensors (u64 header length, then '{'), ` +
        `found bytes ${hexBytes(head)}`,
    );
  } catch (e) {
    src.close();
    throw e;
  }
}

/** Opens a checkpoint; tensors are read on demand, by position. Close it when done. */
export function openCheckpoint(path: string): CheckpointReader {
  return openSource(fileSource(path));
}

export function openCheckpointBytes(name: string, bytes: Uint8Array): CheckpointReader {
  return openSource(bytesSource(name, bytes));
}

export function readAllTensors(reader: CheckpointReader): Map<string, CheckpointTensor> {
  return new Map(reader.tensors.map((t) => [t.name, reader.read(t.name)]));
}

/** Every tensor of a checkpoint, by name, in file order. */
export function loadCheckpoint(path: string): Map<string, CheckpointTensor> {
  const r = openCheckpoint(path);
  try {
    return readAllTensors(r);
  } finally {
    r.close();
  }
}

export type CheckpointWriteOptions = PthWriteOptions & SafetensorsWriteOptions;

export function isSafetensorsPath(path: string): boolean {
  return ST_EXT.has(extname(path).toLowerCase());
}

/** Writes .pth/.pt or .safetensors/.st (plain, tensors as given), by the extension, atomically. */
export function writeCheckpoint(path: string, tensors: Iterable<CheckpointTensor>, opts: CheckpointWriteOptions = {}): void {
  const ext = extname(path).toLowerCase();
  if (ext === '.pth' || ext === '.pt') writePth(path, tensors, opts);
  else if (isSafetensorsPath(path)) writeSafetensors(path, tensors, opts);
  else throw new CheckpointError(path, `cannot tell the format from the extension '${ext}': use .pth, .pt, .safetensors or .st`);
}

/** The text of `rwkv-lora-gpu info <model file>`; reads only the directory and the LoRA alpha/r records. */
export function modelInfo(path: string): string {
  const r = openCheckpoint(path);
  try {
    const meta = r.tensors.filter((t) => isLoraMetaKey(t.name)).map((t) => r.read(t.name));
    const infos = r.tensors.map((t) => meta.find((m) => m.name === t.name) ?? t);
    return formatModelInfo(describeModel(infos), { path, format: r.format, size: r.size, ai00Layout: r.ai00Layout });
  } finally {
    r.close();
  }
}
