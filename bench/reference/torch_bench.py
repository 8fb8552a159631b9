"""PyTorch comparison for `npm run bench`, run on the same card in the same run.

Times, in bf16 as RWKV-PEFT trains:
  - every matrix product of the step (cuBLAS through torch.matmul), same shapes and layouts;
  - the WKV7 CUDA kernel (bench/reference/wkv7_cuda.cu, built with load_inline) forward and
    backward, after checking it against a float64 per-token reference with autograd;
  - a LoRA training step of the same RWKV-7 model (LoRA r on the six targets, bf16
    autograd, WKV7 through that kernel, L2Wrap, AdamW with clipping), tokens/s and peak memory.

Usage: python3 torch_bench.py IN.json OUT.json
IN.json (written by bench/run.ts): {"matmuls": [{key, m, n, k, transA, transB}], "wkv": [{layout, B, T, H}],
"train": [{layout, nLayer, nEmbd, vocab, ffnHidden, dW, dA, dV, dG, B, T, r, gradCp}], "steps": n,
"waitFile": path or null}. The kernel is built first (CPU only); when waitFile is
given, the GPU work waits until that file exists, so it never shares the GPU with the WGSL run.
"""
import json
import math
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint
from l2wrap import L2Wrap

HERE = os.path.dirname(os.path.abspath(__file__))
BF = torch.bfloat16
W_SCALE = math.exp(-0.5)  # decay = exp(-e^-0.5 · σ(w_raw)), the clampw form
CHECK_BOUND = 2e-2  # bf16 inputs and outputs against float64: a few ulp of bf16 (2^-8)


def log(*a):
    print("[torch]", *a, flush=True)


# ---------------------------------------------------------------- WKV7


def build_wkv():
    from torch.utils.cpp_extension import load_inline

    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "9.0")
    src = open(os.path.join(HERE, "wkv7_cuda.cu")).read()
    decl = (
        "std::vector<torch::Tensor> wkv7_forward(torch::Tensor r, torch::Tensor w, torch::Tensor k, torch::Tensor v, torch::Tensor a, torch::Tensor b);\n"
        "std::vector<torch::Tensor> wkv7_backward(torch::Tensor r, torch::Tensor w, torch::Tensor k, torch::Tensor v, torch::Tensor a, torch::Tensor b, "
        "torch::Tensor dy, torch::Tensor s, torch::Tensor sa);\n"
    )
    return load_inline(
        name="rwkv_bench_wkv7",
        cpp_sources=[decl],
        cuda_sources=[src],
        functions=["wkv7_forward", "wkv7_backward"],
        extra_cuda_cflags=["-O3", "--use_fast_math", "-Xptxas", "-O3"],
        verbose=False,
    )


class Wkv7(torch.autograd.Function):
    ext = None

    @staticmethod
    def forward(ctx, r, w, k, v, a, b):
        y, s, sa = Wkv7.ext.wkv7_forward(r, w, k, v, a, b)
        ctx.save_for_backward(r, w, k, v, a, b, s, sa)
        return y

    @staticmethod
    def backward(ctx, dy):
        r, w, k, v, a, b, s, sa = ctx.saved_tensors
        return tuple(Wkv7.ext.wkv7_backward(r, w, k, v, a, b, dy.contiguous(), s, sa))


def wkv_ref(r, w, k, v, a, b):
    """Per-token float64 loop: the check's reference only (never timed)."""
    B, T, H, N = r.shape
    decay = torch.exp(-W_SCALE * torch.sigmoid(w))
    S = torch.zeros(B, H, N, N, dtype=r.dtype, device=r.device)
    ys = []
    for t in range(T):
        sa = torch.einsum("bhij,bhj->bhi", S, a[:, t])
        S = S * decay[:, t, :, None, :] + sa[..., None] * b[:, t, :, None, :] + v[:, t, :, :, None] * k[:, t, :, None, :]
        ys.append(torch.einsum("bhij,bhj->bhi", S, r[:, t]))
    return torch.stack(ys, 1)


