/**
 * What the driver reports: GPU memory (`nvidia-smi --query-gpu=memory.used`, polled every
 * 50 ms while a benchmark runs), the card and its SM clock. Absent where there is no
 * nvidia-smi (lavapipe).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';

/** A numeric nvidia-smi field of GPU 0 now, or undefined without nvidia-smi. */
function smiNumber(field: string): number | undefined {
  const r = spawnSync('nvidia-smi', [`--query-gpu=${field}`, '--format=csv,noheader,nounits', '-i', '0'], { encoding: 'utf8' });
  if (r.status !== 0 || !r.stdout) return undefined;
  const v = Number(r.stdout.trim().split('\n')[0]);
  return Number.isFinite(v) ? v : undefined;
}

/** MiB in use on GPU 0 now. */
export const gpuMemoryUsedMiB = (): number | undefined => smiNumber('memory.used');

/** SM clock now, to tell a slow kernel from a clocked-down card. */
export const smClockMHz = (): number | undefined => smiNumber('clocks.sm');

/** The card's name and driver, e.g. 'NVIDIA H200, 580.159.04, 143771 MiB'. */
export function gpuCard(): string | undefined {
  const r = spawnSync('nvidia-smi', ['--query-gpu=name,driver_version,memory.total', '--format=csv,noheader', '-i', '0'], { encoding: 'utf8' });
  return r.status === 0 && r.stdout ? r.stdout.trim().split('\n')[0] : undefined;
}

export class MemoryPoller {
  private child: ChildProcess | undefined;
  private peak = 0;

  start(): void {
    const child = spawn('nvidia-smi', ['--query-gpu=memory.used', '--format=csv,noheader,nounits', '-i', '0', '-lms', '50'], {
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    child.on('error', () => (this.child = undefined));
    child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
      for (const line of chunk.split('\n')) {
        const v = Number(line.trim());
        if (line.trim() && Number.isFinite(v)) this.peak = Math.max(this.peak, v);
      }
    });
    this.child = child;
  }

  /** Stops polling; the highest reading in MiB, or undefined when nothing was read. */
  stop(): number | undefined {
    if (this.child?.pid !== undefined) this.child.kill();
    this.child = undefined;
    return this.peak > 0 ? this.peak : undefined;
  }
}
