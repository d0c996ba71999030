"""Acceptance test: the C DiT's loss, epsilon prediction, dL/dx_t and every parameter gradient match
the PyTorch reference (tests/ref/dit_torch.py, float64) to max relative error 1e-4 (per tensor,
max|c - ref| / max|ref|), on configurations with labels (including the null label), a condition
vector (one sample using the null vector), patch sizes 4, 2 and 8, and DiT-B/4 width (d 768, 12 heads,
patch 4) at depth 2."""
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
from dump import read_dump, rel  # noqa: E402
import dit_torch  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))
TOL = 1e-4
INPUTS = ('dims', 'x_t', 't', 'labels', 'vec', 'vec_null', 'noise', 'loss', 'eps', 'dx')




def check(C, I, p, D, depth, heads, K, E, B, seed):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, 'dump.bin')
        subprocess.run([os.path.join(ROOT, 'build/tests/test_dit'), '--dump', path] +
                       [str(v) for v in (C, I, p, D, depth, heads, K, E, B, seed)], check=True)
        d = read_dump(path)
    assert list(d['dims']) == [C, I, p, D, depth, heads, 4, K, E, B]
    P = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in d.items()
         if k not in INPUTS and not k.startswith('grad.')}
    x = torch.tensor(d['x_t'], dtype=torch.float64, requires_grad=True)
    t = torch.tensor(d['t'].astype(np.int64))
    labels = torch.tensor(d['labels'].astype(np.int64))
    vec = torch.tensor(d['vec'], dtype=torch.float64)
    vec_null = torch.tensor(d['vec_null'] != 0)
    noise = torch.tensor(d['noise'], dtype=torch.float64)
    eps = dit_torch.forward(P, x, t, labels, vec, vec_null, C, I, p, D, depth, heads, K, E)
    loss = ((eps - noise) ** 2).mean()
    loss.backward()
    results = [('eps', rel(d['eps'], eps.detach().numpy())),
               ('loss', abs(float(d['loss'][0]) - loss.item()) / abs(loss.item())),
               ('dx', rel(d['dx'], x.grad.numpy()))]
    for name, tensor in P.items():
        ref = tensor.grad.numpy()
        assert np.any(ref), f'{name}: reference gradient is zero (the test would be vacuous)'
        results.append(('grad.' + name, rel(d['grad.' + name], ref)))
    failures = [f'{name}: {e:.3g}' for name, e in results if not e <= TOL]
    worst = max(results, key=lambda r: r[1])
    tag = f'C={C} I={I} p={p} d={D} depth={depth} heads={heads} K={K} cond={E} B={B}'
    print(f'{tag}: {len(results)} tensors compared, worst {worst[0]} rel err {worst[1]:.3g}')
    for f in failures:
        print(f'  FAIL {tag} {f}')
    return len(results) - len(failures), len(failures)


def main():
    torch.set_num_threads(2)
    passed = failed = 0
    configs = [(4, 16, 4, 64, 2, 4, 8, 0, 3, 1),     # labels only (sample 1 null), patch 4
               (4, 16, 2, 64, 2, 4, 3, 7, 3, 2),     # labels + condition vector (sample 0 null), patch 2
               (12, 16, 8, 48, 3, 3, 0, 5, 2, 3),    # condition vector only, 12 channels, patch 8
               (12, 48, 4, 768, 2, 12, 5, 0, 2, 4)]  # DiT-B/4 width, depth 2: 144 tokens (tiled attention, tails)
    for cfg in configs:
        p, f = check(*cfg)
        passed += p
        failed += f
    print(f'{passed} passed, {failed} failed')
    sys.exit(1 if failed else 0)


if __name__ == '__main__':
    main()
