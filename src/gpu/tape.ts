/**
 * A tape: the dispatches, copies and pool traffic one run of a piece of recording code made,
 * so that GpuRuntime.taped can issue them again without running that code. A training step
 * records the same kernels on the same buffers every time; replaying skips every argument
 * check, cache lookup and uniform packing, most of its host time (a tiny model's step on
 * lavapipe: 5.3 → 1.2 ms; bench/RESULTS.md has the H200's).
 */
import './globals.js';
import type { BufferPool } from './buffers.js';

export type TapeOp =
  | { kind: 'dispatch'; pipeline: GPUComputePipeline; bindGroup: GPUBindGroup; x: number; y: number; z: number }
  | { kind: 'copy'; src: GPUBuffer; srcOffset: number; dst: GPUBuffer; dstOffset: number; bytes: number }
  | { kind: 'acquire'; bytes: number; label: string; exact: boolean; buffer: GPUBuffer }
  | { kind: 'release'; buffer: GPUBuffer };

export interface Tape {
  readonly ops: readonly TapeOp[];
  /** False when the code kept a pooled buffer past its end: a replay could not hand it the same one. */
  readonly replayable: boolean;
}

export function makeTape(ops: TapeOp[]): Tape {
  const held = new Set<GPUBuffer>();
  for (const op of ops) {
    if (op.kind === 'acquire') held.add(op.buffer);
    else if (op.kind === 'release') held.delete(op.buffer);
  }
  return { ops, replayable: held.size === 0 };
}

/**
 * Redoes the tape's acquisitions and releases on the pool. True when every acquisition got
 * the buffer it got when recorded (so the recorded bind groups hold buffers nobody else
 * does); otherwise the pool is left as before, less the order of its parked buffers.
 */
export function replayPool(pool: BufferPool, tape: Tape): boolean {
  const taken = new Set<GPUBuffer>();
  for (const op of tape.ops) {
    if (op.kind === 'acquire') {
      const b = pool.acquire(op.bytes, op.label, op.exact);
      taken.add(b);
      if (b !== op.buffer) {
        for (const t of taken) pool.release(t);
        return false;
      }
    } else if (op.kind === 'release') {
      pool.release(op.buffer);
      taken.delete(op.buffer);
    }
  }
  return true;
}
