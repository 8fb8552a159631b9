/**
 * Micro-batches of training samples, as input ids and labels [B, T] (labels −100 where
 * no loss is taken). Two samplers, both deterministic functions of the step:
 * - DocumentSampler: RWKV-PEFT's per-document mode (`--dataload pad`): each sample is a
 *   document's first ctx_len+1 tokens; labels past the document's end are −100.
 * - MagicPrimeSampler: RWKV-LM's flat-stream mode: sample k is the ctx_len+1 tokens at
 *   the magic-prime offset of k, every label counts.
 */
import { Rng } from '../util/rng.js';
import { isPrime, magicPrime, magicPrimeOffset } from './magic_prime.js';

/** The label of a position that takes no loss (PyTorch's ignore_index). */
export const IGNORE_INDEX = -100;

export interface Batch {
  batch: number;
  ctxLen: number;
  /** [batch, ctxLen] token ids. */
  inputs: Int32Array;
  /** [batch, ctxLen] next-token targets, IGNORE_INDEX where masked. */
  labels: Int32Array;
  /** Per row: the document index (per-document) or token offset (magic prime) it came from. */
  origin: number[];
}

/** Documents a per-document sampler draws from (a binidx file, or tokenized jsonl). */
export interface DocumentSource {
  /** Names the data in errors. */
  readonly name: string;
  readonly documents: number;
  /** Tokens in the document, including its end-of-document token 0. */
  docSize(doc: number): number;
  /**
   * Fills `out` with the document's first out.length tokens and then whatever follows it
   * (inputs past the document take no loss, so any tokens do). Returns the document's
   * loss mask (1 = the token is a target), or null when every token is.
   */
  readWindow(doc: number, out: Int32Array): Uint8Array | null;
}

/** A flat stream of tokens (a binidx .bin). */
export interface TokenStream {
  readonly name: string;
  readonly tokenCount: number;
  readTokens(offset: number, out: Int32Array): void;
}

function checkPositiveInt(what: string, v: number): void {
  if (!Number.isInteger(v) || v < 1) throw new Error(`${what}: expected a positive integer, found ${v}`);
}

function emptyBatch(batch: number, ctxLen: number): Batch {
  return { batch, ctxLen, inputs: new Int32Array(batch * ctxLen), labels: new Int32Array(batch * ctxLen), origin: [] };
}

export interface DocumentSamplerOptions {
  ctxLen: number;
  microBsz: number;
  /** Seeds the per-epoch shuffle. */
  seed: number;
  /**
   * Documents used per epoch, the first ones of the source (RWKV-PEFT: epoch_steps·micro_bsz
   * in the old trainer, epoch_steps in the new one). Default: all of them.
   */
  samplesPerEpoch?: number;
  /** A fresh permutation of those documents every epoch (RWKV-PEFT --data_shuffle 1, the default). */
  shuffle?: boolean;
}

/**
 * One epoch is a permutation of the first samplesPerEpoch documents, taken microBsz at a
 * time (a last partial batch is dropped, as the old RWKV-PEFT does). Documents longer than
 * ctx_len+1 tokens are truncated, never split.
 */
export class DocumentSampler {
  readonly stepsPerEpoch: number;
  readonly samplesPerEpoch: number;
  private readonly ctxLen: number;
  private readonly microBsz: number;
  private readonly seed: number;
  private readonly shuffle: boolean;
  private permEpoch = -1;
  private perm: Int32Array = new Int32Array(0);

  constructor(private readonly source: DocumentSource, options: DocumentSamplerOptions) {
    const { ctxLen, microBsz } = options;
    checkPositiveInt('DocumentSampler ctx_len', ctxLen);
    checkPositiveInt('DocumentSampler micro_bsz', microBsz);
    this.samplesPerEpoch = options.samplesPerEpoch ?? source.documents;
    checkPositiveInt('DocumentSampler samples per epoch', this.samplesPerEpoch);
    if (this.samplesPerEpoch > source.documents) {
      throw new Error(
        `${source.name}: samples per epoch: expected at most the ${source.documents} documents the data has (each sample is one document), found ${this.samplesPerEpoch}`,
      );
    }
    if (this.samplesPerEpoch < microBsz) {
      throw new Error(`${source.name}: samples per epoch: expected at least micro_bsz = ${microBsz}, found ${this.samplesPerEpoch}`);
    }
    let longest = 0;
    for (let d = 0; d < source.documents; d++) longest = Math.max(longest, source.docSize(d));
    if (ctxLen > longest) {
      throw new Error(
        `${source.name}: ctx_len: expected at most ${longest}, the longest document's token count, found ${ctxLen}: every sample would end in padding`,
      );
    }
    this.ctxLen = ctxLen;
    this.microBsz = microBsz;
    this.seed = options.seed;
    this.shuffle = options.shuffle ?? true;
    this.stepsPerEpoch = Math.floor(this.samplesPerEpoch / microBsz);
  }

