/**
 * The RWKV-7 (x070) model with LoRA on the GPU: explicit forward and backward
 * per block, in the spirit of llm.c. Every buffer is sized once for the
 * micro-batch [B, T]; a training step allocates nothing.
 *
 * Trainable tensors (LoRA A/B, and LayerNorm/GroupNorm weights with trainLn) live
 * in one flat f32 buffer `params` with gradients in `grads`, both laid out by
 * src/lora/lora.ts. The backward always adds into `grads` (micro-batch
 * accumulation); the optimizer zeroes them.
 *
 * The logits [B·T, V] are never held whole (at B·T = 8192, V = 65536 they are 2 GiB,
 * more than one binding holds): the head, the cross-entropy and the head's backward run
 * over chunks of at most headChunk rows, each chunk's logits overwritten by its dlogits
 * and turned into its rows of dx before the next chunk reuses the buffer.
 *
 * The embedding stays on the host: it is frozen and a batch reads only its own rows,
 * so setBatch gathers them there and uploads them as bf16 (on the GPU it took 0.25 and 0.31 GiB
 * at 1.5B and 2.9B, for an upload of 1.5 MiB (0.1B, micro_bsz 1) to 40 MiB (2.9B,
 * micro_bsz 8) a step).
 */
import type { GpuRuntime } from '../gpu/device.js';
import type { Tape } from '../gpu/tape.js';
import { view, type DType, type Tensor } from '../gpu/tensor.js';
import { countValidTargets, crossEntropy, meanLoss } from '../kernels/cross_entropy.js';
import { dropout } from '../kernels/dropout.js';
import { activation, activationBackward, axpby, fill, widenBf16 } from '../kernels/elementwise.js';
import { groupNorm, groupNormBackward } from '../kernels/layernorm.js';
import { matmulMode, matmulWeight, matmulF32 } from '../kernels/matmul.js';
import { tcTiling, tcTilingName } from '../kernels/matmul_tc.js';
import * as ops from '../kernels/rwkv7_ops.js';
import { allocWkv7Saved, wkv7Backward, wkv7Forward, type Wkv7Saved } from '../kernels/wkv7.js';
import { buildLayout, initialValues, loraSpecs, type LoraConfig, type Rwkv7LoraTarget, type TrainableLayout } from '../lora/lora.js';
import { rwkv7Dims, type Rwkv7Dims } from './rwkv7_config.js';
import { GpuWeights, hostBf16Bits, hostToF32, type HostTensor } from './weights.js';

const LN_EPS = 1e-5;
const GN_EPS = 64e-5;
/**
 * The default head chunk keeps one chunk's f32 logits within this (256 rows at V = 65536;
 * their f16 copy for the tensor cores takes half as much again). On an H200, 1024 rows held
 * 0.28 GiB more at n_embd 2560, ran 2% faster at 0.1B micro_bsz 1 and 1% slower at 1.5B
 * micro_bsz 8 (bench/RESULTS.md).
 */
const HEAD_CHUNK_BYTES = 64 * 2 ** 20;

export interface Rwkv7Options {
  /** Sequences per micro-batch. */
  B: number;
  /** Tokens per sequence. */
  T: number;
  lora: LoraConfig;
  /** Also train every LayerNorm and GroupNorm weight and bias (RWKV-PEFT's train_parts "ln"). */
  trainLn?: boolean;
  /** Activation checkpointing: keep only block inputs and recompute each block in the backward. */
  gradCp?: boolean;
  /** RWKV's L2Wrap term in the loss gradient (default on, as in RWKV-PEFT). */
  l2wrap?: boolean;
  /**
   * Rows (tokens) per chunk of the head and cross-entropy; default the most whose f32
   * logits fit in 64 MiB and in one binding, at most B·T. Any size is exact: chunks
   * only split rows, and the loss's mean and L2Wrap use the whole batch's counts.
   */
  headChunk?: number;
  /** Seed of the LoRA initialisation. */
  seed: number;
  /** Initial WKV state per layer, f32 [B, H, N, N] values (row = value dim); zero when absent. */
  initialStates?: (Float32Array | undefined)[];
  /** Where the weights came from, for error messages. */
  source?: string;
  /** n_layer / n_embd from a config, checked against the weights. */
  expect?: { nLayer?: number; nEmbd?: number };
}

const SMALL_MATRICES = ['w1', 'w2', 'a1', 'a2', 'v1', 'v2', 'g1', 'g2'];
const BIG_MATRICES = ['att.receptance.weight', 'att.key.weight', 'att.value.weight', 'att.output.weight', 'ffn.key.weight', 'ffn.value.weight'];
/** Bytes of weights uploaded between waits for the GPU in Rwkv7Model.create. */
const UPLOAD_SLICE = 256 * 2 ** 20;

/** The frozen tensors the model reads: matrices stay 2 bytes an element on the GPU (weights.ts), vectors become f32. */
function frozenWeights(nLayer: number): [string, 'matrix' | 'vector'][] {
  const out: [string, 'matrix' | 'vector'][] = [];
  const matrix = (k: string): number => out.push([k, 'matrix']);
  const vector = (k: string): number => out.push([k, 'vector']);
  matrix('head.weight');
  for (const k of ['ln_out.weight', 'ln_out.bias', 'blocks.0.ln0.weight', 'blocks.0.ln0.bias']) vector(k);
  for (let l = 0; l < nLayer; l++) {
    const p = `blocks.${l}.`;
    for (const m of BIG_MATRICES) matrix(p + m);
    for (const m of SMALL_MATRICES) if (l > 0 || m[0] !== 'v') matrix(`${p}att.${m}`);
    for (const v of ['x_r', 'x_w', 'x_k', 'x_v', 'x_a', 'x_g', 'w0', 'a0', 'k_k', 'k_a', 'r_k', 'ln_x.weight', 'ln_x.bias']) vector(`${p}att.${v}`);
    if (l > 0) vector(`${p}att.v0`);
    for (const v of ['ln1.weight', 'ln1.bias', 'ln2.weight', 'ln2.bias']) vector(p + v);
    vector(`${p}ffn.x_k`);
  }
  return out;
}

