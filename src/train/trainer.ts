/**
 * trainLora(): the whole RWKV-PEFT LoRA run. Per optimizer step,
 * accumulate_grad_batches micro-batches are recorded (each adds its gradient
 * scaled by 1/accumulate_grad_batches), then one AdamW step with global-norm
 * clipping at the step's LR. Losses are copied on the GPU into a ring and read
 * back only every few steps, and a window's read is awaited only after the next window is
 * recorded, so the GPU is never left idle while the CPU records (see flush).
 * Epoch ends write train_log.txt, the adapter every epoch_save epochs (and its
 * Ai00 .st with lora_st) and the resume checkpoint; the end writes the merged
 * model (.pth, and the Ai00 .st with merge_st).
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { acquireGpu, type GpuRuntime } from '../gpu/device.js';
import { writeAtomic } from '../io/atomic_write.js';
import { writeAi00Lora, writeAi00Model } from '../io/ai00.js';
import { writeCheckpoint } from '../io/model_file.js';
import { RWKV7_LORA_TARGETS } from '../lora/lora.js';
import { Rwkv7Model } from '../model/rwkv7.js';
import { adapterTensors, applyAdapter, layoutTensors, readAdapter, writeAdapter } from './adapter.js';
import { mergeWeights, readBaseModel, writeRandomModel } from './base_model.js';
import { checkpointSeed, loadCheckpoint, saveCheckpoint, type TrainState } from './checkpoint.js';
import { CONFIG_FIELDS, resolveConfig, type TrainConfig, type TrainConfigInput } from './config.js';
import { lossCurveSvg } from './loss_curve.js';
import { learningRate } from './lr_schedule.js';
import { AdamW } from './optimizer.js';
import { Progress, type ProgressSink } from './progress.js';
import { adapterPath, claimRunDir, RUN_FILES } from './run_dir.js';
import { LossData, TrainLog, type LossRecord } from './run_logs.js';
import { openTrainingData } from './training_data.js';

export interface StepInfo {
  /** Optimizer steps done, counting from the start of the run (resumed runs continue the count). */
  step: number;
  totalSteps: number;
  /** epoch_begin + the epoch this step belongs to. */
  epoch: number;
  /** Mean loss of the step's micro-batches. */
  loss: number;
  lr: number;
  tokensPerSecond: number;
}

export interface TrainOptions {
  /** Called for every optimizer step, in order, a few steps at a time (when their losses are read back). */
  onStep?: (s: StepInfo) => void;
  /** Aborting stops after the current step, saves the resume checkpoint and resolves with aborted: true. */
  signal?: AbortSignal;
  /** Where progress and messages go (the CLI passes stdout); silent when absent. */
  progress?: ProgressSink;
  /** A GPU to use (and not destroy); by default one is acquired and released. */
  gpu?: GpuRuntime;
}

export interface TrainOutputs {
  dir: string;
  config: string;
  log: string;
  lossData: string;
  lossCurve: string;
  checkpoint: string;
  /** rwkv-{epoch}.pth files written by this run, in order. */
  adapters: string[];
  /** Their Ai00 forms rwkv-{epoch}.st (lora_st), in order. */
  adaptersSt: string[];
  baseModel: string;
  merged?: string;
  mergedSt?: string;
}

export interface TrainSummary {
  /** Mean loss of the last optimizer step. */
  finalLoss: number;
  /** Optimizer steps done (in total, for a resumed run). */
  steps: number;
  /** Over this session's steps. */
  tokensPerSecond: number;
  seconds: number;
  aborted: boolean;
  config: TrainConfig;
  outputs: TrainOutputs;
}

/** Steps between loss read-backs adapt to about this many seconds. */
const READ_EVERY_SECONDS = 1;
const MAX_READ_EVERY = 64;

/** Dropout seed of a micro-batch: a hash of the run seed and the micro-batch index. */
function dropoutSeed(seed: number, micro: number): number {
  let h = Math.imul(micro + 1, 0x9e3779b1) ^ seed;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  return (h ^ (h >>> 13)) >>> 0;
}

function writeText(path: string, text: string): void {
  writeAtomic(path, { overwrite: true }, (sink) => sink.write(new TextEncoder().encode(text)));
}

const FLOAT_KEYS = new Set(Object.entries(CONFIG_FIELDS).filter(([, f]) => f.kind === 'number').map(([k]) => k).concat(['lora_alpha', 'lora_dropout']));

