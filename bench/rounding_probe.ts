/**
 * How this GPU rounds: `node --import tsx bench/rounding_probe.ts`.
 * 1. f32 → f16 in f16Rows (pack2x16float): counts the inexact values rounded to nearest,
 *    toward zero, or otherwise.
 * 2. The accumulation of a product of positive values exact in f16 (K = 8192), on tensor
 *    cores and on the f32 kernel: a mean relative error as large as its rms is a bias
 *    (tensor cores truncate). bench/reference/cublas_bias.py measures cuBLAS the same way.
 */
import { acquireGpu } from '../src/gpu/device.js';
import { f16BitsToF32, f32ToF16Bits } from '../src/gpu/tensor.js';
import { f16Rows } from '../src/kernels/f16_rows.js';
import { matmulF32, setMatmulMode } from '../src/kernels/matmul.js';
import { tcSupport } from '../src/kernels/matmul_tc.js';
import { Rng } from '../src/util/rng.js';

const gpu = await acquireGpu();
const rng = new Rng(12345);

const [R, K] = [256, 4096];
const x = Float32Array.from({ length: R * K }, () => rng.uniform(-1, 1));
const xt = gpu.upload(x, [R, K], 'f32', 'x');
const out = gpu.tensor([R, K], 'f16', 'x as f16');
const e = gpu.tensor([R], 'i32', 'exponents');
f16Rows(gpu, xt, 'rows', out, e);
const bits = new Uint16Array(await gpu.read(out));
const ex = new Int32Array(await gpu.read(e));
const counts = { inexact: 0, nearest: 0, towardZero: 0, other: 0 };
for (let i = 0; i < R; i++) {
  for (let j = 0; j < K; j++) {
    const v = Math.fround(x[i * K + j] * 2 ** ex[i]);
    const near = f32ToF16Bits(v);
    if (f16BitsToF32(near) === v) continue;
    counts.inexact++;
    const trunc = Math.abs(f16BitsToF32(near)) > Math.abs(v) ? near - 1 : near;
    const got = bits[i * K + j];
    if (got === near) counts.nearest++;
    else if (got === trunc) counts.towardZero++;
    else counts.other++;
  }
}
console.log(`f16Rows rounding: ${counts.inexact} inexact values; nearest ${counts.nearest}, toward zero ${counts.towardZero}, other ${counts.other}`);

const [M, N, KK] = [512, 512, 8192];
const exactF16 = (n: number): Float32Array => Float32Array.from({ length: n }, () => 1 + Math.floor(rng.uniform(0, 1023)) / 1024);
const a = exactF16(M * KK);
const b = exactF16(KK * N);
const at = gpu.upload(a, [M, KK], 'f32', 'a');
const bt = gpu.upload(b, [KK, N], 'f32', 'b');
for (const mode of tcSupport(gpu) ? (['tc', 'f32'] as const) : (['f32'] as const)) {
  setMatmulMode(gpu, mode);
  const c = gpu.tensor([M, N], 'f32', 'c');
  matmulF32(gpu, at, bt, c);
  const got = await gpu.readF32(c);
  let bias = 0;
  let sq = 0;
  let n = 0;
  for (let i = 0; i < M; i += 7) {
    for (let j = 0; j < N; j += 5) {
      let ref = 0;
      for (let k = 0; k < KK; k++) ref += a[i * KK + k] * b[k * N + j];
      const d = (got[i * N + j] - ref) / ref;
      bias += d;
      sq += d * d;
      n++;
    }
  }
  console.log(`${mode} product ${M}x${N}x${KK} of positive f16-exact values: mean relative error ${(bias / n).toExponential(2)}, rms ${Math.sqrt(sq / n).toExponential(2)} (f32 unit roundoff 6e-8)`);
}
