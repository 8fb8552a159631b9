/**
 * The GPU runtime: device acquisition through Dawn (npm `webgpu`), tensors over
 * pooled buffers, command recording, read-back, error reporting and profiling.
 */
import './globals.js';
import { create } from 'webgpu';
import { BufferPool, type MemoryStats } from './buffers.js';
import { DeviceLostError, GpuError, GpuOutOfMemoryError, NoAdapterError } from './errors.js';
import { PipelineCache, type BindingKind, type BufferWindow, type Pipeline } from './pipelines.js';
import { Profiler, type KernelTime } from './profiler.js';
import { makeTape, replayPool, type Tape, type TapeOp } from './tape.js';
import { numel, storageBytes, type DType, type Tensor } from './tensor.js';

/**
 * Dawn features that each remove a check: robustness clamps of every buffer access,
 * zero-initialisation of workgroup memory, API validation. Safe only for kernels and
 * calls known to be correct; the bench measures each (`npm run bench -- --dawn ...`).
 */
export const DAWN_SAVINGS = ['disable_robustness', 'disable_workgroup_init', 'skip_validation'] as const;
export type DawnSaving = (typeof DAWN_SAVINGS)[number];

/**
 * Robustness clamps halved the speed of a 1.5B training step on an H200 (bench/RESULTS.md),
 * and every kernel here bounds its own accesses (the tests run without the clamps, so an
 * access they would have hidden shows up there). Zero-init and validation cost little and
 * validation turns API misuse into clear errors: both stay.
 */
export const DEFAULT_SAVINGS: readonly DawnSaving[] = ['disable_robustness'];

/** RWKV_DAWN_CHECKS=all keeps every Dawn check (slower; for hunting a kernel's out-of-bounds access). */
function envSavings(): readonly DawnSaving[] | undefined {
  const v = process.env.RWKV_DAWN_CHECKS;
  if (v === undefined || v === '') return undefined;
  if (v === 'all') return [];
  throw new Error(`RWKV_DAWN_CHECKS=${v}: expected all (or unset)`);
}

export interface GpuOptions {
  /** Which of DAWN_SAVINGS to turn on; DEFAULT_SAVINGS when absent. */
  savings?: readonly DawnSaving[];
  /** Per-kernel timestamp profiling (needs timestamp-query). */
  profile?: boolean;
  /** Extra Dawn instance flags, e.g. 'enable-dawn-features=dump_shaders'. */
  dawnFlags?: string[];
}

export interface SubgroupMatrixConfig {
  componentType: string;
  resultComponentType: string;
  M: number;
  N: number;
  K: number;
}

export interface AdapterReport {
  vendor: string;
  architecture: string;
  device: string;
  description: string;
  features: string[];
  limits: Record<string, number>;
  subgroupMatrixConfigs: SubgroupMatrixConfig[];
}

const WANTED_FEATURES = ['shader-f16', 'subgroups', 'timestamp-query', 'chromium-experimental-subgroup-matrix'];
/** Limits requested at the adapter's values (WebGPU's defaults are far lower). */
export const REQUESTED_LIMITS = [
  'maxStorageBufferBindingSize',
  'maxBufferSize',
  'maxComputeWorkgroupStorageSize',
  'maxStorageBuffersPerShaderStage',
  'maxComputeInvocationsPerWorkgroup',
  'maxComputeWorkgroupSizeX',
  'maxComputeWorkgroupSizeY',
  'maxComputeWorkgroupsPerDimension',
] as const;

// Instances live as long as the process, one per set of flags: Dawn's event pump can
// still run for an instance after its last device is destroyed, and on a released
// (garbage-collected) instance it crashes the process at exit.
const instances = new Map<string, GPU>();

function instanceFlags(opts: GpuOptions): string[] {
  const features = ['allow_unsafe_apis', 'vulkan_enable_f16_on_nvidia', 'use_vulkan_memory_model'];
  features.push(...(opts.savings ?? envSavings() ?? DEFAULT_SAVINGS));
  const flags = [`enable-dawn-features=${features.join(',')}`];
  if (opts.profile) flags.push('disable-dawn-features=timestamp_quantization');
  return [...flags, ...(opts.dawnFlags ?? [])];
}

