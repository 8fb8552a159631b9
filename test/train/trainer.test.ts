/**
 * trainLora() on a tiny model and the shipped demo corpus: an interrupted and
 * resumed run reproduces the uninterrupted run's losses and adapter exactly
 * (gradient accumulation and LoRA dropout on), the merged model's logits equal
 * the base model's with the adapter applied, lora_load starts from an adapter,
 * and proj_dir is never taken over silently.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadCheckpoint } from '../../src/io/model_file.js';
import { hostToF32 } from '../../src/model/weights.js';
import { mergeLora } from '../../src/train/merge.js';
import { claimRunDir } from '../../src/train/run_dir.js';
import { trainLora, type TrainSummary } from '../../src/train/trainer.js';
import { freshRng, getGpu, relErr } from '../helpers.js';
import { modelLogits } from './model_logits.js';

const root = mkdtempSync(join(tmpdir(), 'rwkv-trainer-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const tiny = (dir: string) => ({
  load_model: '', n_layer: 1, n_embd: 64, vocab_size: 128,
  proj_dir: join(root, dir), data_file: 'examples/demo_corpus.jsonl', data_type: 'jsonl' as const, tokenizer: 'examples/demo_vocab.txt',
  ctx_len: 32, micro_bsz: 2, accumulate_grad_batches: 2, epoch_steps: 3, epoch_count: 2, epoch_save: 1,
  lr_init: 1e-2, lr_final: 1e-3, peft_config: { r: 4, lora_alpha: 8, lora_dropout: 0.1 }, train_parts: ['ln'],
  random_seed: 5, precision: 'fp32' as const,
});

function tensorsOf(path: string): Map<string, Float32Array> {
  return new Map([...loadCheckpoint(path)].map(([k, t]) => [k, hostToF32(t)]));
}

describe('trainLora', () => {
  let full: TrainSummary;
  const fullLosses: number[] = [];

  it('an interrupted run, resumed, reproduces the uninterrupted run exactly', async () => {
    const gpu = await getGpu();
    full = await trainLora(tiny('full'), { gpu, onStep: (s) => fullLosses.push(s.loss) });
    expect(full.steps).toBe(6);
    expect(fullLosses).toHaveLength(6);
    expect(fullLosses.every(Number.isFinite)).toBe(true);

    const ac = new AbortController();
    const firstLosses: number[] = [];
    // Losses are read back after step 1, then every few steps, each window reported once the
    // next is recorded: step 1's loss comes after step 2, so the abort lands there, mid-epoch.
    const part = await trainLora(tiny('part'), { gpu, signal: ac.signal, onStep: (s) => { firstLosses.push(s.loss); if (s.step === 1) ac.abort(); } });
    expect(part.aborted).toBe(true);
    expect(part.steps).toBe(2);
    expect(firstLosses).toEqual(fullLosses.slice(0, 2)); // same seed, same data: same losses

    const resumedLosses: number[] = [];
    // random_seed -1 ("pick one") on resume takes the checkpoint's seed.
    const resumed = await trainLora({ ...tiny('part'), random_seed: -1, resume: true }, { gpu, onStep: (s) => resumedLosses.push(s.loss) });
    expect(resumed.config.random_seed).toBe(5);
    expect(resumed.steps).toBe(6);
    expect(resumedLosses).toEqual(fullLosses.slice(part.steps));
    const a = tensorsOf(join(full.outputs.dir, 'rwkv-1.pth'));
    const b = tensorsOf(join(resumed.outputs.dir, 'rwkv-1.pth'));
    expect([...b.keys()]).toEqual([...a.keys()]);
    for (const [k, v] of a) expect(b.get(k), k).toEqual(v);

    const lossLines = (dir: string) => readFileSync(join(dir, 'loss_data.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { loss: number; t_cost: number; kt_s: number });
    expect(lossLines(resumed.outputs.dir).map((r) => r.loss)).toEqual(lossLines(full.outputs.dir).map((r) => r.loss));
    const log = readFileSync(join(resumed.outputs.dir, 'train_log.txt'), 'utf8');
    expect(log.match(/^NEW RUN \d{4}-\d\d-\d\d-\d\d-\d\d-\d\d/gm)).toHaveLength(2);
    expect(log).toMatch(/^NEW RUN .* \(resumed at step 2\)$/m);
    expect(log).toMatch(/^1 \d+\.\d{6} \d+\.\d{4} 0\.\d{8} \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6} 1$/m);
    // The epoch means (epoch 0 straddles the interruption) match the uninterrupted run's.
    const epochLosses = (text: string) => text.split('\n').filter((l) => /^\d+ \d/.test(l)).map((l) => l.split(' ').slice(0, 4).join(' '));
    expect(epochLosses(log)).toEqual(epochLosses(readFileSync(join(full.outputs.dir, 'train_log.txt'), 'utf8')));
  });

  it('writes every output: adapters per epoch, merged model, logs, resolved config, loss curve', () => {
    const o = full.outputs;
    expect(o.adapters.map((p) => p.slice(o.dir.length + 1))).toEqual(['rwkv-0.pth', 'rwkv-1.pth']);
    const adapter = tensorsOf(o.adapters[1]);
    expect(adapter.get('lora_alpha')).toEqual(Float32Array.of(8));
    expect(adapter.get('lora_r')).toEqual(Float32Array.of(4));
    expect(adapter.get('blocks.0.att.key.lora_A')).toHaveLength(4 * 64);
    expect(adapter.has('blocks.0.ln1.weight')).toBe(true);
    expect(Object.keys(JSON.parse(readFileSync(o.config, 'utf8')) as object)).toContain('peft_config');
    const svg = readFileSync(o.lossCurve, 'utf8');
    expect(svg).toMatch(/^<svg [^>]*xmlns="http:\/\/www\.w3\.org\/2000\/svg"/);
    expect(svg.match(/<path d="M[\d.,L]+"/g)).toHaveLength(2);
    expect(full.tokensPerSecond).toBeGreaterThan(0);
    expect(full.finalLoss).toBe(fullLosses[5]);
  });

  it("the merged model's logits equal the base model's with the adapter applied", async () => {
    const gpu = await getGpu();
    const rng = freshRng();
    const ids = Array.from({ length: 20 }, () => 1 + rng.int(96));
    const logitsOf = (path: string, lora?: string): Promise<Float32Array> => modelLogits(gpu, ids, path, lora);
    const o = full.outputs;
    const withLora = await logitsOf(o.baseModel, o.adapters[1]);
    const merged = await logitsOf(o.merged!);
    const base = await logitsOf(o.baseModel);
    // The merged weights are rounded to bf16 (relative error <= 2^-9 each; measured logit errors ~4e-3);
    // the unmerged path keeps W and the LoRA product apart.
    const e = relErr(merged, withLora);
    const effect = relErr(base, withLora);
    console.log(`merged vs base+LoRA logits: rel. error ${e.toExponential(2)}; the adapter moves them by ${effect.toExponential(2)} [seed ${rng.seed}]`);
    expect(e).toBeLessThan(1e-2);
    expect(effect).toBeGreaterThan(20 * e);

    // mergeLora() from the adapter file gives the trainer's merged model.
    const out = join(root, 'merged-again.pth');
    const r = mergeLora({ base: o.baseModel, lora: o.adapters[1], out });
    expect([r.alpha, r.r, r.warnings]).toEqual([8, 4, []]);
    const again = tensorsOf(out);
    for (const [k, v] of tensorsOf(o.merged!)) expect(again.get(k), k).toEqual(v);
  });

  it('lora_load starts from an adapter (a step at a negligible LR keeps it)', async () => {
    const gpu = await getGpu();
    const start = full.outputs.adapters[1];
    const s = await trainLora({ ...tiny('load'), load_model: full.outputs.baseModel, epoch_steps: 1, epoch_count: 1, lr_init: 1e-12, lr_final: 1e-12, peft_config: { ...tiny('').peft_config, lora_load: start } }, { gpu });
    const want = tensorsOf(start);
    for (const [k, v] of tensorsOf(s.outputs.adapters[0])) expect(relErr(v, want.get(k)!), k).toBeLessThan(1e-6);
  });

  it("refuses another run's proj_dir unless resuming or overwriting", async () => {
    await expect(trainLora(tiny('full'), { gpu: await getGpu() })).rejects.toThrow(/holds another run's outputs \(checkpoint\.st, config\.json, .*\); resume it with resume: true \(--resume\), replace it with --overwrite/);
    await expect(trainLora({ ...tiny('empty'), resume: true }, { gpu: await getGpu() })).rejects.toThrow(/nothing to resume: there is no checkpoint\.st/);
  });
});

describe('claimRunDir', () => {
  it('refuses a folder another live process holds', () => {
    const dir = join(root, 'locked');
    const release = claimRunDir(dir, { resume: false, overwrite: false });
    writeFileSync(join(dir, '.rwkv-lora-gpu.lock'), String(process.ppid));
    expect(() => claimRunDir(dir, { resume: false, overwrite: false })).toThrow(new RegExp(`another training run \\(process ${process.ppid}\\) is writing this folder`));
    release();
    expect(claimRunDir(dir, { resume: false, overwrite: false })).toBeTypeOf('function');
  });
});