/**
 * Activations of one block that its backward reads. What only the forward needs
 * (Transient) is not kept per block.
 */
interface Arena {
  st1: Tensor;
  xr: Tensor; xk: Tensor; xv: Tensor;
  r: Tensor; k: Tensor; v: Tensor;
  uw: Tensor; wraw: Tensor;
  a: Tensor;
  /** Absent for layer 0 without grad_cp: layer 0 has no value residual. */
  zv: Tensor | undefined; vmix: Tensor;
  ug: Tensor; g: Tensor;
  kk: Tensor; kt: Tensor; aw: Tensor; bw: Tensor;
  y: Tensor; saved: Wkv7Saved; gn: Tensor; stx: Tensor; opre: Tensor;
  xmid: Tensor; st2: Tensor; xk2: Tensor; hk: Tensor;
  /** LoRA hidden h = dropout(x)·Aᵀ per target. */
  h: Map<Rwkv7LoraTarget, Tensor>;
}

/**
 * Values the forward makes and uses within a block and the backward never reads
 * (frozen products and their inputs; relu² of hk, which the backward recomputes for the
 * ffn.value LoRA). They live in gradient-arena buffers: a block's forward never
 * overlaps a backward (with grad_cp it runs between two blocks' backwards).
 */
interface Transient {
  xln1: Tensor; xw: Tensor; xa: Tensor; xg: Tensor; za: Tensor; xln2: Tensor;
  tw: Tensor; ua: Tensor; uv: Tensor; sg: Tensor; hr: Tensor;
}

/**
 * Gradients of activations inside a block; shared by all layers. Several names share a
 * buffer where one value is dead before the other is written (makeGradArena).
 */
interface GradArena {
  /** The head's ∂L/∂ln_out output (assembled chunk by chunk), read before any block's backward. */
  dxo: Tensor;
  dhr: Tensor; dhk: Tensor; dxk2: Tensor; dxln2: Tensor;
  dopre: Tensor; dgn: Tensor; dr: Tensor; dkt: Tensor; dv: Tensor; dg: Tensor; dy: Tensor;
  dwraw: Tensor; daw: Tensor; dbw: Tensor; dk: Tensor; da: Tensor; dvraw: Tensor;
  dzv: Tensor; duv: Tensor; dsg: Tensor; dug: Tensor; dza: Tensor; dua: Tensor; dtw: Tensor; duw: Tensor;
  dxr: Tensor; dxw: Tensor; dxk: Tensor; dxv: Tensor; dxa: Tensor; dxg: Tensor; dxln1: Tensor;
  /** LoRA scratch: dh [M, r]; with LoRA dropout, the dropped-out input of the widest target and its gradient. */
  dh: Tensor; xdrop: Tensor | undefined; dxdrop: Tensor | undefined;
}

/** What the model's GPU memory is for. */
export type Rwkv7MemoryCategory = 'weights' | 'trainable' | 'activations' | 'wkvSaved' | 'backward' | 'logits';

/**
 * Bytes the model holds by category, counted as its buffers' sizes (what
 * the GPU really holds). The optimizer's moments (AdamW: 2 × params) and the runtime's
 * pooled kernel scratch are not the model's and not included.
 */
export interface Rwkv7Memory {
  /** Frozen base weights on the GPU: bf16 or f16 matrices, f32 vectors (the embedding stays on the host). */
  weights: number;
  /** Trainable parameters and their gradients; initial WKV states and theirs. */
  trainable: number;
  /** What the backward reads from the forward: block inputs, per-block activations (one block's with grad_cp), embedding, v_first, ln_out. */
  activations: number;
  /** The WKV7 forward's state checkpoints and sa, per block (one block's with grad_cp). */
  wkvSaved: number;
  /** The backward's gradient buffers, shared by all blocks (the forward's transient values live in them too). */
  backward: number;
  /** One head chunk: logits [headChunk, V] (dlogits in place) and its rows of ln_out / dx; the row losses. */
  logits: number;
  total: number;
}

export class Rwkv7Model {
  readonly dims: Rwkv7Dims;
  readonly layout: TrainableLayout;
  readonly params: Tensor;
  readonly grads: Tensor;
  readonly B: number;
  readonly T: number;
  readonly M: number;
  /** Rows per chunk of the head and cross-entropy. */
  readonly headChunk: number;
  /** Mean loss over valid labels, f32 [1], after forwardBackward(). */
  readonly lossOut: Tensor;
  /** u32 [1]: the step's dropout seed, written by setBatch. */
  readonly seed: Tensor;
  private readonly w: GpuWeights;
  private readonly opts: Rwkv7Options;
  private readonly scale: number;
  /** The embedding's bf16 bits [V, C] on the host; the batch's rows of it, gathered on the host, then on the GPU. */
  private readonly embTable: Uint16Array;
  private readonly embRowsHost: Uint16Array;
  private readonly embRows: Tensor;
  private readonly targets: Tensor;
  private readonly rowLoss: Tensor;
  private readonly nValid: Tensor;
  /** Block inputs x_0..x_L (x_L is the last block's output). */
  private readonly xs: Tensor[];
  private readonly xemb: Tensor;
  private readonly st0: Tensor;
  private readonly vfirst: Tensor;
  private readonly dvfirst: Tensor;
  private readonly xo: Tensor;
  private readonly sto: Tensor;
  private readonly dx: Tensor;
  /** One chunk's logits [headChunk, V], then its dlogits in place. */
  private readonly logitsChunk: Tensor;
  /**
   * One chunk's rows of ln_out [headChunk, C], then of dx. Chunk rows are copied in and
   * out (a few MiB a chunk) rather than bound in place: a binding offset must be a
   * multiple of 256 bytes, which row·C·4 need not be.
   */
  private readonly headRows: Tensor;
  private readonly arenas: Arena[];
  private readonly g: GradArena;
  private readonly fwd: Transient;
  private readonly s0: (Tensor | undefined)[];
  /** ∂L/∂s0 per layer, when initial states are given. */
  private readonly ds0: (Tensor | undefined)[];
  private readonly trainable = new Map<string, Tensor>();
  private readonly trainableGrad = new Map<string, Tensor>();
  private readonly dropSalt = new Map<string, number>();
  /** Every buffer this model allocated, returned to the pool by dispose(). */
  private readonly owned: Tensor[] = [];
  private readonly held: Record<Rwkv7MemoryCategory, number> = { weights: 0, trainable: 0, activations: 0, wkvSaved: 0, backward: 0, logits: 0 };
  /** forwardBackward's recorded steps, by what they depend on besides the model (GpuRuntime.taped). */
  private readonly tapes = new Map<string, Tape>();

