/** rwkv-lora-gpu: the public API. */
export { acquireGpu, adapterReport, DAWN_SAVINGS, DEFAULT_SAVINGS, GpuRuntime, type AdapterReport, type DawnSaving, type GpuOptions } from './gpu/device.js';
export { GpuError, NoAdapterError, GpuOutOfMemoryError, DeviceLostError } from './gpu/errors.js';
export type { Tensor, DType } from './gpu/tensor.js';

// Training.
export { trainLora, type StepInfo, type TrainOptions, type TrainOutputs, type TrainSummary } from './train/trainer.js';
export {
  CONFIG_FIELDS,
  ConfigError,
  parseOverrides,
  readConfigFile,
  resolveConfig,
  type PeftConfig,
  type ResolveOptions,
  type ResolvedConfig,
  type TrainConfig,
  type TrainConfigInput,
} from './train/config.js';
export { cosDecay, learningRate, wsd, type LrSettings } from './train/lr_schedule.js';

// Models: merge, load for inference, create.
export { mergeLora, type MergeOptions, type MergeResult } from './train/merge.js';
export { loadModel, LoadedModel, type GenerateOptions, type LoadModelOptions } from './train/load_model.js';
export { writeRandomModel, type RandomModelSpec } from './train/base_model.js';

// Data.
export { WorldTokenizer, END_OF_TEXT } from './data/tokenizer.js';
export { prepare, type PrepareOptions, type PrepareResult } from './data/prepare.js';

// Checkpoints: .pth and safetensors in (Ai00-layout .st read in .pth names), out atomically.
export { openCheckpoint, loadCheckpoint, writeCheckpoint, modelInfo } from './io/model_file.js';
export { writeAi00Model, writeAi00Lora } from './io/ai00.js';
export type { CheckpointReader, CheckpointTensor } from './io/host_tensor.js';