  /** Document indices of the rows of micro-batch `step` (counted from 0 over all epochs). */
  documentsForStep(step: number): number[] {
    if (!Number.isInteger(step) || step < 0) throw new Error(`${this.source.name}: step: expected an integer >= 0, found ${step}`);
    const epoch = Math.floor(step / this.stepsPerEpoch);
    const first = (step % this.stepsPerEpoch) * this.microBsz;
    const docs: number[] = [];
    for (let b = 0; b < this.microBsz; b++) docs.push(this.shuffle ? this.permutation(epoch)[first + b] : first + b);
    return docs;
  }

  private permutation(epoch: number): Int32Array {
    if (epoch !== this.permEpoch) {
      const rng = new Rng((this.seed ^ Math.imul(epoch + 1, 0x9e3779b1)) >>> 0);
      const p = Int32Array.from({ length: this.samplesPerEpoch }, (_, i) => i);
      for (let i = p.length - 1; i > 0; i--) {
        const j = rng.int(i + 1);
        [p[i], p[j]] = [p[j], p[i]];
      }
      this.perm = p;
      this.permEpoch = epoch;
    }
    return this.perm;
  }

  batch(step: number): Batch {
    const T = this.ctxLen;
    const out = emptyBatch(this.microBsz, T);
    const window = new Int32Array(T + 1);
    for (const [b, doc] of this.documentsForStep(step).entries()) {
      const mask = this.source.readWindow(doc, window);
      // RWKV-PEFT: min_len = min(size, ctx_len+1); dix[min_len:] = -100; y = dix[1:].
      const valid = Math.min(this.source.docSize(doc), T + 1);
      for (let t = 0; t < T; t++) {
        out.inputs[b * T + t] = window[t];
        const target = t + 1 < valid && (mask === null || mask[t + 1] === 1);
        out.labels[b * T + t] = target ? window[t + 1] : IGNORE_INDEX;
      }
      out.origin.push(doc);
    }
    return out;
  }
}

export interface MagicPrimeSamplerOptions {
  ctxLen: number;
  microBsz: number;
  /** RWKV-LM --magic_prime; computed from the data when absent. */
  magicPrime?: number;
}

/**
 * Row b of micro-batch `step` is sample step·microBsz + b, which is RWKV-LM's
 * epoch·40320 + idx on one GPU whenever microBsz divides 40320 (RWKV-LM asserts it does).
 * The first magicPrime samples cover every ctx_len chunk once.
 */
export class MagicPrimeSampler {
  readonly magicPrime: number;
  /** Steps that cover the data once (RWKV-LM ends at magic_prime // real_bsz). */
  readonly stepsPerPass: number;
  private readonly ctxLen: number;
  private readonly microBsz: number;

  constructor(private readonly stream: TokenStream, options: MagicPrimeSamplerOptions) {
    const { ctxLen, microBsz } = options;
    checkPositiveInt('MagicPrimeSampler ctx_len', ctxLen);
    checkPositiveInt('MagicPrimeSampler micro_bsz', microBsz);
    const n = stream.tokenCount;
    const slots = Math.floor(n / ctxLen);
    let p: number;
    if (options.magicPrime === undefined) {
      const found = magicPrime(n, ctxLen);
      if (found === null) {
        throw new Error(`${stream.name}: ctx_len: expected at most ${Math.floor(n / 3)} (the data has ${n} tokens, the magic-prime sampler needs 3·ctx_len), found ${ctxLen}`);
      }
      p = found;
    } else {
      p = options.magicPrime;
      const fail = (expected: string): never => {
        throw new Error(`${stream.name}: magic_prime: expected ${expected}, found ${p}`);
      };
      if (!isPrime(p)) fail('a prime');
      if (p % 3 !== 2) fail('a prime ≡ 2 (mod 3)');
      // RWKV-LM's own bounds, plus the read of ctx_len+1 tokens from the last chunk staying in the file.
      if (!(p / slots > 0.9 && p / slots <= 1) || p * ctxLen + 1 > n) {
        fail(`a prime in (0.9·${slots}, ${Math.floor((n - 1) / ctxLen)}] for ${n} tokens at ctx_len ${ctxLen} (largest valid: ${magicPrime(n, ctxLen)})`);
      }
    }
    if (p < microBsz) throw new Error(`${stream.name}: micro_bsz: expected at most magic_prime = ${p}, found ${microBsz}`);
    this.magicPrime = p;
    this.ctxLen = ctxLen;
    this.microBsz = microBsz;
    this.stepsPerPass = Math.floor(p / microBsz);
  }

  batch(step: number): Batch {
    if (!Number.isInteger(step) || step < 0) throw new Error(`${this.stream.name}: step: expected an integer >= 0, found ${step}`);
    const T = this.ctxLen;
    const out = emptyBatch(this.microBsz, T);
    const window = new Int32Array(T + 1);
    for (let b = 0; b < this.microBsz; b++) {
      const offset = magicPrimeOffset(this.magicPrime, T, step * this.microBsz + b);
      this.stream.readTokens(offset, window);
      out.inputs.set(window.subarray(0, T), b * T);
      out.labels.set(window.subarray(1), b * T);
      out.origin.push(offset);
    }
    return out;
  }
}