  /**
   * The model with its frozen weights uploaded in slices, waiting for the GPU between them:
   * queue.writeBuffer stages its data on the GPU until the copy has run, so uploading a whole
   * model before anything waits held it twice (a 2.8 GiB upload peaked at 5.3 GiB on an H200,
   * 2.7 GiB paced). Prefer it to the constructor for large models.
   */
  static async create(gpu: GpuRuntime, host: ReadonlyMap<string, HostTensor>, opts: Rwkv7Options): Promise<Rwkv7Model> {
    const d = rwkv7Dims(host, opts.source ?? 'model', opts.expect);
    const w = new GpuWeights(gpu);
    let pending = 0;
    for (const [k, kind] of frozenWeights(d.nLayer)) {
      const t = kind === 'matrix' ? w.uploadMatrix(k, host.get(k)!) : w.uploadVector(k, host.get(k)!);
      pending += t.byteLength;
      if (pending >= UPLOAD_SLICE) {
        await gpu.sync();
        pending = 0;
      }
    }
    try {
      return new Rwkv7Model(gpu, host, opts, w);
    } catch (e) {
      w.free();
      throw e;
    }
  }

  constructor(
    private readonly gpu: GpuRuntime,
    host: ReadonlyMap<string, HostTensor>,
    opts: Rwkv7Options,
    uploaded?: GpuWeights,
  ) {
    this.opts = opts;
    const d = (this.dims = rwkv7Dims(host, opts.source ?? 'model', opts.expect));
    const { B, T } = opts;
    if (!(Number.isInteger(B) && B >= 1 && Number.isInteger(T) && T >= 1)) throw new Error(`micro-batch must be B, T >= 1, got B=${B} T=${T}`);
    this.B = B;
    this.T = T;
    const M = (this.M = B * T);
    const C = d.nEmbd;
    const F = d.ffnHidden;
    const r = opts.lora.r;
    this.scale = opts.lora.alpha / r;

    // Frozen weights, uploaded here unless create() did it.
    const get = (k: string): HostTensor => host.get(k)!;
    this.embTable = hostBf16Bits(get('emb.weight'));
    this.w = uploaded ?? new GpuWeights(gpu);
    for (const [k, kind] of frozenWeights(d.nLayer)) {
      if (uploaded) this.count('weights', this.w.get(k));
      else this.count('weights', kind === 'matrix' ? this.w.uploadMatrix(k, get(k)) : this.w.uploadVector(k, get(k)));
    }

    // Trainable parameters in one flat buffer.
    const specs = loraSpecs(d.nLayer, C, F, opts.lora);
    if (opts.trainLn) for (const name of lnNames(d.nLayer)) specs.push({ name, shape: [C] });
    this.layout = buildLayout(specs);
    this.params = this.own('trainable', gpu.upload(
      initialValues(this.layout, opts.seed, (name) => hostToF32(get(name))),
      [this.layout.size],
      'f32',
      'params',
      true,
    ));
    this.grads = this.alloc('trainable', [this.layout.size], 'f32', 'grads');
    fill(gpu, this.grads, 0);
    for (const e of this.layout.entries) {
      this.trainable.set(e.name, view(this.params, e.offset, e.shape, e.name));
      this.trainableGrad.set(e.name, view(this.grads, e.offset, e.shape, `grad ${e.name}`));
    }
    let salt = 1;
    for (const e of this.layout.entries) if (e.name.endsWith('.lora_A')) this.dropSalt.set(e.name, salt++);

    // Activations.
    const act = (shape: number[], label: string): Tensor => this.alloc('activations', shape, 'f32', label);
    this.targets = this.alloc('logits', [M], 'i32', 'targets');
    this.seed = this.alloc('activations', [1], 'u32', 'dropout seed');
    this.rowLoss = this.alloc('logits', [M], 'f32', 'rowLoss');
    this.nValid = this.alloc('logits', [1], 'u32', 'nValid');
    this.lossOut = this.alloc('logits', [1], 'f32', 'loss');
    this.embRowsHost = new Uint16Array(M * C);
    this.embRows = this.alloc('activations', [M, C], 'bf16', 'embedding rows');
    this.xemb = act([M, C], 'xemb');
    this.st0 = act([M, 2], 'ln0 stats');
    this.xs = Array.from({ length: d.nLayer + 1 }, (_, l) => act([M, C], `x${l}`));
    this.vfirst = act([M, C], 'v_first');
    this.xo = act([M, C], 'ln_out');
    this.sto = act([M, 2], 'ln_out stats');
    this.dvfirst = this.alloc('backward', [M, C], 'f32', 'd v_first');
    this.dx = this.alloc('backward', [M, C], 'f32', 'dx');
    this.headChunk = this.chooseHeadChunk(opts.headChunk);
    this.logitsChunk = this.alloc('logits', [this.headChunk, d.vocab], 'f32', 'logits chunk');
    this.headRows = this.alloc('logits', [this.headChunk, C], 'f32', 'head rows');
    [this.g, this.fwd] = this.makeGradArena();
    const nArenas = opts.gradCp ? 1 : d.nLayer;
    this.arenas = Array.from({ length: nArenas }, (_, i) => this.makeArena(i));
    this.s0 = [];
    this.ds0 = [];
    for (let l = 0; l < d.nLayer; l++) {
      const s = opts.initialStates?.[l];
      const shape = [B, d.nHead, d.headSize, d.headSize];
      this.s0.push(s ? this.own('trainable', gpu.upload(s, shape, 'f32', `s0.${l}`, true)) : undefined);
      const ds = s ? this.alloc('trainable', shape, 'f32', `ds0.${l}`) : undefined;
      if (ds) fill(gpu, ds, 0);
      this.ds0.push(ds);
    }
  }

