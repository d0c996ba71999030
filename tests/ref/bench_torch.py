"""PyTorch baseline for `make bench`: trains the reference RWKV-7 of tests/ref/rwkv7_torch.py
(plain PyTorch ops, serial WKV loop, float32) on the same shape with the same thread count, one
forward + backward + AdamW step per iteration on random tokens. Prints one JSON line.
usage: bench_torch.py L C V T B STEPS THREADS"""
import json
import math
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
import rwkv7_torch  # noqa: E402


def r32(x):
    return max(32, 32 * round(x / 32))


def make_params(L, C, V):
    H, N = C // 64, 64
    Dw = Da = r32(1.8 * math.sqrt(C))
    Dv, Dg = r32(1.3 * math.sqrt(C)), r32(0.6 * C ** 0.8)
    shapes = {'emb.weight': (V, C), 'blocks.0.ln0.weight': (C,), 'blocks.0.ln0.bias': (C,),
              'ln_out.weight': (C,), 'ln_out.bias': (C,), 'head.weight': (V, C)}
    for l in range(L):
        p = f'blocks.{l}.'
        for k in ('ln1.weight', 'ln1.bias', 'ln2.weight', 'ln2.bias', 'att.ln_x.weight', 'att.ln_x.bias'):
            shapes[p + k] = (C,)
        for k in ('x_r', 'x_w', 'x_k', 'x_v', 'x_a', 'x_g', 'w0', 'a0', 'v0', 'k_k', 'k_a'):
            shapes[p + 'att.' + k] = (1, 1, C)
        shapes[p + 'ffn.x_k'] = (1, 1, C)
        for k, D in (('w', Dw), ('a', Da), ('v', Dv), ('g', Dg)):
            shapes[p + f'att.{k}1'] = (C, D)
            shapes[p + f'att.{k}2'] = (D, C)
        shapes[p + 'att.r_k'] = (H, N)
        for k in ('receptance', 'key', 'value', 'output'):
            shapes[p + f'att.{k}.weight'] = (C, C)
        shapes[p + 'ffn.key.weight'] = (4 * C, C)
        shapes[p + 'ffn.value.weight'] = (C, 4 * C)
    g = torch.Generator().manual_seed(0)
    return {k: (0.02 * torch.randn(s, generator=g)).requires_grad_() for k, s in shapes.items()}


def main():
    L, C, V, T, B, steps, threads = map(int, sys.argv[1:8])
    torch.set_num_threads(threads)
    P = make_params(L, C, V)
    opt = torch.optim.AdamW(P.values(), lr=1e-4, betas=(0.9, 0.99), eps=1e-18, weight_decay=0.001)
    total = 0.0
    for s in range(-1, steps):
        tokens = torch.randint(0, V, (B, T))
        targets = torch.randint(0, V, (B, T))
        t0 = time.perf_counter()
        opt.zero_grad()
        loss = rwkv7_torch.loss_fn(rwkv7_torch.forward(P, tokens, L, C), targets, 1e-4)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(P.values(), 1.0)
        opt.step()
        if s >= 0:
            total += time.perf_counter() - t0
    print(json.dumps({'shape': f'L{L} C{C} V{V} T{T} B{B}', 'threads': threads, 'torch': torch.__version__,
                      'step_s': round(total / steps, 4), 'tokens_per_s': round(B * T * steps / total, 1)}))


if __name__ == '__main__':
    main()
