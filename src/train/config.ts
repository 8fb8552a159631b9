/**
 * The training configuration: RWKV-PEFT's key names (run_lora.sh's flags), one
 * schema for a JSON file, `--key value` overrides and the object given to
 * trainLora(). Defaults follow RWKV-PEFT's train.py where sensible. Every
 * problem (unknown key, wrong type, impossible value) is reported by key, all at
 * once, with a did-you-mean for a likely typo.
 */
import { readFileSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { didYouMean } from './did_you_mean.js';

export interface PeftConfig {
  /** LoRA rank. */
  r: number;
  lora_alpha: number;
  /** Dropout on the LoRA branch's input. */
  lora_dropout: number;
  /** An adapter to start from ('' = fresh A, zero B). */
  lora_load: string;
}

export interface TrainConfig {
  load_model: string;
  proj_dir: string;
  data_file: string;
  data_type: 'binidx' | 'jsonl';
  tokenizer: string;
  vocab_size: number;
  ctx_len: number;
  micro_bsz: number;
  accumulate_grad_batches: number;
  epoch_steps: number;
  epoch_count: number;
  epoch_begin: number;
  epoch_save: number;
  lr_init: number;
  lr_final: number;
  lr_schedule: 'cos_decay' | 'wsd';
  warmup_steps: number;
  beta1: number;
  beta2: number;
  adam_eps: number;
  weight_decay: number;
  grad_clip: number;
  grad_cp: boolean;
  precision: 'bf16' | 'fp32' | 'tf32' | 'fp16';
  peft: 'lora';
  peft_config: PeftConfig;
  train_parts: string[];
  random_seed: number;
  my_testing: '' | 'x070';
  n_layer: number;
  n_embd: number;
  devices: number;
  dataload: 'pad' | 'get';
  data_shuffle: boolean;
  magic_prime: number;
  merge: boolean;
  merge_st: boolean;
  lora_st: boolean;
  resume: boolean;
  overwrite: boolean;
}

/** What a caller may pass: any subset; peft_config also as a JSON string; lora_config is RWKV-PEFT's older form. */
export type TrainConfigInput = {
  [K in keyof TrainConfig]?: K extends 'peft_config' ? Partial<PeftConfig> | string : TrainConfig[K] | (TrainConfig[K] extends boolean ? 0 | 1 : never);
} & { lora_config?: Record<string, unknown> | string };

type Kind = 'string' | 'int' | 'number' | 'bool' | 'strings' | 'peft';

interface Field {
  kind: Kind;
  def: unknown;
  doc: string;
  values?: readonly string[];
  /** Inclusive bounds; `gt` is an exclusive lower bound. */
  min?: number;
  max?: number;
  gt?: number;
  /** A file or directory path, resolved against the config file's folder. */
  path?: boolean;
}

/** Every key, its type, default and meaning (the README's table is checked against this). */
export const CONFIG_FIELDS: { readonly [K in keyof TrainConfig]: Field } = {
  load_model: { kind: 'string', def: '', path: true, doc: "Base model .pth/.safetensors. '' = write a random RWKV-7 of n_layer/n_embd/vocab_size to proj_dir/rwkv-init.pth and train on it (RWKV-PEFT's from-scratch behaviour)." },
  proj_dir: { kind: 'string', def: 'out', path: true, doc: 'Output folder.' },
  data_file: { kind: 'string', def: '', path: true, doc: 'binidx prefix (x for x.idx/x.bin) or .jsonl file. Required.' },
  data_type: { kind: 'string', def: 'binidx', values: ['binidx', 'jsonl'], doc: 'Format of data_file.' },
  tokenizer: { kind: 'string', def: '', path: true, doc: 'World vocabulary file (rwkv_vocab_v20230424.txt format); needed for jsonl data.' },
  vocab_size: { kind: 'int', def: 0, min: 0, doc: '0 = from the model; otherwise checked against it. Required when load_model is empty.' },
  ctx_len: { kind: 'int', def: 1024, min: 1, doc: 'Tokens per sample (T).' },
  micro_bsz: { kind: 'int', def: 12, min: 1, doc: 'Samples per micro-batch (B).' },
  accumulate_grad_batches: { kind: 'int', def: 1, min: 1, doc: 'Micro-batches per optimizer step.' },
  epoch_steps: { kind: 'int', def: 1000, min: 1, doc: 'Optimizer steps per epoch.' },
  epoch_count: { kind: 'int', def: 500, min: 1, doc: 'Epochs to train.' },
  epoch_begin: { kind: 'int', def: 0, min: 0, doc: 'Offset of the epoch numbers (file names, LR position, data position), as in RWKV-PEFT.' },
  epoch_save: { kind: 'int', def: 5, min: 0, doc: 'Save rwkv-{epoch}.pth every this many epochs (0 = only at the end).' },
  lr_init: { kind: 'number', def: 6e-4, gt: 0, doc: 'Peak learning rate.' },
  lr_final: { kind: 'number', def: 1e-5, min: 0, doc: 'Final learning rate of cos_decay (equal to lr_init: constant LR).' },
  lr_schedule: { kind: 'string', def: 'cos_decay', values: ['cos_decay', 'wsd', 'cos'], doc: "cos_decay (RWKV-PEFT's 'cos' is accepted) or wsd (linear warmup, then cosine to 0)." },
  warmup_steps: { kind: 'int', def: -1, doc: 'Warmup steps of wsd (<= 0 means 100, as RWKV-PEFT); cos_decay has none.' },
  beta1: { kind: 'number', def: 0.9, min: 0, max: 0.999999, doc: 'Adam beta1.' },
  beta2: { kind: 'number', def: 0.99, min: 0, max: 0.999999, doc: 'Adam beta2.' },
  adam_eps: { kind: 'number', def: 1e-8, gt: 0, doc: 'Adam epsilon (added outside the square root).' },
  weight_decay: { kind: 'number', def: 0, min: 0, doc: 'Decoupled weight decay on the 2-D tensors (LoRA A and B).' },
  grad_clip: { kind: 'number', def: 1.0, min: 0, doc: 'Global gradient-norm clip (0 = off).' },
  grad_cp: { kind: 'bool', def: false, doc: 'Activation checkpointing per block (0/1): less memory, about a third more compute.' },
  precision: { kind: 'string', def: 'bf16', values: ['bf16', 'fp32', 'tf32', 'fp16'], doc: 'Compute is always f32 over bf16 base weights; bf16 saves adapters as bf16, anything else as f32.' },
  peft: { kind: 'string', def: 'lora', values: ['lora'], doc: "Only 'lora' so far." },
  peft_config: { kind: 'peft', def: { r: 8, lora_alpha: 32, lora_dropout: 0.01, lora_load: '' }, doc: "LoRA settings {r, lora_alpha, lora_dropout, lora_load}, an object or a JSON string; RWKV-PEFT's lora_config {lora_r, ...} is accepted too." },
  train_parts: { kind: 'strings', def: ['time', 'ln'], doc: "Base parameters trained too: 'ln' = every LayerNorm/GroupNorm weight and bias; 'time' matches nothing in x070." },
  random_seed: { kind: 'int', def: -1, min: -1, max: 0xffffffff, doc: 'Seed of LoRA init, dropout and data order; -1 = pick one (recorded in the resolved config).' },
  my_testing: { kind: 'string', def: '', values: ['', 'x070', 'x060'], doc: "Model version; checked against the weights when given. x060 is not supported yet." },
  n_layer: { kind: 'int', def: 0, min: 0, doc: 'Checked against the weights when given; the size of a new model when load_model is empty (default 6).' },
  n_embd: { kind: 'int', def: 0, min: 0, doc: 'Checked against the weights when given; the width of a new model when load_model is empty (default 512).' },
  devices: { kind: 'int', def: 1, min: 1, max: 1, doc: 'GPUs; 1 for now.' },
  dataload: { kind: 'string', def: 'pad', values: ['pad', 'get'], doc: "Sampling: 'pad' = RWKV-PEFT's per-document samples (labels past a document's end are ignored); 'get' = RWKV-LM's magic-prime walk over the binidx token stream." },
  data_shuffle: { kind: 'bool', def: true, doc: "With dataload 'pad': a fresh document order every pass over the data (0/1)." },
  magic_prime: { kind: 'int', def: 0, min: 0, doc: "With dataload 'get': RWKV-LM's magic prime (0 = computed from the data)." },
  merge: { kind: 'bool', def: true, doc: 'Write the merged model proj_dir/rwkv-merged.pth (bf16) at the end.' },
  merge_st: { kind: 'bool', def: false, doc: 'Also write the merged model as rwkv-merged.st for Ai00/web-rwkv/RWKV Runner WebGPU (f16, their converter\'s names and transposes).' },
  lora_st: { kind: 'bool', def: false, doc: 'Also write each adapter as rwkv-{epoch}.st, an Ai00 LoRA (f16; load it with [[lora]] path = that file, alpha = lora_alpha).' },
  resume: { kind: 'bool', def: false, doc: "Continue the run in proj_dir from its checkpoint (adapter, optimizer moments, step, data position)." },
  overwrite: { kind: 'bool', def: false, doc: "Replace another run's outputs in proj_dir." },
};

const KEYS = Object.keys(CONFIG_FIELDS) as (keyof TrainConfig)[];

/**
 * RWKV-PEFT flags that have no meaning here. Set to the listed value (or left
 * out) they are accepted silently, so run_lora.sh settings carry over; any other
 * value is a warning when harmless, an error when it asks for something missing.
 */
const FOREIGN: Record<string, { ok: readonly unknown[]; error: boolean; why: string }> = {
  strategy: { ok: [], error: false, why: 'DeepSpeed/Lightning strategies do not apply' },
  accelerator: { ok: ['gpu'], error: false, why: 'the GPU is always used' },
  op: { ok: [], error: false, why: 'the WKV kernel is always the WGSL one' },
  fused_kernel: { ok: [false, 0], error: false, why: 'kernels are always fused where it helps' },
  fla: { ok: [false, 0], error: false, why: 'there is no fla here' },
  wandb: { ok: [''], error: false, why: 'wandb is not built in; losses go to loss_data.jsonl and loss.svg' },
  ds_bucket_mb: { ok: [], error: false, why: 'DeepSpeed setting' },
  num_workers: { ok: [], error: false, why: 'data loading needs no workers' },
  layerwise_lr: { ok: [], error: false, why: 'every x070 LoRA tensor is in the 1x group anyway' },
  pre_ffn: { ok: [0], error: false, why: 'legacy RWKV-PEFT flag' },
  head_qk: { ok: [0], error: false, why: 'legacy RWKV-PEFT flag' },
  head_size_a: { ok: [64], error: false, why: 'the head size comes from the weights' },
  dim_att: { ok: [0], error: false, why: 'dimensions come from the weights' },
  dim_ffn: { ok: [0], error: false, why: 'dimensions come from the weights' },
  loss_mask: { ok: ['pad', 'none'], error: true, why: "only RWKV-PEFT's 'pad' masking exists (jsonl prompt masking is built into the jsonl reader)" },
  num_nodes: { ok: [1], error: true, why: 'multi-node training is not supported yet' },
  quant: { ok: ['none'], error: true, why: 'quantized base weights are not supported yet' },
  train_type: { ok: ['none', ''], error: true, why: 'state tuning and infctx are not supported yet' },
  my_pile_stage: { ok: [0], error: true, why: 'pile pre-training stages are not supported' },
  head_size_divisor: { ok: [8], error: true, why: 'the GroupNorm eps is fixed at 64e-5 (divisor 8)' },
  dropout: { ok: [0], error: true, why: 'only LoRA dropout (peft_config.lora_dropout) exists' },
  weight_decay_final: { ok: [-1, 0], error: true, why: 'weight decay is constant' },
};

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(problems.length === 1 ? `config: ${problems[0]}` : `config has ${problems.length} problems:\n  ${problems.join('\n  ')}`);
    this.name = 'ConfigError';
  }
}