  /** opts.headChunk, or the most rows whose f32 logits fit in HEAD_CHUNK_BYTES and in one binding; at most M. */
  private chooseHeadChunk(want: number | undefined): number {
    if (want !== undefined) {
      if (!(Number.isInteger(want) && want >= 1)) throw new Error(`headChunk must be a positive integer, got ${want}`);
      return Math.min(want, this.M);
    }
    const bytes = Math.min(HEAD_CHUNK_BYTES, this.gpu.limits.maxStorageBufferBindingSize);
    return Math.max(1, Math.min(this.M, Math.floor(bytes / (4 * this.dims.vocab))));
  }

  private count(category: Rwkv7MemoryCategory, t: Tensor): Tensor {
    this.held[category] += t.buffer.size;
    return t;
  }

  private own(category: Rwkv7MemoryCategory, t: Tensor): Tensor {
    this.owned.push(t);
    return this.count(category, t);
  }

  private alloc(category: Rwkv7MemoryCategory, shape: readonly number[], dtype: DType, label: string): Tensor {
    return this.own(category, this.gpu.tensor(shape, dtype, label, true));
  }

  /** GPU memory the model holds, by category. */
  memory(): Rwkv7Memory {
    const h = this.held;
    return { ...h, total: h.weights + h.trainable + h.activations + h.wkvSaved + h.backward + h.logits };
  }

  /** Returns every buffer of this model to the pool (the model is unusable afterwards). */
  dispose(): void {
    this.gpu.submit();
    this.tapes.clear();
    for (const t of this.owned.splice(0)) this.gpu.free(t);
    this.w.free();
  }

  private makeArena(i: number): Arena {
    const { nEmbd: C, ffnHidden: F, dW, dG, nHead: H, headSize: N } = this.dims;
    const M = this.M;
    const t = (shape: number[], name: string): Tensor => this.alloc('activations', shape, 'f32', `a${i}.${name}`);
    const mc = (name: string): Tensor => t([M, C], name);
    const h = new Map<Rwkv7LoraTarget, Tensor>();
    for (const target of this.opts.lora.targets) h.set(target, t([M, this.opts.lora.r], `h.${target}`));
    const saved = allocWkv7Saved(this.gpu, { B: this.B, T: this.T, H, N }, `a${i}.wkv`);
    this.own('wkvSaved', saved.states);
    this.own('wkvSaved', saved.sa);
    return {
      st1: t([M, 2], 'st1'),
      xr: mc('xr'), xk: mc('xk'), xv: mc('xv'),
      r: mc('r'), k: mc('k'), v: mc('v'),
      uw: t([M, dW], 'uw'), wraw: mc('wraw'),
      a: mc('a'),
      zv: i > 0 || this.opts.gradCp ? mc('zv') : undefined, vmix: mc('vmix'),
      ug: t([M, dG], 'ug'), g: mc('g'),
      kk: mc('kk'), kt: mc('kt'), aw: mc('aw'), bw: mc('bw'),
      y: mc('y'), saved,
      gn: mc('gn'), stx: t([M * H, 2], 'stx'), opre: mc('opre'),
      xmid: mc('xmid'), st2: t([M, 2], 'st2'), xk2: mc('xk2'), hk: t([M, F], 'hk'),
      h,
    };
  }

  /** The gradient arena, and the forward's transient values in its buffers. */
  private makeGradArena(): [GradArena, Transient] {
    const { nEmbd: C, ffnHidden: F, dW, dA, dV, dG } = this.dims;
    const M = this.M;
    const t = (shape: number[], name: string): Tensor => this.alloc('backward', shape, 'f32', `g.${name}`);
    // Nine [M, C] buffers hold every C-wide gradient. In blockBackward's order a name
    // takes a buffer only once the buffer's previous value has been read for the last time,
    // and never one the same kernel reads (name (buffer)):
    //   head: dxo (0); channel mix: dxk2 (0) → dxln2 (1);
    //   bonus/gate: dopre (0) → dgn (1) dr (2) dkt (3) dv (4) dg (5); ln_x: dgn → dy (0);
    //   WKV: dy → dwraw (6) daw (8) dbw (7), adding into dr, dkt, dv;
    //   key prep: dkt daw dbw → dk (0) da (1); value residual: dv → dvraw (3) dzv (8) → duv → dxv (7);
    //   gate: dg → dsg → dug → dxg (4); a: da → dza (5) → dua → dxa (8); w: dwraw → dtw → duw → dxw (5);
    //   r, k, v: dr → dxr (1), dk → dxk (2), dvraw → dxv (7); token shift: → dxln1 (6).
    // Nine is the most live at once: at key prep, its three inputs and two outputs, dr, dv, dg, dwraw.
    const s = Array.from({ length: 9 }, (_, i) => t([M, C], `c${i}`));
    const dropWidth = this.opts.lora.dropout > 0 ? Math.max(C, F) : 0;
    const g: GradArena = {
      dxo: s[0],
      dhr: t([M, F], 'dhr'), dhk: t([M, F], 'dhk'), dxk2: s[0], dxln2: s[1],
      dopre: s[0], dgn: s[1], dr: s[2], dkt: s[3], dv: s[4], dg: s[5], dy: s[0],
      dxr: s[1], dwraw: s[6], dxk: s[2], dxv: s[7], daw: s[8], dbw: s[7],
      dk: s[0], da: s[1], dvraw: s[3], dzv: s[8], dxg: s[4], dza: s[5], dxa: s[8], dxw: s[5], dxln1: s[6],
      duv: t([M, Math.max(dV, 1)], 'duv'), dsg: t([M, dG], 'dsg'), dug: t([M, dG], 'dug'),
      dua: t([M, dA], 'dua'), dtw: t([M, dW], 'dtw'), duw: t([M, dW], 'duw'),
      dh: t([M, this.opts.lora.r], 'dh'),
      xdrop: dropWidth ? t([M, dropWidth], 'xdrop') : undefined,
      dxdrop: dropWidth ? t([M, dropWidth], 'dxdrop') : undefined,
    };
    // Several are live at once within a block's forward, so each has a buffer of its own;
    // none is xdrop, which the forward's LoRA dropout uses.
    const fwd: Transient = {
      xln1: s[0], xw: s[1], xa: s[2], xg: s[3], za: s[4], xln2: s[5],
      tw: g.dtw, ua: g.dua, uv: g.duv, sg: g.dsg, hr: g.dhk,
    };
    return [g, fwd];
  }

