/** The logits a model file (with an optional adapter) gives for `ids`, as `generate` would load it. */
import type { GpuRuntime } from '../../src/gpu/device.js';
import { loadModel } from '../../src/train/load_model.js';

export async function modelLogits(gpu: GpuRuntime, ids: readonly number[], path: string, lora?: string): Promise<Float32Array> {
  const m = await loadModel(path, { lora, ctxLen: 32, gpu });
  try {
    return await m.logits(ids);
  } finally {
    m.dispose();
  }
}
