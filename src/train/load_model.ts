/**
 * A model for inference: a base checkpoint, optionally with a LoRA adapter
 * applied unmerged, for logits and sampling. Sequences are run whole through
 * the training forward (B = 1, T = ctxLen, positions past the sequence padded:
 * RWKV is causal, so padding never changes earlier logits) and the next token
 * is drawn on the GPU by the top-p kernel; only its id is read back.
 */
import { acquireGpu, type GpuRuntime } from '../gpu/device.js';
import type { Tensor } from '../gpu/tensor.js';
import { RWKV7_LORA_TARGETS } from '../lora/lora.js';
import { lnNames, Rwkv7Model } from '../model/rwkv7.js';
import type { Rwkv7Dims } from '../model/rwkv7_config.js';
import { Rng } from '../util/rng.js';
import { applyAdapter, readAdapter } from './adapter.js';
import { readBaseModel } from './base_model.js';
import { sampleTopP } from '../kernels/sample_top_p.js';

export interface LoadModelOptions {
  /** A LoRA adapter (.pth/.st) applied on top of the base weights. */
  lora?: string;
  /** The adapter's lora_alpha when the file does not record it (files RWKV-PEFT wrote). */
  loraAlpha?: number;
  /** Longest sequence (prompt + generated tokens) the model will see; the forward always runs this many positions. */
  ctxLen?: number;
  /** A GPU to use (and not destroy); by default one is acquired and released by dispose(). */
  gpu?: GpuRuntime;
}

export interface GenerateOptions {
  maxTokens?: number;
  /** 0 = greedy. */
  temperature?: number;
  topP?: number;
  seed?: number;
  /** Stop at the end-of-text token 0 (default true). */
  stopAtEndOfText?: boolean;
  onToken?: (id: number) => void;
  /** Only ids below this are sampled (a tokenizer with fewer ids than the model's vocabulary). */
  vocabLimit?: number;
}

export class LoadedModel {
  readonly dims: Rwkv7Dims;
  private readonly token: Tensor;
  private probs: Tensor | undefined;

  private constructor(
    private readonly gpu: GpuRuntime,
    private readonly ownGpu: boolean,
    private readonly model: Rwkv7Model,
    readonly ctxLen: number,
  ) {
    this.dims = model.dims;
    this.token = gpu.tensor([1], 'u32', 'sampled token');
  }

  static async load(path: string, o: LoadModelOptions = {}): Promise<LoadedModel> {
    const ctxLen = o.ctxLen ?? 256;
    if (!(Number.isInteger(ctxLen) && ctxLen >= 1)) throw new Error(`ctxLen: expected a positive integer, found ${ctxLen}`);
    const weights = readBaseModel(path);
    const adapter = o.lora ? readAdapter(o.lora) : undefined;
    const alpha = adapter ? (adapter.alpha ?? o.loraAlpha) : 1;
    if (alpha === undefined) throw new Error(`${o.lora}: the adapter does not record its lora_alpha; pass it (--lora_alpha)`);
    const nLayer = [...weights.keys()].filter((k) => /^blocks\.\d+\.ln1\.weight$/.test(k)).length;
    const trainLn = !!adapter && lnNames(nLayer).some((n) => adapter.tensors.has(n));
    const gpu = o.gpu ?? (await acquireGpu());
    try {
      const model = await Rwkv7Model.create(gpu, weights, {
        B: 1,
        T: ctxLen,
        lora: { r: adapter?.r ?? 1, alpha, dropout: 0, targets: RWKV7_LORA_TARGETS },
        trainLn,
        gradCp: true,
        l2wrap: false,
        seed: 0,
        source: path,
      });
      const params = await gpu.readF32(model.params);
      // Without an adapter every LoRA B is zero: the base model exactly.
      if (adapter) applyAdapter(adapter, model.layout, params, o.lora!);
      else for (const e of model.layout.entries) if (e.name.endsWith('.lora_B')) params.fill(0, e.offset, e.offset + e.size);
      gpu.write(model.params, params);
      return new LoadedModel(gpu, !o.gpu, model, ctxLen);
    } catch (e) {
      if (!o.gpu) gpu.destroy();
      throw e;
    }
  }

  private run(ids: readonly number[]): void {
    if (ids.length < 1 || ids.length > this.ctxLen) throw new Error(`a sequence of ${ids.length} tokens does not fit: expected 1..${this.ctxLen} (ctxLen)`);
    const padded = new Array<number>(this.ctxLen).fill(0);
    ids.forEach((t, i) => (padded[i] = t));
    this.model.setBatch(padded, new Array<number>(this.ctxLen).fill(-100));
    this.model.forward();
  }

  /** Logits [ids.length, vocab], row t predicting token t + 1. */
  async logits(ids: readonly number[]): Promise<Float32Array> {
    this.run(ids);
    return this.model.readLogits(0, ids.length);
  }

  /** Samples up to maxTokens tokens after `prompt`; returns the new ones. */
  async generate(prompt: readonly number[], o: GenerateOptions = {}): Promise<number[]> {
    const maxTokens = o.maxTokens ?? 100;
    if (prompt.length + maxTokens > this.ctxLen) {
      throw new Error(`prompt (${prompt.length} tokens) + maxTokens (${maxTokens}) exceed ctxLen ${this.ctxLen}; load the model with a larger ctxLen`);
    }
    const limit = o.vocabLimit ?? this.dims.vocab;
    if (this.probs?.shape[0] !== limit) {
      if (this.probs) this.gpu.free(this.probs);
      this.probs = this.gpu.tensor([limit], 'f32', 'sampling probs');
    }
    const rng = new Rng(o.seed ?? 0);
    const ids = [...prompt];
    const out: number[] = [];
    for (let k = 0; k < maxTokens; k++) {
      this.run(ids);
      sampleTopP(this.gpu, this.model.headLogits(ids.length - 1, 1), this.probs, this.token, { row: 0, temperature: o.temperature ?? 1, topP: o.topP ?? 0.85, u: rng.next(), limit });
      const t = (await this.gpu.readU32(this.token))[0];
      if (t === 0 && (o.stopAtEndOfText ?? true)) break;
      ids.push(t);
      out.push(t);
      o.onToken?.(t);
    }
    return out;
  }

  dispose(): void {
    if (this.probs) this.gpu.free(this.probs);
    this.gpu.free(this.token);
    this.model.dispose();
    if (this.ownGpu) this.gpu.destroy();
  }
}

/** Loads a base model (and optionally an adapter) for logits and generation. */
export function loadModel(path: string, o: LoadModelOptions = {}): Promise<LoadedModel> {
  return LoadedModel.load(path, o);
}
