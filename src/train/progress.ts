/**
 * Training progress for people: on a terminal one live line rewritten in place
 * (step/total, loss, smoothed loss, lr, tokens/s, ETA, GPU memory); elsewhere
 * (a log file, CI) a plain line every few seconds and at each epoch's end.
 */

export interface ProgressSample {
  step: number;
  totalSteps: number;
  epoch: number;
  loss: number;
  smoothLoss: number;
  lr: number;
  tokensPerSecond: number;
  /** Seconds left at the current speed. */
  etaSeconds: number;
  gpuBytes: number;
}

export interface ProgressSink {
  write(s: string): unknown;
  isTTY?: boolean;
  columns?: number;
}

function duration(s: number): string {
  if (!Number.isFinite(s)) return '?';
  const t = Math.round(s);
  const h = Math.floor(t / 3600);
  const m = Math.floor((t % 3600) / 60);
  const sec = t % 60;
  return h ? `${h}h${String(m).padStart(2, '0')}m` : m ? `${m}m${String(sec).padStart(2, '0')}s` : `${sec}s`;
}

function rate(tps: number): string {
  return tps >= 1000 ? `${(tps / 1000).toFixed(2)} kt/s` : `${tps.toFixed(0)} t/s`;
}

export function formatProgress(p: ProgressSample): string {
  return [
    `step ${p.step}/${p.totalSteps}`,
    `epoch ${p.epoch}`,
    `loss ${p.loss.toFixed(4)}`,
    `smooth ${p.smoothLoss.toFixed(4)}`,
    `lr ${p.lr.toExponential(2)}`,
    rate(p.tokensPerSecond),
    `ETA ${duration(p.etaSeconds)}`,
    `GPU ${(p.gpuBytes / 2 ** 20).toFixed(0)} MiB`,
  ].join('  ');
}

export class Progress {
  private lastPlain = -Infinity;
  private live = false;

  constructor(
    private readonly out: ProgressSink,
    private readonly plainEverySeconds = 10,
  ) {}

  update(p: ProgressSample, force = false): void {
    const line = formatProgress(p);
    if (this.out.isTTY) {
      const width = Math.max(20, (this.out.columns ?? 120) - 1);
      this.out.write(`\r\x1b[2K${line.slice(0, width)}`);
      this.live = true;
      return;
    }
    const now = performance.now() / 1000;
    if (force || now - this.lastPlain >= this.plainEverySeconds) {
      this.out.write(line + '\n');
      this.lastPlain = now;
    }
  }

  /** A message on its own line (ends the live line first). */
  log(message: string): void {
    this.endLine();
    this.out.write(message + '\n');
  }

  endLine(): void {
    if (this.live) this.out.write('\n');
    this.live = false;
  }
}