  // ---- inputs ----

  /**
   * Uploads a micro-batch: the embedding rows of ids [B·T] (each < vocab), labels [B·T]
   * (−100 = no loss) and the step's dropout seed.
   */
  setBatch(ids: ArrayLike<number>, labels: ArrayLike<number>, dropoutSeed = 0): void {
    const { M } = this;
    const V = this.dims.vocab;
    if (ids.length !== M || labels.length !== M) throw new Error(`setBatch: expected ${M} ids and labels (B=${this.B} × T=${this.T}), got ${ids.length} and ${labels.length}`);
    for (let i = 0; i < M; i++) {
      if (!(Number.isInteger(ids[i]) && ids[i] >= 0 && ids[i] < V)) throw new Error(`setBatch: token id ${ids[i]} at position ${i} is outside the vocabulary [0, ${V})`);
      if (labels[i] !== -100 && !(Number.isInteger(labels[i]) && labels[i] >= 0 && labels[i] < V)) {
        throw new Error(`setBatch: label ${labels[i]} at position ${i} is neither -100 nor in [0, ${V})`);
      }
    }
    const C = this.dims.nEmbd;
    const rows = this.embRowsHost;
    for (let i = 0; i < M; i++) rows.set(this.embTable.subarray(ids[i] * C, (ids[i] + 1) * C), i * C);
    this.gpu.write(this.embRows, rows);
    this.gpu.write(this.targets, Int32Array.from(labels));
    this.gpu.write(this.seed, Uint32Array.of(dropoutSeed >>> 0));
  }

  // ---- forward ----

  /**
   * Records the forward pass up to the final LayerNorm. The logits are not kept: the
   * loss computes them chunk by chunk, and headLogits / readLogits give them on request.
   */
  forward(): void {
    const d = this.dims;
    const gpu = this.gpu;
    widenBf16(gpu, this.embRows, this.xemb);
    groupNorm(gpu, this.xemb, this.lnWeight('blocks.0.ln0.weight'), this.lnWeight('blocks.0.ln0.bias'), this.xs[0], { groupSize: d.nEmbd, eps: LN_EPS, stats: this.st0 });
    for (let l = 0; l < d.nLayer; l++) this.blockForward(l, this.arena(l));
    groupNorm(gpu, this.xs[d.nLayer], this.lnWeight('ln_out.weight'), this.lnWeight('ln_out.bias'), this.xo, { groupSize: d.nEmbd, eps: LN_EPS, stats: this.sto });
  }

  /**
   * Records the logits of batch rows firstRow .. firstRow + rows − 1 (rows ≤ headChunk)
   * from the last forward() and returns them, [rows, V]. The tensor is the model's chunk
   * buffer: valid until the next headLogits, readLogits or forwardBackward.
   */
  headLogits(firstRow: number, rows: number): Tensor {
    if (!(Number.isInteger(firstRow) && Number.isInteger(rows) && firstRow >= 0 && rows >= 1 && rows <= this.headChunk && firstRow + rows <= this.M)) {
      throw new Error(`headLogits: rows ${firstRow}..${firstRow + rows - 1} must lie in 0..${this.M - 1}, at most headChunk = ${this.headChunk} of them`);
    }
    return this.recordHead(firstRow, rows);
  }

  /**
   * The logits of batch rows firstRow .. firstRow + rows − 1 from the last forward(), read
   * back chunk by chunk into one host array [rows, V] (tests, reference checks, scoring).
   */
  async readLogits(firstRow = 0, rows = this.M - firstRow): Promise<Float32Array> {
    const V = this.dims.vocab;
    if (!(Number.isInteger(firstRow) && Number.isInteger(rows) && firstRow >= 0 && rows >= 1 && firstRow + rows <= this.M)) {
      throw new Error(`readLogits: rows ${firstRow}..${firstRow + rows - 1} must lie in 0..${this.M - 1}`);
    }
    const out = new Float32Array(rows * V);
    for (let r = 0; r < rows; r += this.headChunk) {
      out.set(await this.gpu.readF32(this.recordHead(firstRow + r, Math.min(this.headChunk, rows - r))), r * V);
    }
    return out;
  }

  /** logits rows [first, first + n) = ln_out rows · W_headᵀ into the chunk buffer (n ≤ headChunk), through headRows. */
  private recordHead(first: number, n: number): Tensor {
    const C = this.dims.nEmbd;
    const x = view(this.headRows, 0, [n, C], 'head rows');
    const logits = view(this.logitsChunk, 0, [n, this.dims.vocab], 'logits chunk');
    this.gpu.copy(this.xo, x, 4 * n * C, 4 * first * C, 0);
    matmulWeight(this.gpu, x, this.w.get('head.weight'), logits, { transW: true });
    return logits;
  }

  /**
   * Records forward, loss and backward; gradients are added into `grads`. The step is the
   * same kernels on the same tensors every time, so after the first it is replayed from a
   * tape (GpuRuntime.taped), keyed by what else it depends on: the gradient scale and how
   * this runtime runs its products.
   */
  forwardBackward(gradScale = 1): void {
    const key = `${gradScale} ${matmulMode(this.gpu)} ${tcTilingName(tcTiling(this.gpu))}`;
    this.gpu.taped(this.tapes, key, () => {
      this.forward();
      this.lossAndBackward(gradScale);
    });
  }

