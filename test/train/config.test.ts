/**
 * The training config: RWKV-PEFT defaults, every kind of mistake reported by
 * key (with did-you-mean), run_lora.sh's forms (peft_config as a JSON string,
 * lora_config, --key value overrides), paths taken from the config's folder,
 * and the README's table in step with the schema.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { CONFIG_FIELDS, ConfigError, parseOverrides, resolveConfig, type TrainConfig } from '../../src/train/config.js';

const BASE = { load_model: '/m/model.pth', data_file: '/d/data', proj_dir: '/o/run' };

function problems(input: object, overrides?: Record<string, unknown>): string[] {
  try {
    resolveConfig(input, { overrides });
  } catch (e) {
    if (e instanceof ConfigError) return e.problems;
    throw e;
  }
  return [];
}

describe('resolveConfig', () => {
  it('fills RWKV-PEFT defaults', () => {
    const { config, warnings } = resolveConfig(BASE, { pickSeed: () => 7 });
    expect(warnings).toEqual([]);
    expect(config).toMatchObject({
      ctx_len: 1024, micro_bsz: 12, accumulate_grad_batches: 1, epoch_steps: 1000, epoch_count: 500, epoch_begin: 0, epoch_save: 5,
      lr_init: 6e-4, lr_final: 1e-5, lr_schedule: 'cos_decay', warmup_steps: -1, beta1: 0.9, beta2: 0.99, adam_eps: 1e-8,
      weight_decay: 0, grad_clip: 1, grad_cp: false, precision: 'bf16', peft: 'lora', train_parts: ['time', 'ln'], random_seed: 7,
      peft_config: { r: 8, lora_alpha: 32, lora_dropout: 0.01, lora_load: '' }, data_type: 'binidx', dataload: 'pad', devices: 1,
    } satisfies Partial<TrainConfig>);
  });

  it('names every unknown key, with a did-you-mean for typos', () => {
    const p = problems({ ...BASE, ctx_lenn: 512, lr_inti: 1e-4, frobnicate: 1 });
    expect(p).toContain("ctx_lenn: unknown key (did you mean 'ctx_len'?)");
    expect(p).toContain("lr_inti: unknown key (did you mean 'lr_init'?)");
    expect(p).toContain('frobnicate: unknown key');
  });

  it('reports wrong types and impossible values by key, all at once', () => {
    const p = problems({ ...BASE, ctx_len: '512', micro_bsz: 0, lr_init: -1, grad_cp: 'yes', beta2: 1.5, train_parts: 'ln', lr_schedule: 'cos_decy', epoch_steps: 2.5 });
    expect(p).toEqual(expect.arrayContaining([
      'ctx_len: expected an integer, found the string "512"',
      'micro_bsz: expected a value >= 1, found 0',
      'lr_init: expected a value > 0, found -1',
      'grad_cp: expected true/false (or 1/0), found the string "yes"',
      'beta2: expected a value <= 0.999999, found 1.5',
      'train_parts: expected an array of strings, found the string "ln"',
      'lr_schedule: expected one of "cos_decay", "wsd", "cos", found "cos_decy" (did you mean \'cos_decay\'?)',
      'epoch_steps: expected an integer, found the number 2.5',
    ]));
    expect(p).toHaveLength(8);
    expect(() => resolveConfig({ ...BASE, micro_bsz: 0, ctx_len: -1 })).toThrow(/config has 2 problems:\n {2}micro_bsz: expected a value >= 1, found 0\n {2}ctx_len/);
  });

  it('accepts peft_config as an object, a JSON string (run_lora.sh) or as lora_config (older RWKV-PEFT)', () => {
    expect(resolveConfig({ ...BASE, peft_config: { r: 16, lora_alpha: 64 } }).config.peft_config).toEqual({ r: 16, lora_alpha: 64, lora_dropout: 0.01, lora_load: '' });
    expect(resolveConfig({ ...BASE, peft_config: '{"r":8,"lora_alpha":32,"lora_dropout":0.05}' }).config.peft_config.lora_dropout).toBe(0.05);
    const gen1 = resolveConfig({ ...BASE, lora_config: '{"lora_load":"","lora_r":32,"lora_alpha":32,"lora_dropout":0.0}' }).config.peft_config;
    expect(gen1).toEqual({ r: 32, lora_alpha: 32, lora_dropout: 0, lora_load: '' });
    expect(problems({ ...BASE, peft_config: '{"r": 8,' })[0]).toMatch(/^peft_config: not valid JSON/);
    expect(problems({ ...BASE, peft_config: { lora_alpah: 8, lora_dropout: 1.5 } })).toEqual([
      "peft_config.lora_alpah: unknown LoRA setting (did you mean 'lora_alpha'?); known: r (or lora_r), lora_alpha, lora_dropout, lora_load",
      'peft_config.lora_dropout: expected a value <= 0.99, found 1.5',
    ]);
    expect(problems({ ...BASE, peft_config: {}, lora_config: {} })[0]).toMatch(/give one of them/);
  });

  it('refuses x060 with "not supported yet" and checks the rest of my_testing', () => {
    expect(problems({ ...BASE, my_testing: 'x060' })).toEqual(['my_testing: x060 (RWKV-6) is not supported yet; only x070 (RWKV-7) models can be trained']);
    expect(problems({ ...BASE, my_testing: 'x052' })[0]).toMatch(/^my_testing: expected one of "", "x070", "x060", found "x052"/);
    expect(resolveConfig({ ...BASE, my_testing: 'x070' }).config.my_testing).toBe('x070');
  });

  it('cross-checks: data and tokenizer, sampling mode, a new model needs its vocabulary', () => {
    expect(problems({ proj_dir: '/o' })).toEqual(['data_file: required (a binidx prefix or a .jsonl file)', 'vocab_size: required when load_model is empty (a new model is created)']);
    expect(problems({ ...BASE, data_type: 'jsonl' })[0]).toMatch(/^tokenizer: required for data_type jsonl/);
    expect(problems({ ...BASE, data_type: 'jsonl', tokenizer: '/v.txt', dataload: 'get' })[0]).toMatch(/^dataload: 'get' \(magic-prime sampling\) reads a binidx token stream/);
    expect(problems({ ...BASE, devices: 2 })).toEqual(['devices: expected a value <= 1, found 2']);
    expect(problems({ ...BASE, train_parts: ['ln', 'att'] })[0]).toMatch(/^train_parts: "att" is not supported yet/);
    const fresh = resolveConfig({ ...BASE, load_model: '', vocab_size: 65536 }).config;
    expect([fresh.n_layer, fresh.n_embd]).toEqual([6, 512]);
    expect(problems({ ...BASE, load_model: '', vocab_size: 100, n_embd: 100 })).toEqual(['n_embd: a new model needs a multiple of the head size 64, found 100']);
  });

  it("takes run_lora.sh's other flags: harmless ones silently or with a warning, missing features as errors", () => {
    const { warnings } = resolveConfig({ ...BASE, strategy: 'deepspeed_stage_1', accelerator: 'gpu', wandb: 'proj', quant: 'none', loss_mask: 'pad', lr_schedule: 'cos' });
    expect(warnings).toEqual(['strategy = "deepspeed_stage_1": ignored: DeepSpeed/Lightning strategies do not apply', 'wandb = "proj": ignored: wandb is not built in; losses go to loss_data.jsonl and loss.svg']);
    expect(problems({ ...BASE, quant: 'nf4', train_type: 'state' })).toEqual([
      'quant = "nf4": not supported: quantized base weights are not supported yet',
      'train_type = "state": not supported: state tuning and infctx are not supported yet',
    ]);
    expect(resolveConfig({ ...BASE, lr_schedule: 'cos' }).config.lr_schedule).toBe('cos_decay');
  });

  it('resolves relative paths against the config folder, overrides against the working directory', () => {
    const { config } = resolveConfig(
      { load_model: 'm.pth', data_file: 'data/x', proj_dir: 'out', tokenizer: '' },
      { baseDir: '/cfg', overrides: { proj_dir: 'elsewhere', peft_config: { lora_load: 'a.pth' } } },
    );
    expect(config.load_model).toBe('/cfg/m.pth');
    expect(config.data_file).toBe('/cfg/data/x');
    expect(config.proj_dir).toBe(`${process.cwd()}/elsewhere`);
    expect(config.peft_config.lora_load).toBe(`${process.cwd()}/a.pth`);
    expect(config.tokenizer).toBe('');
  });

  it('an already resolved config resolves to itself', () => {
    const { config } = resolveConfig(BASE, { pickSeed: () => 3 });
    expect(resolveConfig(config).config).toEqual(config);
  });
});

describe('parseOverrides (run_lora.sh style --key value)', () => {
  it('types values by the schema', () => {
    expect(parseOverrides(['--ctx_len', '512', '--lr_init', '2e-5', '--grad_cp', '1', '--resume', '--train_parts', 'time', 'ln', '--peft_config', '{"r":16}', '--proj_dir=out/x'])).toEqual({
      ctx_len: 512, lr_init: 2e-5, grad_cp: true, resume: true, train_parts: ['time', 'ln'], peft_config: '{"r":16}', proj_dir: 'out/x',
    });
    expect(parseOverrides(['--overwrite', '--data_shuffle', '0'])).toEqual({ overwrite: true, data_shuffle: false });
  });

  it('leaves bad values for the schema to report by key', () => {
    const overrides = parseOverrides(['--ctx_len', 'big', '--micro_bsz', '1.5']);
    expect(problems(BASE, overrides)).toEqual(['ctx_len: expected an integer, found the string "big"', 'micro_bsz: expected an integer, found the number 1.5']);
    expect(() => parseOverrides(['ctx_len', '5'])).toThrow(/unexpected argument "ctx_len": overrides are --key value/);
    expect(() => parseOverrides(['--ctx_len'])).toThrow(/--ctx_len: expected a value/);
  });
});

describe('README', () => {
  it("documents every config key with its default, in the table's first two columns", () => {
    const readme = readFileSync('README.md', 'utf8');
    for (const [key, f] of Object.entries(CONFIG_FIELDS)) {
      const row = readme.split('\n').find((l) => l.startsWith(`| \`${key}\` |`));
      expect(row, `README row for ${key}`).toBeDefined();
      const shown = row!.split('|')[2].trim();
      expect(shown, `README default of ${key}`).toBe(`\`${JSON.stringify(f.def)}\``);
    }
  });
});
