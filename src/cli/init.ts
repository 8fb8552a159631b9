/** `rwkv-lora-gpu init`: a random RWKV-7 model, for demos, tests and benchmarks. */
import { writeRandomModel } from '../train/base_model.js';
import { numberOption, parseCommand, requireString, UsageError } from './args.js';

export const INIT_USAGE = `usage: rwkv-lora-gpu init --out model.pth --n_layer L --n_embd C [--vocab_size 65536] [--seed 0] [--overwrite]

Writes an RWKV-7 (x070) model with random weights in the layout of the official
checkpoints (bf16, every key). n_embd must be a multiple of 64 (the head size).
The 0.1B layout is --n_layer 12 --n_embd 768.
`;

export function initCommand(argv: string[]): number {
  const u = INIT_USAGE;
  const p = parseCommand(argv, u, { out: { type: 'string' }, n_layer: { type: 'string' }, n_embd: { type: 'string' }, vocab_size: { type: 'string' }, seed: { type: 'string' }, overwrite: { type: 'boolean' } });
  if (!p) return 0;
  const out = requireString(p, 'out', u);
  requireString(p, 'n_layer', u);
  requireString(p, 'n_embd', u);
  const spec = {
    nLayer: numberOption(p, 'n_layer', u, 0, { min: 1, integer: true }),
    nEmbd: numberOption(p, 'n_embd', u, 0, { min: 64, integer: true }),
    vocab: numberOption(p, 'vocab_size', u, 65536, { min: 1, integer: true }),
    seed: numberOption(p, 'seed', u, 0, { min: 0, max: 0xffffffff, integer: true }),
  };
  if (spec.nEmbd % 64 !== 0) throw new UsageError(`--n_embd: expected a multiple of the head size 64, found ${spec.nEmbd}`, u);
  const d = writeRandomModel(out, spec, !!p.values.overwrite);
  process.stdout.write(`wrote ${out}: RWKV-7 x070, ${d.nLayer} layers, n_embd ${d.nEmbd}, vocab ${d.vocab}, low-rank w/a/v/g ${d.dW}/${d.dA}/${d.dV}/${d.dG}\n`);
  return 0;
}