  async readLoss(): Promise<number> {
    return (await this.gpu.readF32(this.lossOut))[0];
  }

  private arena(l: number): Arena {
    return this.arenas[this.opts.gradCp ? 0 : l];
  }

  /** A LayerNorm/GroupNorm parameter: the trainable copy when trainLn, else the frozen one. */
  private lnWeight(name: string): Tensor {
    return this.trainable.get(name) ?? this.w.get(name);
  }

  /**
   * out (+)= x·Wᵀ + s·(dropout(x)·Aᵀ)·Bᵀ for a Linear with an optional LoRA adapter; h·Bᵀ
   * rides on the frozen product as extra K where tensor cores run it (matmulWeight).
   */
  private linear(l: number, target: string, x: Tensor, out: Tensor, h: Tensor | undefined, accumulate: boolean): void {
    const gpu = this.gpu;
    const W = this.w.get(`blocks.${l}.${target}.weight`);
    if (!h) {
      matmulWeight(gpu, x, W, out, { transW: true, accumulate });
      return;
    }
    const A = this.trainable.get(`blocks.${l}.${target}.lora_A`)!;
    const B = this.trainable.get(`blocks.${l}.${target}.lora_B`)!;
    matmulF32(gpu, this.dropped(l, target, x), A, h, { transB: true });
    matmulWeight(gpu, x, W, out, { transW: true, accumulate, append: { a: h, scale: this.scale, w: B } });
  }

  /** The LoRA branch's input: x itself, or its dropout into scratch (same mask every time). */
  private dropped(l: number, target: string, x: Tensor): Tensor {
    const p = this.opts.lora.dropout;
    if (p === 0) return x;
    const out = view(this.g.xdrop!, 0, x.shape, 'xdrop');
    dropout(this.gpu, x, out, this.seed, p, this.dropSalt.get(`blocks.${l}.${target}.lora_A`)!);
    return out;
  }

  private blockForward(l: number, a: Arena): void {
    const gpu = this.gpu;
    const d = this.dims;
    const p = `blocks.${l}.att.`;
    const W = (k: string): Tensor => this.w.get(k);
    const hOf = (t: Rwkv7LoraTarget): Tensor | undefined => a.h.get(t);
    const bt = { B: this.B, T: this.T };
    const x = this.xs[l];
    const f = this.fwd;

    // Time mix.
    groupNorm(gpu, x, this.lnWeight(`blocks.${l}.ln1.weight`), this.lnWeight(`blocks.${l}.ln1.bias`), f.xln1, { groupSize: d.nEmbd, eps: LN_EPS, stats: a.st1 });
    ops.tokenShiftLerp(gpu, f.xln1, [W(p + 'x_r'), W(p + 'x_w'), W(p + 'x_k'), W(p + 'x_v'), W(p + 'x_a'), W(p + 'x_g')], [a.xr, f.xw, a.xk, a.xv, f.xa, f.xg], bt);
    this.linear(l, 'att.receptance', a.xr, a.r, hOf('att.receptance'), false);
    this.linear(l, 'att.key', a.xk, a.k, hOf('att.key'), false);
    this.linear(l, 'att.value', a.xv, a.v, hOf('att.value'), false);
    matmulWeight(gpu, f.xw, W(p + 'w1'), a.uw, { transW: false });
    activation(gpu, 'tanh', a.uw, f.tw);
    matmulWeight(gpu, f.tw, W(p + 'w2'), a.wraw, { transW: false });
    ops.addBias(gpu, a.wraw, W(p + 'w0'));
    matmulWeight(gpu, f.xa, W(p + 'a1'), f.ua, { transW: false });
    matmulWeight(gpu, f.ua, W(p + 'a2'), f.za, { transW: false });
    ops.sigmoidBias(gpu, f.za, W(p + 'a0'), a.a);
    if (l === 0) {
      gpu.copy(a.v, this.vfirst);
      gpu.copy(a.v, a.vmix);
    } else {
      matmulWeight(gpu, a.xv, W(p + 'v1'), f.uv, { transW: false });
      matmulWeight(gpu, f.uv, W(p + 'v2'), a.zv!, { transW: false });
      ops.valueResidual(gpu, a.v, this.vfirst, a.zv!, W(p + 'v0'), a.vmix);
    }
    matmulWeight(gpu, f.xg, W(p + 'g1'), a.ug, { transW: false });
    activation(gpu, 'sigmoid', a.ug, f.sg);
    matmulWeight(gpu, f.sg, W(p + 'g2'), a.g, { transW: false });
    ops.keyPrep(gpu, a.k, a.a, W(p + 'k_k'), W(p + 'k_a'), { kk: a.kk, kt: a.kt, aw: a.aw, bw: a.bw }, { headSize: d.headSize });
    wkv7Forward(gpu, { B: this.B, T: this.T, H: d.nHead, N: d.headSize, r: a.r, w: a.wraw, k: a.kt, v: a.vmix, a: a.aw, b: a.bw, s0: this.s0[l], y: a.y, saved: a.saved });
    groupNorm(gpu, a.y, this.lnWeight(p + 'ln_x.weight'), this.lnWeight(p + 'ln_x.bias'), a.gn, { groupSize: d.headSize, eps: GN_EPS, stats: a.stx });
    ops.bonusGate(gpu, a.gn, a.r, a.kt, a.vmix, W(p + 'r_k'), a.g, a.opre, { headSize: d.headSize });
    gpu.copy(x, a.xmid);
    this.linear(l, 'att.output', a.opre, a.xmid, hOf('att.output'), true);

    // Channel mix.
    const b = `blocks.${l}.`;
    groupNorm(gpu, a.xmid, this.lnWeight(b + 'ln2.weight'), this.lnWeight(b + 'ln2.bias'), f.xln2, { groupSize: d.nEmbd, eps: LN_EPS, stats: a.st2 });
    ops.tokenShiftLerp(gpu, f.xln2, [W(b + 'ffn.x_k')], [a.xk2], bt);
    this.linear(l, 'ffn.key', a.xk2, a.hk, hOf('ffn.key'), false);
    activation(gpu, 'reluSq', a.hk, f.hr);
    gpu.copy(a.xmid, this.xs[l + 1]);
    this.linear(l, 'ffn.value', f.hr, this.xs[l + 1], hOf('ffn.value'), true);
  }

