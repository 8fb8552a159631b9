/** `rwkv-lora-gpu merge`: base model + adapter → merged model (.pth bf16, or .st for Ai00). */
import { mergeLora } from '../train/merge.js';
import { numberOption, parseCommand, requireString } from './args.js';

export const MERGE_USAGE = `usage: rwkv-lora-gpu merge --base model.pth --lora adapter.pth --out merged.pth|merged.st [--alpha N] [--overwrite]

W + (lora_alpha/r)·B·A for every adapted weight (in f32, rounded to bf16), trained
LayerNorm weights replaced, everything else copied. lora_alpha and r come from the
adapter; --alpha overrides (with a warning when it differs) or supplies it for
adapters that do not record it (e.g. RWKV-PEFT's).

--out merged.st (or .safetensors) writes the layout Ai00, web-rwkv and RWKV
Runner's WebGPU backend load: every tensor f16 (rounded once from f32), the
low-rank x070 matrices transposed, as their convert_safetensors.py does.
--base and --lora may be .pth or such .st files.
`;

export function mergeCommand(argv: string[]): number {
  const p = parseCommand(argv, MERGE_USAGE, { base: { type: 'string' }, lora: { type: 'string' }, out: { type: 'string' }, alpha: { type: 'string' }, overwrite: { type: 'boolean' } });
  if (!p) return 0;
  const alpha = p.values.alpha === undefined ? undefined : numberOption(p, 'alpha', MERGE_USAGE, 0, { min: 0 });
  const r = mergeLora({
    base: requireString(p, 'base', MERGE_USAGE),
    lora: requireString(p, 'lora', MERGE_USAGE),
    out: requireString(p, 'out', MERGE_USAGE),
    alpha,
    overwrite: !!p.values.overwrite,
  });
  for (const w of r.warnings) process.stderr.write(`warning: ${w}\n`);
  process.stdout.write(`wrote ${r.out} (lora_alpha ${r.alpha}, r ${r.r})\n`);
  return 0;
}
