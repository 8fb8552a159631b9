import { describe, expect, it } from 'vitest';
import { sizeClass } from '../../src/gpu/buffers.js';
import { acquireGpu } from '../../src/gpu/device.js';
import { GpuError } from '../../src/gpu/errors.js';
import { bf16BitsToF32, f16BitsToF32, f32ToBf16Bits, f32ToF16Bits } from '../../src/gpu/tensor.js';
import { axpby } from '../../src/kernels/elementwise.js';
import { getGpu } from '../helpers.js';

describe('device', () => {
  it('acquires an adapter with the limits requested explicitly', async () => {
    const gpu = await getGpu();
    const r = gpu.report();
    expect(r.features.length).toBeGreaterThan(0);
    expect(gpu.limits.maxStorageBufferBindingSize).toBe(gpu.adapter.limits.maxStorageBufferBindingSize);
    expect(gpu.limits.maxComputeWorkgroupStorageSize).toBe(gpu.adapter.limits.maxComputeWorkgroupStorageSize);
    expect(gpu.limits.maxStorageBuffersPerShaderStage).toBe(gpu.adapter.limits.maxStorageBuffersPerShaderStage);
    for (const f of ['shader-f16', 'subgroups', 'timestamp-query']) {
      expect(gpu.features.has(f)).toBe(gpu.adapter.features.has(f));
    }
  });

  it('round-trips data through upload and read-back', async () => {
    const gpu = await getGpu();
    const data = Float32Array.from({ length: 1001 }, (_, i) => Math.sin(i) * 1e3);
    const t = gpu.upload(data, [1001], 'f32', 'roundtrip');
    expect(await gpu.readF32(t)).toEqual(data);
    gpu.free(t);
  });

  it('allocates exact tensors at their size rounded to 256 bytes, not to a size class', async () => {
    const gpu = await getGpu();
    const n = 1_000_003;
    const before = gpu.memory().currentBytes;
    const t = gpu.tensor([n], 'f32', 'weights', true);
    const exact = Math.ceil((4 * n) / 256) * 256;
    expect(t.buffer.size).toBe(exact);
    expect(exact).toBeLessThan(sizeClass(4 * n));
    expect(gpu.memory().currentBytes - before).toBe(exact);
    gpu.free(t);
  });

  it('reuses pooled buffers and tracks current and peak bytes', async () => {
    const gpu = await getGpu();
    await gpu.sync();
    const before = gpu.memory();
    const a = gpu.tensor([1 << 20], 'f32', 'a');
    const afterA = gpu.memory();
    expect(afterA.currentBytes - before.currentBytes).toBe(sizeClass(4 << 20));
    expect(afterA.peakBytes).toBeGreaterThanOrEqual(afterA.currentBytes);
    gpu.free(a);
    const b = gpu.tensor([1 << 20], 'f32', 'b');
    expect(b.buffer).toBe(a.buffer);
    expect(gpu.memory().currentBytes).toBe(afterA.currentBytes);
    gpu.free(b);
    gpu.pool.trim();
    expect(gpu.memory().currentBytes).toBeLessThan(afterA.currentBytes);
  });

  it('caches pipelines and bind groups across repeated dispatches', async () => {
    const gpu = await getGpu();
    const x = gpu.upload(new Float32Array(64).fill(1), [64], 'f32', 'x');
    const y = gpu.upload(new Float32Array(64).fill(0), [64], 'f32', 'y');
    axpby(gpu, x, y, 1, 1);
    const s1 = gpu.pipelines.stats();
    for (let i = 0; i < 9; i++) axpby(gpu, x, y, 1, 1);
    expect(gpu.pipelines.stats()).toEqual(s1);
    expect(Array.from(await gpu.readF32(y))).toEqual(new Array(64).fill(10));
    gpu.free(x);
    gpu.free(y);
  });

  // Broken pipelines get a device of their own so their errors cannot leak into other tests.
  it('names the kernel when a shader fails to compile', async () => {
    const gpu = await acquireGpu();
    try {
      const p = gpu.pipeline('broken_kernel', 'k1', ['rw'], () => '@compute @workgroup_size(1) fn main() { let x: f32 = nonsense; }');
      const t = gpu.tensor([4], 'f32', 't');
      gpu.dispatch(p, [t], [1]);
      await expect(gpu.sync()).rejects.toThrow(/broken_kernel<k1>/);
    } finally {
      gpu.destroy();
    }
  });

  it('rejects argument mismatches before recording', async () => {
    const gpu = await acquireGpu();
    try {
      const p = gpu.pipeline('two_args', '', ['read', 'rw'], () => '');
      const t = gpu.tensor([4], 'f32', 't');
      expect(() => gpu.dispatch(p, [t], [1])).toThrow(GpuError);
      expect(() => gpu.dispatch(p, [t, t], [70000])).toThrow(/exceeds 65535/);
    } finally {
      gpu.destroy();
    }
  });

  it('refuses a tensor larger than one binding', async () => {
    const gpu = await getGpu();
    const n = gpu.limits.maxStorageBufferBindingSize / 4 + 16;
    expect(() => gpu.tensor([n], 'f32', 'huge')).toThrow(/huge.*more than one binding/);
  });

  it('profiles kernels with timestamp queries when asked', async () => {
    const gpu = await acquireGpu({ profile: true });
    try {
      const x = gpu.upload(new Float32Array(4096).fill(1), [4096], 'f32', 'x');
      const y = gpu.upload(new Float32Array(4096).fill(0), [4096], 'f32', 'y');
      for (let i = 0; i < 3; i++) axpby(gpu, x, y, 1, 1);
      await gpu.sync();
      const prof = await gpu.profile();
      expect(prof).toHaveLength(1);
      expect(prof[0].kernel).toBe('axpby');
      expect(prof[0].calls).toBe(3);
      expect(prof[0].totalMs).toBeGreaterThanOrEqual(0);
      // A report is a snapshot: later work must not change it (benchmarks subtract one from another).
      axpby(gpu, x, y, 1, 1);
      await gpu.sync();
      expect((await gpu.profile())[0].calls).toBe(4);
      expect(prof[0].calls).toBe(3);
    } finally {
      gpu.destroy();
    }
  });
});

