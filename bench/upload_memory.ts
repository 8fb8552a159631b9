/**
 * GPU memory (nvidia-smi) while 2.8 GiB of bf16 tensors are uploaded in 64 MiB pieces,
 * all at once or with a wait for the GPU every 256 MiB: queue.writeBuffer keeps a staging
 * copy on the GPU until its copy has run (bench/RESULTS.md, Rwkv7Model.create).
 *
 *   node --import tsx bench/upload_memory.ts burst|paced
 */
import { acquireGpu } from '../src/gpu/device.js';
import { gpuMemoryUsedMiB } from './gpu_memory.js';

const mode = process.argv[2];
if (mode !== 'burst' && mode !== 'paced') throw new Error('usage: upload_memory.ts burst|paced');
const gpu = await acquireGpu();
const base = gpuMemoryUsedMiB();
const piece = new Uint16Array(32 * 2 ** 20);
let peakDuring = 0;
for (let i = 0; i < 45; i++) {
  gpu.upload(piece, [piece.length], 'bf16', `w${i}`);
  if (mode === 'paced' && i % 4 === 3) await gpu.sync();
  if (i % 8 === 0) peakDuring = Math.max(peakDuring, gpuMemoryUsedMiB() ?? 0);
}
const afterUpload = gpuMemoryUsedMiB();
await gpu.sync();
await new Promise((r) => setTimeout(r, 1500));
console.log(JSON.stringify({ mode, baseMiB: base, peakDuringMiB: peakDuring, afterUploadMiB: afterUpload, settledMiB: gpuMemoryUsedMiB(), poolMiB: gpu.memory().currentBytes / 2 ** 20 }));
