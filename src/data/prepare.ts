/**
 * jsonl → binidx, as RWKV-LM's make_data.py does for one epoch: every document tokenized
 * with the World tokenizer, ended with token 0, written as one item (uint16 by default).
 * binidx has no loss mask, so prompts that the jsonl templates mask are trained when
 * training from the binidx; `promptTokens` counts them.
 */
import { writeBinidx, type TokenDtype } from './binidx.js';
import { jsonlDocuments } from './jsonl.js';
import { magicPrime } from './magic_prime.js';
import { WorldTokenizer } from './tokenizer.js';

export interface PrepareOptions {
  vocabPath: string;
  /** When given, the result carries the magic prime for this ctx_len. */
  ctxLen?: number;
  dtype?: TokenDtype;
  /** Replace an existing prefix.idx / prefix.bin (default false: refuse). */
  overwrite?: boolean;
}

export interface PrepareResult {
  idx: string;
  bin: string;
  documents: number;
  tokens: number;
  /** Records skipped because their text was empty. */
  skipped: number;
  /** Tokens the jsonl templates would have masked (prompts), trained from the binidx. */
  promptTokens: number;
  /** RWKV-LM --magic_prime for ctxLen; null without ctxLen or with fewer than 3·ctxLen tokens. */
  magicPrime: number | null;
}

export function prepare(jsonlPath: string, outPrefix: string, options: PrepareOptions): PrepareResult {
  if (options.ctxLen !== undefined && !(Number.isInteger(options.ctxLen) && options.ctxLen > 0)) {
    throw new Error(`prepare: ctxLen: expected a positive integer, found ${options.ctxLen}`);
  }
  const tok = WorldTokenizer.fromFile(options.vocabPath);
  const skipped = { count: 0 };
  let promptTokens = 0;
  const docs = (function* () {
    for (const { tokens, mask } of jsonlDocuments(jsonlPath, tok, skipped)) {
      if (mask) for (const m of mask) promptTokens += 1 - m;
      yield tokens;
    }
  })();
  const written = writeBinidx(outPrefix, docs, { dtype: options.dtype, vocabSize: tok.vocabSize, overwrite: options.overwrite });
  return {
    ...written,
    skipped: skipped.count,
    promptTokens,
    magicPrime: options.ctxLen === undefined ? null : magicPrime(written.tokens, options.ctxLen),
  };
}
