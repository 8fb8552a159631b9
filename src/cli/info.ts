/** `rwkv-lora-gpu info --gpu`: what the adapter is and can do. */
import { acquireGpu, REQUESTED_LIMITS, type AdapterReport } from '../gpu/device.js';

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
