#!/usr/bin/python3
"""Random RWKV-7 (x070) weights in the official RWKV-LM layout, written as a PyTorch .pth the way the
released World checkpoints are (bf16 by default, layer 0 without the unused v0/v1/v2), for tests that
must not depend on a download. Written from the official key list (src/rwkv7/README.md), not from
dreamstate's C code.

  official_weights.py OUT.pth --shape 0.1b|tiny [--layers L] [--seed S] [--dtype bf16|fp32]

The values are drawn so that a forward pass is well conditioned (a near-uniform next-token
distribution), not to be a trained model."""
import argparse
import math

import torch

# name: (L, C, V, Dw, Da, Dv, Dg) of the released World models, and a tiny shape for fast CI runs.
SHAPES = {
    '0.1b': (12, 768, 65536, 64, 64, 32, 128),
    '0.4b': (24, 1024, 65536, 64, 64, 32, 128),
    '1.5b': (24, 2048, 65536, 96, 96, 64, 256),
    '2.9b': (32, 2560, 65536, 96, 96, 64, 320),
    'tiny': (2, 128, 65536, 32, 32, 32, 64),
}


def make_state_dict(L, C, V, Dw, Da, Dv, Dg, seed=0, dtype=torch.bfloat16):
    g = torch.Generator().manual_seed(seed)
    H, N = C // 64, 64

    def rand(*shape, scale=1.0, mean=0.0):
        return (mean + scale * torch.randn(*shape, generator=g, dtype=torch.float64)).to(dtype)

    def mix(scale=0.2, mean=0.5):
        return rand(1, 1, C, scale=scale, mean=mean)

    sd = {'emb.weight': rand(V, C, scale=1.0),
          'blocks.0.ln0.weight': rand(C, scale=0.1, mean=1.0), 'blocks.0.ln0.bias': rand(C, scale=0.1)}
    for i in range(L):
        p = f'blocks.{i}.'
        sd.update({p + 'ln1.weight': rand(C, scale=0.1, mean=1.0), p + 'ln1.bias': rand(C, scale=0.1),
                   p + 'ln2.weight': rand(C, scale=0.1, mean=1.0), p + 'ln2.bias': rand(C, scale=0.1)})
        for m in ('x_r', 'x_w', 'x_k', 'x_v', 'x_a', 'x_g'):
            sd[p + 'att.' + m] = mix()
        sd[p + 'att.w0'] = mix(scale=0.5, mean=-1.0)
        sd[p + 'att.a0'] = mix(scale=0.3, mean=0.0)
        ranks = {'w': Dw, 'a': Da, 'v': Dv, 'g': Dg}
        for lora, D in ranks.items():
            if lora == 'v' and i == 0:
                continue  # the value residual is unused in layer 0: released files omit it
            sd[p + f'att.{lora}1'] = rand(C, D, scale=1 / math.sqrt(C))
            sd[p + f'att.{lora}2'] = rand(D, C, scale=0.1 / math.sqrt(D))
        if i > 0:
            sd[p + 'att.v0'] = mix(scale=0.3, mean=0.5)
        sd[p + 'att.k_k'] = mix(scale=0.1, mean=0.8)
        sd[p + 'att.k_a'] = mix(scale=0.1, mean=1.0)
        sd[p + 'att.r_k'] = rand(H, N, scale=0.1)
        for m in ('receptance', 'key', 'value', 'output'):
            sd[p + f'att.{m}.weight'] = rand(C, C, scale=1 / math.sqrt(C))
        sd[p + 'att.ln_x.weight'] = rand(C, scale=0.1, mean=1.0)
        sd[p + 'att.ln_x.bias'] = rand(C, scale=0.1)
        sd[p + 'ffn.x_k'] = mix()
        sd[p + 'ffn.key.weight'] = rand(4 * C, C, scale=1 / math.sqrt(C))
        sd[p + 'ffn.value.weight'] = rand(C, 4 * C, scale=0.5 / math.sqrt(4 * C))
    sd.update({'ln_out.weight': rand(C, scale=0.1, mean=1.0), 'ln_out.bias': rand(C, scale=0.1),
               'head.weight': rand(V, C, scale=3 / math.sqrt(C))})
    return sd


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('out')
    ap.add_argument('--shape', choices=sorted(SHAPES), default='tiny')
    ap.add_argument('--layers', type=int, help='override the layer count of the shape')
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--dtype', choices=('bf16', 'fp32'), default='bf16')
    a = ap.parse_args()
    L, *rest = SHAPES[a.shape]
    sd = make_state_dict(a.layers or L, *rest, seed=a.seed,
                         dtype=torch.bfloat16 if a.dtype == 'bf16' else torch.float32)
    torch.save(sd, a.out)


if __name__ == '__main__':
    main()