def wkv_inputs(B, T, H, dev, gen):
    N = 64
    kk = F.normalize(torch.randn(B, T, H, N, device=dev, generator=gen), dim=-1)
    alpha = torch.rand(B, T, H, N, device=dev, generator=gen)
    return [
        torch.randn(B, T, H, N, device=dev, generator=gen),
        torch.rand(B, T, H, N, device=dev, generator=gen) * 11 - 6,
        torch.randn(B, T, H, N, device=dev, generator=gen),
        torch.randn(B, T, H, N, device=dev, generator=gen),
        -kk,
        kk * alpha,
    ]


def check_wkv(dev):
    """The kernel against float64 autograd on bf16-rounded inputs: y and all six gradients."""
    gen = torch.Generator(device=dev).manual_seed(0)
    xs = [x.to(BF) for x in wkv_inputs(2, 48, 3, dev, gen)]
    dy = torch.randn(2, 48, 3, 64, device=dev, generator=gen).to(BF)
    xb = [x.clone().requires_grad_(True) for x in xs]
    y = Wkv7.apply(*xb)
    y.backward(dy)
    xd = [x.double().requires_grad_(True) for x in xs]
    yd = wkv_ref(*xd)
    yd.backward(dy.double())
    rel = lambda g, r: float((g.double() - r).norm() / r.norm())
    res = {"y": rel(y, yd)}
    for name, g, r in zip(["dr", "dw", "dk", "dv", "da", "db"], xb, xd):
        res[name] = rel(g.grad, r.grad)
    res["bound"] = CHECK_BOUND
    res["ok"] = all(v <= CHECK_BOUND for k, v in res.items() if k not in ("bound",))
    return res


# ---------------------------------------------------------------- timing


