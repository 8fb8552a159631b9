import { describe, expect, it } from 'vitest';
import { acquireGpu } from '../../src/gpu/device.js';
import { GpuOutOfMemoryError } from '../../src/gpu/errors.js';
import { fill } from '../../src/kernels/elementwise.js';

// Asking for more memory than a GPU has must fail loudly, not return zeros later.
// On lavapipe "GPU memory" is this machine's RAM, so the test runs only on an
// adapter whose buffers may exceed 64 GiB (a real GPU) and reports itself skipped elsewhere.
const probe = await acquireGpu();
const bigAdapter = probe.limits.maxBufferSize > 64 * 2 ** 30;
probe.destroy();

describe('out of memory', () => {
  it.skipIf(!bigAdapter)('an allocation past the GPU memory throws GpuOutOfMemoryError at the next sync', async () => {
    const gpu = await acquireGpu();
    try {
      const chunk = gpu.limits.maxStorageBufferBindingSize;
      // 1 TiB in bindable chunks: far more than any GPU holds.
      const tensors = Array.from({ length: Math.ceil(2 ** 40 / chunk) }, (_, i) => gpu.tensor([chunk / 4], 'f32', `big${i}`));
      for (const t of tensors.slice(0, 4)) fill(gpu, t, 1);
      await expect(gpu.sync()).rejects.toThrow(GpuOutOfMemoryError);
    } finally {
      gpu.destroy();
    }
  });
});
