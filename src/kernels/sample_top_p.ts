/**
 * Next-token sampling on the GPU, as the rwkv pip package samples: softmax,
 * keep every token whose probability is at least the top-p cutoff (the smallest
 * probability among the most likely tokens whose mass reaches top_p), raise the
 * kept probabilities to 1/temperature, renormalise, draw with a host-given
 * uniform u. Temperature 0 keeps only the most likely token(s).
 *
 * One workgroup: the cutoff is found by bisection on the probability threshold
 * (each probe one reduction over the vocabulary), so nothing is sorted and only
 * the chosen id is read back.
 */
import type { GpuRuntime } from '../gpu/device.js';
import { numel, type Tensor } from '../gpu/tensor.js';
import { uniforms } from './common.js';

const WG = 256;
/** Bisection probes: the threshold interval shrinks to 2^-40 of the top probability. */
const PROBES = 40;

const SHADER = /* wgsl */ `
struct P { V: u32, stride: u32, row: u32, temperature: f32, topP: f32, u: f32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read_write> probs: array<f32>;
@group(0) @binding(3) var<storage, read_write> token: array<u32>;
var<workgroup> red: array<f32, ${WG}>;
var<workgroup> chosen: atomic<u32>;

// Sum (or max) of v over the workgroup, the same value in every invocation.
fn reduce(li: u32, v: f32, isMax: bool) -> f32 {
  red[li] = v;
  for (var s = ${WG / 2}u; s > 0u; s >>= 1u) {
    workgroupBarrier();
    if (li < s) { red[li] = select(red[li] + red[li + s], max(red[li], red[li + s]), isMax); }
  }
  let r = workgroupUniformLoad(&red[0]);
  workgroupBarrier();
  return r;
}

var<private> first: u32;
var<private> last: u32;
var<private> base: u32;
var<private> gmax: f32;
var<private> z: f32;

var<private> pmax: f32;
var<private> invT: f32;

fn prob(i: u32) -> f32 { return exp(logits[base + i] - gmax) / z; }

// Kept weight (q/pmax)^(1/temperature); dividing by pmax avoids underflow.
fn weight(q: f32) -> f32 { return select(0.0, pow(q / pmax, invT), q > 0.0); }

// Probability mass of the tokens with probability >= tau.
fn mass(li: u32, tau: f32) -> f32 {
  var s = 0.0;
  for (var i = first; i < last; i++) { let q = prob(i); if (q >= tau) { s += q; } }
  return reduce(li, s, false);
}

@compute @workgroup_size(${WG})
fn main(@builtin(local_invocation_index) li: u32) {
  let chunk = (p.V + ${WG - 1}u) / ${WG}u;
  first = min(li * chunk, p.V);
  last = min(first + chunk, p.V);
  base = p.row * p.stride;
  if (li == 0u) { atomicStore(&chosen, 0u); }

  var m = -3.4e38;
  for (var i = first; i < last; i++) { m = max(m, logits[base + i]); }
  gmax = reduce(li, m, true);
  z = 1.0;
  var s = 0.0;
  for (var i = first; i < last; i++) { s += prob(i); }
  z = reduce(li, s, false);
  pmax = 1.0 / z;
  invT = select(0.0, 1.0 / p.temperature, p.temperature > 0.0);

  // The cutoff: largest threshold whose kept mass still reaches topP.
  var cutoff = pmax;
  if (mass(li, pmax) < p.topP) {
    var lo = 0.0;
    var hi = pmax;
    for (var k = 0u; k < ${PROBES}u; k++) {
      let mid = 0.5 * (lo + hi);
      if (mass(li, mid) >= p.topP) { lo = mid; } else { hi = mid; }
    }
    // Snap to the smallest probability at or above lo (as max of negatives).
    var mn = -3.4e38;
    for (var i = first; i < last; i++) { let q = prob(i); if (q >= lo) { mn = max(mn, -q); } }
    cutoff = -reduce(li, mn, true);
  }

  var cs = 0.0;
  var lastKept = 0u;
  var anyKept = false;
  for (var i = first; i < last; i++) {
    let q = prob(i);
    if (q >= cutoff) { cs += weight(q); lastKept = i; anyKept = true; }
  }
  let total = reduce(li, cs, false);
  for (var i = first; i < last; i++) {
    let q = prob(i);
    probs[i] = select(0.0, weight(q) / total, q >= cutoff);
  }

  // Inverse CDF in token order: this invocation's slice of [0, total).
  red[li] = cs;
  if (anyKept) { atomicMax(&chosen, lastKept); }
  workgroupBarrier();
  var prefix = 0.0;
  for (var j = 0u; j < li; j++) { prefix += red[j]; }
  let goal = p.u * total;
  if (cs > 0.0 && goal >= prefix && goal < prefix + cs) {
    var acc = prefix;
    var pick = lastKept;
    for (var i = first; i < last; i++) {
      let q = prob(i);
      if (q >= cutoff) {
        acc += weight(q);
        if (acc > goal) { pick = i; break; }
      }
    }
    atomicStore(&chosen, pick);
  }
  workgroupBarrier();
  if (li == 0u) { token[0] = atomicLoad(&chosen); }
}`;

