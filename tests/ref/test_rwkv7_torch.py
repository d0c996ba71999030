"""Acceptance test: the C RWKV-7's logits, loss and every parameter gradient against the PyTorch reference
(tests/ref/rwkv7_torch.py, float64), per tensor, for L=2 C=128 T=64 B=2 and for T not a multiple of 16:
 - fp32 matrix products: max relative error max|c - ref| / max|ref| <= 1e-4;
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
import bf16_emulation  # noqa: E402
from bf16_emulation import bf16_bound, norm_rel  # noqa: E402
from dump import read_dump, rel  # noqa: E402
import rwkv7_torch  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))
TOL = 1e-4


def reference(d, L, C, bf16):
    """Loss, logits and parameter gradients of the float64 reference on the dumped weights and tokens."""
    bf16_emulation.ENABLED = bf16
    P = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in d.items()
         if k not in ('dims', 'tokens', 'targets', 'loss', 'logits') and not k.startswith('grad.')}
    logits = rwkv7_torch.forward(P, torch.tensor(d['tokens'].astype(np.int64)), L, C)
    loss = rwkv7_torch.loss_fn(logits, torch.tensor(d['targets'].astype(np.int64)), 1e-4)
    loss.backward()
    bf16_emulation.ENABLED = False
    grads = {k: t.grad.numpy() if t.grad is not None else np.zeros(t.shape) for k, t in P.items()}
    return loss.item(), logits.detach().numpy(), grads


def check(L, C, T, B, V, seed, precision):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, 'dump.bin')
        subprocess.run([os.path.join(ROOT, 'build/tests/test_rwkv7'), '--dump', path, str(L), str(C), str(T),
                        str(B), str(V), str(seed), precision], check=True)
        d = read_dump(path)
    loss, logits, grads = reference(d, L, C, False)
    pairs = [('logits', d['logits'], logits)] + [('grad.' + k, d['grad.' + k], g) for k, g in grads.items()]
    results = [('loss', abs(float(d['loss'][0]) - loss) / abs(loss), TOL if precision == 'fp32' else bf16_emulation.TOL_LOSS)]
    if precision == 'bf16':
        _, logits16, grads16 = reference(d, L, C, True)
        emulated = {'logits': logits16, **{'grad.' + k: g for k, g in grads16.items()}}
    for name, c, ref in pairs:
        if not np.any(ref):  # layer-0 v-LoRA: unused, both must be exactly zero
            results.append((name, float(np.max(np.abs(c))), 0.0))
        elif precision == 'fp32':
            results.append((name, rel(c, ref), TOL))
        else:
            results.append((name, norm_rel(c, ref), bf16_bound(emulated[name], ref)))
    failures = [f'{name}: {e:.3g} > {tol:.3g}' for name, e, tol in results if not e <= tol]
    if precision == 'bf16' and not norm_rel(d['logits'], logits) > 1e-4:
        failures.append('logits equal the exact reference to 1e-4: the products were not bf16')
    worst = max(results, key=lambda r: r[1])
    tag = f'{precision} L={L} C={C} T={T} B={B} V={V}'
    metric = 'max rel err' if precision == 'fp32' else '2-norm rel err'
    print(f'{tag}: {len(results)} tensors compared, worst {worst[0]} {metric} {worst[1]:.3g} (bound {worst[2]:.3g})')
    for f in failures:
        print(f'  FAIL {tag} {f}')
    return len(results) - len(failures), len(failures)


def main():
    torch.set_num_threads(2)
    passed = failed = 0
    for cfg in [(2, 128, 64, 2, 256, 1), (2, 128, 37, 2, 256, 2), (3, 192, 21, 1, 300, 3)]:
        for precision in ('fp32', 'bf16'):
            p, f = check(*cfg, precision)
            passed += p
            failed += f
    print(f'{passed} passed, {failed} failed')
    sys.exit(1 if failed else 0)


if __name__ == '__main__':
    main()
