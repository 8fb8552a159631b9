import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { describeModel } from '../../src/io/describe_model.js';
import { hostFromF32, type CheckpointTensor, type TensorInfo } from '../../src/io/host_tensor.js';
import { loraMetaTensors, readLoraMeta } from '../../src/io/lora_meta.js';
import { loadCheckpoint, modelInfo, openCheckpointBytes, writeCheckpoint } from '../../src/io/model_file.js';
import { encodePth } from '../../src/io/pth.js';
import { rwkv7Shapes, type Rwkv7Dims } from '../../src/model/rwkv7_config.js';
import { freshRng } from '../helpers.js';

const dir = mkdtempSync(join(tmpdir(), 'rwkv-io-model-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const DIMS: Rwkv7Dims = { nLayer: 3, nEmbd: 8, headSize: 4, nHead: 2, vocab: 11, ffnHidden: 32, dW: 4, dA: 6, dV: 2, dG: 5 };

function tensorsOf(shapes: Map<string, number[]>, dtype: 'bf16' | 'f16' | 'f32' = 'bf16'): CheckpointTensor[] {
  const rng = freshRng();
  return [...shapes].map(([name, shape]) => {
    const n = shape.reduce((a, b) => a * b, 1);
    return hostFromF32(name, shape, Array.from(rng.normals(n, 0.1)), dtype);
  });
}

const infos = (shapes: Map<string, number[]>): TensorInfo[] => [...shapes].map(([name, shape]) => ({ name, shape, dtype: 'bf16' }));

/** x060 keys and shapes as the spec's table lists them (C = 8, H = 2, N = 4, D_mix = 2, D_decay = 4, F = 28). */
function x060Shapes(L: number): Map<string, number[]> {
  const C = 8;
  const s = new Map<string, number[]>([['emb.weight', [11, C]], ['blocks.0.ln0.weight', [C]], ['blocks.0.ln0.bias', [C]], ['ln_out.weight', [C]], ['ln_out.bias', [C]], ['head.weight', [11, C]]]);
  for (let l = 0; l < L; l++) {
    const p = `blocks.${l}.`;
    for (const n of ['ln1', 'ln2', 'att.ln_x']) for (const wb of ['weight', 'bias']) s.set(`${p}${n}.${wb}`, [C]);
    for (const m of ['x', 'w', 'k', 'v', 'r', 'g']) s.set(`${p}att.time_maa_${m}`, [1, 1, C]);
    s.set(`${p}att.time_maa_w1`, [C, 10]);
    s.set(`${p}att.time_maa_w2`, [5, 2, C]);
    s.set(`${p}att.time_decay`, [1, 1, C]);
    s.set(`${p}att.time_decay_w1`, [C, 4]);
    s.set(`${p}att.time_decay_w2`, [4, C]);
    s.set(`${p}att.time_faaaa`, [2, 4]);
    for (const m of ['receptance', 'key', 'value', 'output', 'gate']) s.set(`${p}att.${m}.weight`, [C, C]);
    s.set(`${p}ffn.time_maa_k`, [1, 1, C]);
    s.set(`${p}ffn.time_maa_r`, [1, 1, C]);
    s.set(`${p}ffn.key.weight`, [28, C]);
    s.set(`${p}ffn.receptance.weight`, [C, C]);
    s.set(`${p}ffn.value.weight`, [C, 28]);
  }
  return s;
}

describe('describeModel', () => {
  it('recognises an RWKV-7 model and derives every dimension from the shapes', () => {
    const shapes = rwkv7Shapes(DIMS);
    const d = describeModel(infos(shapes));
    expect(d).toMatchObject({ architecture: 'x070', kind: 'model', layout: 'rwkv-lm', nLayer: 3, nEmbd: 8, nHead: 2, headSize: 4, vocab: 11, ffnHidden: 32 });
    expect(d.lowRank).toEqual({ w: 4, a: 6, v: 2, g: 5 });
    expect(d.problems).toEqual([]);
    expect(d.tensorCount).toBe(shapes.size);
    expect(d.parameterCount).toBe([...shapes.values()].reduce((a, s) => a + s.reduce((p, x) => p * x, 1), 0));
    expect(d.dtypes).toEqual({ bf16: shapes.size });
  });

  it('reports shape problems of an RWKV-7 model instead of failing', () => {
    const shapes = rwkv7Shapes(DIMS);
    shapes.set('blocks.1.att.key.weight', [8, 7]);
    expect(describeModel(infos(shapes)).problems).toEqual(["model: tensor 'blocks.1.att.key.weight' has shape [8,7], expected [8,8]"]);
  });

  it('recognises web-rwkv layout (transposed low-rank matrices)', () => {
    const shapes = rwkv7Shapes(DIMS);
    for (const [k, s] of shapes) if (/att\.[wavg][12]$/.test(k)) shapes.set(k, [s[1], s[0]]);
    const d = describeModel(infos(shapes));
    expect([d.architecture, d.layout, d.problems]).toEqual(['x070', 'web-rwkv', []]);
    expect(d.lowRank).toEqual({ w: 4, a: 6, v: 2, g: 5 });
  });

  it('recognises an RWKV-6 model, in RWKV-LM and in web-rwkv names', () => {
    const shapes = x060Shapes(2);
    const d = describeModel(infos(shapes));
    expect(d).toMatchObject({ architecture: 'x060', kind: 'model', layout: 'rwkv-lm', nLayer: 2, nEmbd: 8, nHead: 2, headSize: 4, vocab: 11, ffnHidden: 28 });
    expect(d.lowRank).toEqual({ mix: 2, decay: 4 });
    const renamed = new Map([...shapes].map(([k, s]) => [k.replace('time_faaaa', 'time_first').replace('time_maa', 'time_mix'), /time_maa_w[12]$/.test(k) ? [...s.slice(0, -2), s[s.length - 1], s[s.length - 2]] : s]));
    const w = describeModel(infos(renamed));
    expect([w.architecture, w.layout, w.nHead, w.headSize]).toEqual(['x060', 'web-rwkv', 2, 4]);
    expect(w.lowRank.mix).toBe(2);
  });

  it('recognises LoRA adapters (RWKV-PEFT and web-rwkv names), with alpha from the metadata records', () => {
    const r = 4;
    const shapes = new Map<string, number[]>();
    for (let l = 0; l < 2; l++) {
      for (const m of ['receptance', 'key', 'value', 'output']) {
        shapes.set(`blocks.${l}.att.${m}.lora_A`, [r, 8]);
        shapes.set(`blocks.${l}.att.${m}.lora_B`, [8, r]);
      }
      shapes.set(`blocks.${l}.ffn.key.lora_A`, [r, 8]);
      shapes.set(`blocks.${l}.ffn.key.lora_B`, [32, r]);
      shapes.set(`blocks.${l}.ln1.weight`, [8]);
    }
    const tensors = [...tensorsOf(shapes), ...loraMetaTensors(16, r)];
    const d = describeModel(tensors);
    expect(d).toMatchObject({ kind: 'lora', nLayer: 2, nEmbd: 8, ffnHidden: 32, lora: { r: 4, alpha: 16, targets: ['att.key', 'att.output', 'att.receptance', 'att.value', 'ffn.key'] } });
    expect(d.tensorCount).toBe(shapes.size);
    const st = new Map([...shapes].map(([k, s]) => [k.replace('lora_A', 'lora.0').replace('lora_B', 'lora.1'), k.endsWith('lora_A') ? [s[1], s[0]] : s]));
    const w = describeModel(infos(st));
    expect([w.kind, w.layout, w.lora]).toEqual(['lora', 'web-rwkv', { r: 4, targets: ['att.key', 'att.output', 'att.receptance', 'att.value', 'ffn.key'] }]);
  });

  it('recognises state-tuning files and says when it cannot tell', () => {
    expect(describeModel(infos(new Map([['blocks.0.att.time_state', [2, 4, 4]], ['blocks.1.att.time_state', [2, 4, 4]]])))).toMatchObject({ kind: 'state', nLayer: 2 });
    expect(describeModel(infos(new Map([['foo', [3]]])))).toMatchObject({ architecture: 'unknown', kind: 'partial', parameterCount: 3 });
  });
});

describe('model files', () => {
  it('writes by extension, loads back, and prints the info text', () => {
    const tensors = tensorsOf(rwkv7Shapes(DIMS));
    for (const name of ['m.pth', 'm.st']) {
      const path = join(dir, name);
      writeCheckpoint(path, tensors);
      const got = loadCheckpoint(path);
      // .pth keeps dict order; safetensors orders by dtype, then name
      const names = tensors.map((t) => t.name);
      expect([...got.keys()]).toEqual(name.endsWith('.pth') ? names : [...names].sort());
      for (const t of tensors) expect(Buffer.from(got.get(t.name)!.data).equals(Buffer.from(t.data)), t.name).toBe(true);
      const info = modelInfo(path);
      expect(info).toContain(`file: ${path}`);
      expect(info).toContain(name.endsWith('.pth') ? 'format: PyTorch .pth (zip)' : 'format: safetensors');
      expect(info).toContain('architecture: RWKV-7 (x070), full model');
      expect(info).toContain('dimensions: layers 3, n_embd 8, heads 2 × 4, vocab 11, ffn 32');
      expect(info).toContain('low-rank sizes: w 4, a 6, v 2, g 5');
      expect(info).toMatch(/tensors: \d+ \(bf16 × \d+\), parameters: /);
      expect(info).not.toContain('problem');
    }
    expect(() => writeCheckpoint(join(dir, 'm.onnx'), tensors)).toThrow("cannot tell the format from the extension '.onnx'");
  });

  it('records LoRA alpha and r and prints them', () => {
    const path = join(dir, 'lora.pth');
    const A = hostFromF32('blocks.0.att.key.lora_A', [2, 8], new Array(16).fill(0.5), 'bf16');
    const B = hostFromF32('blocks.0.att.key.lora_B', [8, 2], new Array(16).fill(0), 'bf16');
    writeCheckpoint(path, [A, B, ...loraMetaTensors(32, 2)]);
    expect(readLoraMeta(loadCheckpoint(path))).toEqual({ alpha: 32, r: 2 });
    expect(modelInfo(path)).toContain('LoRA: r 2, alpha 32, targets att.key');
    expect(readLoraMeta(new Map([['x', A]]))).toBeUndefined();
  });

  it('detects the format by content, the extension only explaining a damaged file', () => {
    const pth = encodePth([hostFromF32('x', [1], [1], 'f32')]);
    expect(openCheckpointBytes('misnamed.st', pth).format).toBe('pth');
    expect(() => openCheckpointBytes('notes.txt', new TextEncoder().encode('hello, world'))).toThrow(
      "notes.txt: not a model checkpoint: expected a PyTorch .pth (a zip, starting PK\\x03\\x04) or safetensors (u64 header length, then '{'), found bytes 68 65 6c 6c 6f 2c 20 77 6f",
    );
    expect(() => openCheckpointBytes('w.bin', new TextEncoder().encode('hello, world'))).toThrow('w.bin: not a torch zip checkpoint');
    expect(() => openCheckpointBytes('w.safetensors', new Uint8Array(3))).toThrow('w.safetensors: 3 bytes is too short for a safetensors header length');
    const path = join(dir, 'empty.pth');
    writeFileSync(path, '');
    expect(() => loadCheckpoint(path)).toThrow(`${path}: the file is empty (0 bytes)`);
  });
});
