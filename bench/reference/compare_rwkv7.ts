/**
 * Runs the WGSL RWKV-7 model (forward, loss, backward) on random weights at real
 * shapes and writes its inputs and outputs for bench/reference/rwkv7_f64.py, the
 * independent float64 PyTorch check.
 *
 *   node --import tsx bench/reference/compare_rwkv7.ts DIR [L C V T B r]
 * Defaults: the 0.1B layout (12 layers, n_embd 768, vocab 65536), T 1024, B 2, r 16.
 * RWKV_MATMUL=f32 keeps every product on the f32 kernel; otherwise the frozen-weight
 * products use tensor cores where the adapter has them, and the check's bounds follow;
 * RWKV_TC_TILING=WMxWNxTMxTNxBK picks their tiling (bench/run.ts --tilings).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { acquireGpu } from '../../src/gpu/device.js';
import { matmulMode } from '../../src/kernels/matmul.js';
import { parseTcTiling, setTcTiling, tcSupport, tcTiling, tcTilingName } from '../../src/kernels/matmul_tc.js';
import { RWKV7_LORA_TARGETS } from '../../src/lora/lora.js';
import { Rwkv7Model } from '../../src/model/rwkv7.js';
import { randomRwkv7Weights, rwkv7DefaultDims } from '../../src/model/rwkv7_init.js';
import { Rng } from '../../src/util/rng.js';

const [dir, Ls = '12', Cs = '768', Vs = '65536', Ts = '1024', Bs = '2', rs = '16'] = process.argv.slice(2);
if (!dir) throw new Error('usage: compare_rwkv7.ts DIR [L C V T B r]');
const [L, C, V, T, B, r] = [Ls, Cs, Vs, Ts, Bs, rs].map(Number);
const alpha = 2 * r;
const dims = rwkv7DefaultDims(L, C, V);
const weights = randomRwkv7Weights(dims, 1);
const rng = new Rng(2);
const M = B * T;
const ids = Int32Array.from({ length: M }, () => rng.int(V));
const labels = Int32Array.from({ length: M }, (_, i) => (i % 7 === 3 ? -100 : rng.int(V)));

type Entry = { dtype: string; shape: number[]; offset: number; nbytes: number };
class Pack {
  readonly index: Record<string, Entry> = {};
  private readonly parts: Uint8Array[] = [];
  private size = 0;
  add(name: string, dtype: string, shape: number[], data: ArrayBufferView): void {
    const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    this.index[name] = { dtype, shape, offset: this.size, nbytes: bytes.byteLength };
    this.parts.push(bytes);
    this.size += bytes.byteLength;
  }
  write(path: string): void {
    writeFileSync(path, Buffer.concat(this.parts));
  }
}

const gpu = await acquireGpu();
if (process.env.RWKV_TC_TILING) setTcTiling(gpu, parseTcTiling(process.env.RWKV_TC_TILING));
const matmulPath = matmulMode(gpu) !== 'f32' && tcSupport(gpu) ? 'tc' : 'f32';
console.log(`frozen-weight products on ${matmulPath === 'tc' ? `tensor cores (f16 operands, tiling ${tcTilingName(tcTiling(gpu))})` : 'the f32 kernel'}`);
const t0 = performance.now();
const model = await Rwkv7Model.create(gpu, weights, { B, T, seed: 3, lora: { r, alpha, dropout: 0, targets: RWKV7_LORA_TARGETS } });
const inputs = new Pack();
for (const [k, t] of weights) inputs.add(k, 'bf16', [...t.shape], t.data);
// LoRA with nonzero B, so every adapter path carries gradient.
for (const e of model.layout.entries) {
  const bound = e.name.endsWith('lora_A') ? 1 / Math.sqrt(e.shape[1]) : 0.5 / Math.sqrt(r);
  const vals = Float32Array.from({ length: e.size }, () => rng.uniform(-bound, bound));
  model.writeParam(e.name, vals);
  inputs.add(e.name, 'f32', e.shape, vals);
}
inputs.add('ids', 'i32', [M], ids);
inputs.add('labels', 'i32', [M], labels);
model.setBatch(ids, labels);
model.forward();
const logits = await model.readLogits();
model.forwardBackward();
const loss = await model.readLoss();
const out = new Pack();
out.add('logits', 'f32', [M, V], logits);
out.add('loss', 'f32', [1], Float32Array.of(loss));
for (const e of model.layout.entries) out.add(e.name, 'f32', e.shape, await model.readGrad(e.name));
console.log(`WGSL model: forward + forward/backward + read-backs in ${((performance.now() - t0) / 1000).toFixed(1)} s; loss ${loss}; GPU memory peak ${(gpu.memory().peakBytes / 2 ** 30).toFixed(2)} GiB`);
mkdirSync(dir, { recursive: true });
inputs.write(`${dir}/inputs.bin`);
out.write(`${dir}/gpu.bin`);
writeFileSync(
  `${dir}/manifest.json`,
  JSON.stringify({ ...dims, B, T, r, alpha, matmul: matmulPath, inputs: inputs.index, gpu: out.index }),
);
gpu.destroy();
