/** The benchmark's results as markdown tables (printed, and pasted into bench/RESULTS.md). */
import { shapeKey, stepFlops, type MatmulShape } from './layouts.js';
import type { MatmulResult, TilingResult } from './matmul_bench.js';
import type { TrainResult } from './train_bench.js';
import type { WkvResult } from './wkv_bench.js';

/** What bench/reference/torch_bench.py writes. */
export interface TorchResults {
  torch: string;
  cuda: string;
  device: string;
  wkvCheck: Record<string, number | boolean>;
  matmul: Record<string, { ms: number; tflops: number }>;
  wkv: (WkvResult & { layout: string })[];
  train: { layout: string; B: number; T: number; gradCp: boolean; tokensPerSec?: number; msPerStep?: number; peakReservedBytes?: number; error?: string }[];
}

function table(head: string[], rows: (string | number | undefined)[][]): string {
  const cell = (v: string | number | undefined): string => (v === undefined ? '–' : String(v));
  return [`| ${head.join(' | ')} |`, `| ${head.map(() => '---').join(' | ')} |`, ...rows.map((r) => `| ${r.map(cell).join(' | ')} |`)].join('\n');
}

const f1 = (x: number | undefined): string | undefined => (x === undefined ? undefined : x.toFixed(1));
const f2 = (x: number | undefined): string | undefined => (x === undefined ? undefined : x.toFixed(2));
const gib = (bytes: number | undefined): string | undefined => (bytes === undefined ? undefined : (bytes / 2 ** 30).toFixed(2));

export function matmulTable(results: readonly MatmulResult[], torch: TorchResults | undefined): string {
  const rows = results.map((r) => {
    const tc = r.paths.tc;
    const cublas = torch?.matmul[shapeKey(r)];
    return [
      r.layout,
      r.tokens,
      r.what,
      `${r.transA ? 'T' : 'N'}${r.transB ? 'T' : 'N'} ${r.m}×${r.n}×${r.k}`,
      r.perStep,
      f1(r.paths.f32?.tflops) ?? r.paths.f32?.skipped,
      f1(tc?.tflops) ?? tc?.skipped,
      tc?.convertMs !== undefined && tc.ms ? `${Math.round((100 * tc.convertMs) / tc.ms)}%` : undefined,
      f1(cublas?.tflops),
      tc?.tflops && cublas ? f2(tc.tflops / cublas.tflops) : undefined,
    ];
  });
  return table(['layout', 'M', 'product', 'op(A)·op(B), M×N×K', 'per step', 'f32 kernel TFLOP/s', 'tensor cores TFLOP/s', 'of which f16 copies', 'cuBLAS bf16 TFLOP/s', 'tc / cuBLAS'], rows);
}

export function tilingTable(results: readonly TilingResult[]): string {
  return table(['product', 'tiling WM×WN×TM×TN×BK', 'B read as', 'ms', 'TFLOP/s (product kernel only)'], results.map((r) => [r.shape, r.tiling, r.b, r.ms.toFixed(3), f1(r.tflops)]));
}

export function wkvTable(results: readonly WkvResult[], torch: TorchResults | undefined): string {
  return table(
    ['layout', 'B', 'T', 'H', 'WGSL fwd ms', 'WGSL bwd ms', 'WGSL fwd+bwd ms', 'CUDA fwd+bwd ms (PyTorch reference kernel)'],
    results.map((r) => {
      const t = torch?.wkv.find((x) => x.layout === r.layout && x.B === r.B && x.T === r.T && x.H === r.H);
      return [r.layout, r.B, r.T, r.H, f2(r.forwardMs), f2(r.backwardMs), f2(r.forwardMs + r.backwardMs), t ? f2(t.forwardMs + t.backwardMs) : undefined];
    }),
  );
}

/**
 * Training FLOPs per token and the floor: tokens/s if every product of the step ran at
 * the cuBLAS rate measured for its shape (everything else free).
 */