export async function acquireGpu(opts: GpuOptions = {}): Promise<GpuRuntime> {
  const flags = instanceFlags(opts);
  let instance = instances.get(flags.join(' '));
  if (!instance) instances.set(flags.join(' '), (instance = create(flags)));
  const adapter = await instance.requestAdapter({ powerPreference: 'high-performance' });
  if (!adapter) throw new NoAdapterError('requestAdapter returned null');
  const requiredFeatures = WANTED_FEATURES.filter((f) => adapter.features.has(f)) as GPUFeatureName[];
  const requiredLimits: Record<string, number> = {};
  for (const k of REQUESTED_LIMITS) requiredLimits[k] = adapter.limits[k];
  const device = await adapter.requestDevice({ requiredFeatures, requiredLimits, label: 'rwkv-lora-gpu' });
  return new GpuRuntime(adapter, device, opts);
}

export function adapterReport(adapter: GPUAdapter): AdapterReport {
  const info = adapter.info as GPUAdapterInfo & { subgroupMatrixConfigs?: SubgroupMatrixConfig[] };
  const limits: Record<string, number> = {};
  const proto = Object.getPrototypeOf(adapter.limits) as object;
  for (const k of Object.keys(Object.getOwnPropertyDescriptors(proto))) {
    const v = (adapter.limits as unknown as Record<string, unknown>)[k];
    if (typeof v === 'number') limits[k] = v;
  }
  return {
    vendor: info.vendor,
    architecture: info.architecture,
    device: info.device,
    description: info.description,
    features: [...adapter.features].sort(),
    limits,
    subgroupMatrixConfigs: [...(info.subgroupMatrixConfigs ?? [])].map((c) => ({
      componentType: c.componentType,
      resultComponentType: c.resultComponentType,
      M: c.M,
      N: c.N,
      K: c.K,
    })),
  };
}

/** A tensor binding or a uniform's raw bytes, in the kernel's binding order. */
export type Arg = Tensor | ArrayBuffer;

export class GpuRuntime {
  readonly pool: BufferPool;
  readonly pipelines: PipelineCache;
  readonly features: ReadonlySet<string>;
  readonly limits: GPUSupportedLimits;
  private encoder: GPUCommandEncoder | undefined;
  private pass: GPUComputePassEncoder | undefined;
  private readonly errors: string[] = [];
  private lost: string | undefined;
  private readonly staging = new Map<number, GPUBuffer[]>();
  private profiler: Profiler | undefined;
  private destroyed = false;
  /** The ops of the tape being recorded (GpuRuntime.taped). */
  private recording: TapeOp[] | undefined;
  /** Dispatches recorded since creation; a cheap check on how much a step records. */
  dispatchCount = 0;
  submitCount = 0;

  constructor(
    readonly adapter: GPUAdapter,
    readonly device: GPUDevice,
    opts: GpuOptions,
  ) {
    this.features = device.features as ReadonlySet<string>;
    this.limits = device.limits;
    this.pool = new BufferPool(device);
    this.pipelines = new PipelineCache(device, this.pool);
    device.addEventListener('uncapturederror', (ev) => {
      const e = (ev as GPUUncapturedErrorEvent).error;
      this.errors.push(`${e.constructor.name}: ${e.message}`);
    });
    void device.lost.then((info) => {
      if (!this.destroyed) this.lost = `${info.reason}: ${info.message}`;
    });
    if (opts.profile) {
      if (!this.features.has('timestamp-query')) throw new GpuError('profiling needs the timestamp-query feature, which this adapter lacks');
      this.profiler = new Profiler(device, this.pool);
    }
  }

  get hasF16(): boolean {
    return this.features.has('shader-f16');
  }
  get hasSubgroups(): boolean {
    return this.features.has('subgroups');
  }
  get hasSubgroupMatrix(): boolean {
    return this.features.has('chromium-experimental-subgroup-matrix');
  }
  report(): AdapterReport {
    return adapterReport(this.adapter);
  }

