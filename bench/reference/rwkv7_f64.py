"""Independent float64 PyTorch implementation of RWKV-7 (x070) with LoRA, written
from the spec's equations (shared/spec/rwkv-peft-and-model-math.md §1.10, §2),
used to check the WGSL model at real shapes on the GPU machine.

Usage: python3 rwkv7_f64.py DIR
DIR holds what bench/reference/compare_rwkv7.ts wrote: manifest.json, inputs.bin
(weights bf16, LoRA f32, ids/labels i32) and gpu.bin (the WGSL model's logits,
loss and LoRA gradients). Prints relative errors ||gpu - ref|| / ||ref|| and
writes DIR/compare.json.
"""
import functools
import json
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint
from l2wrap import L2Wrap

torch.backends.cuda.matmul.allow_tf32 = False
dev = "cuda" if torch.cuda.is_available() else "cpu"  # cpu: a smoke test of this script at small shapes
DT = torch.float64
# f32 GPU arithmetic against float64: the logits pass through every layer once; LoRA
# gradients come back through all of them and sum over B·T tokens, so they are looser.
BOUNDS_F32 = {"logits": 1e-5, "loss": 1e-6, "lora_grads_all": 1e-3, "lora_grads_worst": 5e-3}
# With tensor cores the frozen-weight products take f16 operands. At random weights the
# LoRA gradients amplify operand rounding by ~10^3-10^4 (the f32 path shows it: 2e-3 from
# a 6e-8 roundoff), so no fixed bound fits. Instead the same float64 model is run again
# with its frozen-weight products' activation operands rounded (forward and backward, as
# the GPU does): to f16, what the tensor cores' operands alone cost; and to bf16, what
# RWKV-PEFT's bf16 training costs. The GPU must be no less accurate than the bf16 model.
# (Tensor cores accumulate with truncation: a product of positive values exact in f16 at
# K = 8192 comes out 5.2e-5 low on average on the H200, against 4e-9 for f32 FMAs. While
# the head's dx product (K = 65536) ran unsplit, this check's LoRA gradient error was 0.52
# against the f16 model's 0.09, and the f16 model with that truncation modelled gave 0.40;
# with K split, the GPU gives 0.05: bench/RESULTS.md, fourth pass.) A third model rounds
# as the GPU now does on tensor cores, LoRA's branch included (LoraTcLinear).


