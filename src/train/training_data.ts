/**
 * The training data a config names, as micro-batches by global micro-batch
 * index: binidx or jsonl, sampled per document (RWKV-PEFT's 'pad') or by the
 * magic-prime walk (RWKV-LM's 'get'). A pure function of the index, so a resumed
 * run sees exactly the batches the uninterrupted run would have.
 */
import { BinidxReader } from '../data/binidx.js';
import { JsonlDocuments } from '../data/jsonl.js';
import { DocumentSampler, MagicPrimeSampler, type Batch } from '../data/sampling.js';
import { WorldTokenizer } from '../data/tokenizer.js';
import type { TrainConfig } from './config.js';

export interface TrainingData {
  batch(micro: number): Batch;
  /** One line for the log: what was read and how it is sampled. */
  summary: string;
  close(): void;
}

export function openTrainingData(c: TrainConfig, vocab: number): TrainingData {
  const sampleOpts = { ctxLen: c.ctx_len, microBsz: c.micro_bsz };
  if (c.data_type === 'jsonl') {
    const tok = WorldTokenizer.fromFile(c.tokenizer);
    if (tok.vocabSize > vocab) throw new Error(`tokenizer: ${c.tokenizer} has ids up to ${tok.vocabSize - 1}, but the model's vocabulary has ${vocab} entries`);
    const docs = JsonlDocuments.load(c.data_file, tok);
    const s = new DocumentSampler(docs, { ...sampleOpts, seed: c.random_seed, shuffle: c.data_shuffle });
    return {
      batch: (micro) => s.batch(micro),
      summary: `${c.data_file}: ${docs.documents} documents${docs.skipped ? ` (${docs.skipped} empty skipped)` : ''}, one per sample (dataload pad)`,
      close: () => undefined,
    };
  }
  const reader = BinidxReader.open(c.data_file, { vocabSize: vocab });
  try {
    if (c.dataload === 'get') {
      const s = new MagicPrimeSampler(reader, { ...sampleOpts, magicPrime: c.magic_prime || undefined });
      return {
        batch: (micro) => s.batch(micro),
        summary: `${c.data_file}: ${reader.tokenCount} tokens, magic prime ${s.magicPrime} (dataload get)`,
        close: () => reader.close(),
      };
    }
    const s = new DocumentSampler(reader, { ...sampleOpts, seed: c.random_seed, shuffle: c.data_shuffle });
    return {
      batch: (micro) => s.batch(micro),
      summary: `${c.data_file}: ${reader.documents} documents, ${reader.tokenCount} tokens, one document per sample (dataload pad)`,
      close: () => reader.close(),
    };
  } catch (e) {
    reader.close();
    throw e;
  }
}