export function floorOf(shapes: readonly MatmulShape[], gradCp: boolean, tokens: number, torch: TorchResults | undefined): { flopsPerToken: number; floorTokensPerSec?: number } {
  const flopsPerToken = stepFlops(shapes, gradCp) / tokens;
  let ms = 0;
  for (const s of shapes) {
    const t = torch?.matmul[shapeKey(s)];
    if (!t) return { flopsPerToken };
    ms += t.ms * (s.perStep + (gradCp && !s.what.includes('head') ? s.forwardPerStep : 0));
  }
  return { flopsPerToken, floorTokensPerSec: tokens / (ms / 1000) };
}

export function trainTable(results: readonly TrainResult[], torch: TorchResults | undefined, floors: Map<string, ReturnType<typeof floorOf>>): string {
  const rows = results.map((r) => {
    const t = torch?.train.find((x) => x.layout === r.layout && x.B === r.B && x.T === r.T && x.gradCp === r.gradCp);
    const fl = floors.get(`${r.layout} ${r.B * r.T} ${r.gradCp}`);
    return [
      r.layout,
      r.B,
      r.T,
      r.gradCp ? 'on' : 'off',
      r.dawn,
      r.error ? `error: ${r.error}` : r.tokensPerSec?.toFixed(0),
      f1(r.msPerStep),
      f1(r.hostMsPerStep),
      f1(r.cpuMsPerStep),
      r.dispatchesPerStep,
      gib(r.poolPeakBytes),
      r.smiPeakMiB !== undefined ? ((r.smiPeakMiB - (r.smiBaselineMiB ?? 0)) / 1024).toFixed(2) : undefined,
      t?.error ? `error: ${t.error}` : t?.tokensPerSec?.toFixed(0),
      gib(t?.peakReservedBytes),
      r.tokensPerSec && t?.tokensPerSec ? f2(r.tokensPerSec / t.tokensPerSec) : undefined,
      fl ? (fl.flopsPerToken / 1e9).toFixed(2) : undefined,
      fl?.floorTokensPerSec?.toFixed(0),
    ];
  });
  return table(
    ['layout', 'micro_bsz', 'ctx_len', 'grad_cp', 'Dawn checks', 'tokens/s', 'ms/step', 'host ms/step (recording)', 'process CPU ms/step', 'dispatches/step', 'pool peak GiB', 'nvidia-smi peak GiB (over idle)', 'PyTorch tokens/s', 'PyTorch peak GiB (reserved)', 'ours / PyTorch', 'GFLOP/token (matmuls)', 'floor tokens/s (cuBLAS rates)'],
    rows,
  );
}

export function kernelTable(results: readonly TrainResult[]): string {
  const rows: (string | number | undefined)[][] = [];
  for (const r of results) for (const k of r.topKernels ?? []) rows.push([`${r.layout} B=${r.B} cp=${r.gradCp ? 'on' : 'off'}`, k.kernel, f2(k.msPerStep)]);
  return table(['configuration', 'kernel', 'GPU ms/step'], rows);
}

/** What each configuration's model held, by category, next to AdamW's moments. */
export function memoryTable(results: readonly TrainResult[]): string {
  const rows = results
    .filter((r) => r.modelMemory)
    .map((r) => {
      const m = r.modelMemory!;
      return [r.layout, r.B, r.T, r.gradCp ? 'on' : 'off', gib(m.weights), gib(m.trainable), gib(r.optimizerBytes), gib(m.activations), gib(m.wkvSaved), gib(m.backward), gib(m.logits), gib(m.total + (r.optimizerBytes ?? 0)), gib(r.poolPeakBytes)];
    });
  return table(['layout', 'micro_bsz', 'ctx_len', 'grad_cp', 'weights', 'LoRA params+grads', 'AdamW m+v', 'activations', 'WKV saved', 'backward', 'logits chunk', 'model+optimizer GiB', 'pool peak GiB'], rows);
}