def load(d):
    man = json.load(open(f"{d}/manifest.json"))
    raw = {"inputs": np.fromfile(f"{d}/inputs.bin", dtype=np.uint8), "gpu": np.fromfile(f"{d}/gpu.bin", dtype=np.uint8)}

    def get(name, where="inputs"):
        e = man[where][name]
        b = raw[where][e["offset"]:e["offset"] + e["nbytes"]]
        if e["dtype"] == "bf16":
            a = (b.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
        elif e["dtype"] == "f32":
            a = b.view(np.float32)
        else:
            a = b.view(np.int32)
        return torch.from_numpy(a.copy()).reshape(e["shape"])

    return man, get


def rounded(z, dt):
    """z rounded to dt after a power-of-two scale per row (as the GPU's f16 copies), in float64."""
    m = z.detach().abs().amax(-1, keepdim=True)
    sc = torch.exp2(14 - torch.floor(torch.log2(torch.where(m > 0, m, torch.ones_like(m)))))
    return (z * sc).to(dt).to(DT) / sc


class RoundedMatmul(torch.autograd.Function):
    """y = x·w with x rounded to dt (w is bf16 already); dx = dy·wᵀ with dy rounded."""

    @staticmethod
    def forward(ctx, x, w, dt):
        ctx.save_for_backward(w)
        ctx.dt = dt
        return rounded(x, dt) @ w

    @staticmethod
    def backward(ctx, dy):
        (w,) = ctx.saved_tensors
        return rounded(dy, ctx.dt) @ w.T, None, None


class LoraTcLinear(torch.autograd.Function):
    """x·Wᵀ + s·(x·Aᵀ)·Bᵀ rounded as the GPU's tensor cores round it: h = x·Aᵀ from operands
    rounded per row (x's rows, A's rows); [x | s·h] rounded under one scale per row against W
    (bf16 already) and B rounded to dt as it is. Backward: dh = s·dy·B, dA = dhᵀ·x and
    dB = s·dyᵀ·h exact (f32 on the GPU); dx = [dy | dh]·[W ; A] with [dy | dh] rounded per row
    and A rounded to dt as it is."""

    @staticmethod
    def forward(ctx, x, wt, a, b, s, dt):
        h = rounded(x, dt) @ rounded(a, dt).T
        cat = rounded(torch.cat([x, s * h], -1), dt)
        n_in = x.shape[-1]
        ctx.save_for_backward(x, wt, a, b, h)
        ctx.s, ctx.dt = s, dt
        return cat[..., :n_in] @ wt + cat[..., n_in:] @ b.to(dt).to(DT).T

    @staticmethod
    def backward(ctx, dy):
        x, wt, a, b, h = ctx.saved_tensors
        s, dt = ctx.s, ctx.dt
        flat = lambda z: z.reshape(-1, z.shape[-1])
        dh = s * dy @ b
        da = flat(dh).T @ flat(x)
        db = s * flat(dy).T @ flat(h)
        cat = rounded(torch.cat([dy, dh], -1), dt)
        n_out = dy.shape[-1]
        dx = cat[..., :n_out] @ wt.T + cat[..., n_out:] @ a.to(dt).to(DT)
        return dx, None, da, db, None, None


def main(d):
    man, get = load(d)
    L, C, H, N, V = man["nLayer"], man["nEmbd"], man["nHead"], man["headSize"], man["vocab"]
    B, T, alpha, r = man["B"], man["T"], man["alpha"], man["r"]
    s = alpha / r
    W = {k: get(k).to(dev, DT) for k in man["inputs"] if k not in ("ids", "labels") and ".lora_" not in k}
    ids = get("ids").to(dev).long().view(B, T)
    labels = get("labels").to(dev).long().view(B * T)

    def model(operands=None, lora_rounded=False):
        """Logits, loss and LoRA gradients; with operands (a dtype), the frozen-weight products round their activations to it, and with lora_rounded LoRA's branch rounds as LoraTcLinear."""
        lora = {k: get(k).to(dev, DT).requires_grad_(True) for k in man["inputs"] if ".lora_" in k}

        def mm(x, w):
            return RoundedMatmul.apply(x, w, operands) if operands is not None else x @ w

        def vec(k):
            return W[k].reshape(C)

        def lin(x, name):
            if lora_rounded and f"{name}.lora_A" in lora:
                return LoraTcLinear.apply(x, W[f"{name}.weight"].T, lora[f"{name}.lora_A"], lora[f"{name}.lora_B"], s, operands)
            y = mm(x, W[f"{name}.weight"].T)
            if f"{name}.lora_A" in lora:
                y = y + s * (x @ lora[f"{name}.lora_A"].T) @ lora[f"{name}.lora_B"].T
            return y

        def ln(x, name, eps=1e-5):
            return F.layer_norm(x, (C,), W[f"{name}.weight"], W[f"{name}.bias"], eps)

        def shift(x):  # x_{t-1}, zero at t = 0
            return F.pad(x, (0, 0, 1, -1))

        def wkv(rr, decay, k, v, a, b):
            S = torch.zeros(B, H, N, N, device=dev, dtype=DT)  # row = value i, column = key j
            ys = []
            hv = lambda z, t: z[:, t].view(B, H, N)
            for t in range(T):
                sa = torch.einsum("bhij,bhj->bhi", S, hv(a, t))
                S = S * hv(decay, t)[:, :, None, :] + sa[:, :, :, None] * hv(b, t)[:, :, None, :] + hv(v, t)[:, :, :, None] * hv(k, t)[:, :, None, :]
                ys.append(torch.einsum("bhij,bhj->bhi", S, hv(rr, t)))
            return torch.stack(ys, 1).reshape(B, T, C)

        def block(l, x, v_first):
            """Layer l: (x, v_first) in, out."""
            p = f"blocks.{l}.att."
            xx = ln(x, f"blocks.{l}.ln1")
            dx = shift(xx) - xx
            xr, xw, xk, xv, xa, xg = (xx + dx * vec(p + m) for m in ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g"))
            rr = lin(xr, p + "receptance")
            k = lin(xk, p + "key")
            v = lin(xv, p + "value")
            w_raw = vec(p + "w0") + mm(torch.tanh(mm(xw, W[p + "w1"])), W[p + "w2"])
            a = torch.sigmoid(vec(p + "a0") + mm(mm(xa, W[p + "a1"]), W[p + "a2"]))
            g = mm(torch.sigmoid(mm(xg, W[p + "g1"])), W[p + "g2"])
            if l == 0:
                v_first = v
            else:
                v = v + (v_first - v) * torch.sigmoid(vec(p + "v0") + mm(mm(xv, W[p + "v1"]), W[p + "v2"]))
            kk = F.normalize((k * vec(p + "k_k")).view(B, T, H, N), dim=-1, eps=1e-12).view(B, T, C)
            k = k * (1 + (a - 1) * vec(p + "k_a"))
            decay = torch.exp(-np.exp(-0.5) * torch.sigmoid(w_raw))
            y = wkv(rr, decay, k, v, -kk, kk * a)
            y = F.group_norm(y.view(B * T, C), H, W[p + "ln_x.weight"], W[p + "ln_x.bias"], eps=64e-5).view(B, T, C)
            bonus = (rr * k * W[p + "r_k"].reshape(C)).view(B, T, H, N).sum(-1, keepdim=True) * v.view(B, T, H, N)
            y = y + bonus.view(B, T, C)
            x = x + lin(y * g, p + "output")
            f = f"blocks.{l}."
            xx = ln(x, f + "ln2")
            kx = xx + (shift(xx) - xx) * vec(f + "ffn.x_k")
            x = x + lin(torch.relu(lin(kx, f + "ffn.key")) ** 2, f + "ffn.value")
            return x, v_first

        x = W["emb.weight"][ids]
        x = ln(x, "blocks.0.ln0")
        v_first = None
        for l in range(L):
            if dev == "cpu":  # one layer's WKV steps kept at a time: the CPU has far less memory than the GPU machine
                x, v_first = checkpoint(functools.partial(block, l), x, v_first, use_reentrant=False)
            else:
                x, v_first = block(l, x, v_first)
        logits = mm(ln(x, "ln_out"), W["head.weight"].T).view(B * T, V)
        loss = F.cross_entropy(logits, labels, ignore_index=-100)
        L2Wrap.apply(loss, logits).backward()
        return logits.detach(), loss.item(), {k: t.grad for k, t in lora.items()}

    t0 = time.time()
    logits, loss, grad = model()
    if dev == "cuda":
        torch.cuda.synchronize()
    ref_s = time.time() - t0

    def rel(a, b):
        a = a.to(dev, DT)
        b = b.to(dev, DT).reshape(a.shape)
        return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))

    tc = man.get("matmul", "f32") == "tc"
    print(f"shapes: L={L} C={C} H={H} N={N} V={V} B={B} T={T} LoRA r={r} alpha={alpha}; frozen-weight products on the GPU: {'tensor cores (f16 operands)' if tc else 'f32'}")

    def errors(lg, ls, gr):
        """Relative errors of (logits, loss, LoRA gradients) against the float64 model."""
        e = {"logits": rel(lg, logits), "loss": abs(ls - loss) / abs(loss)}
        per = {k: rel(gr[k], grad[k]) for k in grad}
        e["lora_grads_all"] = rel(torch.cat([gr[k].to(dev, DT).flatten() for k in grad]), torch.cat([grad[k].flatten() for k in grad]))
        e["lora_grads_worst"] = max(per.values())
        e["lora_grads_median"] = float(np.median(list(per.values())))
        e["lora_grads_worst_name"] = max(per, key=per.get)
        return e, per

    res, per = errors(get("logits", "gpu"), float(get("loss", "gpu")[0]), {k: get(k, "gpu") for k in grad})
    res.update(loss_gpu=float(get("loss", "gpu")[0]), loss_ref=loss, ref_seconds=ref_s)
    # name: (operand dtype, LoRA's branch rounded too), printed as name + " model"
    models = {"f16": (torch.float16, False), "f16+LoRA": (torch.float16, True), "bf16": (torch.bfloat16, False)} if tc else {}
    for name, (dt, lora_rounded) in models.items():
        res[f"{name}_model"], _ = errors(*model(dt, lora_rounded))
    json.dump({"summary": res, "per_tensor": per}, open(f"{d}/compare.json", "w"), indent=1)
    keys = ("logits", "loss", "lora_grads_all", "lora_grads_median", "lora_grads_worst")
    print("relative errors against float64; the operand models round their frozen-weight products' activations to f16 or bf16 (f16+LoRA: and LoRA's branch as the GPU's tensor cores do)")
    print(f"{'':>20}  {'GPU':>10}" + "".join(f"  {name + ' model':>14}" for name in models))
    for k in keys:
        print(f"{k:>20}: {res[k]:10.3e}" + "".join(f"  {res[name + '_model'][k]:14.3e}" for name in models))
    print(f"worst LoRA tensor: {res['lora_grads_worst_name']}; loss gpu {res['loss_gpu']:.6f} ref {res['loss_ref']:.6f}; reference took {ref_s:.1f}s")
    if tc:
        bounds = {k: max(res["bf16_model"][k], BOUNDS_F32[k]) for k in BOUNDS_F32}
        print("bounds: the bf16-operand model's own error (RWKV-PEFT's training precision), at least the f32 bounds")
    else:
        bounds = BOUNDS_F32
    failed = [f"{k} {res[k]:.3e} > {b:.1e}" for k, b in bounds.items() if not res[k] <= b]
    if failed:
        sys.exit("FAILED: " + "; ".join(failed))
    print("all within bounds: " + ", ".join(f"{k} <= {b:.1e}" for k, b in bounds.items()))

if __name__ == "__main__":
    main(sys.argv[1])