export interface ResolvedConfig {
  config: TrainConfig;
  warnings: string[];
}

const show = (v: unknown): string => (typeof v === 'string' ? JSON.stringify(v) : Array.isArray(v) || (v && typeof v === 'object') ? JSON.stringify(v) : String(v));

function typeName(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'string') return `the string ${JSON.stringify(v)}`;
  return `${typeof v === 'object' ? 'an object' : `the ${typeof v}`} ${typeof v === 'object' ? '' : String(v)}`.trim();
}

/** A value of the right kind, or a problem description. */
function checkValue(key: string, f: Field, v: unknown): { value?: unknown; problem?: string } {
  const bad = (expected: string): { problem: string } => ({ problem: `${key}: expected ${expected}, found ${typeName(v)}` });
  switch (f.kind) {
    case 'string': {
      if (typeof v !== 'string') return bad('a string');
      if (f.values && !f.values.includes(v)) {
        return { problem: `${key}: expected one of ${f.values.map((x) => JSON.stringify(x)).join(', ')}, found ${JSON.stringify(v)}${didYouMean(v, f.values)}` };
      }
      return { value: v };
    }
    case 'int':
    case 'number': {
      if (typeof v !== 'number' || !Number.isFinite(v)) return bad(f.kind === 'int' ? 'an integer' : 'a number');
      if (f.kind === 'int' && !Number.isInteger(v)) return bad('an integer');
      if (f.gt !== undefined && !(v > f.gt)) return { problem: `${key}: expected a value > ${f.gt}, found ${v}` };
      if (f.min !== undefined && v < f.min) return { problem: `${key}: expected a value >= ${f.min}, found ${v}` };
      if (f.max !== undefined && v > f.max) return { problem: `${key}: expected a value <= ${f.max}, found ${v}` };
      return { value: v };
    }
    case 'bool':
      if (v === true || v === 1) return { value: true };
      if (v === false || v === 0) return { value: false };
      return bad('true/false (or 1/0)');
    case 'strings':
      if (!Array.isArray(v) || v.some((x) => typeof x !== 'string')) return bad('an array of strings');
      return { value: [...(v as string[])] };
    case 'peft':
      return { value: v };
  }
}

