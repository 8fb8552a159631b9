/** rwkv-lora-gpu: the public API. */
export { acquireGpu, adapterReport, GpuRuntime, type AdapterReport, type GpuOptions } from './gpu/device.js';
export { GpuError, NoAdapterError, GpuOutOfMemoryError, DeviceLostError } from './gpu/errors.js';
export type { Tensor, DType } from './gpu/tensor.js';