  // ---- loss and backward ----

  private lossAndBackward(gradScale: number): void {
    const gpu = this.gpu;
    const d = this.dims;
    const C = d.nEmbd;
    // The mean divides by the whole batch's valid count, so it is taken before any chunk.
    countValidTargets(gpu, this.targets, d.vocab, this.nValid);
    for (let first = 0; first < this.M; first += this.headChunk) {
      const n = Math.min(this.headChunk, this.M - first);
      const logits = this.recordHead(first, n);
      crossEntropy(gpu, logits, this.targets, logits, this.rowLoss, {
        l2wrap: this.opts.l2wrap ?? true,
        gradScale,
        l2wrapTokens: this.M,
        nValid: this.nValid,
        firstRow: first,
      });
      // dx rows = dlogits · W_head, through headRows (its ln_out rows are no longer needed).
      const dxRows = view(this.headRows, 0, [n, C], 'head dx rows');
      matmulWeight(gpu, logits, this.w.get('head.weight'), dxRows, { transW: false });
      gpu.copy(dxRows, this.g.dxo, 4 * n * C, 0, 4 * first * C);
    }
    meanLoss(gpu, this.rowLoss, this.nValid, this.lossOut);
    this.normBackward(this.g.dxo, this.xs[d.nLayer], 'ln_out', this.sto, this.dx, d.nEmbd, false);
    fill(gpu, this.dvfirst, 0);
    for (let l = d.nLayer - 1; l >= 0; l--) {
      if (this.opts.gradCp) this.blockForward(l, this.arenas[0]);
      this.blockBackward(l, this.arena(l));
    }
    if (this.trainable.has('blocks.0.ln0.weight')) {
      // Only ln0's parameter gradients count; its dx (into the free dxo buffer) is discarded.
      this.normBackward(this.dx, this.xemb, 'blocks.0.ln0', this.st0, this.g.dxo, d.nEmbd, false);
    }
  }

  /** Backward of a LayerNorm/GroupNorm named `name` (its .weight/.bias), with parameter grads when trained. */
  private normBackward(dy: Tensor, x: Tensor, name: string, stats: Tensor, dx: Tensor, groupSize: number, accumulateDx: boolean): void {
    groupNormBackward(this.gpu, dy, x, this.lnWeight(`${name}.weight`), stats, dx, {
      groupSize,
      accumulateDx,
      dWeight: this.trainableGrad.get(`${name}.weight`),
      dBias: this.trainableGrad.get(`${name}.bias`),
      accumulateParams: true,
    });
  }

  /**
   * Backward of `linear`: dx (+)= dy·W + s·(dy·B)·A ⊙ dropout mask, and the LoRA
   * gradients dB += s·dyᵀ·h, dA += (s·dy·B)ᵀ·dropout(x).
   */
  private linearBackward(l: number, target: string, dy: Tensor, x: Tensor, h: Tensor | undefined, dx: Tensor, accumulate: boolean): void {
    const gpu = this.gpu;
    const W = this.w.get(`blocks.${l}.${target}.weight`);
    if (!h) {
      matmulWeight(gpu, dy, W, dx, { transW: false, accumulate });
      return;
    }
    const name = `blocks.${l}.${target}`;
    const A = this.trainable.get(`${name}.lora_A`)!;
    const B = this.trainable.get(`${name}.lora_B`)!;
    const dh = this.g.dh;
    matmulF32(gpu, dy, h, this.trainableGrad.get(`${name}.lora_B`)!, { transA: true, accumulate: true, alpha: this.scale });
    matmulF32(gpu, dy, B, dh, { alpha: this.scale });
    matmulF32(gpu, dh, this.dropped(l, target, x), this.trainableGrad.get(`${name}.lora_A`)!, { transA: true, accumulate: true });
    const p = this.opts.lora.dropout;
    if (p === 0) {
      // dh·A rides on the frozen product as extra K where tensor cores run it.
      matmulWeight(gpu, dy, W, dx, { transW: false, accumulate, append: { a: dh, scale: 1, w: A } });
    } else {
      matmulWeight(gpu, dy, W, dx, { transW: false, accumulate });
      const dxd = view(this.g.dxdrop!, 0, x.shape, 'dxdrop');
      matmulF32(gpu, dh, A, dxd);
      dropout(gpu, dxd, dx, this.seed, p, this.dropSalt.get(`${name}.lora_A`)!, { accumulate: true });
    }
  }