describe('host conversions', () => {
  it('bf16 rounds to nearest even and round-trips', () => {
    expect(f32ToBf16Bits(1)).toBe(0x3f80);
    expect(bf16BitsToF32(0x3f80)).toBe(1);
    // 1 + 2^-8 is exactly halfway between two bf16 values: ties to even (1.0)
    expect(f32ToBf16Bits(1 + 2 ** -8)).toBe(0x3f80);
    expect(f32ToBf16Bits(1 + 3 * 2 ** -8)).toBe(0x3f82);
    expect(bf16BitsToF32(f32ToBf16Bits(-3.140625))).toBe(-3.140625);
    expect(Number.isNaN(bf16BitsToF32(f32ToBf16Bits(NaN)))).toBe(true);
  });
  it('f16 conversion is exact on representable values and rounds otherwise', () => {
    for (const v of [0, 1, -2, 65504, 2 ** -24, 0.333251953125]) expect(f16BitsToF32(f32ToF16Bits(v))).toBe(v);
    expect(f32ToF16Bits(1e6)).toBe(0x7c00);
    expect(f16BitsToF32(f32ToF16Bits(1 + 2 ** -11))).toBe(1);
  });
});

describe('ordering', () => {
  it('a write after recorded work does not overtake it', async () => {
    const gpu = await getGpu();
    const x = gpu.upload(new Float32Array(16).fill(1), [16], 'f32', 'x');
    const y = gpu.upload(new Float32Array(16).fill(0), [16], 'f32', 'y');
    axpby(gpu, x, y, 1, 0); // y = x = 1, recorded
    gpu.write(x, new Float32Array(16).fill(5)); // must land after the dispatch above
    axpby(gpu, x, y, 1, 1); // y = 1 + 5
    expect(Array.from(await gpu.readF32(y))).toEqual(new Array(16).fill(6));
    gpu.free(x);
    gpu.free(y);
  });
});
