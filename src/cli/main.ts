#!/usr/bin/env node
/** The `rwkv-lora-gpu` command line. Exit codes: 0 ok, 1 failure, 2 usage error. */
import { parseArgs } from 'node:util';
import { gpuInfo } from './info.js';

const USAGE = `rwkv-lora-gpu: LoRA fine-tuning of RWKV models on the GPU through WebGPU

usage:
  rwkv-lora-gpu info --gpu [--json]     the GPU adapter, its features, limits and subgroup-matrix configurations
  rwkv-lora-gpu --help                  this text
`;

export class UsageError extends Error {}

async function info(argv: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: { gpu: { type: 'boolean' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
    allowPositionals: true,
  });
  if (values.help) {
    process.stdout.write('usage: rwkv-lora-gpu info --gpu [--json]\n');
    return;
  }
  if (values.gpu) {
    process.stdout.write((await gpuInfo(!!values.json)) + '\n');
    return;
  }
  throw new UsageError(positionals.length ? `info: unknown argument ${positionals[0]}` : 'info: say what to describe (--gpu)');
}

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  try {
    switch (cmd) {
      case 'info':
        await info(rest);
        return 0;
      case undefined:
      case '--help':
      case '-h':
      case 'help':
        process.stdout.write(USAGE);
        return cmd === undefined ? 2 : 0;
      default:
        throw new UsageError(`unknown command '${cmd}'`);
    }
  } catch (e) {
    if (e instanceof UsageError || (e as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      process.stderr.write(`rwkv-lora-gpu: ${(e as Error).message}\n\n${USAGE}`);
      return 2;
    }
    process.stderr.write(`rwkv-lora-gpu: ${(e as Error).message}\n`);
    return 1;
  }
}

process.exitCode = await main(process.argv.slice(2));