const PEFT_KEYS: Record<string, keyof PeftConfig> = { r: 'r', lora_r: 'r', lora_alpha: 'lora_alpha', lora_dropout: 'lora_dropout', lora_load: 'lora_load' };

function resolvePeft(key: string, v: unknown, base: PeftConfig, problems: string[]): PeftConfig {
  let obj = v;
  if (typeof v === 'string') {
    try {
      obj = JSON.parse(v);
    } catch (e) {
      problems.push(`${key}: not valid JSON (${(e as Error).message}): ${v}`);
      return base;
    }
  }
  if (!obj || typeof obj !== 'object' || Array.isArray(obj)) {
    problems.push(`${key}: expected an object like {"r": 8, "lora_alpha": 32, "lora_dropout": 0.01}, found ${typeName(obj)}`);
    return base;
  }
  const out: PeftConfig = { ...base };
  const fields: Record<keyof PeftConfig, Field> = {
    r: { kind: 'int', def: 8, min: 1, doc: '' },
    lora_alpha: { kind: 'number', def: 32, gt: 0, doc: '' },
    lora_dropout: { kind: 'number', def: 0.01, min: 0, max: 0.99, doc: '' },
    lora_load: { kind: 'string', def: '', doc: '' },
  };
  for (const [k, raw] of Object.entries(obj as Record<string, unknown>)) {
    const name = PEFT_KEYS[k];
    if (!name) {
      problems.push(`${key}.${k}: unknown LoRA setting${didYouMean(k, Object.keys(PEFT_KEYS))}; known: r (or lora_r), lora_alpha, lora_dropout, lora_load`);
      continue;
    }
    const c = checkValue(`${key}.${k}`, fields[name], raw);
    if (c.problem) problems.push(c.problem);
    else (out as unknown as Record<string, unknown>)[name] = c.value;
  }
  return out;
}

