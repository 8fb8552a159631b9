/**
 * How fast the tensor cores go through this stack (Dawn, WGSL subgroup matrices, Vulkan
 * cooperative matrices), piece by piece: `node --import tsx bench/tc_ceiling.ts`.
 * Each probe is a tiling's inner loop (TM×TN 16×16 accumulators per subgroup, BK 32 per
 * step, no global memory) with some of the product kernel's work per step (PROBES): the
 * fragment loads from workgroup memory, the barriers, the scalar f16 staging stores. Then
 * the product kernel itself on two 1.5B shapes (f16 weight, A's f16 copy excluded).
 * What a probe does not reach, the product kernel cannot either.
 */
import { acquireGpu } from '../src/gpu/device.js';
import { grid1d, uniforms, WGSL_LINEAR_WG } from '../src/kernels/common.js';
import { matmulTcWeight, stagingStore, TC_TILING, tcSupport, type TcTiling } from '../src/kernels/matmul_tc.js';
import { f32ToF16Bits } from '../src/gpu/tensor.js';
import { Rng } from '../src/util/rng.js';
import { gpuTime, kernelMs } from './gpu_timing.js';

/** What a probe's K step does besides its multiplies. */
interface Probe {
  name: string;
  /** Fragments loaded from workgroup memory each step (else once, before the loop). */
  lds: boolean;
  /** Barriers per step. */
  barriers: number;
  /** The staging stores: none, in the same word order in every invocation, or the kernel's (stagingStore). */
  stores: 'none' | 'same order' | 'kernel';
}

const PROBES: Probe[] = [
  { name: 'mma', lds: false, barriers: 0, stores: 'none' },
  { name: 'lds', lds: true, barriers: 0, stores: 'none' },
  { name: 'lds+2 barriers', lds: true, barriers: 2, stores: 'none' },
  { name: 'lds+2 barriers+stores, same order', lds: true, barriers: 2, stores: 'same order' },
  { name: 'lds+2 barriers+stores, kernel', lds: true, barriers: 2, stores: 'kernel' },
];

const gpu = await acquireGpu({ profile: true });
const s = tcSupport(gpu);
if (!s || s.shape.M !== 16 || s.shape.N !== 16 || s.shape.K !== 16) throw new Error('tc_ceiling: needs 16x16x16 f16 subgroup matrices');
const SG = s.subgroupSize;

function probeWgsl(t: TcTiling, probe: Probe): string {
  const TH = t.wm * t.wn * SG;
  const BM = t.wm * t.tm * 16;
  const BN = t.wn * t.tn * 16;
  const BK = t.bk;
  const LD = BK + 8;
  const units = ((BM + BN) * BK) / 8 / TH;
  const acc = (i: number, j: number): string => `acc${i}_${j}`;
  const tiles: [number, number][] = [];
  for (let i = 0; i < t.tm; i++) for (let j = 0; j < t.tn; j++) tiles.push([i, j]);
  const loads = (kk: string): string =>
    [
      ...Array.from({ length: t.tm }, (_, i) => `a${i} = subgroupMatrixLoad<subgroup_matrix_left<f16, 16, 16>, row_major>(&sA, (aRow + ${i * 16}u) * ${LD}u + ${kk}, ${LD}u);`),
      ...Array.from({ length: t.tn }, (_, j) => `b${j} = subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>, col_major>(&sB, (bCol + ${j * 16}u) * ${LD}u + ${kk}, ${LD}u);`),
    ].join('\n      ');
  const mmas = tiles.map(([i, j]) => `${acc(i, j)} = subgroupMatrixMultiplyAccumulate(a${i}, b${j}, ${acc(i, j)});`).join('\n      ');
  // The product kernel's staging stores, A's and B's rows padded to LD.
  const stores = Array.from({ length: units }, (_, u) => {
    const aUnits = (BM * BK) / 8;
    const [buf, unit] = u * TH < aUnits ? ['sA', `(li + ${u * TH}u)`] : ['sB', `(li + ${u * TH - aUnits}u)`];
    return stagingStore(buf, '0u', LD, unit, BK / 8, `vec4u(it, it >> 1u, it >> 2u, it >> 3u) + ${u}u`, 'bitcast<vec2<f16>>', probe.stores === 'kernel');
  }).join('\n    ');
  const barrier = probe.barriers > 0 ? 'workgroupBarrier();' : '';
  const body = `${barrier}
    ${probe.stores === 'none' ? '' : stores}
    ${probe.barriers > 1 ? barrier : ''}
    for (var kk = 0u; kk < ${BK}u; kk += 16u) {
      ${probe.lds ? loads('kk + (it & 1u) * 8u') : ''}
      ${mmas}
    }`;
  return /* wgsl */ `diagnostic(off, chromium.subgroup_matrix_uniformity);
enable f16;
enable subgroups;
enable chromium_experimental_subgroup_matrix;
struct P { iters: u32, pad0: u32, pad1: u32, pad2: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> c: array<f32>;
var<workgroup> sA: array<f16, ${BM * LD + 64}>;
var<workgroup> sB: array<f16, ${BN * LD + 64}>;
var<workgroup> sC: array<f32, ${(TH / SG) * 256}>;
@compute @workgroup_size(${TH})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) li: u32, @builtin(subgroup_id) sg: u32,
        @builtin(subgroup_invocation_id) lane: u32) {
  let wg = ${WGSL_LINEAR_WG};
  for (var e = li; e < ${BM * LD + 64}u; e += ${TH}u) { sA[e] = f16(f32(e % 7u) * 0.01); }
  for (var e = li; e < ${BN * LD + 64}u; e += ${TH}u) { sB[e] = f16(f32(e % 5u) * 0.01); }
  workgroupBarrier();
  let aRow = (sg / ${t.wn}u) * ${t.tm * 16}u;
  let bCol = (sg % ${t.wn}u) * ${t.tn * 16}u;
  ${tiles.map(([i, j]) => `var ${acc(i, j)} = subgroup_matrix_result<f32, 16, 16>();`).join('\n  ')}
  ${Array.from({ length: t.tm }, (_, i) => `var a${i} = subgroupMatrixLoad<subgroup_matrix_left<f16, 16, 16>, row_major>(&sA, (aRow + ${i * 16}u) * ${LD}u, ${LD}u);`).join('\n  ')}
  ${Array.from({ length: t.tn }, (_, j) => `var b${j} = subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>, col_major>(&sB, (bCol + ${j * 16}u) * ${LD}u, ${LD}u);`).join('\n  ')}
  for (var it = 0u; it < p.iters; it++) {
    ${body}
  }
  workgroupBarrier();
  var sum = 0.0;
  ${tiles
    .map(([i, j]) => `subgroupMatrixStore<row_major>(&sC, sg * 256u, ${acc(i, j)}, 16u);\n  sum += sC[sg * 256u + lane];`)
    .join('\n  ')}
  c[wg * ${TH}u + li] = sum;
}`;
}

