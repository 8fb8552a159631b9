/**
 * `npm run bench [-- options]`: matrix products, WKV7 and end-to-end LoRA training steps
 * of the RWKV-7 layouts on this machine's GPU, with PyTorch's numbers from the same run
 * and card (bench/reference/torch_bench.py). Prints markdown tables; writes JSON under
 * bench/results/.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { acquireGpu, DAWN_SAVINGS, DEFAULT_SAVINGS, type DawnSaving } from '../src/gpu/device.js';
import type { MatmulMode } from '../src/kernels/matmul.js';
import { NARROW_N, NARROW_TC_TILING, parseTcTiling, setTcTiling, TC_TILING, tcSupport, tcTilingName } from '../src/kernels/matmul_tc.js';
import { gpuCard } from './gpu_memory.js';
import { layoutDims, shapeKey, stepMatmuls, type MatmulShape } from './layouts.js';
import { benchMatmuls, benchTilings, type MatmulResult, type TilingResult } from './matmul_bench.js';
import { tiledRandomWeights } from './random.js';
import { floorOf, kernelTable, matmulTable, memoryTable, tilingTable, trainTable, wkvTable, type TorchResults } from './report.js';
import { benchTrain, type TrainResult } from './train_bench.js';
import { benchWkv, parseWkvPlan, type WkvResult } from './wkv_bench.js';

const USAGE = `usage: npm run bench -- [options]
  --parts LIST       matmul,wkv,train,torch (default all)
  --layouts LIST     0.1B,0.4B,1.5B,2.9B (default all)
  --tokens LIST      M = micro_bsz·ctx_len of the matmul shapes (default 1024,8192)
  --bsz LIST         training micro_bsz (default 1,8)
  --ctx N            training ctx_len (default 1024)
  --wkv-bsz LIST     WKV7 batch sizes B (default 8; T = 1024)
  --wkv-plans LIST   WKV7 plans lanes x groups / colLanes / colChunks, e.g. 4x1/4/1 (default auto)
  --cp LIST          grad_cp off,on (default off,on)
  --steps N          timed training steps per configuration (default 5)
  --r N              LoRA rank (default 64)
  --paths LIST       matmul paths timed: f32,tc (default both)
  --matmul MODE      matmul mode of the training steps: auto, f32 or tc (default auto)
  --tilings LIST     also time tensor-core tilings on the 1.5B frozen-weight products:
                     WMxWNxTMxTNxBK with an optional suffix d (double-buffered), each with
                     the weight stored as bf16, as f16, and as the padded f16 copy that
                     matmulF32 makes
  --tc-tiling NAME   one tensor-core tiling for every product of the matmul table and the training
                     steps (default: 4x4x2x4x32, and 8x1x1x4x32 for products at most 128 wide)
  --dawn LIST        Dawn check settings of the training steps, each measured: default (the trainer's:
                     no robustness clamps), fast (nor workgroup zero-init, nor validation), safe (all
                     checks), or some of disable_robustness, disable_workgroup_init, skip_validation
                     joined by + (default: default; the kernel timings use the first)
  --head-chunk N     rows per head chunk of the training steps (default: the model's)
  --train-profile    per-kernel GPU times of the training steps (slower steps; breakdown only)
  --out FILE         JSON path (default bench/results/bench-<time>.json)`;

const { values: opt } = parseArgs({
  options: {
    parts: { type: 'string', default: 'matmul,wkv,train,torch' },
    layouts: { type: 'string', default: '0.1B,0.4B,1.5B,2.9B' },
    tokens: { type: 'string', default: '1024,8192' },
    bsz: { type: 'string', default: '1,8' },
    ctx: { type: 'string', default: '1024' },
    'wkv-bsz': { type: 'string', default: '8' },
    'wkv-plans': { type: 'string', default: 'auto' },
    cp: { type: 'string', default: 'off,on' },
    steps: { type: 'string', default: '5' },
    r: { type: 'string', default: '64' },
    paths: { type: 'string', default: 'f32,tc' },
    matmul: { type: 'string', default: 'auto' },
    tilings: { type: 'string' },
    'tc-tiling': { type: 'string' },
    dawn: { type: 'string', default: 'default' },
    'train-profile': { type: 'boolean', default: false },
    'head-chunk': { type: 'string' },
    out: { type: 'string' },
    help: { type: 'boolean', default: false },
  },
});
if (opt.help) {
  console.log(USAGE);
  process.exit(0);
}
const list = (s: string): string[] => s.split(',').map((x) => x.trim()).filter(Boolean);
function parseDawn(name: string): DawnSaving[] {
  if (name === 'default') return [...DEFAULT_SAVINGS];
  if (name === 'fast') return [...DAWN_SAVINGS];
  if (name === 'safe') return [];
  const parts = name.split('+');
  for (const p of parts) {
    if (!(DAWN_SAVINGS as readonly string[]).includes(p)) throw new Error(`--dawn ${name}: ${p} is not default, fast, safe or one of ${DAWN_SAVINGS.join(', ')}\n${USAGE}`);
  }
  return parts as DawnSaving[];
}
const ints = (s: string, what: string): number[] =>
  list(s).map((x) => {
    const v = Number(x);
    if (!Number.isInteger(v) || v < 1) throw new Error(`--${what}: ${x} is not a positive integer\n${USAGE}`);
    return v;
  });
const parts = new Set(list(opt.parts));
const layouts = list(opt.layouts);
layouts.forEach(layoutDims);
const tokens = ints(opt.tokens, 'tokens');
const bszs = ints(opt.bsz, 'bsz');
const [ctx] = ints(opt.ctx, 'ctx');
const wkvBszs = ints(opt['wkv-bsz'], 'wkv-bsz');
const wkvPlans = list(opt['wkv-plans']).map((s) => [s, parseWkvPlan(s)] as const);
const cps = list(opt.cp).map((c) => c === 'on');
const [steps] = ints(opt.steps, 'steps');
const [r] = ints(opt.r, 'r');
const paths = list(opt.paths) as MatmulMode[];
if (!['auto', 'f32', 'tc'].includes(opt.matmul)) throw new Error(`--matmul ${opt.matmul}: expected auto, f32 or tc`);
const dawnSettings = list(opt.dawn).map((name) => ({ name, savings: parseDawn(name) }));
const dawn = dawnSettings[0];
const tcTilingOpt = opt['tc-tiling'] ? parseTcTiling(opt['tc-tiling']) : undefined;
const headChunkOpt = opt['head-chunk'] === undefined ? undefined : ints(opt['head-chunk'], 'head-chunk')[0];

const log = (s: string): void => console.log(s);
const git = (args: string[]): string => spawnSync('git', args, { encoding: 'utf8' }).stdout?.trim() ?? '';
const meta = {
  date: new Date().toISOString(),
  // The GPU machine's copy of the tree has no history: pass RWKV_BENCH_COMMIT from here.
  commit: process.env.RWKV_BENCH_COMMIT ?? (/^[0-9a-f]{40}$/.test(git(['rev-parse', 'HEAD'])) ? git(['rev-parse', 'HEAD']) : 'unknown'),
  uncommitted: git(['status', '--porcelain']).split('\n').filter(Boolean).length,
  card: gpuCard(),
  command: `npm run bench -- ${process.argv.slice(2).join(' ')}`.trim(),
  dawn: dawnSettings.map((d) => d.name),
  adapter: '',
  tensorCores: '',
  tcTiling: '',
};

// ---- PyTorch: build its WKV7 kernel now (CPU), time once the WGSL side is done ----
const trainCases = layouts.flatMap((layout) => bszs.flatMap((B) => cps.map((gradCp) => ({ layout, B, gradCp }))));
const stepShapes = new Map<string, MatmulShape[]>();
for (const layout of layouts) {
  for (const M of new Set([...tokens, ...bszs.map((b) => b * ctx)])) stepShapes.set(`${layout} ${M}`, stepMatmuls(layoutDims(layout), M, r));
}
const work = join(tmpdir(), `rwkv-bench-${process.pid}`);
mkdirSync(work, { recursive: true });
const waitFile = join(work, 'go');
let torchDone: Promise<TorchResults | undefined> = Promise.resolve(undefined);
if (parts.has('torch')) {
  const matmuls = new Map<string, object>();
  for (const shapes of stepShapes.values()) for (const s of shapes) matmuls.set(shapeKey(s), { key: shapeKey(s), m: s.m, n: s.n, k: s.k, transA: s.transA, transB: s.transB });
  const job = {
    matmuls: [...matmuls.values()],
    wkv: parts.has('wkv') ? layouts.map((layout) => ({ layout, B: 8, T: 1024, H: layoutDims(layout).nHead })) : [],
    train: parts.has('train')
      ? trainCases.map((c) => {
          const d = layoutDims(c.layout);
          return { layout: c.layout, nLayer: d.nLayer, nEmbd: d.nEmbd, vocab: d.vocab, ffnHidden: d.ffnHidden, dW: d.dW, dA: d.dA, dV: d.dV, dG: d.dG, B: c.B, T: ctx, r, gradCp: c.gradCp };
        })
      : [],
    steps,
    waitFile,
  };
  writeFileSync(join(work, 'job.json'), JSON.stringify(job));
  const py = spawn('python3', ['bench/reference/torch_bench.py', join(work, 'job.json'), join(work, 'torch.json')], { stdio: ['ignore', 'inherit', 'inherit'] });
  torchDone = new Promise((resolve) => {
    py.on('error', (e) => {
      log(`[torch] not run: ${e.message}`);
      resolve(undefined);
    });
    py.on('exit', (code) => {
      if (code !== 0 || !existsSync(join(work, 'torch.json'))) {
        log(`[torch] exited with ${code}; no PyTorch comparison`);
        resolve(undefined);
      } else resolve(JSON.parse(readFileSync(join(work, 'torch.json'), 'utf8')) as TorchResults);
    });
  });
}

// ---- WGSL kernels (a profiling runtime: timestamps per dispatch) ----
const matmulResults: MatmulResult[] = [];
const tilingResults: TilingResult[] = [];
const wkvResults: WkvResult[] = [];
{
  const gpu = await acquireGpu({ savings: dawn.savings, profile: true });
  const tc = tcSupport(gpu);
  if (tcTilingOpt) setTcTiling(gpu, tcTilingOpt);
  meta.tcTiling = tcTilingOpt ? tcTilingName(tcTilingOpt) : `${tcTilingName(TC_TILING)}, ${tcTilingName(NARROW_TC_TILING)} up to N ${NARROW_N}`;
  meta.adapter = gpu.report().description;
  meta.tensorCores = tc ? `f16 ${tc.shape.M}x${tc.shape.N}x${tc.shape.K} -> f32, subgroup ${tc.subgroupSize}` : 'none';
  log(`# ${meta.card ?? 'no nvidia-smi'} | adapter ${meta.adapter} | tensor cores: ${meta.tensorCores} (tiling ${meta.tcTiling}) | Dawn ${dawn.name}`);
  log(`# ${meta.date} commit ${meta.commit} (${meta.uncommitted} uncommitted paths) | ${meta.command}`);
  if (parts.has('matmul')) {
    for (const layout of layouts) {
      for (const M of tokens) matmulResults.push(...(await benchMatmuls(gpu, layout, M, stepShapes.get(`${layout} ${M}`)!, paths, tc !== undefined, log)));
    }
  }
  if (opt.tilings && tc) {
    const big = stepMatmuls(layoutDims('1.5B'), 8192, r).filter((s) => s.dtype === 'bf16' && !s.what.includes('head') && s.m * s.n * s.k >= 2 ** 34);
    tilingResults.push(...(await benchTilings(gpu, big, list(opt.tilings), log)));
  }
  if (parts.has('wkv')) {
    for (const layout of layouts) {
      for (const B of wkvBszs) {
        for (const [name, plan] of wkvPlans) {
          const w = await benchWkv(gpu, layout, B, 1024, layoutDims(layout).nHead, plan);
          const kernels = Object.entries(w.byKernel).map(([k, ms]) => `${k} ${ms.toFixed(3)}`).join(', ');
          log(`  WKV7 ${layout} B=${B} T=1024 H=${w.H} plan ${name} (${w.plan}): forward ${w.forwardMs.toFixed(3)} ms, backward ${w.backwardMs.toFixed(3)} ms, total ${(w.forwardMs + w.backwardMs).toFixed(3)} ms [${kernels}], SM clock ${w.smClockMHz ?? '-'} MHz`);
          wkvResults.push(w);
        }
      }
    }
  }
  gpu.destroy();
}

// ---- end to end ----
const trainResults: TrainResult[] = [];
if (parts.has('train')) {
  for (const layout of layouts) {
    const dims = layoutDims(layout);
    const t0 = performance.now();
    const weights = tiledRandomWeights(dims, 1);
    log(`  ${layout}: random weights in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    for (const c of trainCases.filter((x) => x.layout === layout)) {
      for (const d of dawnSettings) {
        const res = await benchTrain(
          { layout, B: c.B, T: ctx, r, gradCp: c.gradCp, steps, dawn: d.name, savings: d.savings, matmul: opt.matmul as MatmulMode, tcTiling: tcTilingOpt, profile: opt['train-profile'], headChunk: headChunkOpt },
          weights,
          dims.vocab,
        );
        log(
          `  train ${layout} B=${c.B} T=${ctx} grad_cp=${c.gradCp ? 'on' : 'off'} Dawn ${d.name}: ` +
            (res.error ?? `${res.tokensPerSec!.toFixed(0)} tokens/s, ${res.msPerStep!.toFixed(1)} ms/step (host ${res.hostMsPerStep!.toFixed(1)}), loss ${res.loss?.toFixed(3)}, pool peak ${(res.poolPeakBytes! / 2 ** 30).toFixed(2)} GiB, nvidia-smi peak ${res.smiPeakMiB ?? '-'} MiB (idle ${res.smiBaselineMiB ?? '-'}), setup ${res.setupSeconds!.toFixed(1)} s`),
        );
        trainResults.push(res);
      }
    }
  }
}

writeFileSync(waitFile, '');
const torch = await torchDone;
rmSync(work, { recursive: true, force: true });

// ---- report ----
const floors = new Map<string, ReturnType<typeof floorOf>>();
for (const res of trainResults) {
  const M = res.B * res.T;
  floors.set(`${res.layout} ${M} ${res.gradCp}`, floorOf(stepShapes.get(`${res.layout} ${M}`)!, res.gradCp, M, torch));
}
const sections: string[] = [
  `Card: ${meta.card ?? 'unknown (no nvidia-smi)'}; adapter: ${meta.adapter}; tensor cores: ${meta.tensorCores}, tiling ${meta.tcTiling}; Dawn ${dawnSettings.map((d) => d.name).join(', ')} (default: no robustness clamps; fast: nor workgroup zero-init, nor validation).`,
  `Date: ${meta.date}. Commit: ${meta.commit} (${meta.uncommitted} paths uncommitted). Command: \`${meta.command}\`.`,
];
if (torch) sections.push(`PyTorch ${torch.torch} (CUDA ${torch.cuda}) on ${torch.device}; its WKV7 kernel against float64: ${JSON.stringify(torch.wkvCheck)}.`);
if (matmulResults.length) sections.push('### Matrix products of one training step\n\n' + matmulTable(matmulResults, torch));
if (tilingResults.length) sections.push('### Tensor-core tilings\n\n' + tilingTable(tilingResults));
if (wkvResults.length) sections.push('### WKV7 per layer\n\n' + wkvTable(wkvResults, torch));
if (trainResults.length) sections.push(`### LoRA r=${r} training steps (forward, backward, AdamW), matmul mode ${opt.matmul}\n\n` + trainTable(trainResults, torch, floors));
if (trainResults.some((x) => x.modelMemory)) sections.push('### What the model and optimizer hold (GiB)\n\n' + memoryTable(trainResults));
if (trainResults.some((x) => x.topKernels)) sections.push('### Where a step spends its GPU time\n\n' + kernelTable(trainResults));
const report = sections.join('\n\n');
log('\n' + report);
const out = opt.out ?? join('bench', 'results', `bench-${meta.date.replace(/[:.]/g, '-')}.json`);
mkdirSync(join(out, '..'), { recursive: true });
writeFileSync(out, JSON.stringify({ meta, matmul: matmulResults, tilings: tilingResults, wkv: wkvResults, train: trainResults, torch, floors: Object.fromEntries(floors), report }, null, 1));
log(`\nwrote ${out}`);
