/** `rwkv-lora-gpu train config.json [--key value ...]`: a LoRA run; Ctrl-C saves a checkpoint, then exits with 130. */
import { parseOverrides, readConfigFile, resolveConfig } from '../train/config.js';
import { trainLora } from '../train/trainer.js';
import { UsageError } from './args.js';

export const TRAIN_USAGE = `usage: rwkv-lora-gpu train <config.json> [--key value ...] [--resume] [--overwrite]

Trains a LoRA adapter as the JSON config says (RWKV-PEFT key names; see the README's
table). Any key can be overridden, run_lora.sh style: --ctx_len 512 --lr_init 1e-4
--peft_config '{"r":16}' --train_parts ln. Relative paths in the file are taken from the
file's folder, those on the command line from the working directory.

  --resume      continue the run in proj_dir from its checkpoint
  --overwrite   replace another run's outputs in proj_dir

Ctrl-C finishes the current step, saves the checkpoint and exits with code 130;
a second Ctrl-C quits at once.
`;

export async function trainCommand(argv: string[]): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write(TRAIN_USAGE);
    return 0;
  }
  const [file, ...rest] = argv;
  if (!file || file.startsWith('--')) throw new UsageError('train: give the config file first (train config.json [--key value ...])', TRAIN_USAGE);
  const { input, baseDir } = readConfigFile(file);
  // Paths resolved here (file vs command line); the seed is left for trainLora, which reuses a resumed run's.
  const { config, warnings } = resolveConfig(input, { baseDir, overrides: parseOverrides(rest), pickSeed: () => -1 });
  for (const w of warnings) process.stdout.write(`warning: ${w}\n`);

  const ac = new AbortController();
  const onSignal = (): void => {
    if (ac.signal.aborted) process.exit(130);
    process.stdout.write('\ninterrupted: finishing the step and saving a checkpoint (Ctrl-C again quits at once)\n');
    ac.abort();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    const s = await trainLora(config, { signal: ac.signal, progress: process.stdout });
    const o = s.outputs;
    const written = [...o.adapters, ...o.adaptersSt, o.merged, o.mergedSt, o.checkpoint, o.log, o.lossData, o.lossCurve, o.config].filter(Boolean);
    process.stdout.write(`outputs:\n${written.map((p) => `  ${p}`).join('\n')}\n`);
    return s.aborted ? 130 : 0;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}
