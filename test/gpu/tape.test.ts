import { describe, expect, it } from 'vitest';
import type { Tape } from '../../src/gpu/tape.js';
import { axpby } from '../../src/kernels/elementwise.js';
import { freshRng, getGpu } from '../helpers.js';

describe('GpuRuntime.taped', () => {
  const n = 1000;
  // y = 3·x + y through a pooled temporary: tmp = x; tmp = x + 2·tmp; y = tmp + y.
  async function setup() {
    const gpu = await getGpu();
    const rng = freshRng();
    const x = gpu.tensor([n], 'f32', 'x');
    const y = gpu.tensor([n], 'f32', 'y');
    const tapes = new Map<string, Tape>();
    let runs = 0;
    const step = (): void =>
      gpu.taped(tapes, 'step', () => {
        runs++;
        const tmp = gpu.tensor([n], 'f32', 'tmp');
        gpu.copy(x, tmp);
        axpby(gpu, x, tmp, 1, 2);
        axpby(gpu, tmp, y, 1, 1);
        gpu.free(tmp);
      });
    // Each call on fresh data: the result must be this data's, whether recorded or replayed.
    const check = async (): Promise<void> => {
      const xs = Float32Array.from(rng.normals(n));
      const ys = Float32Array.from(rng.normals(n));
      gpu.write(x, xs);
      gpu.write(y, ys);
      step();
      const got = await gpu.readF32(y);
      for (let i = 0; i < n; i++) expect(got[i]).toBe(Math.fround(Math.fround(3 * xs[i]) + ys[i]));
    };
    return { gpu, x, y, check, runs: () => runs, free: () => (gpu.free(x), gpu.free(y)) };
  }

  it('replays what the code recorded, on what the buffers hold at the time', async () => {
    const s = await setup();
    await s.check();
    const d0 = s.gpu.dispatchCount;
    await s.check();
    await s.check();
    expect(s.runs()).toBe(1);
    expect(s.gpu.dispatchCount - d0).toBe(4);
    s.free();
  });

  it('runs the code again when the pool would hand it another buffer', async () => {
    const s = await setup();
    await s.check();
    // Takes the parked temporary: a replay would write into it.
    const hold = s.gpu.tensor([n], 'f32', 'hold');
    const mark = Float32Array.from({ length: n }, (_, i) => i);
    s.gpu.write(hold, mark);
    await s.check();
    expect(s.runs()).toBe(2);
    expect(await s.gpu.readF32(hold)).toEqual(mark);
    s.gpu.free(hold);
    s.free();
  });

  it('never replays code that keeps a pooled buffer', async () => {
    const gpu = await getGpu();
    const tapes = new Map<string, Tape>();
    const kept: ReturnType<typeof gpu.tensor>[] = [];
    for (let i = 0; i < 3; i++) gpu.taped(tapes, 'keep', () => void kept.push(gpu.tensor([n], 'f32', 'kept')));
    expect(new Set(kept.map((t) => t.buffer)).size).toBe(3);
    for (const t of kept) gpu.free(t);
  });

  it('refuses writes and reads inside the recorded code, which a replay would not repeat', async () => {
    const gpu = await getGpu();
    const t = gpu.tensor([n], 'f32', 'w');
    expect(() => gpu.taped(new Map(), 'w', () => gpu.write(t, new Float32Array(n)))).toThrow(/writing w while recording a tape/);
    let read: Promise<ArrayBuffer> | undefined;
    gpu.taped(new Map(), 'r', () => (read = gpu.read(t), undefined));
    await expect(read).rejects.toThrow(/reading w while recording a tape/);
    gpu.free(t);
  });
});