function absolutize(p: string, baseDir: string): string {
  return p === '' || isAbsolute(p) ? p : resolve(baseDir, p);
}

export interface ResolveOptions {
  /** Relative paths in `input` are taken from here (the config file's folder; default: the working directory). */
  baseDir?: string;
  /** Command-line overrides, applied over `input`; their relative paths are taken from the working directory. */
  overrides?: Record<string, unknown>;
  /** Picks the seed when random_seed is -1 (a resumed run takes its checkpoint's). */
  pickSeed?: (config: TrainConfig) => number;
}

/** Validates and fills in a configuration; throws ConfigError listing every problem. */
export function resolveConfig(input: object, opts: ResolveOptions = {}): ResolvedConfig {
  const problems: string[] = [];
  const warnings: string[] = [];
  const merged: Record<string, { v: unknown; baseDir: string }> = {};
  for (const [src, baseDir] of [[input, opts.baseDir ?? process.cwd()], [opts.overrides ?? {}, process.cwd()]] as const) {
    if (!src || typeof src !== 'object' || Array.isArray(src)) {
      problems.push(`expected a JSON object of settings, found ${typeName(src)}`);
      continue;
    }
    for (const [k, v] of Object.entries(src)) merged[k] = { v, baseDir };
  }
  const config = Object.fromEntries(KEYS.map((k) => [k, structuredClone(CONFIG_FIELDS[k].def)])) as unknown as TrainConfig;
  const out = config as unknown as Record<string, unknown>;

  if ('peft_config' in merged && 'lora_config' in merged) problems.push('peft_config and lora_config: give one of them (lora_config is the older RWKV-PEFT form of peft_config)');
  for (const [k, { v, baseDir }] of Object.entries(merged)) {
    if (v === undefined) continue;
    if (k === 'peft_config' || k === 'lora_config') {
      const p = resolvePeft(k, v, config.peft_config, problems);
      config.peft_config = { ...p, lora_load: absolutize(p.lora_load, baseDir) };
      continue;
    }
    const f = (CONFIG_FIELDS as Record<string, Field>)[k];
    if (!f) {
      const foreign = FOREIGN[k];
      if (!foreign) problems.push(`${k}: unknown key${didYouMean(k, [...KEYS, 'lora_config'])}`);
      else if (!foreign.ok.includes(v)) (foreign.error ? problems : warnings).push(`${k} = ${show(v)}: ${foreign.error ? 'not supported: ' : 'ignored: '}${foreign.why}`);
      continue;
    }
    const c = checkValue(k, f, v);
    if (c.problem) problems.push(c.problem);
    else out[k] = f.path ? absolutize(c.value as string, baseDir) : c.value;
  }

  if (config.lr_schedule === ('cos' as string)) config.lr_schedule = 'cos_decay';
  if (config.my_testing === ('x060' as string)) problems.push('my_testing: x060 (RWKV-6) is not supported yet; only x070 (RWKV-7) models can be trained');
  if (config.data_file === '') problems.push('data_file: required (a binidx prefix or a .jsonl file)');
  if (config.proj_dir === '') problems.push('proj_dir: required (the output folder)');
  if (config.data_type === 'jsonl' && config.tokenizer === '') problems.push('tokenizer: required for data_type jsonl (the World vocabulary file, e.g. rwkv_vocab_v20230424.txt)');
  if (config.dataload === 'get' && config.data_type !== 'binidx') problems.push("dataload: 'get' (magic-prime sampling) reads a binidx token stream; data_type is jsonl (run `rwkv-lora-gpu prepare` first, or use dataload 'pad')");
  if (config.magic_prime > 0 && config.dataload !== 'get') problems.push("magic_prime: only used with dataload 'get'");
  if (config.load_model === '') {
    if (config.vocab_size === 0) problems.push('vocab_size: required when load_model is empty (a new model is created)');
    config.n_layer ||= 6;
    config.n_embd ||= 512;
    if (config.n_embd % 64 !== 0) problems.push(`n_embd: a new model needs a multiple of the head size 64, found ${config.n_embd}`);
  }
  for (const part of config.train_parts) {
    if (part !== 'ln' && part !== 'time') problems.push(`train_parts: ${JSON.stringify(part)} is not supported yet; 'ln' (LayerNorm/GroupNorm weights) and 'time' (nothing in x070) are`);
  }
  if (config.overwrite && config.resume) problems.push('resume and overwrite: give one of them (resume continues the run in proj_dir, overwrite replaces it)');
  if (problems.length) throw new ConfigError(problems);
  if (config.random_seed === -1) config.random_seed = opts.pickSeed ? opts.pickSeed(config) : Math.floor(Math.random() * 2 ** 31);
  return { config, warnings };
}

