# Probe: the mean relative error of cuBLAS products of positive values exact in bf16 and f16
# (K = 8192), as bench/rounding_probe.ts measures ours. Usage: python3 bench/reference/cublas_bias.py
# Outputs are rounded to nearest (unbiased), so the mean shows the accumulation's bias.
import torch
torch.backends.cuda.matmul.allow_tf32 = False
g = torch.Generator(device="cuda").manual_seed(0)
M = N = 512
K = 8192
a = 1 + torch.floor(torch.rand(M, K, device="cuda", generator=g) * 127) / 128
b = 1 + torch.floor(torch.rand(K, N, device="cuda", generator=g) * 127) / 128
ref = a.double() @ b.double()
for dt in (torch.bfloat16, torch.float16, torch.float32):
    rel = ((a.to(dt) @ b.to(dt)).double() - ref) / ref
    print(f"cuBLAS {dt} {M}x{N}x{K}, positive exact operands: mean relative error {rel.mean().item():.2e}, rms {rel.pow(2).mean().sqrt().item():.2e}")