  /** From dx = ∂L/∂x_{l+1} in this.dx, leaves ∂L/∂x_l in this.dx. */
  private blockBackward(l: number, a: Arena): void {
    const gpu = this.gpu;
    const d = this.dims;
    const g = this.g;
    const p = `blocks.${l}.att.`;
    const W = (k: string): Tensor => this.w.get(k);
    const hOf = (t: Rwkv7LoraTarget): Tensor | undefined => a.h.get(t);
    const bt = { B: this.B, T: this.T };
    const dx = this.dx;

    // Channel mix: x_{l+1} = xmid + ffn(xmid). The ffn.value LoRA needs its input relu²(hk)
    // again: recomputed by the same kernel (so the same values) into the transient hr,
    // whose buffer (dhk) is written only after.
    const hr = this.fwd.hr;
    const hValue = hOf('ffn.value');
    if (hValue) activation(gpu, 'reluSq', a.hk, hr);
    this.linearBackward(l, 'ffn.value', dx, hr, hValue, g.dhr, false);
    activationBackward(gpu, 'reluSq', a.hk, g.dhr, g.dhk);
    this.linearBackward(l, 'ffn.key', g.dhk, a.xk2, hOf('ffn.key'), g.dxk2, false);
    ops.tokenShiftLerpBackward(gpu, [g.dxk2], [W(`blocks.${l}.ffn.x_k`)], g.dxln2, bt);
    this.normBackward(g.dxln2, a.xmid, `blocks.${l}.ln2`, a.st2, dx, d.nEmbd, true);

    // Time mix: xmid = x_l + att(x_l).
    this.linearBackward(l, 'att.output', dx, a.opre, hOf('att.output'), g.dopre, false);
    ops.bonusGateBackward(gpu, g.dopre, a.gn, a.r, a.kt, a.vmix, W(p + 'r_k'), a.g, { dgn: g.dgn, dr: g.dr, dkt: g.dkt, dv: g.dv, dg: g.dg }, { headSize: d.headSize });
    this.normBackward(g.dgn, a.y, p + 'ln_x', a.stx, g.dy, d.headSize, false);
    wkv7Backward(gpu, {
      B: this.B, T: this.T, H: d.nHead, N: d.headSize,
      r: a.r, w: a.wraw, k: a.kt, v: a.vmix, a: a.aw, b: a.bw, dy: g.dy, saved: a.saved,
      dr: g.dr, dw: g.dwraw, dk: g.dkt, dv: g.dv, da: g.daw, db: g.dbw, ds0: this.ds0[l], accumulate: true,
      // The bonus/gate paths wrote their part of dr, dk̃ and dv.
      addInto: ['dr', 'dk', 'dv'],
    });
    ops.keyPrepBackward(gpu, g.dkt, g.daw, g.dbw, a.k, a.a, W(p + 'k_k'), W(p + 'k_a'), a.kk, { dk: g.dk, da: g.da }, { headSize: d.headSize });
    if (l === 0) {
      axpby(gpu, this.dvfirst, g.dv, 1, 1); // v_first = v of layer 0
      gpu.copy(g.dv, g.dvraw);
    } else {
      ops.valueResidualBackward(gpu, g.dv, a.v, this.vfirst, a.zv!, W(p + 'v0'), { dv: g.dvraw, dvfirst: this.dvfirst, dz: g.dzv });
      matmulWeight(gpu, g.dzv, W(p + 'v2'), g.duv, { transW: true });
      matmulWeight(gpu, g.duv, W(p + 'v1'), g.dxv, { transW: true });
    }
    // g = σ(xg·g1)·g2
    matmulWeight(gpu, g.dg, W(p + 'g2'), g.dsg, { transW: true });
    activationBackward(gpu, 'sigmoid', a.ug, g.dsg, g.dug);
    matmulWeight(gpu, g.dug, W(p + 'g1'), g.dxg, { transW: true });
    // a = σ(a0 + xa·a1·a2)
    ops.sigmoidBiasBackward(gpu, g.da, a.a, g.dza);
    matmulWeight(gpu, g.dza, W(p + 'a2'), g.dua, { transW: true });
    matmulWeight(gpu, g.dua, W(p + 'a1'), g.dxa, { transW: true });
    // w_raw = w0 + tanh(xw·w1)·w2
    matmulWeight(gpu, g.dwraw, W(p + 'w2'), g.dtw, { transW: true });
    activationBackward(gpu, 'tanh', a.uw, g.dtw, g.duw);
    matmulWeight(gpu, g.duw, W(p + 'w1'), g.dxw, { transW: true });
    // r, k, v projections (dxv already holds the value-gate path for l > 0).
    this.linearBackward(l, 'att.receptance', g.dr, a.xr, hOf('att.receptance'), g.dxr, false);
    this.linearBackward(l, 'att.key', g.dk, a.xk, hOf('att.key'), g.dxk, false);
    this.linearBackward(l, 'att.value', g.dvraw, a.xv, hOf('att.value'), g.dxv, l > 0);
    ops.tokenShiftLerpBackward(
      gpu,
      [g.dxr, g.dxw, g.dxk, g.dxv, g.dxa, g.dxg],
      [W(p + 'x_r'), W(p + 'x_w'), W(p + 'x_k'), W(p + 'x_v'), W(p + 'x_a'), W(p + 'x_g')],
      g.dxln1,
      bt,
    );
    this.normBackward(g.dxln1, this.xs[l], `blocks.${l}.ln1`, a.st1, dx, d.nEmbd, true);
  }

  // ---- access ----

  async readGrad(name: string): Promise<Float32Array> {
    const t = this.trainableGrad.get(name);
    if (!t) throw new Error(`no trainable tensor ${name}`);
    return this.gpu.readF32(t);
  }

  async readParam(name: string): Promise<Float32Array> {
    const t = this.trainable.get(name);
    if (!t) throw new Error(`no trainable tensor ${name}`);
    return this.gpu.readF32(t);
  }

  /** ∂L/∂s0 of layer l (when initial states were given), summed over steps since the last zeroGrads. */
  async readStateGrad(l: number): Promise<Float32Array> {
    const t = this.ds0[l];
    if (!t) throw new Error(`layer ${l} has no initial state`);
    return this.gpu.readF32(t);
  }

  /** Overwrites a trainable tensor (loading an adapter, tests). */
  writeParam(name: string, values: Float32Array): void {
    const t = this.trainable.get(name);
    if (!t) throw new Error(`no trainable tensor ${name}`);
    if (values.length !== t.shape.reduce((x, y) => x * y, 1)) throw new Error(`writeParam ${name}: ${values.length} values for shape [${t.shape.join(',')}]`);
    this.gpu.write(t, values);
  }

  zeroGrads(): void {
    fill(this.gpu, this.grads, 0);
    for (const t of this.ds0) if (t) fill(this.gpu, t, 0);
  }
}

/** Names of every LayerNorm/GroupNorm weight and bias (train_parts "ln"). */
export function lnNames(nLayer: number): string[] {
  const names = ['blocks.0.ln0.weight', 'blocks.0.ln0.bias'];
  for (let l = 0; l < nLayer; l++) {
    for (const n of ['ln1', 'ln2', 'att.ln_x']) names.push(`blocks.${l}.${n}.weight`, `blocks.${l}.${n}.bias`);
  }
  names.push('ln_out.weight', 'ln_out.bias');
  return names;
}