  // ---- tensors ----

  /**
   * A tensor over a pooled buffer. Contents are undefined (whatever the buffer last held).
   * `exact` for what lives as long as a model: no size-class rounding (BufferPool.acquire).
   */
  tensor(shape: readonly number[], dtype: DType, label: string, exact = false): Tensor {
    this.assertAlive();
    const byteLength = storageBytes(dtype, numel(shape));
    if (byteLength > this.limits.maxStorageBufferBindingSize) {
      throw new GpuError(
        `tensor ${label}[${shape.join(',')}] needs ${byteLength} bytes, more than one binding may hold on this adapter (${this.limits.maxStorageBufferBindingSize})`,
      );
    }
    const buffer = this.pool.acquire(byteLength, label, exact);
    this.recording?.push({ kind: 'acquire', bytes: byteLength, label, exact, buffer });
    return { buffer, offset: 0, shape: [...shape], dtype, byteLength, label };
  }

  /** A tensor holding `data` (f32/u32/i32 arrays; Uint16Array for f16/bf16 bits). */
  upload(data: Float32Array | Uint32Array | Int32Array | Uint16Array, shape: readonly number[], dtype: DType, label: string, exact = false): Tensor {
    const n = numel(shape);
    if (data.length < n) throw new GpuError(`upload ${label}: ${data.length} values for shape [${shape.join(',')}] (${n})`);
    const t = this.tensor(shape, dtype, label, exact);
    this.write(t, data);
    return t;
  }

  /**
   * Writes host data into a tensor. queue.writeBuffer runs before any command not yet
   * submitted, so recorded work is submitted first: writes stay in program order.
   */
  write(t: Tensor, data: Float32Array | Uint32Array | Int32Array | Uint16Array): void {
    this.assertAlive();
    this.assertNotRecording(`writing ${t.label}`);
    this.submit();
    let bytes = new Uint8Array(data.buffer, data.byteOffset, Math.min(data.byteLength, t.byteLength));
    if (bytes.byteLength % 4) {
      const padded = new Uint8Array(bytes.byteLength + (4 - (bytes.byteLength % 4)));
      padded.set(bytes);
      bytes = padded;
    }
    this.device.queue.writeBuffer(t.buffer, t.offset, bytes);
  }

  /** Fills a tensor with one 32-bit pattern (NaN poisoning in tests, zeroing). */
  fill(t: Tensor, value: number, asBits = false): void {
    const words = new Uint32Array(t.byteLength / 4);
    if (asBits) words.fill(value >>> 0);
    else new Float32Array(words.buffer).fill(value);
    this.write(t, words);
  }

  free(t: Tensor): void {
    this.pool.release(t.buffer);
    this.recording?.push({ kind: 'release', buffer: t.buffer });
  }

  // ---- recording ----

  pipeline(name: string, key: string, kinds: readonly BindingKind[], source: () => string): Pipeline {
    return this.pipelines.get(name, key, kinds, source);
  }

