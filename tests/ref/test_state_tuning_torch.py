"""Acceptance test of state tuning's gradient (src/rwkv7/README.md §3.4): ds_rwkv7_tuner_run on a frozen
model (the weight-gradient products skipped) against the PyTorch float64 reference
(tests/ref/rwkv7_torch.py with autograd into the initial WKV states): the summed cross-entropy and the
gradient of (summed CE) x scale, with L2Wrap, with respect to every set of initial states, to max
relative error 1e-4 per set. Sequences share sets, and one is a short text padded with ignored targets."""
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
from dump import read_dump, rel  # noqa: E402
import rwkv7_torch  # noqa: E402
import testlib  # noqa: E402

TOL = 1e-4
NOT_WEIGHTS = ('dims', 'tokens', 'targets', 'set', 'scale', 'l2wrap', 'ce_sum', 'states')


def check(L, C, T, B, V, seed, sets):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, 'dump.bin')
        subprocess.run([os.path.join(testlib.ROOT, 'build/tests/test_rwkv7'), '--dump-tuner', path, str(L), str(C),
                        str(T), str(B), str(V), str(seed), str(sets)], check=True)
        d = read_dump(path)
    P = {k: torch.tensor(v, dtype=torch.float64) for k, v in d.items()
         if k not in NOT_WEIGHTS and not k.startswith('grad.')}
    states = torch.tensor(d['states'], dtype=torch.float64, requires_grad=True)  # [sets, L, H, N, N]
    tokens = torch.tensor(d['tokens'].astype(np.int64))
    targets = torch.tensor(d['targets'].astype(np.int64))
    of = torch.tensor(d['set'].astype(np.int64))
    logits = rwkv7_torch.forward(P, tokens, L, C, [states[of, l] for l in range(L)])
    count = int((targets >= 0).sum())
    ce_sum = torch.nn.functional.cross_entropy(logits.reshape(-1, V), targets.reshape(-1), ignore_index=-1,
                                               reduction='sum')
    objective = rwkv7_torch.loss_fn(logits, targets, float(d['l2wrap'][0])) * count * float(d['scale'][0])
    objective.backward()
    tag = f'L={L} C={C} T={T} B={B} sets={sets}'
    e = abs(float(d['ce_sum'][0]) - ce_sum.item()) / ce_sum.item()
    testlib.check(e <= TOL, f'{tag}: summed CE {float(d["ce_sum"][0]):.6f} vs {ce_sum.item():.6f} (rel {e:.2g})')
    for s in range(sets):
        e = rel(d['grad.states'][s], states.grad[s].numpy())
        testlib.check(e <= TOL, f'{tag}: gradient of set {s} (sequences {of.eq(s).nonzero().flatten().tolist()}) '
                                f'rel err {e:.3g}')


def main():
    torch.set_num_threads(2)
    check(2, 128, 40, 3, 256, 5, 2)
    check(3, 192, 21, 2, 300, 6, 1)
    testlib.finish()


if __name__ == '__main__':
    main()
