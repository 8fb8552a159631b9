/**
 * How fast plain f32 fmas go through this stack, by how their operands repeat:
 * `node --import tsx bench/ffma_probe.ts`. Each invocation runs 16 independent fma chains
 * (no memory traffic in the loop); the variants differ only in the operands:
 *   distinct  a_k = fma(x_k, y_k, a_k): three distinct registers per fma (as in the WKV7
 *             kernels' sums S·a, S·r, dSᵀ·v, …)
 *   shared    a_k = fma(x_k, y_0, a_k): one operand shared by consecutive fmas
 *   pairs     y shared by each pair of fmas
 *   vec4      the distinct case written as vec4 fmas
 *   chain     one chain of dependent fmas per invocation (latency, not throughput)
 * On NVIDIA three distinct source registers can collide in the register file's banks,
 * which a shared operand (served from the reuse cache) avoids. FFMA_ITERS sets the loop's
 * trip count (default 2048; a few suffice on lavapipe).
 */
import { acquireGpu } from '../src/gpu/device.js';
import { grid1d, uniforms } from '../src/kernels/common.js';
import { gpuTime } from './gpu_timing.js';

const CHAINS = 16;
const rep = (n: number, f: (k: number) => string): string => Array.from({ length: n }, (_, k) => f(k)).join('\n    ');

const BODIES: Record<string, string> = {
  distinct: rep(CHAINS, (k) => `a${k} = fma(x${k}, y${k}, a${k});`),
  shared: rep(CHAINS, (k) => `a${k} = fma(x${k}, y0, a${k});`),
  pairs: rep(CHAINS, (k) => `a${k} = fma(x${k}, y${k >> 1}, a${k});`),
  vec4: rep(CHAINS / 4, (k) => `v${k} = fma(X${k}, Y${k}, v${k});`),
  chain: rep(CHAINS, (k) => `a0 = fma(x${k}, y${k}, a0);`),
};

function probeWgsl(body: string): string {
  const vec = (n: string, k: number): string => `vec4f(${[0, 1, 2, 3].map((c) => `${n}${4 * k + c}`).join(', ')})`;
  return /* wgsl */ `
struct P { iters: u32, pad0: u32, pad1: u32, pad2: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> o: array<f32>;
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let s = f32(gid.x) * 1e-7;
  ${rep(CHAINS, (k) => `var a${k} = s + ${k}.0; let x${k} = s * ${k + 1}.0 + 0.5; let y${k} = 0.999 - s * ${k}.0;`)}
  ${rep(CHAINS / 4, (k) => `var v${k} = ${vec('a', k)}; let X${k} = ${vec('x', k)}; let Y${k} = ${vec('y', k)};`)}
  for (var i = 0u; i < p.iters; i++) {
    ${body}
    ${body}
    ${body}
    ${body}
  }
  var t = 0.0;
  ${rep(CHAINS, (k) => `t += a${k};`)}
  ${rep(CHAINS / 4, (k) => `t += dot(v${k}, vec4f(1.0));`)}
  o[gid.x] = t;
}`;
}

const gpu = await acquireGpu({ profile: true });
const workgroups = 132 * 16;
const iters = Number(process.env.FFMA_ITERS ?? 2048);
const out = gpu.tensor([workgroups * 256], 'f32', 'probe out');
const u = uniforms([
  ['u32', iters],
  ['u32', 0],
  ['u32', 0],
  ['u32', 0],
]);
for (const [name, body] of Object.entries(BODIES)) {
  const pipe = gpu.pipeline('ffmaProbe', name, ['uniform', 'rw'], () => probeWgsl(body));
  const t = await gpuTime(gpu, () => gpu.dispatch(pipe, [u, out], grid1d(workgroups)));
  const fmas = workgroups * 256 * iters * 4 * CHAINS;
  console.log(`${name.padEnd(9)} ${((2 * fmas) / t.ms / 1e9).toFixed(1)} TFLOP/s (${t.ms.toFixed(3)} ms)`);
}
gpu.free(out);
