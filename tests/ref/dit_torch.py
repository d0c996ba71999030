"""Independent PyTorch reference of the conditional DiT with adaLN-Zero, written from
the published DiT (summarised in src/dit/README.md §1; the condition in §1.2) with plain tensor ops and autograd
(no code shared with the C implementation). The tests run it in float64 (the dtype of x), with
exact products or with the products train.precision bf16 makes (bf16_emulation.py); the bench
(tests/ref/bench_torch.py) in float32.

P maps the DiT state-dict names (plus c_embedder.* for the condition vector) to tensors."""
import math

import torch
import torch.nn.functional as F

import bf16_emulation
from bf16_emulation import matmul

FREQ_DIM = 256
LN_EPS = 1e-6


def timestep_features(t, dtype):
    """[B] integer steps -> [B, 256]: cos block, then sin block, f_k = exp(-ln(10000) k / 128)."""
    half = FREQ_DIM // 2
    f = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float64) / half)
    a = t.to(torch.float64)[:, None] * f[None, :]
    return torch.cat([torch.cos(a), torch.sin(a)], dim=1).to(dtype)


def sincos_1d(width, pos):
    """[n] positions -> [n, width]: sin(pos w_k) || cos(pos w_k), w_k = 10000^(-k / (width/2))."""
    k = torch.arange(width // 2, dtype=torch.float64)
    w = 1.0 / 10000.0 ** (k / (width // 2))
    a = pos.to(torch.float64)[:, None] * w[None, :]
    return torch.cat([torch.sin(a), torch.cos(a)], dim=1)


def pos_embed_2d(D, G):
    """[G*G, D], tokens row-major over the grid; first half encodes the column, second the row."""
    rows = torch.arange(G).repeat_interleave(G)
    cols = torch.arange(G).repeat(G)
    return torch.cat([sincos_1d(D // 2, cols), sincos_1d(D // 2, rows)], dim=1)


def linear(x, P, name):
    if bf16_emulation.ENABLED:
        return matmul(x, P[name + '.weight'].T) + P[name + '.bias']
    return F.linear(x, P[name + '.weight'], P[name + '.bias'])


def modulate(x, shift, scale):
    return F.layer_norm(x, (x.shape[-1],), eps=LN_EPS) * (1 + scale[:, None, :]) + shift[:, None, :]


def attention(u, P, name, heads):
    B, T, D = u.shape
    dh = D // heads
    qkv = linear(u, P, name + '.qkv').reshape(B, T, 3, heads, dh).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]                       # [B, heads, T, dh]
    a = torch.softmax(matmul(q, k.transpose(-1, -2)) / math.sqrt(dh), dim=-1)
    o = matmul(a, v).transpose(1, 2).reshape(B, T, D)
    return linear(o, P, name + '.proj')


def forward(P, x, t, labels, vec, vec_null, C, I, p, D, depth, heads, K, E):
    """x [B, C, I, I] -> epsilon prediction [B, C, I, I]."""
    B = x.shape[0]
    G = I // p
    # patch embed: a convolution with kernel = stride = p, then the fixed position table
    h = F.conv2d(x, P['x_embedder.proj.weight'], P['x_embedder.proj.bias'], stride=p)
    h = h.flatten(2).transpose(1, 2) + pos_embed_2d(D, G).to(x.dtype)[None]
    # condition: c = t_emb + y
    c = linear(F.silu(linear(timestep_features(t, x.dtype), P, 't_embedder.mlp.0')), P, 't_embedder.mlp.2')
    if K > 0:
        c = c + P['y_embedder.embedding_table.weight'][labels]
    if E > 0:
        y = linear(vec, P, 'c_embedder.proj')
        c = c + torch.where(vec_null[:, None], P['c_embedder.null'][None, :].expand(B, D), y)
    sc = F.silu(c)
    for l in range(depth):
        b = f'blocks.{l}'
        shift1, scale1, gate1, shift2, scale2, gate2 = linear(sc, P, b + '.adaLN_modulation.1').chunk(6, dim=1)
        h = h + gate1[:, None, :] * attention(modulate(h, shift1, scale1), P, b + '.attn', heads)
        z = linear(modulate(h, shift2, scale2), P, b + '.mlp.fc1')
        m = linear(F.gelu(z, approximate='tanh'), P, b + '.mlp.fc2')
        h = h + gate2[:, None, :] * m
    shift, scale = linear(sc, P, 'final_layer.adaLN_modulation.1').chunk(2, dim=1)
    out = linear(modulate(h, shift, scale), P, 'final_layer.linear')   # [B, T, p*p*C], (u, v, c)
    # unpatchify: pixel [c, gr p + u, gc p + v] <- token (gr, gc), element (u p + v) C + c
    out = out.reshape(B, G, G, p, p, C).permute(0, 5, 1, 3, 2, 4)     # [B, C, gr, u, gc, v]
    return out.reshape(B, C, I, I)
