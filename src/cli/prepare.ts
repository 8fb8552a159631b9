/** `rwkv-lora-gpu prepare`: jsonl → binidx, as RWKV's make_data.py / json2binidx do. */
import { prepare } from '../data/prepare.js';
import { numberOption, parseCommand, requireString, UsageError } from './args.js';

export const PREPARE_USAGE = `usage: rwkv-lora-gpu prepare data.jsonl --out prefix --tokenizer vocab.txt [--ctx_len N] [--dtype uint16|int32] [--overwrite]

Tokenizes every document with the World tokenizer, ends it with token 0 and writes
prefix.idx / prefix.bin (existing ones only with --overwrite). With --ctx_len it also
prints the magic prime for dataload 'get'.
`;

export function prepareCommand(argv: string[]): number {
  const u = PREPARE_USAGE;
  const p = parseCommand(argv, u, { out: { type: 'string' }, tokenizer: { type: 'string' }, ctx_len: { type: 'string' }, dtype: { type: 'string' }, overwrite: { type: 'boolean' } }, 1);
  if (!p) return 0;
  const input = p.positionals[0];
  if (!input) throw new UsageError('give the jsonl file to prepare', u);
  const dtype = p.values.dtype;
  if (dtype !== undefined && dtype !== 'uint16' && dtype !== 'int32') throw new UsageError(`--dtype: expected uint16 or int32, found ${JSON.stringify(dtype)}`, u);
  const ctxLen = p.values.ctx_len === undefined ? undefined : numberOption(p, 'ctx_len', u, 0, { min: 1, integer: true });
  const r = prepare(input, requireString(p, 'out', u), { vocabPath: requireString(p, 'tokenizer', u), ctxLen, dtype, overwrite: !!p.values.overwrite });
  process.stdout.write(
    `wrote ${r.idx} and ${r.bin}: ${r.documents} documents, ${r.tokens} tokens` +
      (r.skipped ? `, ${r.skipped} empty records skipped` : '') +
      (r.promptTokens ? ` (${r.promptTokens} prompt tokens, masked in jsonl training, are trained from binidx)` : '') +
      '\n' +
      (ctxLen === undefined ? '' : r.magicPrime === null ? `too few tokens for a magic prime at ctx_len ${ctxLen}\n` : `magic_prime for ctx_len ${ctxLen}: ${r.magicPrime}\n`),
  );
  return 0;
}
