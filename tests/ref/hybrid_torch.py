"""Independent PyTorch reference (float64, autograd) of one training micro-batch of the DREAMSTATE
hybrid (src/hybrid/README.md §1.2-1.5), built on tests/ref/rwkv7_torch.py and tests/ref/dit_torch.py.

Usage: hybrid_torch.py DUMP... where each DUMP is written by build/tests/test_hybrid: the static RWKV-7
weights ("rwkv7.*"), the DiT ("dit.*"), the alpha logits, the attention pool ("cond.attn.*", attn_prefix),
U0 (A2), tokens, targets, the tokens the conditions are read from, the draws (t, condition drop, eps,
eps*), the C loss terms and every C gradient ("grad.<tensor>"). The direct generator (src/hybrid/README.md
§1.7) runs the DiT once on sqrt(ab) x0 at t* (no noise, no diffusion loss). Prints
one line "CASE NAME ERR" per loss term and gradient: the relative error max|c - ref| / max|ref| (for a
gradient whose reference is exactly zero, max|c|)."""
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
from dump import read_dump, rel  # noqa: E402
import dit_torch  # noqa: E402
import rwkv7_torch  # noqa: E402

TILE = 64
FIRST_TOKEN, MEAN_PREFIX, ATTN_PREFIX, LN_OUT_PREFIX = 0, 1, 2, 3   # ds_hybrid_condition
MATRIX_KEYS = ('att.receptance.weight', 'att.key.weight', 'att.value.weight')


def tile(W):
    """[C, C] -> [(C/64)^2, 64, 64]: channel (C/64) a + b holds W[64 a + i, 64 b + j]."""
    g = W.shape[0] // TILE
    return W.reshape(g, TILE, g, TILE).permute(0, 2, 1, 3).reshape(g * g, TILE, TILE)


def untile(img, C):
    g = C // TILE
    return img.reshape(g, g, TILE, TILE).permute(0, 2, 1, 3).reshape(C, C)


