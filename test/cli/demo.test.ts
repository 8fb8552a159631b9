/**
 * The shipped demo end to end through the CLI, at fewer steps: `train
 * examples/demo.json` creates a model and trains a LoRA with the loss falling,
 * `generate` writes with the result, `merge` and `info` work on its outputs,
 * `prepare` feeds magic-prime training, and Ctrl-C saves a checkpoint and exits 130.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CLI, cli } from './run_cli.js';

const dir = mkdtempSync(join(tmpdir(), 'rwkv-demo-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('the demo', () => {
  const out = join(dir, 'demo');

  it('trains a LoRA on a new small model with the loss falling, and generate uses it', async () => {
    const r = await cli('train', 'examples/demo.json', '--proj_dir', out, '--epoch_steps', '6', '--epoch_count', '2');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/creating a random RWKV-7 model \(2 layers, n_embd 64, vocab 128\)/);
    expect(r.stdout).toMatch(/^done: 12 steps, final loss \d/m);
    const losses = readFileSync(join(out, 'loss_data.jsonl'), 'utf8').trim().split('\n').map((l) => (JSON.parse(l) as { loss: number }).loss);
    expect(losses).toHaveLength(12);
    const mean = (a: number[]): number => a.reduce((s, x) => s + x, 0) / a.length;
    console.log(`demo losses: ${losses.map((l) => l.toFixed(2)).join(' ')}`);
    expect(mean(losses.slice(-3))).toBeLessThan(mean(losses.slice(0, 3)) - 1);
    for (const f of ['rwkv-init.pth', 'rwkv-0.pth', 'rwkv-1.pth', 'rwkv-merged.pth', 'checkpoint.st', 'train_log.txt', 'loss.svg', 'config.json']) {
      expect(existsSync(join(out, f)), f).toBe(true);
    }

    const gen = await cli('generate', '--model', join(out, 'rwkv-init.pth'), '--lora', join(out, 'rwkv-1.pth'), '--tokenizer', 'examples/demo_vocab.txt', '--prompt', 'RWKV', '--max_tokens', '16');
    expect(gen.code, gen.stderr).toBe(0);
    expect(gen.stdout).toMatch(/^RWKV./);
  });

  it('merge and info work on its outputs; a second train into the same folder exits 1', async () => {
    const merged = join(dir, 'merged.pth');
    const m = await cli('merge', '--base', join(out, 'rwkv-init.pth'), '--lora', join(out, 'rwkv-1.pth'), '--out', merged);
    expect(m.code, m.stderr).toBe(0);
    expect(m.stdout).toMatch(/lora_alpha 32, r 16/);
    const w = await cli('merge', '--base', join(out, 'rwkv-init.pth'), '--lora', join(out, 'rwkv-1.pth'), '--out', merged, '--alpha', '16', '--overwrite');
    expect(w.stderr).toMatch(/warning: merging with alpha 16, but .* was trained with lora_alpha 32/);
    expect((await cli('info', join(out, 'rwkv-1.pth'))).stdout).toMatch(/LoRA/);
    const again = await cli('train', 'examples/demo.json', '--proj_dir', out);
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/holds another run's outputs/);
  });

  it('prepare writes binidx that magic-prime training (dataload get) reads', async () => {
    const prefix = join(dir, 'corpus');
    const p = await cli('prepare', 'examples/demo_corpus.jsonl', '--out', prefix, '--tokenizer', 'examples/demo_vocab.txt', '--ctx_len', '16');
    expect(p.code, p.stderr).toBe(0);
    expect(p.stdout).toMatch(/12 documents, \d+ tokens/);
    expect(p.stdout).toMatch(/magic_prime for ctx_len 16: \d+/);
    const t = await cli('train', 'examples/demo.json', '--proj_dir', join(dir, 'get'), '--data_type', 'binidx', '--data_file', prefix, '--dataload', 'get', '--ctx_len', '16', '--epoch_steps', '2', '--epoch_count', '1', '--strategy', 'deepspeed_stage_1');
    expect(t.code, t.stderr).toBe(0);
    expect(t.stdout).toMatch(/^warning: strategy = "deepspeed_stage_1": ignored/m);
    expect(t.stdout).toMatch(/magic prime \d+ \(dataload get\)/);
  });

  it('Ctrl-C saves a checkpoint and exits 130', async () => {
    const proj = join(dir, 'interrupted');
    const child = spawn(process.execPath, [CLI, 'train', 'examples/demo.json', '--proj_dir', proj, '--ctx_len', '16', '--micro_bsz', '1', '--epoch_steps', '1000']);
    let stdout = '';
    const code = await new Promise<number | null>((resolve) => {
      child.stdout.on('data', (b: Buffer) => {
        stdout += b.toString();
        if (/^step \d+\/\d+/m.test(stdout) && !child.killed) child.kill('SIGINT');
      });
      child.on('exit', (c) => resolve(c));
    });
    expect(code, stdout).toBe(130);
    expect(stdout).toMatch(/interrupted at step \d+\/4000; resume with --resume/);
    expect(existsSync(join(proj, 'checkpoint.st'))).toBe(true);
  });
});