  /** Records one dispatch into the current compute pass. */
  dispatch(p: Pipeline, args: readonly Arg[], workgroups: readonly [number, number?, number?]): void {
    this.assertAlive();
    if (args.length !== p.kinds.length) {
      throw new GpuError(`kernel ${p.label}: ${args.length} arguments for ${p.kinds.length} bindings`);
    }
    const windows: BufferWindow[] = args.map((a, i) => {
      if (a instanceof ArrayBuffer) {
        if (p.kinds[i] !== 'uniform') throw new GpuError(`kernel ${p.label}: binding ${i} is a buffer, got uniform bytes`);
        const buffer = this.pipelines.uniform(a);
        return { buffer, offset: 0, size: buffer.size };
      }
      if (p.kinds[i] === 'uniform') throw new GpuError(`kernel ${p.label}: binding ${i} is a uniform, got tensor ${a.label}`);
      return { buffer: a.buffer, offset: a.offset, size: a.byteLength };
    });
    const [x, y = 1, z = 1] = workgroups;
    const maxWg = this.limits.maxComputeWorkgroupsPerDimension;
    if (x > maxWg || y > maxWg || z > maxWg || x < 0 || y < 0 || z < 0) {
      throw new GpuError(`kernel ${p.label}: workgroup grid [${x},${y},${z}] exceeds ${maxWg} per dimension`);
    }
    if (x === 0 || y === 0 || z === 0) return;
    const bg = this.pipelines.bindGroup(p, windows);
    let pass: GPUComputePassEncoder;
    if (this.profiler) {
      if (this.profiler.full) this.submit();
      this.endPass();
      const timestampWrites = this.profiler.next(p.label);
      pass = this.encoderNow().beginComputePass({ label: p.label, timestampWrites });
    } else {
      pass = this.pass ??= this.encoderNow().beginComputePass({ label: 'rwkv-lora-gpu' });
    }
    pass.setPipeline(p.pipeline);
    pass.setBindGroup(0, bg);
    pass.dispatchWorkgroups(x, y, z);
    if (this.profiler) pass.end();
    this.recording?.push({ kind: 'dispatch', pipeline: p.pipeline, bindGroup: bg, x, y, z });
    this.dispatchCount++;
  }

  /** Records a buffer copy (ends the current pass). */
  copy(src: Tensor, dst: Tensor, bytes = Math.min(src.byteLength, dst.byteLength), srcByte = 0, dstByte = 0): void {
    this.assertAlive();
    this.endPass();
    this.encoderNow().copyBufferToBuffer(src.buffer, src.offset + srcByte, dst.buffer, dst.offset + dstByte, bytes);
    this.recording?.push({ kind: 'copy', src: src.buffer, srcOffset: src.offset + srcByte, dst: dst.buffer, dstOffset: dst.offset + dstByte, bytes });
  }

  /**
   * Runs `record`, or issues again what it recorded the last time under `key` in `tapes`.
   * Only for code whose dispatches and copies depend on nothing but the key (the same
   * kernels on the same tensors every time, e.g. a model's training step, with its batch
   * written before): a replay does not run the code. It first redoes the code's pool
   * acquisitions and releases, and runs the code again (recording anew) if the pool would
   * hand out other buffers. The code may not write or read buffers. With the profiler on,
   * it always runs the code (each dispatch needs its own timestamps).
   */
  taped(tapes: Map<string, Tape>, key: string, record: () => void): void {
    this.assertAlive();
    if (this.profiler) return record();
    const tape = tapes.get(key);
    if (tape?.replayable && replayPool(this.pool, tape)) {
      this.replay(tape);
      return;
    }
    if (this.recording) throw new GpuError('GpuRuntime.taped: already recording a tape');
    const ops: TapeOp[] = [];
    this.recording = ops;
    try {
      record();
    } finally {
      this.recording = undefined;
    }
    tapes.set(key, makeTape(ops));
  }

  private replay(tape: Tape): void {
    let last: GPUComputePipeline | undefined;
    for (const op of tape.ops) {
      if (op.kind === 'dispatch') {
        const pass = (this.pass ??= this.encoderNow().beginComputePass({ label: 'rwkv-lora-gpu' }));
        if (op.pipeline !== last) pass.setPipeline(op.pipeline);
        last = op.pipeline;
        pass.setBindGroup(0, op.bindGroup);
        pass.dispatchWorkgroups(op.x, op.y, op.z);
        this.dispatchCount++;
      } else if (op.kind === 'copy') {
        this.endPass();
        last = undefined;
        this.encoderNow().copyBufferToBuffer(op.src, op.srcOffset, op.dst, op.dstOffset, op.bytes);
      }
    }
  }

  /** Submits everything recorded so far as one command buffer. */
  submit(): void {
    if (!this.encoder) return;
    this.endPass();
    const done = this.profiler?.beforeSubmit(this.encoder);
    this.device.queue.submit([this.encoder.finish()]);
    this.encoder = undefined;
    this.submitCount++;
    done?.();
  }

