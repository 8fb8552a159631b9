/**
 * The trainer's Ai00 outputs on a tiny model: with merge_st the merged model
 * and with lora_st each adapter are written in the Ai00 layout, and the model
 * run from them (`generate --model merged.st`, `--lora rwkv-N.st`) gives the
 * logits of the base model with the .pth adapter applied.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { openCheckpoint } from '../../src/io/model_file.js';
import { trainLora } from '../../src/train/trainer.js';
import { freshRng, getGpu, relErr } from '../helpers.js';
import { modelLogits } from './model_logits.js';

const root = mkdtempSync(join(tmpdir(), 'rwkv-ai00-out-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

describe('trainLora with merge_st and lora_st', () => {
  it('writes Ai00-layout files that run like the .pth outputs', async () => {
    const gpu = await getGpu();
    const s = await trainLora(
      {
        load_model: '', n_layer: 1, n_embd: 64, vocab_size: 128, proj_dir: join(root, 'run'),
        data_file: 'examples/demo_corpus.jsonl', data_type: 'jsonl', tokenizer: 'examples/demo_vocab.txt',
        ctx_len: 32, micro_bsz: 2, epoch_steps: 4, epoch_count: 2, epoch_save: 1, lr_init: 1e-2, lr_final: 1e-3,
        peft_config: { r: 4, lora_alpha: 8, lora_dropout: 0 }, train_parts: ['ln'], random_seed: 3, precision: 'fp32',
        merge_st: true, lora_st: true,
      },
      { gpu },
    );
    const o = s.outputs;
    expect(o.adaptersSt.map((p) => p.slice(o.dir.length + 1))).toEqual(['rwkv-0.st', 'rwkv-1.st']);
    expect(o.mergedSt).toBe(join(o.dir, 'rwkv-merged.st'));
    for (const p of [o.mergedSt!, ...o.adaptersSt]) {
      const r = openCheckpoint(p);
      try {
        expect(r.ai00Layout, p).toBe(true);
      } finally {
        r.close();
      }
    }

    const rng = freshRng();
    const ids = Array.from({ length: 20 }, () => 1 + rng.int(96));
    const logitsOf = (path: string, lora?: string): Promise<Float32Array> => modelLogits(gpu, ids, path, lora);
    const withLora = await logitsOf(o.baseModel, o.adapters[1]);
    const base = await logitsOf(o.baseModel);
    const mergedSt = await logitsOf(o.mergedSt!);
    const mergedPth = await logitsOf(o.merged!);
    const loraSt = await logitsOf(o.baseModel, o.adaptersSt[1]);
    const effect = relErr(base, withLora);
    const eSt = relErr(mergedSt, withLora);
    const eLora = relErr(loraSt, withLora);
    console.log(
      `vs base+LoRA logits: merged .st ${eSt.toExponential(2)}, merged .pth ${relErr(mergedPth, withLora).toExponential(2)}, ` +
        `LoRA .st ${eLora.toExponential(2)}; the adapter moves them by ${effect.toExponential(2)} [seed ${rng.seed}]`,
    );
    // The model computes over bf16 copies of the weights, so the f16 file is held to the .pth's bound.
    expect(eSt).toBeLessThan(1e-2);
    expect(effect).toBeGreaterThan(20 * eSt);
    // Only the f16 rounding of A, B and the LayerNorm weights (2^-11 relative) separates the LoRA .st from the .pth.
    expect(eLora).toBeLessThan(2e-3);
  });
});
