"""PyTorch baselines for `make bench`, one forward + backward + gradient clipping + AdamW step per
iteration, float32, with the given thread count; prints one JSON line.
  bench_torch.py L C V T B STEPS THREADS
      the reference RWKV-7 of tests/ref/rwkv7_torch.py (plain PyTorch ops, serial WKV loop) on random tokens;
  bench_torch.py dit C I P D DEPTH HEADS B STEPS THREADS
      the DiT of tests/ref/dit_torch.py (F.linear, F.layer_norm, F.gelu, softmax attention) on random
      label-conditioned samples with the epsilon-MSE loss.
Debian's torch does its matrix products through the system BLAS (BLIS): run it with BLIS_ARCH_TYPE set
to the configuration the C side uses (tests/bench.sh does), or BLIS runs its generic kernels. The JSON
reports that variable and a 1024^3 sgemm's GFLOP/s as measured in this process."""
import json
import math
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
import dit_torch  # noqa: E402
import rwkv7_torch  # noqa: E402


def r32(x):
    return max(32, 32 * round(x / 32))


def rwkv7_params(L, C, V):
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
    return shapes


def dit_params(C, p, D, depth, K):
    shapes = {'x_embedder.proj.weight': (D, C, p, p), 'x_embedder.proj.bias': (D,),
              't_embedder.mlp.0.weight': (D, dit_torch.FREQ_DIM), 't_embedder.mlp.0.bias': (D,),
              't_embedder.mlp.2.weight': (D, D), 't_embedder.mlp.2.bias': (D,),
              'y_embedder.embedding_table.weight': (K + 1, D),
              'final_layer.adaLN_modulation.1.weight': (2 * D, D), 'final_layer.adaLN_modulation.1.bias': (2 * D,),
              'final_layer.linear.weight': (p * p * C, D), 'final_layer.linear.bias': (p * p * C,)}
    for l in range(depth):
        for name, out, inp in (('attn.qkv', 3 * D, D), ('attn.proj', D, D), ('mlp.fc1', 4 * D, D),
                               ('mlp.fc2', D, 4 * D), ('adaLN_modulation.1', 6 * D, D)):
            shapes[f'blocks.{l}.{name}.weight'] = (out, inp)
            shapes[f'blocks.{l}.{name}.bias'] = (out,)
    return shapes


def random_params(shapes):
    g = torch.Generator().manual_seed(0)
    return {k: (0.02 * torch.randn(s, generator=g)).requires_grad_() for k, s in shapes.items()}


def sgemm_gflops():
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    a @ b
    best = min(timed(lambda: a @ b) for _ in range(3))
    return round(2 * 1024 ** 3 / best * 1e-9, 1)


def timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def train(P, steps, loss_fn, **adamw):
    """Mean and best seconds of `steps` steps after one warm-up step."""
    opt = torch.optim.AdamW(P.values(), **adamw)

    def step():
        opt.zero_grad()
        loss_fn().backward()
        torch.nn.utils.clip_grad_norm_(P.values(), 1.0)
        opt.step()
    step()
    times = [timed(step) for _ in range(steps)]
    return sum(times) / steps, min(times)


def main():
    dit = sys.argv[1] == 'dit'
    args = list(map(int, sys.argv[2 if dit else 1:]))
    threads = args[-1]
    torch.set_num_threads(threads)
    report = {'threads': threads, 'torch': torch.__version__, 'blis_arch_type': os.environ.get('BLIS_ARCH_TYPE', ''),
              'sgemm_gflops': sgemm_gflops()}
    if dit:
        C, I, p, D, depth, heads, B, steps, _ = args
        K = 8
        P = random_params(dit_params(C, p, D, depth, K))
        T = (I // p) ** 2

        def loss_fn():
            x, noise = torch.randn(B, C, I, I), torch.randn(B, C, I, I)
            t, labels = torch.randint(0, 1000, (B,)), torch.randint(0, K + 1, (B,))
            eps = dit_torch.forward(P, x, t, labels, None, None, C, I, p, D, depth, heads, K, 0)
            return ((eps - noise) ** 2).mean()
        mean, best = train(P, steps, loss_fn, lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
        report.update(shape=f'C{C} I{I} p{p} d{D} depth{depth} heads{heads} B{B}', tokens=T, step_s=round(mean, 4),
                      best_step_s=round(best, 4), tokens_per_s=round(B * T / mean, 1))
    else:
        L, C, V, T, B, steps, _ = args
        P = random_params(rwkv7_params(L, C, V))

        def loss_fn():
            tokens, targets = torch.randint(0, V, (B, T)), torch.randint(0, V, (B, T))
            return rwkv7_torch.loss_fn(rwkv7_torch.forward(P, tokens, L, C), targets, 1e-4)
        mean, best = train(P, steps, loss_fn, lr=1e-4, betas=(0.9, 0.99), eps=1e-18, weight_decay=0.001)
        report.update(shape=f'L{L} C{C} V{V} T{T} B{B}', step_s=round(mean, 4), best_step_s=round(best, 4),
                      tokens_per_s=round(B * T / mean, 1))
    print(json.dumps(report))


if __name__ == '__main__':
    main()
