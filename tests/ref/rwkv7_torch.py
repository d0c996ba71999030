"""Independent PyTorch reference of RWKV-7 (x070), written from the published equations (summarised in src/rwkv7/README.md §2) with
plain tensor ops and autograd (no code shared with the C implementation). Runs in float64; the matrix
products can emulate train.precision bf16 (bf16_emulation.py)."""
import torch
import torch.nn.functional as F

from bf16_emulation import matmul

N = 64
DECAY_SCALE = 0.6065306597126334  # e^{-1/2}




def wkv7(r, decay, k, v, alpha, beta, state=None):
    """Naive serial recurrence, S[b,h,i(value),j(key)]: S = S diag(decay) + (S alpha) beta^T + v k^T; y = S r."""
    B, T, C = r.shape
    H = C // N
    view = lambda x: x.view(B, T, H, N)
    r, decay, k, v, alpha, beta = map(view, (r, decay, k, v, alpha, beta))
    S = torch.zeros(B, H, N, N, dtype=r.dtype) if state is None else state
    ys = []
    for t in range(T):
        sa = torch.einsum('bhij,bhj->bhi', S, alpha[:, t])
        S = S * decay[:, t, :, None, :] + sa[..., :, None] * beta[:, t, :, None, :] \
            + v[:, t, :, :, None] * k[:, t, :, None, :]
        ys.append(torch.einsum('bhij,bhj->bhi', S, r[:, t]))
    return torch.stack(ys, 1).reshape(B, T, C), S


def shift(x, prev=None):
    """x[t-1], with prev [B, C] at t = 0 (None: zeros, the zero state)."""
    if prev is None:
        return F.pad(x, (0, 0, 1, -1))
    return torch.cat([prev[:, None, :], x[:, :-1]], 1)


def forward(P, tokens, L, C, wkv_states=None, return_states=False, shift_states=None, hidden=False):
    """Logits [B, T, V]. wkv_states: None (zero), or per layer the initial WKV state [B, H, N, N] as
    S[b, h, value, key]. shift_states: None (zero), or per layer the initial token-shift states
    (att x_prev [B, C], ffn x_prev [B, C]). With return_states, also the final WKV state of every layer,
    in the same layout. With hidden, the final ln_out rows [B, T, C] instead of the logits."""
    B, T = tokens.shape
    H = C // N
    vec = lambda name: P[name].reshape(C)
    ln = lambda x, name: F.layer_norm(x, (C,), P[name + '.weight'], P[name + '.bias'], 1e-5)
    x = ln(P['emb.weight'][tokens], 'blocks.0.ln0')
    v_first = None
    finals = []
    for l in range(L):
        p = lambda key: P[f'blocks.{l}.{key}']
        att_prev, ffn_prev = (None, None) if shift_states is None else shift_states[l]
        a = ln(x, f'blocks.{l}.ln1')
        d = shift(a, att_prev) - a
        mix = lambda key: a + d * vec(f'blocks.{l}.att.{key}')
        xr, xw, xk, xv, xa, xg = (mix(k) for k in ('x_r', 'x_w', 'x_k', 'x_v', 'x_a', 'x_g'))
        r = matmul(xr, p('att.receptance.weight').T)
        k0 = matmul(xk, p('att.key.weight').T)
        vraw = matmul(xv, p('att.value.weight').T)
        z = vec(f'blocks.{l}.att.w0') + matmul(torch.tanh(matmul(xw, p('att.w1'))), p('att.w2'))
        decay = torch.exp(-DECAY_SCALE * torch.sigmoid(z))
        aic = torch.sigmoid(vec(f'blocks.{l}.att.a0') + matmul(matmul(xa, p('att.a1')), p('att.a2')))
        if l == 0:
            v = v_first = vraw
        else:
            nu = torch.sigmoid(vec(f'blocks.{l}.att.v0') + matmul(matmul(xv, p('att.v1')), p('att.v2')))
            v = vraw + (v_first - vraw) * nu
        g = matmul(torch.sigmoid(matmul(xg, p('att.g1'))), p('att.g2'))
        kap = (k0 * vec(f'blocks.{l}.att.k_k')).view(B, T, H, N)
        kk = (kap / kap.norm(dim=-1, keepdim=True).clamp_min(1e-12)).view(B, T, C)
        kr = k0 * (1 + (aic - 1) * vec(f'blocks.{l}.att.k_a'))
        y, S = wkv7(r, decay, kr, v, -kk, kk * aic, None if wkv_states is None else wkv_states[l])
        finals.append(S)
        gn = F.group_norm(y.reshape(B * T, C), H, p('att.ln_x.weight'), p('att.ln_x.bias'), eps=64e-5).view(B, T, C)
        u = (r * kr * p('att.r_k').reshape(C)).view(B, T, H, N).sum(-1, keepdim=True)
        out = gn + (u * v.view(B, T, H, N)).view(B, T, C)
        x = x + matmul(out * g, p('att.output.weight').T)
        b2 = ln(x, f'blocks.{l}.ln2')
        xk2 = b2 + (shift(b2, ffn_prev) - b2) * vec(f'blocks.{l}.ffn.x_k')
        x = x + matmul(torch.relu(matmul(xk2, p('ffn.key.weight').T)) ** 2, p('ffn.value.weight').T)
    x = ln(x, 'ln_out')
    if hidden:
        return x
    logits = matmul(x, P['head.weight'].T)
    return (logits, finals) if return_states else logits


class L2Wrap(torch.autograd.Function):
    """Identity on the loss; adds coef * max_logit / count to the gradient of each row's argmax logit."""

    @staticmethod
    def forward(ctx, loss, logits, mask, coef, count):
        ctx.save_for_backward(logits, mask)
        ctx.coef, ctx.count = coef, count
        return loss

    @staticmethod
    def backward(ctx, gy):
        logits, mask = ctx.saved_tensors
        mx, ids = logits.max(-1, keepdim=True)
        g = torch.zeros_like(logits).scatter_(-1, ids, mx * ctx.coef / ctx.count) * mask[..., None]
        return gy, g * gy, None, None, None


def loss_fn(logits, targets, l2wrap):
    V = logits.shape[-1]
    mask = (targets >= 0).to(logits.dtype)
    count = int(mask.sum().item())
    loss = F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1).long(), ignore_index=-1)
    return L2Wrap.apply(loss, logits, mask, l2wrap, count)
