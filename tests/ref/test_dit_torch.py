"""Acceptance test: the C DiT's loss, epsilon prediction, dL/dx_t, the condition vectors' gradient (from
ds_dit_backward_from) and every parameter gradient match
the PyTorch reference (tests/ref/dit_torch.py, float64), on configurations with labels (including the null
label), a condition vector (one sample using the null vector), patch sizes 4, 2 and 8, and DiT-B/4 width
(d 768, 12 heads, patch 4) at depth 2:
 - fp32 matrix products: max relative error max|c - ref| / max|ref| <= 1e-4 per tensor;
 - bf16 matrix products (train.precision bf16): relative error in the 2-norm <= 0.1 against the exact
   reference and <= 1.5 x + 0.005 that of the reference with bf16-rounded product operands; the loss
   within 1e-2 (bounds derived in tests/ref/bf16_emulation.py)."""
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
from dump import read_dump, rel  # noqa: E402
import dit_torch  # noqa: E402
import bf16_emulation  # noqa: E402
from bf16_emulation import bf16_bound, norm_rel  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))
TOL = 1e-4
INPUTS = ('dims', 'x_t', 't', 'labels', 'vec', 'vec_null', 'noise', 'loss', 'eps', 'dx', 'dvec')




def reference(d, C, I, p, D, depth, heads, K, E, bf16):
    """Loss, epsilon, dL/dx_t, dL/dvec and parameter gradients of the float64 reference on the dumped inputs."""
    bf16_emulation.ENABLED = bf16
    P = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in d.items()
         if k not in INPUTS and not k.startswith('grad.')}
    x = torch.tensor(d['x_t'], dtype=torch.float64, requires_grad=True)
    t = torch.tensor(d['t'].astype(np.int64))
    labels = torch.tensor(d['labels'].astype(np.int64))
    vec = torch.tensor(d['vec'], dtype=torch.float64, requires_grad=E > 0)
    vec_null = torch.tensor(d['vec_null'] != 0)
    noise = torch.tensor(d['noise'], dtype=torch.float64)
    eps = dit_torch.forward(P, x, t, labels, vec, vec_null, C, I, p, D, depth, heads, K, E)
    loss = ((eps - noise) ** 2).mean()
    loss.backward()
    bf16_emulation.ENABLED = False
    out = {'eps': eps.detach().numpy(), 'dx': x.grad.numpy()}
    if E > 0:
        assert np.any(vec.grad.numpy()), 'dvec: reference gradient is zero (the test would be vacuous)'
        out['dvec'] = vec.grad.numpy()
    for name, tensor in P.items():
        assert np.any(tensor.grad.numpy()), f'{name}: reference gradient is zero (the test would be vacuous)'
        out['grad.' + name] = tensor.grad.numpy()
    return loss.item(), out


def check(C, I, p, D, depth, heads, K, E, B, seed, precision):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, 'dump.bin')
        subprocess.run([os.path.join(ROOT, 'build/tests/test_dit'), '--dump', path] +
                       [str(v) for v in (C, I, p, D, depth, heads, K, E, B, seed)] + [precision], check=True)
        d = read_dump(path)
    assert list(d['dims']) == [C, I, p, D, depth, heads, 4, K, E, B]
    loss, ref = reference(d, C, I, p, D, depth, heads, K, E, False)
    results = [('loss', abs(float(d['loss'][0]) - loss) / abs(loss), TOL if precision == 'fp32' else bf16_emulation.TOL_LOSS)]
    if precision == 'fp32':
        results += [(name, rel(d[name], r), TOL) for name, r in ref.items()]
    else:
        _, emulated = reference(d, C, I, p, D, depth, heads, K, E, True)
        results += [(name, norm_rel(d[name], r), bf16_bound(emulated[name], r)) for name, r in ref.items()]
    failures = [f'{name}: {e:.3g} > {tol:.3g}' for name, e, tol in results if not e <= tol]
    if precision == 'bf16' and not norm_rel(d['eps'], ref['eps']) > 1e-4:
        failures.append('eps equals the exact reference to 1e-4: the products were not bf16')
    worst = max(results, key=lambda r: r[1])
    tag = f'{precision} C={C} I={I} p={p} d={D} depth={depth} heads={heads} K={K} cond={E} B={B}'
    metric = 'max rel err' if precision == 'fp32' else '2-norm rel err'
    print(f'{tag}: {len(results)} tensors compared, worst {worst[0]} {metric} {worst[1]:.3g} (bound {worst[2]:.3g})')
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
        for precision in ('fp32', 'bf16'):
            p, f = check(*cfg, precision)
            passed += p
            failed += f
    print(f'{passed} passed, {failed} failed')
    sys.exit(1 if failed else 0)


if __name__ == '__main__':
    main()