/** Reads a JSON config file; its relative paths are then resolved against the file's folder. */
export function readConfigFile(path: string): { input: object; baseDir: string } {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new ConfigError([`cannot read the config file ${path}: ${(e as Error).message}`]);
  }
  try {
    return { input: JSON.parse(text) as object, baseDir: dirname(resolve(path)) };
  } catch (e) {
    throw new ConfigError([`${path} is not valid JSON: ${(e as Error).message}`]);
  }
}

/** The value of `--key text` for a key, typed by the schema (numbers, 0/1/true/false, JSON objects, lists). */
function parseOverride(key: string, texts: string[]): unknown {
  const f = (CONFIG_FIELDS as Record<string, Field>)[key];
  const kind = f?.kind ?? (key === 'lora_config' ? 'peft' : 'string');
  const text = texts.join(' ');
  switch (kind) {
    case 'strings':
      if (texts.length === 1 && texts[0].startsWith('[')) {
        try {
          return JSON.parse(texts[0]) as unknown;
        } catch {
          return texts[0];
        }
      }
      return texts;
    case 'bool':
      return texts.length === 0 ? true : text === 'true' || text === '1' ? true : text === 'false' || text === '0' ? false : text;
    case 'int':
    case 'number':
      return text.trim() !== '' && Number.isFinite(Number(text)) ? Number(text) : text;
    default:
      return text;
  }
}

/**
 * `--key value` pairs (run_lora.sh style) into an object for resolveConfig.
 * A boolean key may stand alone (`--resume`); train_parts takes several values.
 */
export function parseOverrides(args: readonly string[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (let i = 0; i < args.length; ) {
    const a = args[i];
    if (!a.startsWith('--')) throw new ConfigError([`unexpected argument ${JSON.stringify(a)}: overrides are --key value`]);
    const eq = a.indexOf('=');
    const key = a.slice(2, eq < 0 ? undefined : eq);
    const values: string[] = [];
    if (eq >= 0) values.push(a.slice(eq + 1));
    i++;
    const kind = (CONFIG_FIELDS as Record<string, Field>)[key]?.kind;
    while (eq < 0 && i < args.length && !args[i].startsWith('--') && (values.length === 0 || kind === 'strings')) values.push(args[i++]);
    if (values.length === 0 && kind !== 'bool' && kind !== 'strings') throw new ConfigError([`--${key}: expected a value`]);
    out[key] = parseOverride(key, values);
  }
  return out;
}