export interface SampleOptions {
  /** Row of `logits` to sample from. */
  row: number;
  /** 0 = greedy. */
  temperature: number;
  /** Nucleus mass in [0, 1]; 0 = greedy, 1 = the whole distribution. */
  topP: number;
  /** A uniform draw in [0, 1) from the caller's seeded generator. */
  u: number;
  /** Only ids below this are candidates (a tokenizer smaller than the model's vocabulary); default all. */
  limit?: number;
}

/**
 * Records the sampling of one token from row `row` of logits [rows, V] into
 * token[0] (u32 [1]); probs [limit] receives the distribution it was drawn from.
 */
export function sampleTopP(gpu: GpuRuntime, logits: Tensor, probs: Tensor, token: Tensor, o: SampleOptions): void {
  if (logits.dtype !== 'f32' || logits.shape.length !== 2) throw new Error(`sampleTopP: ${logits.label} must be f32 [rows, V], found ${logits.dtype} [${logits.shape.join(',')}]`);
  const [rows, V] = logits.shape;
  const n = o.limit ?? V;
  if (!(Number.isInteger(n) && n >= 1 && n <= V)) throw new Error(`sampleTopP: limit must be in 1..${V} (the columns of ${logits.label}), found ${o.limit}`);
  if (probs.dtype !== 'f32' || numel(probs.shape) !== n) throw new Error(`sampleTopP: ${probs.label} must be f32 with ${n} elements, found ${probs.dtype} [${probs.shape.join(',')}]`);
  if (token.dtype !== 'u32' || numel(token.shape) !== 1) throw new Error(`sampleTopP: ${token.label} must be u32 [1], found ${token.dtype} [${token.shape.join(',')}]`);
  if (!(Number.isInteger(o.row) && o.row >= 0 && o.row < rows)) throw new Error(`sampleTopP: row ${o.row} is outside ${logits.label} (${rows} rows)`);
  if (!(o.temperature >= 0 && Number.isFinite(o.temperature))) throw new Error(`sampleTopP: temperature must be >= 0, found ${o.temperature}`);
  if (!(o.topP >= 0 && o.topP <= 1)) throw new Error(`sampleTopP: top_p must be in [0, 1], found ${o.topP}`);
  if (!(o.u >= 0 && o.u < 1)) throw new Error(`sampleTopP: u must be in [0, 1), found ${o.u}`);
  const p = gpu.pipeline('sampleTopP', '', ['uniform', 'read', 'rw', 'rw'], () => SHADER);
  // Greedy: a nucleus of zero mass is the most likely token alone.
  const topP = o.temperature === 0 ? 0 : o.topP;
  const u = uniforms([['u32', n], ['u32', V], ['u32', o.row], ['f32', o.temperature], ['f32', topP], ['f32', o.u]]);
  gpu.dispatch(p, [u, logits, probs, token], [1]);
}
