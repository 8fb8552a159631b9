/**
 * Per-kernel GPU timing through timestamp queries. Off by default: when on, each
 * dispatch gets a compute pass of its own, which serialises work a little.
 */
import './globals.js';
import type { BufferPool } from './buffers.js';

export interface KernelTime {
  kernel: string;
  calls: number;
  totalMs: number;
}

const CAPACITY = 2048; // dispatches timed per submit (a query set holds at most 4096 timestamps)

export class Profiler {
  private readonly querySet: GPUQuerySet;
  private readonly resolve: GPUBuffer;
  private names: string[] = [];
  private readonly totals = new Map<string, KernelTime>();
  private readonly pending: Promise<void>[] = [];

  constructor(
    private readonly device: GPUDevice,
    private readonly pool: BufferPool,
  ) {
    this.querySet = device.createQuerySet({ type: 'timestamp', count: 2 * CAPACITY, label: 'profiler' });
    this.resolve = pool.create(
      16 * CAPACITY,
      GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC,
      'profiler-resolve',
    );
  }

  /** True when the current submit has used every query: submit before timing more. */
  get full(): boolean {
    return this.names.length >= CAPACITY;
  }

  /** Timestamp writes for the next dispatch's pass. */
  next(kernel: string): GPUComputePassTimestampWrites {
    const i = this.names.length;
    this.names.push(kernel);
    return { querySet: this.querySet, beginningOfPassWriteIndex: 2 * i, endOfPassWriteIndex: 2 * i + 1 };
  }

  /** Records the resolve into `encoder`; call just before finishing it. */
  beforeSubmit(encoder: GPUCommandEncoder): (() => void) | undefined {
    const n = this.names.length;
    if (n === 0) return undefined;
    const names = this.names;
    this.names = [];
    encoder.resolveQuerySet(this.querySet, 0, 2 * n, this.resolve, 0);
    const staging = this.pool.create(16 * n, GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST, 'profiler-read');
    encoder.copyBufferToBuffer(this.resolve, 0, staging, 0, 16 * n);
    return () => {
      this.pending.push(
        staging.mapAsync(GPUMapMode.READ).then(() => {
          const t = new BigUint64Array(staging.getMappedRange().slice(0));
          staging.unmap();
          this.pool.destroy(staging);
          names.forEach((name, i) => {
            const ns = Number(t[2 * i + 1] - t[2 * i]);
            const e = this.totals.get(name) ?? { kernel: name, calls: 0, totalMs: 0 };
            e.calls++;
            e.totalMs += ns / 1e6;
            this.totals.set(name, e);
          });
        }),
      );
    };
  }

  async report(): Promise<KernelTime[]> {
    await Promise.all(this.pending.splice(0));
    // Copies: callers keep a report to subtract it from a later one.
    return [...this.totals.values()].map((e) => ({ ...e })).sort((a, b) => b.totalMs - a.totalMs);
  }

  reset(): void {
    this.totals.clear();
  }
}
