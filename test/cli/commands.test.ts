/**
 * The commands' contracts scripts rely on: exit codes (0 ok, 1 failure, 2 usage
 * or config error), --help for each command, and init → info → generate on a
 * small random model.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { cli } from './run_cli.js';

const dir = mkdtempSync(join(tmpdir(), 'rwkv-cli-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('command line', () => {
  it('every command has --help (exit 0)', async () => {
    for (const cmd of ['train', 'generate', 'merge', 'prepare', 'init', 'info']) {
      const r = await cli(cmd, '--help');
      expect(r.code, `${cmd} --help: ${r.stderr}`).toBe(0);
      expect(r.stdout, cmd).toMatch(new RegExp(`^usage: rwkv-lora-gpu ${cmd} `));
    }
  });

  it('usage and config mistakes exit 2 and say what is wrong', async () => {
    const cases: [string[], RegExp][] = [
      [['trian'], /unknown command 'trian' \(did you mean 'train'\?\)/],
      [['train'], /train: give the config file first/],
      [['train', join(dir, 'missing.json')], /cannot read the config file .*missing\.json/],
      [['train', 'examples/demo.json', '--ctx_lenn', '32'], /ctx_lenn: unknown key \(did you mean 'ctx_len'\?\)/],
      [['train', 'examples/demo.json', '--micro_bsz', '0', '--lr_init', 'fast'], /config has 2 problems:\n {2}micro_bsz: expected a value >= 1, found 0\n {2}lr_init: expected a number, found the string "fast"/],
      [['train', 'examples/demo.json', '--my_testing', 'x060'], /x060 \(RWKV-6\) is not supported yet/],
      [['generate', '--model', 'm.pth', '--prompt', 'hi'], /--tokenizer is required/],
      [['generate', '--model', 'm.pth', '--tokenizer', 'v.txt', '--prompt', 'hi', '--top_p', '2'], /--top_p: expected a number >= 0 and <= 1, found "2"/],
      [['init', '--out', join(dir, 'x.pth'), '--n_layer', '1', '--n_embd', '100'], /--n_embd: expected a multiple of the head size 64, found 100/],
      [['merge', '--base', 'a.pth'], /--lora is required/],
      [['info'], /info: say what to describe/],
      [['info', '--gpu', '--bogus'], /bogus/],
    ];
    for (const [args, message] of cases) {
      const r = await cli(...args);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stderr, args.join(' ')).toMatch(message);
    }
  });

  it('failures exit 1 with the reason', async () => {
    const r = await cli('info', join(dir, 'missing.pth'));
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/missing\.pth/);
  });

  it('init writes a model, info describes it, generate writes text with it', async () => {
    const model = join(dir, 'tiny.pth');
    const init = await cli('init', '--out', model, '--n_layer', '1', '--n_embd', '64', '--vocab_size', '128', '--seed', '3');
    expect(init.code, init.stderr).toBe(0);
    expect(init.stdout).toMatch(/wrote .*tiny\.pth: RWKV-7 x070, 1 layers, n_embd 64, vocab 128/);
    expect((await cli('init', '--out', model, '--n_layer', '1', '--n_embd', '64')).stderr).toMatch(/already exists; refusing to overwrite/);

    const info = await cli('info', model);
    expect(info.code, info.stderr).toBe(0);
    expect(info.stdout).toMatch(/architecture: RWKV-7 \(x070\), full model/);

    const gen = await cli('generate', '--model', model, '--tokenizer', 'examples/demo_vocab.txt', '--prompt', 'The ', '--max_tokens', '12', '--seed', '1');
    expect(gen.code, gen.stderr).toBe(0);
    expect(gen.stdout.startsWith('The ')).toBe(true);
    expect(gen.stdout.trimEnd().length).toBeGreaterThan('The '.length);
  });
});
