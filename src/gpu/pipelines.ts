/**
 * Pipeline, bind-group and uniform caches. A training step repeats the same
 * dispatches with the same buffers every time, so after the first step every
 * pipeline, bind group and uniform buffer is a cache hit.
 */
import './globals.js';
import type { BufferPool } from './buffers.js';

/** How a kernel sees each of its bindings, in binding order (group 0). */
export type BindingKind = 'uniform' | 'read' | 'rw';

export interface Pipeline {
  readonly id: number;
  /** Kernel name plus specialisation, used in error messages and profiles. */
  readonly label: string;
  readonly kinds: readonly BindingKind[];
  readonly pipeline: GPUComputePipeline;
  readonly layout: GPUBindGroupLayout;
}

const bufferIds = new WeakMap<GPUBuffer, number>();
let nextBufferId = 1;
function bufferId(b: GPUBuffer): number {
  let id = bufferIds.get(b);
  if (id === undefined) {
    id = nextBufferId++;
    bufferIds.set(b, id);
  }
  return id;
}

export interface BufferWindow {
  buffer: GPUBuffer;
  offset: number;
  size: number;
}

export class PipelineCache {
  private readonly pipelines = new Map<string, Pipeline>();
  private readonly bindGroups = new Map<string, GPUBindGroup>();
  private readonly uniforms = new Map<string, GPUBuffer>();
  /** Shader compilation results not yet checked, with the kernel they belong to. */
  readonly pendingCompile: Promise<string | null>[] = [];
  private nextId = 1;

  constructor(
    private readonly device: GPUDevice,
    private readonly pool: BufferPool,
  ) {}

  get(name: string, key: string, kinds: readonly BindingKind[], source: () => string): Pipeline {
    const label = key ? `${name}<${key}>` : name;
    const hit = this.pipelines.get(label);
    if (hit) return hit;
    const code = source();
    const layout = this.device.createBindGroupLayout({
      label,
      entries: kinds.map((k, i) => ({
        binding: i,
        visibility: GPUShaderStage.COMPUTE,
        buffer: { type: k === 'uniform' ? 'uniform' : k === 'read' ? 'read-only-storage' : 'storage' },
      })),
    });
    this.device.pushErrorScope('validation');
    const module = this.device.createShaderModule({ label, code });
    const pipeline = this.device.createComputePipeline({
      label,
      layout: this.device.createPipelineLayout({ label, bindGroupLayouts: [layout] }),
      compute: { module, entryPoint: 'main' },
    });
    this.pendingCompile.push(
      this.device.popErrorScope().then(async (e) => {
        if (!e) return null;
        const info = await module.getCompilationInfo();
        const lines = info.messages.map((m) => `  ${m.type} at line ${m.lineNum}:${m.linePos}: ${m.message}`);
        return `kernel ${label} failed to compile: ${e.message}\n${lines.join('\n')}`;
      }),
    );
    const p: Pipeline = { id: this.nextId++, label, kinds, pipeline, layout };
    this.pipelines.set(label, p);
    return p;
  }

  /** A uniform buffer holding exactly these bytes; identical contents share one buffer. */
  uniform(data: ArrayBuffer): GPUBuffer {
    const words = new Uint32Array(data);
    const key = words.join(',');
    let buf = this.uniforms.get(key);
    if (!buf) {
      const size = Math.max(16, Math.ceil(data.byteLength / 16) * 16);
      buf = this.pool.create(size, GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST, 'uniform');
      this.device.queue.writeBuffer(buf, 0, data);
      this.uniforms.set(key, buf);
    }
    return buf;
  }

  bindGroup(p: Pipeline, windows: readonly BufferWindow[]): GPUBindGroup {
    let key = String(p.id);
    for (const w of windows) key += `|${bufferId(w.buffer)}:${w.offset}:${w.size}`;
    let bg = this.bindGroups.get(key);
    if (!bg) {
      bg = this.device.createBindGroup({
        label: p.label,
        layout: p.layout,
        entries: windows.map((w, i) => ({ binding: i, resource: { buffer: w.buffer, offset: w.offset, size: w.size } })),
      });
      this.bindGroups.set(key, bg);
    }
    return bg;
  }

  /** Forgets bind groups that reference a buffer about to be destroyed. */
  forgetBuffer(b: GPUBuffer): void {
    const id = bufferIds.get(b);
    if (id === undefined) return;
    const needle = `|${id}:`;
    for (const k of this.bindGroups.keys()) if (k.includes(needle)) this.bindGroups.delete(k);
  }

  stats(): { pipelines: number; bindGroups: number; uniforms: number } {
    return { pipelines: this.pipelines.size, bindGroups: this.bindGroups.size, uniforms: this.uniforms.size };
  }
}
