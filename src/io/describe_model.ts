/**
 * What a checkpoint is, from its keys and shapes alone: the architecture
 * (RWKV-7 x070, RWKV-6 x060), whether it is a full model, a LoRA, a state-tuning
 * file or something partial, the dimensions, parameter count and dtypes; and the
 * text `rwkv-lora-gpu info model.pth` prints.
 */
import { rwkv7Dims } from '../model/rwkv7_config.js';
import type { FileDType, TensorInfo } from './host_tensor.js';
import { isLoraMetaKey, readLoraMeta } from './lora_meta.js';
import type { HostTensor } from '../model/weights.js';

export type Architecture = 'x070' | 'x060' | 'unknown';
export type CheckpointKind = 'model' | 'lora' | 'state' | 'partial';

export interface ModelDescription {
  architecture: Architecture;
  kind: CheckpointKind;
  /** 'web-rwkv': names and orientation of web-rwkv's converter (time_mix_*, lora.0, transposed w1/a1/…). */
  layout: 'rwkv-lm' | 'web-rwkv';
  nLayer: number;
  nEmbd: number;
  nHead: number;
  headSize: number;
  vocab: number;
  ffnHidden: number;
  /** x070: w, a, v, g; x060: mix, decay (0 where the file does not say). */
  lowRank: Record<string, number>;
  lora?: { r: number; alpha?: number; targets: string[] };
  /** Tensors and parameters, not counting the LoRA alpha/r records. */
  tensorCount: number;
  parameterCount: number;
  dtypes: Partial<Record<FileDType, number>>;
  /** Shape inconsistencies found by the x070 model check, one line each. */
  problems: string[];
}

const X070 = /^blocks\.\d+\.att\.(r_k|x_r|x_w|k_k|k_a|w0|a0)$/;
const X060 = /^blocks\.\d+\.att\.(time_maa_\w+|time_mix_(x|w1|w2)|time_decay_w1)$/;
const LORA = /\.(lora_A|lora_B|lora\.0|lora\.1)(\.weight)?$/;
const WEB_RWKV_NAMES = /(\.lora\.[01]$|time_mix_(x|w1|w2)$|time_first$)/;
const PEFT_PREFIX = 'base_model.model.';

/** The low-rank size of a 2-D [C, D] or [D, C] matrix (web-rwkv transposes them). */
function rankOf(shape: readonly number[] | undefined, C: number): number {
  if (!shape || shape.length !== 2) return 0;
  const [a, b] = shape;
  return a === C ? b : b === C ? a : Math.min(a, b);
}

type Described = TensorInfo | (TensorInfo & HostTensor);

export function describeModel(tensors: Iterable<Described>): ModelDescription {
  const all = new Map<string, Described>();
  for (const t of tensors) all.set(t.name.startsWith(PEFT_PREFIX) ? t.name.slice(PEFT_PREFIX.length) : t.name, t);
  const keys = [...all.keys()].filter((k) => !isLoraMetaKey(k));
  const shape = (k: string): readonly number[] | undefined => all.get(k)?.shape;
  const first = (...ks: string[]): readonly number[] | undefined => ks.map(shape).find((s) => s !== undefined);

  let nLayer = 0;
  for (const k of keys) {
    const m = /^blocks\.(\d{1,6})\./.exec(k);
    if (m) nLayer = Math.max(nLayer, Number(m[1]) + 1);
  }
  const architecture: Architecture = keys.some((k) => X070.test(k)) ? 'x070' : keys.some((k) => X060.test(k)) ? 'x060' : 'unknown';
  const loraKeys = keys.filter((k) => LORA.test(k));
  const nEmbd =
    first('emb.weight')?.[1] ??
    first('blocks.0.ln1.weight', 'ln_out.weight')?.[0] ??
    first('blocks.0.att.receptance.lora_A', 'blocks.0.att.receptance.lora_A.weight')?.[1] ??
    first('blocks.0.att.receptance.lora.0')?.[0] ??
    0;
  const vocab = first('emb.weight', 'head.weight')?.[0] ?? 0;
  const heads = first('blocks.0.att.r_k', 'blocks.0.att.time_faaaa', 'blocks.0.att.time_first');
  const ffnHidden =
    first('blocks.0.ffn.key.weight', 'blocks.0.ffn.key.lora_B', 'blocks.0.ffn.key.lora_B.weight', 'blocks.0.ffn.key.lora.1')?.[0] ?? 0;

  const lowRank: Record<string, number> = {};
  if (architecture === 'x070') {
    lowRank.w = rankOf(shape('blocks.0.att.w1'), nEmbd);
    lowRank.a = rankOf(shape('blocks.0.att.a1'), nEmbd);
    lowRank.v = rankOf(shape('blocks.1.att.v1'), nEmbd);
    lowRank.g = rankOf(shape('blocks.0.att.g1'), nEmbd);
  } else if (architecture === 'x060') {
    lowRank.mix = rankOf(first('blocks.0.att.time_maa_w1', 'blocks.0.att.time_mix_w1'), nEmbd) / 5;
    lowRank.decay = rankOf(shape('blocks.0.att.time_decay_w1'), nEmbd);
  }

  let lora: ModelDescription['lora'];
  if (loraKeys.length) {
    const a = loraKeys.find((k) => /\.lora_A(\.weight)?$/.test(k));
    const r = a ? shape(a)![0] : (shape(loraKeys.find((k) => k.endsWith('.lora.0')) ?? '')?.[1] ?? 0);
    const targets = new Set(loraKeys.map((k) => k.replace(/^blocks\.\d+\./, '').replace(LORA, '')));
    const meta = readLoraMeta(
      new Map([...all].filter((e): e is [string, TensorInfo & HostTensor] => isLoraMetaKey(e[0]) && 'data' in e[1])),
    );
    lora = { r, targets: [...targets].sort(), ...(meta ? { alpha: meta.alpha } : {}) };
  }

  const kind: CheckpointKind = lora
    ? 'lora'
    : keys.length > 0 && keys.every((k) => k.endsWith('.time_state'))
      ? 'state'
      : all.has('emb.weight') && all.has('head.weight') && nLayer > 0
        ? 'model'
        : 'partial';
  const w1 = shape('blocks.0.att.w1');
  const layout =
    keys.some((k) => WEB_RWKV_NAMES.test(k)) || (architecture === 'x070' && w1 !== undefined && w1[0] !== nEmbd) ? 'web-rwkv' : 'rwkv-lm';

  const dtypes: Partial<Record<FileDType, number>> = {};
  let parameterCount = 0;
  for (const k of keys) {
    const t = all.get(k)!;
    dtypes[t.dtype] = (dtypes[t.dtype] ?? 0) + 1;
    parameterCount += t.shape.reduce((p, d) => p * d, 1);
  }

  const problems: string[] = [];
  if (architecture === 'x070' && kind === 'model' && layout === 'rwkv-lm') {
    try {
      rwkv7Dims(all);
    } catch (e) {
      problems.push((e as Error).message);
    }
  }
  return {
    architecture,
    kind,
    layout,
    nLayer,
    nEmbd,
    nHead: heads?.[0] ?? 0,
    headSize: heads?.[1] ?? 0,
    vocab,
    ffnHidden,
    lowRank,
    ...(lora ? { lora } : {}),
    tensorCount: keys.length,
    parameterCount,
    dtypes,
    problems,
  };
}

