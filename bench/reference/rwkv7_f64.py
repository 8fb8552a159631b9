"""Independent float64 PyTorch implementation of RWKV-7 (x070) with LoRA, written
from the spec's equations (shared/spec/rwkv-peft-and-model-math.md §1.10, §2),
used to check the WGSL model at real shapes on the GPU machine.

Usage: python3 rwkv7_f64.py DIR
DIR holds what bench/reference/compare_rwkv7.ts wrote: manifest.json, inputs.bin
(weights bf16, LoRA f32, ids/labels i32) and gpu.bin (the WGSL model's logits,
loss and LoRA gradients). Prints relative errors ||gpu - ref|| / ||ref|| and
writes DIR/compare.json.
"""
import json
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

torch.backends.cuda.matmul.allow_tf32 = False
dev = "cuda"
DT = torch.float64
# f32 GPU arithmetic against float64: the logits pass through every layer once; LoRA
# gradients come back through all of them and sum over B·T tokens, so they are looser.
# With tensor cores the frozen-weight products take f16 operands (unit roundoff 2^-11,
# about 4.9e-4) and f32 accumulation, so every figure is bounded by a few f16 roundings.
BOUNDS = {
    "f32": {"logits": 1e-5, "loss": 1e-6, "lora_grads_all": 1e-3, "lora_grads_worst": 5e-3},
    "tc": {"logits": 5e-3, "loss": 1e-4, "lora_grads_all": 2e-2, "lora_grads_worst": 5e-2},
}


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


class L2Wrap(torch.autograd.Function):
    """Identity on the loss; backward adds logit·1e-4/(B·T) at each position's argmax (§1.10)."""

    @staticmethod
    def forward(ctx, loss, logits):
        ctx.save_for_backward(logits)
        return loss

    @staticmethod
    def backward(ctx, grad_output):
        (logits,) = ctx.saved_tensors
        factor = 1e-4 / logits.shape[0]
        maxx, ids = torch.max(logits, -1, keepdim=True)
        gy = torch.zeros_like(logits).scatter_(-1, ids, maxx * factor)
        return grad_output, gy


def main(d):
    man, get = load(d)
    L, C, H, N, V = man["nLayer"], man["nEmbd"], man["nHead"], man["headSize"], man["vocab"]
    B, T, alpha, r = man["B"], man["T"], man["alpha"], man["r"]
    s = alpha / r
    W = {k: get(k).to(dev, DT) for k in man["inputs"] if k not in ("ids", "labels") and ".lora_" not in k}
    lora = {k: get(k).to(dev, DT).requires_grad_(True) for k in man["inputs"] if ".lora_" in k}
    ids = get("ids").to(dev).long().view(B, T)
    labels = get("labels").to(dev).long().view(B * T)
    t0 = time.time()

    def vec(k):
        return W[k].reshape(C)

    def lin(x, name):
        y = x @ W[f"{name}.weight"].T
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

    x = W["emb.weight"][ids]
    x = ln(x, "blocks.0.ln0")
    v_first = None
    for l in range(L):
        p = f"blocks.{l}.att."
        xx = ln(x, f"blocks.{l}.ln1")
        dx = shift(xx) - xx
        xr, xw, xk, xv, xa, xg = (xx + dx * vec(p + m) for m in ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g"))
        rr = lin(xr, p + "receptance")
        k = lin(xk, p + "key")
        v = lin(xv, p + "value")
        w_raw = vec(p + "w0") + torch.tanh(xw @ W[p + "w1"]) @ W[p + "w2"]
        a = torch.sigmoid(vec(p + "a0") + (xa @ W[p + "a1"]) @ W[p + "a2"])
        g = torch.sigmoid(xg @ W[p + "g1"]) @ W[p + "g2"]
        if l == 0:
            v_first = v
        else:
            v = v + (v_first - v) * torch.sigmoid(vec(p + "v0") + (xv @ W[p + "v1"]) @ W[p + "v2"])
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
    logits = (ln(x, "ln_out") @ W["head.weight"].T).view(B * T, V)
    loss = F.cross_entropy(logits, labels, ignore_index=-100)
    L2Wrap.apply(loss, logits).backward()
    torch.cuda.synchronize()
    ref_s = time.time() - t0

    def rel(a, b):
        a = a.to(dev, DT)
        b = b.to(dev, DT).reshape(a.shape)
        return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))

    res = {"logits": rel(get("logits", "gpu"), logits.detach()), "loss_gpu": float(get("loss", "gpu")[0]), "loss_ref": loss.item()}
    res["loss"] = abs(res["loss_gpu"] - res["loss_ref"]) / abs(res["loss_ref"])
    grads = {k: rel(get(k, "gpu"), t.grad) for k, t in lora.items()}
    allg = torch.cat([t.grad.flatten() for t in lora.values()])
    allgpu = torch.cat([get(k, "gpu").to(dev, DT).flatten() for k in lora])
    res["lora_grads_all"] = rel(allgpu, allg)
    res["lora_grads_worst"] = max(grads.values())
    res["lora_grads_worst_name"] = max(grads, key=grads.get)
    res["lora_grads_median"] = float(np.median(list(grads.values())))
    res["ref_seconds"] = ref_s
    json.dump({"summary": res, "per_tensor": grads}, open(f"{d}/compare.json", "w"), indent=1)
    print(f"shapes: L={L} C={C} H={H} N={N} V={V} B={B} T={T} LoRA r={r} alpha={alpha}")
    for k in ("logits", "loss", "lora_grads_all", "lora_grads_median", "lora_grads_worst"):
        print(f"{k:>20}: {res[k]:.3e}")
    print(f"worst LoRA tensor: {res['lora_grads_worst_name']}; loss gpu {res['loss_gpu']:.6f} ref {res['loss_ref']:.6f}; reference took {ref_s:.1f}s")
    bounds = BOUNDS[man.get("matmul", "f32")]
    print(f"frozen-weight products: {man.get('matmul', 'f32')}")
    failed = [f"{k} {res[k]:.3e} > {b:.0e}" for k, b in bounds.items() if not res[k] <= b]
    if failed:
        sys.exit("FAILED: " + "; ".join(failed))
    print("all within bounds: " + ", ".join(f"{k} <= {b:.0e}" for k, b in bounds.items()))


if __name__ == "__main__":
    main(sys.argv[1])
