"""The matrix products of the PyTorch references as the C trainer computes them in train.precision bf16
(include/dreamstate/blas.h): both operands of every product rounded to bf16 (nearest even), forward and
backward, the rest exact. Off by default; `bf16_emulation.ENABLED = True` switches every reference that
multiplies through matmul() here (rwkv7_torch.py, dit_torch.py). And the bounds the reference tests put
on the C results of a bf16 step, per tensor (test_rwkv7_torch.py, test_dit_torch.py):

  ||c - ref|| / ||ref|| <= min(0.1, 1.5 x ||emulated - ref|| / ||ref|| + 0.005), loss within 1e-2,

ref the exact float64 reference, emulated the same with bf16 products. Where they come from: bf16 keeps 8
significant bits, so each rounded operand carries a relative error <= 2^-9 (~2e-3) and one product ~3e-3
in the 2-norm. A gradient ends a chain of products (forward to the head, then back down) and sums over
tokens, whose cancellation amplifies relative errors; the emulated reference measures that amplification
for the test models: up to 3.7e-2, median ~8e-3 (RWKV-7; the DiT's up to 8e-3), and the C results land
within 20% of it. 0.1 leaves 2.7x headroom over the worst; the comparison with the emulation says that
nothing but the rounding of product operands costs accuracy (the WKV recurrence, norms, softmax stay
fp32). The additive 0.005: C's fp32 and the reference's float64 activations round to different bf16
neighbours now and then, and in bf16 such flips move these results by ~2e-3 (1e-7 relative noise on the
weights moves the bf16 logits of the RWKV-7 test model by 1.9e-3)."""
import numpy as np
import torch

ENABLED = False
TOL_BF16, EMULATION_FACTOR, EMULATION_SLACK, TOL_LOSS = 0.1, 1.5, 0.005, 1e-2


def norm_rel(a, b):
    """||a - b|| / ||b|| over all elements."""
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def bf16_bound(emulated, ref):
    """The 2-norm relative error a bf16 result may have against ref (see above)."""
    return min(TOL_BF16, EMULATION_FACTOR * norm_rel(emulated, ref) + EMULATION_SLACK)


def to_bf16(x):
    """x rounded to bf16 and widened back to its dtype."""
    return x.to(torch.float32).to(torch.bfloat16).to(x.dtype)


def _sum_to(g, shape):
    """g summed over the leading (broadcast) dimensions down to shape."""
    while g.dim() > len(shape):
        g = g.sum(0)
    return g


class _Bf16MatMul(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return to_bf16(a) @ to_bf16(b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        g16 = to_bf16(g)
        ga = g16 @ to_bf16(b).transpose(-1, -2)
        gb = _sum_to(to_bf16(a).transpose(-1, -2) @ g16, b.shape)
        return _sum_to(ga, a.shape), gb


def matmul(a, b):
    """a @ b, exact or (ENABLED) with the operands of the product and of both backward products rounded."""
    return _Bf16MatMul.apply(a, b) if ENABLED else a @ b
