#!/usr/bin/env node
/**
 * The `rwkv-lora-gpu` command line. Exit codes: 0 ok, 1 failure, 2 usage or
 * configuration error, 130 training interrupted (after saving its checkpoint).
 */
import { ConfigError } from '../train/config.js';
import { didYouMean } from '../train/did_you_mean.js';
import { UsageError } from './args.js';
import { generateCommand } from './generate.js';
import { infoCommand } from './info.js';
import { initCommand } from './init.js';
import { mergeCommand } from './merge.js';
import { prepareCommand } from './prepare.js';
import { trainCommand } from './train.js';

const USAGE = `rwkv-lora-gpu: LoRA fine-tuning of RWKV models on the GPU through WebGPU

usage:
  rwkv-lora-gpu train config.json [--key value ...]   train a LoRA (RWKV-PEFT settings; --resume, --overwrite)
  rwkv-lora-gpu generate --model m.pth [--lora a.pth] --tokenizer vocab.txt --prompt "..."
  rwkv-lora-gpu merge --base m.pth --lora a.pth --out merged.pth|.st
  rwkv-lora-gpu prepare data.jsonl --out prefix --tokenizer vocab.txt [--ctx_len N]
  rwkv-lora-gpu init --out m.pth --n_layer L --n_embd C [--vocab_size V]
  rwkv-lora-gpu info model.pth | --gpu [--json]
  rwkv-lora-gpu <command> --help                      a command's options

exit codes: 0 ok, 1 failure, 2 usage or config error, 130 training interrupted (checkpoint saved)
`;

const COMMANDS: Record<string, (argv: string[]) => number | Promise<number>> = {
  train: trainCommand,
  generate: generateCommand,
  merge: mergeCommand,
  prepare: prepareCommand,
  init: initCommand,
  info: infoCommand,
};

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  try {
    if (cmd === undefined || cmd === '--help' || cmd === '-h' || cmd === 'help') {
      process.stdout.write(USAGE);
      return cmd === undefined ? 2 : 0;
    }
    const run = COMMANDS[cmd];
    if (!run) throw new UsageError(`unknown command '${cmd}'${didYouMean(cmd, Object.keys(COMMANDS))}`, USAGE);
    return await run(rest);
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`rwkv-lora-gpu: ${e.message}\n\n${e.usage || USAGE}`);
      return 2;
    }
    if (e instanceof ConfigError) {
      process.stderr.write(`rwkv-lora-gpu: ${e.message}\n`);
      return 2;
    }
    process.stderr.write(`rwkv-lora-gpu: ${(e as Error).message}\n`);
    return 1;
  }
}

process.exitCode = await main(process.argv.slice(2));
