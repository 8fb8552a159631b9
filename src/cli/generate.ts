/** `rwkv-lora-gpu generate`: sample text from a model (and adapter) to try a fine-tune at once. */
import { WorldTokenizer } from '../data/tokenizer.js';
import { loadModel } from '../train/load_model.js';
import { numberOption, parseCommand, requireString, UsageError } from './args.js';

export const GENERATE_USAGE = `usage: rwkv-lora-gpu generate --model m.pth [--lora a.pth] --tokenizer vocab.txt --prompt "..."
                            [--max_tokens 100] [--temperature 1.0] [--top_p 0.85] [--seed 0] [--lora_alpha N]

Prints the prompt and what the model writes after it (top-p sampling on the GPU;
--temperature 0 is greedy). It stops at the end-of-text token or after --max_tokens.
--lora applies an adapter unmerged; its lora_alpha comes from the file (--lora_alpha
for adapters that do not record it).
`;

export async function generateCommand(argv: string[]): Promise<number> {
  const u = GENERATE_USAGE;
  const p = parseCommand(argv, u, {
    model: { type: 'string' },
    lora: { type: 'string' },
    lora_alpha: { type: 'string' },
    tokenizer: { type: 'string' },
    prompt: { type: 'string' },
    max_tokens: { type: 'string' },
    temperature: { type: 'string' },
    top_p: { type: 'string' },
    seed: { type: 'string' },
  });
  if (!p) return 0;
  const model = requireString(p, 'model', u);
  const tokenizer = requireString(p, 'tokenizer', u);
  const prompt = p.values.prompt;
  if (typeof prompt !== 'string' || prompt === '') throw new UsageError('--prompt is required (and not empty)', u);
  const maxTokens = numberOption(p, 'max_tokens', u, 100, { min: 1, integer: true });
  const temperature = numberOption(p, 'temperature', u, 1, { min: 0 });
  const topP = numberOption(p, 'top_p', u, 0.85, { min: 0, max: 1 });
  const seed = numberOption(p, 'seed', u, 0, { min: 0, max: 0xffffffff, integer: true });
  const loraAlpha = p.values.lora_alpha === undefined ? undefined : numberOption(p, 'lora_alpha', u, 0, { min: 0 });

  const tok = WorldTokenizer.fromFile(tokenizer);
  const ids = tok.encode(prompt);
  const lm = await loadModel(model, { lora: p.values.lora as string | undefined, loraAlpha, ctxLen: ids.length + maxTokens });
  try {
    if (tok.vocabSize > lm.dims.vocab) throw new Error(`${tokenizer} has ids up to ${tok.vocabSize - 1}, but ${model} has a vocabulary of ${lm.dims.vocab}`);
    const decoder = new TextDecoder();
    process.stdout.write(prompt);
    await lm.generate(ids, { maxTokens, temperature, topP, seed, vocabLimit: tok.vocabSize, onToken: (t) => process.stdout.write(decoder.decode(tok.tokenBytes(t), { stream: true })) });
    process.stdout.write(decoder.decode() + '\n');
  } finally {
    lm.dispose();
  }
  return 0;
}
