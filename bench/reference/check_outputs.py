"""PyTorch's view of what the trainer wrote: torch.load (weights only) of the base
model, the LoRA adapter and the merged model, then the merge recomputed here.

Usage: python3 check_outputs.py BASE.pth ADAPTER.pth MERGED.pth
Checks: the adapter holds blocks.N.{att,ffn}.M.lora_A [r, in] and .lora_B [out, r] with
lora_alpha and lora_r recorded; the merged model has exactly the base's keys, shapes and
dtypes; each adapted weight equals W + (alpha/r)·B·A rounded to bf16 (within two bf16
steps of the terms' size: the adapter's factors are bf16, the merge used f32 ones); trained
vectors (ln*) are the adapter's; every other tensor is bit-identical to the base. Exits non-zero on failure.
"""
import sys

import torch


def main(base_path, lora_path, merged_path):
    base = torch.load(base_path, map_location="cpu", weights_only=True)
    lora = torch.load(lora_path, map_location="cpu", weights_only=True)
    merged = torch.load(merged_path, map_location="cpu", weights_only=True)
    print(f"torch {torch.__version__}: loaded base ({len(base)} tensors), adapter ({len(lora)}), merged ({len(merged)})")
    alpha, r = float(lora["lora_alpha"]), int(lora["lora_r"])
    fails = []
    if set(merged) != set(base):
        fails.append(f"merged keys differ from base: {sorted(set(merged) ^ set(base))[:5]}")
    pairs = sorted(k[: -len(".lora_A")] for k in lora if k.endswith(".lora_A"))
    worst = 0
    for p in pairs:
        A, B, W = lora[p + ".lora_A"], lora[p + ".lora_B"], base[p + ".weight"]
        if A.shape != (r, W.shape[1]) or B.shape != (W.shape[0], r):
            fails.append(f"{p}: lora_A {tuple(A.shape)}, lora_B {tuple(B.shape)} for W {tuple(W.shape)}, r {r}")
            continue
        delta = (alpha / r) * (B.float() @ A.float())
        want = W.float() + delta
        got = merged[p + ".weight"]
        # Measured in bf16 steps of the terms' size, |W| + (alpha/r)·|B|·|A| (terms can cancel,
        # so the result's own size is no scale): the trainer merges its f32 factors, the file
        # holds them rounded to bf16 (up to one step of that size), then the sum is rounded once.
        mag = W.float().abs() + (alpha / r) * (B.float().abs() @ A.float().abs())
        steps = ((got.float() - want).abs() / (2.0**-8 * mag + 1e-30)).max().item()
        worst = max(worst, steps)
        if got.dtype != torch.bfloat16 or steps > 2:
            fails.append(f"{p}.weight: {got.dtype}, off by {steps:.2f} bf16 steps of W + (alpha/r)·B·A")
    vectors = [k for k in lora if ".lora_" not in k and k not in ("lora_alpha", "lora_r")]
    for k in vectors:
        if not torch.equal(merged[k].float(), lora[k].float()):
            fails.append(f"{k}: merged differs from the adapter's trained value")
    adapted = {p + ".weight" for p in pairs} | set(vectors)
    for k, t in base.items():
        if k in adapted or k not in merged:
            continue
        if merged[k].dtype != t.dtype or not torch.equal(merged[k], t):
            fails.append(f"{k}: not copied unchanged from the base")
    print(f"adapter: {len(pairs)} LoRA pairs, r {r}, lora_alpha {alpha}, {len(vectors)} trained vectors")
    print(f"merged: {len(pairs)} weights within {worst:.2f} bf16 steps of W + (alpha/r)·B·A, {len(base) - len(adapted)} tensors unchanged")
    if fails:
        sys.exit("FAILED:\n  " + "\n  ".join(fails[:20]))
    print("all checks passed")


if __name__ == "__main__":
    main(*sys.argv[1:4])
