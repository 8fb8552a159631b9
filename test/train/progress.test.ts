/** Progress: a live line rewritten in place on a terminal, plain lines (rate-limited) elsewhere; the loss curve SVG. */
import { describe, expect, it } from 'vitest';
import { lossCurveSvg } from '../../src/train/loss_curve.js';
import { formatProgress, Progress, type ProgressSample } from '../../src/train/progress.js';

const sample: ProgressSample = { step: 12, totalSteps: 300, epoch: 0, loss: 2.34567, smoothLoss: 2.5, lr: 1.2e-3, tokensPerSecond: 3400, etaSeconds: 83, gpuBytes: 123 * 2 ** 20 };

describe('progress', () => {
  it('shows step/total, loss, smoothed loss, lr, tokens/s, ETA and GPU memory', () => {
    expect(formatProgress(sample)).toBe('step 12/300  epoch 0  loss 2.3457  smooth 2.5000  lr 1.20e-3  3.40 kt/s  ETA 1m23s  GPU 123 MiB');
  });

  it('rewrites one line on a terminal; writes plain lines elsewhere, at most every few seconds', () => {
    const tty: string[] = [];
    const p = new Progress({ write: (s) => tty.push(s), isTTY: true, columns: 200 });
    p.update(sample);
    p.update({ ...sample, step: 13 });
    p.log('saved');
    expect(tty).toEqual([`\r\x1b[2K${formatProgress(sample)}`, `\r\x1b[2K${formatProgress({ ...sample, step: 13 })}`, '\n', 'saved\n']);

    const plain: string[] = [];
    const q = new Progress({ write: (s) => plain.push(s) }, 3600);
    q.update(sample);
    q.update({ ...sample, step: 13 });
    q.update({ ...sample, step: 14 }, true);
    expect(plain).toEqual([`${formatProgress(sample)}\n`, `${formatProgress({ ...sample, step: 14 })}\n`]);
  });
});

describe('loss curve', () => {
  it('draws the losses and their moving average, with at most 1500 points per line', () => {
    const losses = Array.from({ length: 5000 }, (_, i) => 5 * Math.exp(-i / 1000) + 0.1 * Math.sin(i));
    const svg = lossCurveSvg(losses, 'run <1>');
    expect(svg).toMatch(/^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg"[^>]*>/);
    expect(svg).toContain('run &lt;1&gt;');
    expect(svg.trimEnd().endsWith('</svg>')).toBe(true);
    const paths = [...svg.matchAll(/<path d="([^"]+)"/g)].map((m) => m[1].split(/[ML]/).filter(Boolean).length);
    expect(paths).toHaveLength(2);
    for (const n of paths) expect(n).toBeLessThanOrEqual(1500);
    expect(lossCurveSvg([], 'empty')).toContain('no steps yet');
  });
});