def cuda_ms(fn, min_ms=20.0, max_reps=50):
    """Median milliseconds of fn over repeats, with CUDA events, after warm-up."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    e0.record()
    fn()
    e1.record()
    torch.cuda.synchronize()
    reps = max(3, min(max_reps, int(min_ms / max(e0.elapsed_time(e1), 1e-3))))
    times = []
    for _ in range(reps):
        e0.record()
        fn()
        e1.record()
        e1.synchronize()
        times.append(e0.elapsed_time(e1))
    return statistics.median(times)


def bench_matmuls(shapes, dev):
    out = {}
    for s in shapes:
        m, n, k = s["m"], s["n"], s["k"]
        a = torch.randn(*((k, m) if s["transA"] else (m, k)), device=dev, dtype=BF)
        b = torch.randn(*((n, k) if s["transB"] else (k, n)), device=dev, dtype=BF) / math.sqrt(k)
        opa = a.t() if s["transA"] else a
        opb = b.t() if s["transB"] else b
        ms = cuda_ms(lambda: torch.matmul(opa, opb))
        out[s["key"]] = {"ms": ms, "tflops": 2 * m * n * k / ms / 1e9}
        del a, b, opa, opb
    torch.cuda.empty_cache()
    return out


def bench_wkv(cases, dev):
    out = []
    gen = torch.Generator(device=dev).manual_seed(1)
    for c in cases:
        xs = [x.to(BF).contiguous() for x in wkv_inputs(c["B"], c["T"], c["H"], dev, gen)]
        dy = torch.randn_like(xs[0])
        saved = {}

        def fwd():
            saved["o"] = Wkv7.ext.wkv7_forward(*xs)

        fwd_ms = cuda_ms(fwd)
        _, s, sa = saved["o"]
        bwd_ms = cuda_ms(lambda: Wkv7.ext.wkv7_backward(*xs, dy, s, sa))
        out.append({**c, "forwardMs": fwd_ms, "backwardMs": bwd_ms})
        del xs, dy, saved
    torch.cuda.empty_cache()
    return out


# ---------------------------------------------------------------- the model


TARGETS = ["att.receptance", "att.key", "att.value", "att.output", "ffn.key", "ffn.value"]


class Rwkv7Lora:
    """RWKV-7 (x070) with frozen random bf16 weights in realistic ranges and fp32 LoRA factors."""

    def __init__(self, c, dev, gen):
        L, C, V, Fh = c["nLayer"], c["nEmbd"], c["vocab"], c["ffnHidden"]
        self.L, self.C, self.V, self.H = L, C, V, C // 64
        self.r, self.s = c["r"], 2.0
        u = lambda shape, lo, hi: (torch.rand(*shape, device=dev, generator=gen) * (hi - lo) + lo).to(BF)
        nrm = lambda shape, std: (torch.randn(*shape, device=dev, generator=gen) * std).to(BF)
        W = {"emb": u((V, C), -1, 1), "head": nrm((V, C), 2 / math.sqrt(C))}
        for n in ("ln0", "ln_out"):
            W[n + ".w"], W[n + ".b"] = u((C,), 0.6, 1.4), u((C,), -0.2, 0.2)
        dims = {"w": c["dW"], "a": c["dA"], "v": c["dV"], "g": c["dG"]}
        self.blocks = []
        for l in range(L):
            b = {}
            for n in ("ln1", "ln2", "ln_x"):
                b[n + ".w"], b[n + ".b"] = u((C,), 0.6, 1.4), u((C,), -0.2, 0.2)
            for n in ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g", "ffn.x_k"):
                b[n] = u((C,), 0, 1)
            b["w0"], b["a0"], b["v0"] = u((C,), -4, 1), u((C,), -1, 1), u((C,), -0.5, 1.5)
            b["k_k"], b["k_a"], b["r_k"] = u((C,), 0.5, 1.2), u((C,), 0.5, 1.5), u((C,), -0.5, 0.5)
            for n, d in dims.items():
                b[n + "1"], b[n + "2"] = nrm((C, d), 1 / math.sqrt(C)), nrm((d, C), 0.5 / math.sqrt(d))
            for t in TARGETS:
                fin, fout = (C, Fh) if t == "ffn.key" else (Fh, C) if t == "ffn.value" else (C, C)
                b[t] = nrm((fout, fin), 1 / math.sqrt(fin))
            self.blocks.append(b)
        self.W = W
        self.lora = []
        for l in range(L):
            d = {}
            for t in TARGETS:
                fout, fin = self.blocks[l][t].shape
                A = ((torch.rand(self.r, fin, device=dev, generator=gen) * 2 - 1) / math.sqrt(fin)).requires_grad_(True)
                Bm = (torch.randn(fout, self.r, device=dev, generator=gen) * 0.01).requires_grad_(True)
                d[t] = (A, Bm)
            self.lora.append(d)

    def params(self):
        return [p for d in self.lora for ab in d.values() for p in ab]

    def lin(self, l, t, x):
        A, Bm = self.lora[l][t]
        return F.linear(x, self.blocks[l][t]) + self.s * F.linear(F.linear(x, A.to(BF)), Bm.to(BF))

    def block(self, l, x, v_first):
        b, C, H = self.blocks[l], self.C, self.H
        Bsz, T, _ = x.shape
        shift = lambda z: F.pad(z, (0, 0, 1, -1))
        xx = F.layer_norm(x, (C,), b["ln1.w"], b["ln1.b"], 1e-5)
        dx = shift(xx) - xx
        xr, xw, xk, xv, xa, xg = (xx + dx * b[m] for m in ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g"))
        r = self.lin(l, "att.receptance", xr)
        k = self.lin(l, "att.key", xk)
        v = self.lin(l, "att.value", xv)
        w_raw = b["w0"] + torch.tanh(xw @ b["w1"]) @ b["w2"]
        a = torch.sigmoid(b["a0"] + (xa @ b["a1"]) @ b["a2"])
        g = torch.sigmoid(xg @ b["g1"]) @ b["g2"]
        if l == 0:
            v_first = v
        else:
            v = v + (v_first - v) * torch.sigmoid(b["v0"] + (xv @ b["v1"]) @ b["v2"])
        kk = F.normalize((k * b["k_k"]).view(Bsz, T, H, 64), dim=-1, eps=1e-12)
        k = k * (1 + (a - 1) * b["k_a"])
        hv = lambda z: z.reshape(Bsz, T, H, 64).contiguous()
        y = Wkv7.apply(hv(r), hv(w_raw), hv(k), hv(v), -kk.contiguous(), (kk * hv(a)).contiguous()).view(Bsz, T, C)
        y = F.group_norm(y.view(Bsz * T, C), H, b["ln_x.w"], b["ln_x.b"], eps=64e-5).view(Bsz, T, C)
        bonus = (hv(r) * hv(k) * b["r_k"].view(H, 64)).sum(-1, keepdim=True) * hv(v)
        x = x + self.lin(l, "att.output", (y + bonus.view(Bsz, T, C)) * g)
        xx = F.layer_norm(x, (C,), b["ln2.w"], b["ln2.b"], 1e-5)
        kx = xx + (shift(xx) - xx) * b["ffn.x_k"]
        x = x + self.lin(l, "ffn.value", torch.relu(self.lin(l, "ffn.key", kx)) ** 2)
        return x, v_first

    def loss(self, ids, labels, grad_cp):
        W = self.W
        x = F.layer_norm(W["emb"][ids], (self.C,), W["ln0.w"], W["ln0.b"], 1e-5)
        v_first = torch.empty_like(x)
        for l in range(self.L):
            if grad_cp:
                x, v_first = checkpoint(self.block, l, x, v_first, use_reentrant=False)
            else:
                x, v_first = self.block(l, x, v_first)
        logits = F.layer_norm(x, (self.C,), W["ln_out.w"], W["ln_out.b"], 1e-5) @ W["head"].t()
        logits = logits.view(-1, self.V)
        return L2Wrap.apply(F.cross_entropy(logits, labels.view(-1)), logits)


def bench_train(c, steps, dev):
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    gen = torch.Generator(device=dev).manual_seed(2)
    res = dict(c)
    try:
        model = Rwkv7Lora(c, dev, gen)
        params = model.params()
        opt = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.0, fused=True)
        ids = torch.randint(0, c["vocab"], (c["B"], c["T"]), device=dev, generator=gen)
        labels = torch.randint(0, c["vocab"], (c["B"], c["T"]), device=dev, generator=gen)

        def step():
            loss = model.loss(ids, labels, c["gradCp"])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=True)
            opt.step()
            opt.zero_grad(set_to_none=True)
            return loss

        for _ in range(2):
            step()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(steps):
            loss = step()
        torch.cuda.synchronize()
        dt = (time.perf_counter() - t0) / steps
        res.update(msPerStep=dt * 1e3, tokensPerSec=c["B"] * c["T"] / dt, loss=float(loss),
                   peakAllocatedBytes=torch.cuda.max_memory_allocated(), peakReservedBytes=torch.cuda.max_memory_reserved())
        del model, params, opt
    except torch.cuda.OutOfMemoryError as e:
        res["error"] = "out of memory: " + str(e).split("\n")[0]
    torch.cuda.empty_cache()
    return res


def main(inp, outp):
    job = json.load(open(inp))
    dev = "cuda"
    out = {"torch": torch.__version__, "cuda": torch.version.cuda, "device": torch.cuda.get_device_name(0)}
    t0 = time.time()
    Wkv7.ext = build_wkv()
    out["wkvBuildSeconds"] = time.time() - t0
    log(f"WKV7 kernel built in {out['wkvBuildSeconds']:.1f}s")
    wait = job.get("waitFile")
    while wait and not os.path.exists(wait):
        time.sleep(0.2)
    out["wkvCheck"] = check_wkv(dev)
    log("WKV7 kernel vs float64:", {k: (round(v, 6) if isinstance(v, float) else v) for k, v in out["wkvCheck"].items()})
    torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = True
    t0 = time.time()
    out["matmul"] = bench_matmuls(job.get("matmuls", []), dev)
    out["wkv"] = bench_wkv(job.get("wkv", []), dev)
    log(f"matmuls and WKV7 timed in {time.time() - t0:.1f}s")
    out["train"] = []
    for c in job.get("train", []):
        r = bench_train(c, job.get("steps", 5), dev)
        log(f"train {c['layout']} B={c['B']} T={c['T']} grad_cp={c['gradCp']}:",
            r.get("error") or f"{r['tokensPerSec']:.0f} tokens/s, {r['msPerStep']:.1f} ms/step, peak {r['peakReservedBytes'] / 2**30:.2f} GiB reserved")
        out["train"].append(r)
    json.dump(out, open(outp, "w"), indent=1)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