def reference(d):
    (L, C, V, _dw, _da, _dv, _dg, nT, mask, lowrank, r, condition_kind, prefix, learn_alpha, train_static, t_star,
     hidden, depth, heads, patch, _mlp, B, T, direct) = (int(x) for x in d['config'])
    lambda_lm, lambda_pd, l2wrap, loss_scale, alpha_init = (float(x) for x in d['fconfig'])
    layers = [int(x) for x in d['targets_layers']]
    mats = [m for m in range(3) if mask & (1 << m)]
    f64 = lambda x, grad=False: torch.tensor(np.array(x), dtype=torch.float64, requires_grad=grad)
    P = {k[6:]: f64(v, bool(train_static)) for k, v in d.items() if k.startswith('rwkv7.')}
    Q = {k[4:]: f64(v, True) for k, v in d.items() if k.startswith('dit.')}
    logit = f64(d['alpha.logit'], bool(learn_alpha))
    A = {k: f64(v, True) for k, v in d.items() if k.startswith('cond.attn.')}
    alpha = torch.sigmoid(logit) if learn_alpha else torch.full_like(logit, alpha_init)
    tokens = torch.tensor(d['tokens'].astype(np.int64))
    cond_tokens = torch.tensor(d['cond_tokens'].astype(np.int64))
    targets = torch.tensor(d['targets'].astype(np.int64))
    targets[:, :prefix] = -1                      # positions < P are never scored
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    ab = torch.cumprod(1 - betas, 0)
    emb = P['emb.weight'].detach()                # the condition reads the embedding as a constant

    def condition(tok):
        if condition_kind == FIRST_TOKEN:
            return emb[tok[0]]
        if condition_kind == LN_OUT_PREFIX:   # the static weights' ln_out rows, a constant (src/hybrid/README.md §1.1)
            with torch.no_grad():
                return rwkv7_torch.forward(P, tok[None, :prefix], L, C, hidden=True)[0].mean(0)
        h = emb[tok[:prefix]]
        if condition_kind == MEAN_PREFIX:
            return h.mean(0)
        # attention pool (src/hybrid/README.md §1.1): sum_t softmax_t(q . K h_t / sqrt(C)) V h_t, K and V applied as Linears
        keys, values = F.linear(h, A['cond.attn.key.weight']), F.linear(h, A['cond.attn.value.weight'])
        weights = torch.softmax(keys @ A['cond.attn.q'] / C ** 0.5, 0)
        return (weights[:, None] * values).sum(0)

    # constants of the static weights: mu, sigma (A1) or sigma_V (A2), and x0
    W = {(j, m): P[f'blocks.{l}.{MATRIX_KEYS[m]}'] for j, l in enumerate(layers) for m in mats}
    stat = {k: (w.detach().mean(), w.detach().std(unbiased=False)) for k, w in W.items()}
    if lowrank:
        x0 = torch.zeros(nT, len(mats) * C * r // (TILE * TILE), TILE, TILE, dtype=torch.float64)
        U0 = f64(d['u0'])
    else:
        x0 = torch.stack([torch.cat([tile((W[j, m].detach() - stat[j, m][0]) / stat[j, m][1]) for m in mats])
                          for j in range(nT)])
    n_ch = x0.shape[1]

    logits, pd_terms = [], []
    labels = torch.arange(nT)
    for b in range(B):
        e = condition(cond_tokens[b])
        if direct:   # no noise, one DiT call per layer, no diffusion loss
            x_b = ab[t_star].sqrt() * x0
            eps_hat = dit_torch.forward(Q, x_b, torch.full((nT,), t_star), labels, e[None].expand(nT, C),
                                        torch.zeros(nT, dtype=torch.bool), n_ch, TILE, patch, hidden, depth, heads, nT, C)
        else:
            t_a = torch.tensor(d['draw_t'][b].astype(np.int64))
            eps = f64(d['eps'][b]).reshape(nT, n_ch, TILE, TILE)
            eps_star = f64(d['eps_star'][b]).reshape(nT, n_ch, TILE, TILE)
            x_a = ab[t_a].sqrt()[:, None, None, None] * x0 + (1 - ab[t_a]).sqrt()[:, None, None, None] * eps
            x_b = ab[t_star].sqrt() * x0 + (1 - ab[t_star]).sqrt() * eps_star
            out = dit_torch.forward(Q, torch.cat([x_a, x_b]), torch.cat([t_a, torch.full((nT,), t_star)]),
                                    torch.cat([labels, labels]), e[None].expand(2 * nT, C),
                                    torch.cat([torch.tensor(d['draw_drop'][b] != 0), torch.zeros(nT, dtype=torch.bool)]),
                                    n_ch, TILE, patch, hidden, depth, heads, nT, C)
            pd_terms.append(((out[:nT] - eps) ** 2).flatten(1).mean(1))
            eps_hat = out[nT:]
        x0_hat = (x_b - (1 - ab[t_star]).sqrt() * eps_hat) / ab[t_star].sqrt()
        Pb = dict(P)
        for j, l in enumerate(layers):
            for mi, m in enumerate(mats):
                w = W[j, m]
                if lowrank:
                    Vm = stat[j, m][1] / 2 * x0_hat[j].reshape(len(mats), C, r)[mi]
                    gen = w + U0[j, mi] @ Vm.T
                else:
                    mu, sd = stat[j, m]
                    gen = sd * untile(x0_hat[j, mi * (C // TILE) ** 2:(mi + 1) * (C // TILE) ** 2], C) + mu
                a = alpha[j, mi]
                Pb[f'blocks.{l}.{MATRIX_KEYS[m]}'] = a * w + (1 - a) * gen
        logits.append(rwkv7_torch.forward(Pb, tokens[b:b + 1], L, C))
    lm = rwkv7_torch.loss_fn(torch.cat(logits), targets, l2wrap)
    pd = torch.cat(pd_terms).mean() if pd_terms else torch.zeros((), dtype=torch.float64)
    total = lambda_lm * lm + lambda_pd * pd
    (loss_scale * total).backward()
    grads = {'rwkv7.' + k: t.grad for k, t in P.items()}
    grads.update({'dit.' + k: t.grad for k, t in Q.items()})
    grads['alpha.logit'] = logit.grad
    grads.update({k: t.grad for k, t in A.items()})
    return (total.item(), lm.item(), pd.item()), grads


def compare(d):
    losses, grads = reference(d)
    results = []
    for name, c, ref in zip(('loss.total', 'loss.lm', 'loss.pd'), d['loss'], losses):
        results.append((name, abs(float(c) - ref) / abs(ref) if ref else abs(float(c))))
    for key in d:
        if not key.startswith('grad.'):
            continue
        c, g = d[key], grads[key[5:]]
        ref = g.numpy() if g is not None else np.zeros(c.shape)
        results.append((key, rel(c, ref) if np.any(ref) else float(np.max(np.abs(c)))))
    return results


def main():
    torch.set_num_threads(1)
    for i, path in enumerate(sys.argv[1:]):
        for name, err in compare(read_dump(path)):
            print(f'{i} {name} {err:.6e}')


if __name__ == '__main__':
    main()
