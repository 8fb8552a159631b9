/**
 * The loss curve as a self-contained SVG (no scripts, no external fonts): the
 * per-step loss in a light line, its moving average in a dark one, axes with
 * round tick values. Long runs are averaged into at most MAX_POINTS buckets.
 */

const W = 800;
const H = 420;
const PAD = { left: 64, right: 20, top: 36, bottom: 44 };
const MAX_POINTS = 1500;

/** Tick values covering [lo, hi] at a 1/2/5·10^k step, about `n` of them. */
function ticks(lo: number, hi: number, n: number): number[] {
  const span = hi - lo || Math.abs(hi) || 1;
  const raw = span / n;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw)!;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

/** Bucket means, so a curve never has more than MAX_POINTS points; x is the bucket's last step. */
function downsample(ys: readonly number[], firstStep: number): [number, number][] {
  const per = Math.max(1, Math.ceil(ys.length / MAX_POINTS));
  const pts: [number, number][] = [];
  for (let i = 0; i < ys.length; i += per) {
    const chunk = ys.slice(i, i + per);
    pts.push([firstStep + i + chunk.length - 1, chunk.reduce((a, b) => a + b, 0) / chunk.length]);
  }
  return pts;
}

/** Trailing mean over `window` steps. */
function movingAverage(ys: readonly number[], window: number): number[] {
  const out: number[] = [];
  let sum = 0;
  for (let i = 0; i < ys.length; i++) {
    sum += ys[i];
    if (i >= window) sum -= ys[i - window];
    out.push(sum / Math.min(i + 1, window));
  }
  return out;
}

const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

/** SVG of `losses[i]` = the loss of optimizer step i + 1. */
export function lossCurveSvg(losses: readonly number[], title: string): string {
  const finite = losses.filter(Number.isFinite);
  const plotW = W - PAD.left - PAD.right;
  const plotH = H - PAD.top - PAD.bottom;
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${PAD.left}" y="22" font-size="14">${esc(title)}</text>`,
  ];
  if (finite.length === 0) {
    parts.push(`<text x="${W / 2}" y="${H / 2}" text-anchor="middle" fill="#666">no steps yet</text>`, '</svg>');
    return parts.join('\n');
  }
  const xMax = Math.max(losses.length, 2);
  const yTicks = ticks(Math.min(...finite), Math.max(...finite), 6);
  const yLo = Math.min(yTicks[0], Math.min(...finite));
  const yHi = Math.max(yTicks[yTicks.length - 1], Math.max(...finite));
  const sx = (x: number): number => PAD.left + ((x - 1) / (xMax - 1)) * plotW;
  const sy = (y: number): number => PAD.top + (1 - (y - yLo) / (yHi - yLo || 1)) * plotH;
  const path = (pts: [number, number][]): string =>
    pts.filter(([, y]) => Number.isFinite(y)).map(([x, y], i) => `${i ? 'L' : 'M'}${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join('');

  for (const y of yTicks) {
    parts.push(`<line x1="${PAD.left}" x2="${W - PAD.right}" y1="${sy(y).toFixed(1)}" y2="${sy(y).toFixed(1)}" stroke="#eee"/>`);
    parts.push(`<text x="${PAD.left - 6}" y="${(sy(y) + 4).toFixed(1)}" text-anchor="end">${y}</text>`);
  }
  for (const x of ticks(1, xMax, 8).filter((v) => v >= 1 && Number.isInteger(v))) {
    parts.push(`<text x="${sx(x).toFixed(1)}" y="${H - PAD.bottom + 18}" text-anchor="middle">${x}</text>`);
  }
  parts.push(`<rect x="${PAD.left}" y="${PAD.top}" width="${plotW}" height="${plotH}" fill="none" stroke="#999"/>`);
  parts.push(`<text x="${PAD.left + plotW / 2}" y="${H - 8}" text-anchor="middle">optimizer step</text>`);
  parts.push(`<text transform="translate(16 ${PAD.top + plotH / 2}) rotate(-90)" text-anchor="middle">loss</text>`);
  const window = Math.max(1, Math.round(losses.length / 50));
  parts.push(`<path d="${path(downsample(losses, 1))}" fill="none" stroke="#9ecae1" stroke-width="1"/>`);
  parts.push(`<path d="${path(downsample(movingAverage(losses, window), 1))}" fill="none" stroke="#08519c" stroke-width="2"/>`);
  parts.push(`<text x="${W - PAD.right}" y="22" text-anchor="end" fill="#08519c">mean of ${window} step${window > 1 ? 's' : ''}</text>`);
  parts.push('</svg>');
  return parts.join('\n');
}
