/** `rwkv-lora-gpu info`: what a model file holds, or (--gpu) what the GPU adapter is and can do. */
import { acquireGpu, REQUESTED_LIMITS, type AdapterReport } from '../gpu/device.js';
import { modelInfo } from '../io/model_file.js';
import { parseCommand, UsageError } from './args.js';

export const INFO_USAGE = `usage: rwkv-lora-gpu info <model.pth|model.st>   the model: version, layers, n_embd, head size, low-rank sizes, vocabulary, parameters, dtypes
       rwkv-lora-gpu info --gpu [--json]          the GPU adapter, its features, limits and subgroup-matrix configurations
`;

const LIMITS_SHOWN = [...REQUESTED_LIMITS, 'minStorageBufferOffsetAlignment', 'maxUniformBufferBindingSize'];

export function formatAdapterReport(r: AdapterReport): string {
  const lines = [
    `adapter: ${r.description || r.device || '(no description)'}`,
    `vendor: ${r.vendor || '?'}  architecture: ${r.architecture || '?'}`,
    `features: ${r.features.join(', ')}`,
    'limits:',
    ...LIMITS_SHOWN.filter((k) => k in r.limits).map((k) => `  ${k}: ${r.limits[k]}`),
    `subgroup matrix configurations: ${r.subgroupMatrixConfigs.length ? '' : 'none'}`,
    ...r.subgroupMatrixConfigs.map(
      (c) => `  ${c.componentType} x ${c.componentType} -> ${c.resultComponentType}  M=${c.M} N=${c.N} K=${c.K}`,
    ),
  ];
  return lines.join('\n');
}

export async function gpuInfo(json: boolean): Promise<string> {
  const gpu = await acquireGpu();
  try {
    const r = gpu.report();
    return json ? JSON.stringify(r, null, 2) : formatAdapterReport(r);
  } finally {
    gpu.destroy();
  }
}

export async function infoCommand(argv: string[]): Promise<number> {
  const p = parseCommand(argv, INFO_USAGE, { gpu: { type: 'boolean' }, json: { type: 'boolean' } }, 1);
  if (!p) return 0;
  if (p.values.gpu) {
    if (p.positionals.length) throw new UsageError(`info --gpu takes no file (found ${p.positionals[0]})`, INFO_USAGE);
    process.stdout.write((await gpuInfo(!!p.values.json)) + '\n');
    return 0;
  }
  if (!p.positionals.length) throw new UsageError('info: say what to describe (a model file, or --gpu)', INFO_USAGE);
  process.stdout.write(modelInfo(p.positionals[0]) + '\n');
  return 0;
}