export async function trainLora(input: TrainConfigInput | TrainConfig, opts: TrainOptions = {}): Promise<TrainSummary> {
  const { config: c, warnings } = resolveConfig(input, {
    pickSeed: (cfg) => {
      const ckpt = join(cfg.proj_dir, RUN_FILES.checkpoint);
      return (cfg.resume && existsSync(ckpt) ? checkpointSeed(ckpt) : undefined) ?? Math.floor(Math.random() * 2 ** 31);
    },
  });
  const progress = opts.progress ? new Progress(opts.progress) : undefined;
  const say = (m: string): void => progress?.log(m);
  for (const w of warnings) say(`warning: ${w}`);

  const dir = c.proj_dir;
  const files = {
    config: join(dir, RUN_FILES.config),
    log: join(dir, RUN_FILES.log),
    lossData: join(dir, RUN_FILES.lossData),
    lossCurve: join(dir, RUN_FILES.lossCurve),
    checkpoint: join(dir, RUN_FILES.checkpoint),
  };
  const baseModel = c.load_model || join(dir, RUN_FILES.init);
  const release = claimRunDir(dir, { resume: c.resume, overwrite: c.overwrite, keep: [c.load_model, c.peft_config.lora_load, c.data_file, c.tokenizer] });
  const ownGpu = !opts.gpu;
  let gpu: GpuRuntime | undefined;
  try {
    // ---- base model, GPU model, optimizer ----
    if (c.load_model === '' && !c.resume) {
      say(`creating a random RWKV-7 model (${c.n_layer} layers, n_embd ${c.n_embd}, vocab ${c.vocab_size}) at ${baseModel}`);
      writeRandomModel(baseModel, { nLayer: c.n_layer, nEmbd: c.n_embd, vocab: c.vocab_size, seed: c.random_seed }, true);
    }
    const weights = readBaseModel(baseModel, c.my_testing);
    gpu = opts.gpu ?? (await acquireGpu());
    const model = await Rwkv7Model.create(gpu, weights, {
      B: c.micro_bsz,
      T: c.ctx_len,
      lora: { r: c.peft_config.r, alpha: c.peft_config.lora_alpha, dropout: c.peft_config.lora_dropout, targets: RWKV7_LORA_TARGETS },
      trainLn: c.train_parts.includes('ln'),
      gradCp: c.grad_cp,
      seed: c.random_seed,
      source: baseModel,
      expect: { nLayer: c.n_layer || undefined, nEmbd: c.n_embd || undefined },
    });
    const d = model.dims;
    if (c.vocab_size && c.vocab_size !== d.vocab) throw new Error(`vocab_size is ${c.vocab_size} in the config but ${baseModel} has a vocabulary of ${d.vocab}`);
    const resolved: TrainConfig = { ...c, n_layer: d.nLayer, n_embd: d.nEmbd, vocab_size: d.vocab, my_testing: 'x070', resume: false, overwrite: false };
    const opt = new AdamW(gpu, model.params, model.grads, model.layout, { beta1: c.beta1, beta2: c.beta2, eps: c.adam_eps, weightDecay: c.weight_decay, gradClip: c.grad_clip });

    let state: Pick<TrainState, 'step' | 'epochLossSum' | 'epochLossCount'> = { step: 0, epochLossSum: 0, epochLossCount: 0 };
    if (c.resume) {
      const s = loadCheckpoint(files.checkpoint, c, model.layout);
      gpu.write(model.params, s.params);
      gpu.write(opt.m, s.m);
      gpu.write(opt.v, s.v);
      state = s;
      say(`resuming ${dir} at step ${s.step}`);
    } else if (c.peft_config.lora_load) {
      const params = await gpu.readF32(model.params);
      applyAdapter(readAdapter(c.peft_config.lora_load), model.layout, params, c.peft_config.lora_load);
      gpu.write(model.params, params);
    }
    const data = openTrainingData(c, d.vocab);

    // ---- logs ----
    writeText(files.config, JSON.stringify(resolved, null, 2) + '\n');
    const log = new TrainLog(files.log);
    log.newRun(resolved, FLOAT_KEYS, c.resume ? `(resumed at step ${state.step})` : '');
    const lossData = new LossData(files.lossData);
    const losses = lossData.begin(state.step);
    const totalSteps = c.epoch_steps * c.epoch_count;
    const title = (): string => `${dir}: loss, ${losses.length}/${totalSteps} steps`;
    writeText(files.lossCurve, lossCurveSvg(losses, title()));
    say(`model: ${d.nLayer} layers, n_embd ${d.nEmbd}, vocab ${d.vocab}; LoRA r ${c.peft_config.r}, alpha ${c.peft_config.lora_alpha}; ${model.layout.size} trainable values`);
    say(`data: ${data.summary}`);
    say(`${totalSteps} steps of ${c.accumulate_grad_batches}×${c.micro_bsz}×${c.ctx_len} tokens; outputs in ${dir}`);

    // ---- the loop ----
    const acc = c.accumulate_grad_batches;
    const rings = [0, 1].map((i) => gpu!.tensor([MAX_READ_EVERY * acc], 'f32', `loss ring ${i}`));
    const tokensPerStep = acc * c.micro_bsz * c.ctx_len;
    const adapters: string[] = [];
    const adaptersSt: string[] = [];
    const dtype = c.precision === 'bf16' ? 'bf16' : 'f32';
    const saveAdapter = async (epoch: number): Promise<void> => {
      const params = await gpu!.readF32(model.params);
      const meta = { alpha: c.peft_config.lora_alpha, r: c.peft_config.r };
      const p = adapterPath(dir, epoch);
      writeAdapter(p, model.layout, params, { ...meta, dtype });
      adapters.push(p);
      if (c.lora_st) {
        // From the f32 values, so the f16 file is rounded once.
        const st = adapterPath(dir, epoch, '.st');
        writeAi00Lora(st, adapterTensors(model.layout, params, { ...meta, dtype: 'f32' }), { overwrite: true });
        adaptersSt.push(st);
      }
    };
    const saveResume = async (): Promise<void> => {
      const [params, m, v] = [await gpu!.readF32(model.params), await gpu!.readF32(opt.m), await gpu!.readF32(opt.v)];
      saveCheckpoint(files.checkpoint, c, model.layout, { ...state, params, m, v });
    };

    let aborted = false;
    const onAbort = (): void => {
      aborted = true;
    };
    if (opts.signal?.aborted) aborted = true;
    opts.signal?.addEventListener('abort', onAbort);
    const t0 = performance.now();
    let tFlush = t0;
    let readEvery = 1;
    // Steps recorded since the last flush, their losses going to `ring`; and the window
    // before, whose read was started at that flush.
    let pending: { step: number; lr: number }[] = [];
    let ring = rings[0];
    let inflight: { steps: typeof pending; read: Promise<Float32Array> } | undefined;
    let smooth = NaN;
    let stepsThisSession = 0;
    let lr = learningRate(c, state.step);

    const report = (window: typeof pending, all: Float32Array): void => {
      const now = performance.now();
      const dt = (now - tFlush) / 1000;
      tFlush = now;
      const itPerSec = window.length / dt;
      const records: LossRecord[] = [];
      window.forEach(({ step, lr }, i) => {
        let sum = 0;
        for (let j = 0; j < acc; j++) sum += all[i * acc + j];
        const loss = sum / acc;
        state.epochLossSum += sum;
        state.epochLossCount += acc;
        losses.push(loss);
        records.push({ loss, t_cost: itPerSec, kt_s: (itPerSec * tokensPerStep) / 1000 });
        smooth = Number.isNaN(smooth) ? loss : 0.9 * smooth + 0.1 * loss;
        opts.onStep?.({ step: step + 1, totalSteps, epoch: c.epoch_begin + Math.floor(step / c.epoch_steps), loss, lr, tokensPerSecond: (itPerSec * tokensPerStep) });
      });
      lossData.append(records);
      writeText(files.lossCurve, lossCurveSvg(losses, title()));
      const last = window[window.length - 1];
      const stepsLeft = totalSteps - last.step - 1;
      progress?.update({
        step: last.step + 1, totalSteps, epoch: c.epoch_begin + Math.floor(last.step / c.epoch_steps), loss: losses[losses.length - 1],
        smoothLoss: smooth, lr: last.lr, tokensPerSecond: itPerSec * tokensPerStep, etaSeconds: stepsLeft / itPerSec, gpuBytes: gpu!.memory().currentBytes,
      });
      readEvery = Math.max(1, Math.min(MAX_READ_EVERY, Math.floor(READ_EVERY_SECONDS * itPerSec)));
    };

    // Starts reading the pending window's losses and reports the window before, whose read
    // has had a window's time to finish. Awaiting this window's read at once would wait for
    // the GPU to run dry, and it would then sit idle while the next step is recorded (at
    // 1.5B, micro_bsz 8, every 2 steps). With `drain` (epoch ends, the end) it reports both.
    const flush = async (drain: boolean): Promise<void> => {
      if (pending.length) {
        const prev = inflight;
        const read = gpu!.readF32(ring);
        // Awaited later; a failure that ends the run before then must not surface as an unhandled rejection.
        read.catch(() => undefined);
        inflight = { steps: pending, read };
        pending = [];
        // The ring's copy to the read-back buffer is queued before any later step's writes.
        ring = ring === rings[0] ? rings[1] : rings[0];
        if (prev) report(prev.steps, await prev.read);
      }
      if (drain && inflight) {
        const last = inflight;
        inflight = undefined;
        report(last.steps, await last.read);
      }
    };

    for (let step = state.step; step < totalSteps && !aborted; step++) {
      lr = learningRate(c, step);
      for (let j = 0; j < acc; j++) {
        const micro = (c.epoch_begin * c.epoch_steps + step) * acc + j;
        const b = data.batch(micro);
        model.setBatch(b.inputs, b.labels, dropoutSeed(c.random_seed, micro));
        model.forwardBackward(1 / acc);
        gpu.copy(model.lossOut, ring, 4, 0, 4 * (pending.length * acc + j));
      }
      opt.step(step + 1, lr);
      pending.push({ step, lr });
      stepsThisSession++;
      const epochEnd = (step + 1) % c.epoch_steps === 0;
      const drain = epochEnd || step + 1 === totalSteps || aborted;
      if (pending.length >= readEvery || drain) await flush(drain);
      state.step = step + 1;
      if (epochEnd) {
        const epochIndex = Math.floor(step / c.epoch_steps);
        const epoch = c.epoch_begin + epochIndex;
        log.epoch(epoch, state.epochLossSum / Math.max(1, state.epochLossCount), lr, epochIndex);
        progress?.endLine();
        state.epochLossSum = 0;
        state.epochLossCount = 0;
        const lastEpoch = step + 1 === totalSteps;
        if ((c.epoch_save > 0 && epochIndex % c.epoch_save === 0) || lastEpoch) await saveAdapter(epoch);
        await saveResume();
      }
    }
    opts.signal?.removeEventListener('abort', onAbort);
    aborted &&= state.step < totalSteps;
    const seconds = (performance.now() - t0) / 1000;

    const outputs: TrainOutputs = { dir, ...files, adapters, adaptersSt, baseModel };
    if (aborted) {
      await flush(true);
      await saveResume();
      progress?.log(`interrupted at step ${state.step}/${totalSteps}; resume with --resume (resume: true)`);
    } else if (c.merge || c.merge_st) {
      const trained = layoutTensors(model.layout, await gpu.readF32(model.params));
      // Each file is rounded once from the f32 merge: bf16 for the .pth, f16 for the Ai00 .st.
      const merged = (to?: 'f16') => [...mergeWeights(weights, trained, c.peft_config.lora_alpha, to)].map(([name, t]) => ({ name, ...t }));
      if (c.merge) writeCheckpoint((outputs.merged = join(dir, RUN_FILES.merged)), merged(), { overwrite: true });
      if (c.merge_st) writeAi00Model((outputs.mergedSt = join(dir, RUN_FILES.mergedSt)), merged('f16'), { overwrite: true });
    }
    await gpu.sync();
    data.close();
    for (const r of rings) gpu.free(r);
    model.dispose();
    const tokensPerSecond = (stepsThisSession * tokensPerStep) / seconds;
    const lastSt = adaptersSt[adaptersSt.length - 1];
    if (lastSt) say(`Ai00 config.toml for the adapter: [[lora]] path = ${JSON.stringify(lastSt)}, alpha = ${c.peft_config.lora_alpha}`);
    progress?.log(`${aborted ? 'stopped' : 'done'}: ${state.step} steps, final loss ${losses[losses.length - 1]?.toFixed(4) ?? '?'}, ${(tokensPerSecond / 1000).toFixed(2)} kt/s`);
    return { finalLoss: losses[losses.length - 1] ?? NaN, steps: state.step, tokensPerSecond, seconds, aborted, config: resolved, outputs };
  } finally {
    if (ownGpu) gpu?.destroy();
    release();
  }
}
