/**
 * AdamW over the model's flat trainable buffer, with global-norm clipping over
 * all gradients together (as DeepSpeed does). 2-D tensors (LoRA matrices) get
 * weight decay, 1-D ones (norm weights) do not, as RWKV-PEFT groups them; the
 * layout keeps each group contiguous so each is one dispatch.
 */
import type { GpuRuntime } from '../gpu/device.js';
import { view, type Tensor } from '../gpu/tensor.js';
import { ADAMW_STATE_LEN, adamwStep, writeAdamwStepState } from '../kernels/adamw.js';
import { fill } from '../kernels/elementwise.js';
import { sumSquares } from '../kernels/reduce.js';
import type { TrainableLayout } from '../lora/lora.js';

export interface OptimizerConfig {
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** Global-norm clip; 0 turns clipping off. */
  gradClip: number;
}

interface Group {
  param: Tensor;
  grad: Tensor;
  m: Tensor;
  v: Tensor;
  state: Tensor;
  decay: boolean;
}

export class AdamW {
  readonly m: Tensor;
  readonly v: Tensor;
  /** Σ g² of the last step's gradients (before clipping), f32 [1]. */
  readonly sqNorm: Tensor;
  private readonly groups: Group[] = [];

  constructor(
    private readonly gpu: GpuRuntime,
    params: Tensor,
    private readonly grads: Tensor,
    layout: TrainableLayout,
    private readonly cfg: OptimizerConfig,
  ) {
    this.m = gpu.tensor(params.shape, 'f32', 'adam m', true);
    this.v = gpu.tensor(params.shape, 'f32', 'adam v', true);
    fill(gpu, this.m, 0);
    fill(gpu, this.v, 0);
    this.sqNorm = gpu.tensor([1], 'f32', 'grad sq norm');
    // Contiguous runs of entries with the same decay flag.
    let start = 0;
    const entries = layout.entries;
    for (let i = 1; i <= entries.length; i++) {
      if (i < entries.length && entries[i].decay === entries[start].decay) continue;
      const from = entries[start].offset;
      const to = i < entries.length ? entries[i].offset : layout.size;
      const decay = entries[start].decay;
      const w = (t: Tensor, name: string): Tensor => view(t, from, [to - from], `${name}[${from}:${to}]`);
      this.groups.push({
        param: w(params, 'params'),
        grad: w(grads, 'grads'),
        m: w(this.m, 'm'),
        v: w(this.v, 'v'),
        state: gpu.tensor([ADAMW_STATE_LEN], 'f32', `adam state ${decay ? 'decay' : 'no decay'}`),
        decay,
      });
      start = i;
    }
  }

  /** Records step t (1-based) at learning rate lr, and zeroes the gradients for the next step. */
  step(t: number, lr: number): void {
    const { beta1, beta2, eps, weightDecay, gradClip } = this.cfg;
    for (const g of this.groups) {
      writeAdamwStepState(this.gpu, g.state, t, { lr, beta1, beta2, eps, weightDecay: g.decay ? weightDecay : 0 });
    }
    sumSquares(this.gpu, [this.grads], this.sqNorm);
    for (const g of this.groups) {
      adamwStep(this.gpu, {
        param: g.param,
        grad: g.grad,
        m: g.m,
        v: g.v,
        stepState: g.state,
        ...(gradClip > 0 ? { sqNorm: this.sqNorm, maxNorm: gradClip } : {}),
        zeroGrad: true,
      });
    }
  }
}