const wgs = 132 * 4;
const iters = 512;
for (const [name, t] of [
  ['2x4x4x4', TC_TILING],
  ['2x2x4x4', { ...TC_TILING, wn: 2 }],
] as const) {
  const th = t.wm * t.wn * SG;
  const out = gpu.tensor([wgs * th], 'f32', 'probe out');
  const flops = wgs * t.wm * t.wn * t.tm * t.tn * 2 * 16 ** 3 * (t.bk / 16) * iters;
  for (const probe of PROBES) {
    const pipe = gpu.pipeline('tcProbe', `${probe.name} ${name}`, ['uniform', 'rw'], () => probeWgsl(t, probe));
    const u = uniforms([
      ['u32', iters],
      ['u32', 0],
      ['u32', 0],
      ['u32', 0],
    ]);
    const time = await gpuTime(gpu, () => gpu.dispatch(pipe, [u, out], grid1d(wgs)));
    console.log(`${name} ${probe.name.padEnd(36)} ${(flops / time.ms / 1e9).toFixed(1)} TFLOP/s (${time.ms.toFixed(3)} ms)`);
  }
  gpu.free(out);
}

const rng = new Rng(3);
// The weights as the bench makes them (normal, std 1/sqrt(K)), then of magnitude 1-2 with random mantissas and signs.
const weights: [string, (k: number) => number][] = [
  ['W ~ N(0, 1/K)', (k) => f32ToF16Bits(rng.normal() / Math.sqrt(k))],
  ['|W| in [1, 2)', () => 0x3c00 ^ (rng.int(1024) & 0x83ff)],
];
for (const [m, n, k] of [
  [8192, 2048, 2048],
  [8192, 8192, 2048],
] as const) {
  const a = gpu.upload(Float32Array.from({ length: m * k }, () => rng.normal()), [m, k], 'f32', 'A');
  const c = gpu.tensor([m, n], 'f32', 'C');
  for (const [what, draw] of weights) {
    const w = gpu.upload(Uint16Array.from({ length: n * k }, () => draw(k)), [n, k], 'f16', 'W');
    const time = await gpuTime(gpu, () => matmulTcWeight(gpu, a, w, c, { m, n, k, alpha: 1, accumulate: false, transA: false, transW: true }, TC_TILING));
    const ms = kernelMs(time, 'matmulTc');
    console.log(`product ${m}x${n}x${k}, ${what}: ${((2 * m * n * k) / ms / 1e9).toFixed(1)} TFLOP/s (${ms.toFixed(3)} ms, product kernel only)`);
    gpu.free(w);
  }
  gpu.free(a);
  gpu.free(c);
}
gpu.destroy();
