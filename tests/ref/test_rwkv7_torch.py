"""Acceptance test: the C RWKV-7's logits, loss, every parameter gradient and the gradient of the initial
state (every part: att x_prev, WKV, ffn x_prev; src/rwkv7/README.md §3.4) match the PyTorch reference
(tests/ref/rwkv7_torch.py, float64) to max relative error 1e-4 (per tensor, max|c - ref| / max|ref|), for
L=2 C=128 T=64 B=2, for T not a multiple of 16, and from a random initial state."""
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
from dump import read_dump, rel  # noqa: E402
import rwkv7_torch  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))
TOL = 1e-4
NOT_WEIGHTS = ('dims', 'tokens', 'targets', 'loss', 'logits')
STATE_PARTS = ('att_x', 'wkv', 'ffn_x')


def check(L, C, T, B, V, seed, state=False):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, 'dump.bin')
        subprocess.run([os.path.join(ROOT, 'build/tests/test_rwkv7'), '--dump', path, str(L), str(C), str(T),
                        str(B), str(V), str(seed)] + (['state'] if state else []), check=True)
        d = read_dump(path)
    P = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in d.items()
         if k not in NOT_WEIGHTS and not k.startswith(('grad.', 'state.'))}
    # the initial state [L, B, ...]; zero unless the dump started from one (its gradient is dumped either way)
    S = {part: torch.tensor(d[f'state.{part}'] if state else np.zeros(d[f'grad.state.{part}'].shape),
                            dtype=torch.float64, requires_grad=True) for part in STATE_PARTS}
    tokens = torch.tensor(d['tokens'].astype(np.int64))
    targets = torch.tensor(d['targets'].astype(np.int64))
    logits = rwkv7_torch.forward(P, tokens, L, C, [S['wkv'][l] for l in range(L)],
                                 shift_states=[(S['att_x'][l], S['ffn_x'][l]) for l in range(L)])
    loss = rwkv7_torch.loss_fn(logits, targets, 1e-4)
    loss.backward()
    failures, worst = [], ('', 0.0)
    results = [('logits', rel(d['logits'], logits.detach().numpy())),
               ('loss', abs(float(d['loss'][0]) - loss.item()) / abs(loss.item()))]
    for name, t in P.items():
        ref = t.grad.numpy() if t.grad is not None else np.zeros(t.shape)
        if not np.any(ref):  # layer-0 v-LoRA: unused, both must be exactly zero
            results.append((name, float(np.max(np.abs(d['grad.' + name])))))
        else:
            results.append(('grad.' + name, rel(d['grad.' + name], ref)))
    for part in STATE_PARTS:
        results.append((f'grad.state.{part}', rel(d[f'grad.state.{part}'], S[part].grad.numpy())))
    for name, e in results:
        if not e <= TOL:
            failures.append(f'{name}: {e:.3g}')
        if e > worst[1]:
            worst = (name, e)
    tag = f'L={L} C={C} T={T} B={B} V={V}' + (' from a random state' if state else '')
    print(f'{tag}: {len(results)} tensors compared, worst {worst[0]} rel err {worst[1]:.3g}')
    for f in failures:
        print(f'  FAIL {tag} {f}')
    return len(results) - len(failures), len(failures)


def main():
    torch.set_num_threads(2)
    passed = failed = 0
    for cfg in [(2, 128, 64, 2, 256, 1), (2, 128, 37, 2, 256, 2), (3, 192, 21, 1, 300, 3),
                (2, 128, 37, 2, 256, 4, True)]:
        p, f = check(*cfg)
        passed += p
        failed += f
    print(f'{passed} passed, {failed} failed')
    sys.exit(1 if failed else 0)


if __name__ == '__main__':
    main()
