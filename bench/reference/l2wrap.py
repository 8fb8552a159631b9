"""RWKV's L2Wrap (spec §1.10), shared by the PyTorch reference scripts."""
import torch


class L2Wrap(torch.autograd.Function):
    """Identity on the loss; backward adds logit·1e-4/(B·T) at each position's argmax."""

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