  /** Waits for all submitted work and throws any GPU error seen since the last check. */
  async sync(): Promise<void> {
    this.submit();
    await this.device.queue.onSubmittedWorkDone();
    await this.checkErrors();
  }

  async checkErrors(): Promise<void> {
    const compile = (await Promise.all(this.pipelines.pendingCompile.splice(0))).filter((m): m is string => !!m);
    const oom = (await Promise.all(this.pool.pendingOom.splice(0))).filter((m): m is string => !!m);
    if (this.lost) throw new DeviceLostError(`the GPU device was lost (${this.lost})`);
    if (oom.length) {
      this.errors.length = 0;
      throw new GpuOutOfMemoryError(`GPU out of memory: ${oom.join('; ')}`);
    }
    if (compile.length) throw new GpuError(compile.join('\n'));
    if (this.errors.length) {
      const msgs = this.errors.splice(0);
      const isOom = msgs.some((m) => m.startsWith('GPUOutOfMemoryError'));
      const text = msgs.slice(0, 5).join('\n') + (msgs.length > 5 ? `\n(${msgs.length - 5} more)` : '');
      throw isOom ? new GpuOutOfMemoryError(`GPU out of memory; work was dropped:\n${text}`) : new GpuError(text);
    }
  }

  /** Reads a tensor back (submits pending work first). */
  async read(t: Tensor): Promise<ArrayBuffer> {
    this.assertAlive();
    this.assertNotRecording(`reading ${t.label}`);
    const size = t.byteLength;
    const staging = this.takeStaging(size);
    this.endPass();
    this.encoderNow().copyBufferToBuffer(t.buffer, t.offset, staging, 0, size);
    this.submit();
    try {
      await staging.mapAsync(GPUMapMode.READ, 0, size);
    } catch (e) {
      await this.checkErrors();
      throw new GpuError(`reading ${t.label} back failed: ${(e as Error).message}`);
    }
    const out = staging.getMappedRange(0, size).slice(0);
    staging.unmap();
    this.returnStaging(staging);
    await this.checkErrors();
    return out;
  }

  async readF32(t: Tensor): Promise<Float32Array> {
    if (t.dtype !== 'f32') throw new GpuError(`readF32 of ${t.label}, which is ${t.dtype}`);
    return new Float32Array(await this.read(t), 0, numel(t.shape));
  }

  async readU32(t: Tensor): Promise<Uint32Array> {
    return new Uint32Array(await this.read(t), 0, numel(t.shape));
  }

  // ---- memory, profiling, lifetime ----

  memory(): MemoryStats {
    return this.pool.stats();
  }

  async profile(): Promise<KernelTime[]> {
    if (!this.profiler) throw new GpuError('profiling is off: acquire the GPU with { profile: true }');
    this.submit();
    return this.profiler.report();
  }

  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    this.device.destroy();
  }

  private encoderNow(): GPUCommandEncoder {
    return (this.encoder ??= this.device.createCommandEncoder({ label: 'rwkv-lora-gpu' }));
  }

  private endPass(): void {
    this.pass?.end();
    this.pass = undefined;
  }

  private takeStaging(size: number): GPUBuffer {
    const cls = Math.max(256, 2 ** Math.ceil(Math.log2(size)));
    const b = this.staging.get(cls)?.pop();
    return b ?? this.pool.create(cls, GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST, 'staging-read');
  }

  private returnStaging(b: GPUBuffer): void {
    const list = this.staging.get(b.size) ?? [];
    list.push(b);
    this.staging.set(b.size, list);
  }

  private assertNotRecording(what: string): void {
    if (this.recording) throw new GpuError(`${what} while recording a tape (GpuRuntime.taped): a replay would not repeat it`);
  }

  private assertAlive(): void {
    if (this.destroyed) throw new GpuError('the GPU runtime was destroyed');
    if (this.lost) throw new DeviceLostError(`the GPU device was lost (${this.lost})`);
  }
}