const ARCH_NAMES: Record<Architecture, string> = {
  x070: 'RWKV-7 (x070)',
  x060: 'RWKV-6 (x060)',
  unknown: 'not recognised from the keys',
};
const KIND_NAMES: Record<CheckpointKind, string> = {
  model: 'full model',
  lora: 'LoRA adapter',
  state: 'state-tuning file',
  partial: 'partial checkpoint',
};

function count(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)}B`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)}M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)}K`;
  return String(n);
}

function bytes(n: number): string {
  const units = ['bytes', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return i === 0 ? `${n} bytes` : `${n.toFixed(1)} ${units[i]}`;
}

export interface FileFacts {
  path: string;
  format: 'pth' | 'safetensors';
  size: number;
  /** An Ai00-layout file, described in the .pth names and orientation its reader gives. */
  ai00Layout?: boolean;
}

/** The text of `rwkv-lora-gpu info <model file>`. */
export function formatModelInfo(d: ModelDescription, file: FileFacts): string {
  const fmt = file.format === 'pth' ? 'PyTorch .pth (zip)' : 'safetensors';
  const layout = file.ai00Layout ? ', Ai00/web-rwkv layout (f16; shown in .pth names and orientation)' : d.layout === 'web-rwkv' ? ', web-rwkv layout' : '';
  const lines = [`file: ${file.path}`, `format: ${fmt}, ${bytes(file.size)}${layout}`];
  lines.push(`architecture: ${ARCH_NAMES[d.architecture]}, ${KIND_NAMES[d.kind]}`);
  const dims = [
    d.nLayer && `layers ${d.nLayer}`,
    d.nEmbd && `n_embd ${d.nEmbd}`,
    d.nHead && `heads ${d.nHead} × ${d.headSize}`,
    d.vocab && `vocab ${d.vocab}`,
    d.ffnHidden && `ffn ${d.ffnHidden}`,
  ].filter(Boolean);
  if (dims.length) lines.push(`dimensions: ${dims.join(', ')}`);
  const ranks = Object.entries(d.lowRank).filter(([, v]) => v > 0);
  if (ranks.length) lines.push(`low-rank sizes: ${ranks.map(([k, v]) => `${k} ${v}`).join(', ')}`);
  if (d.lora) {
    const alpha = d.lora.alpha !== undefined ? `alpha ${d.lora.alpha}` : 'alpha not recorded';
    lines.push(`LoRA: r ${d.lora.r}, ${alpha}, targets ${d.lora.targets.join(', ')}`);
  }
  const dt = Object.entries(d.dtypes).map(([k, v]) => `${k} × ${v}`);
  lines.push(`tensors: ${d.tensorCount} (${dt.join(', ') || 'none'}), parameters: ${count(d.parameterCount)} (${d.parameterCount})`);
  for (const p of d.problems) lines.push(`problem: ${p}`);
  return lines.join('\n');
}
