"""Weights move between dreamstate and PyTorch: train a tiny model, `dreamstate export` it to
safetensors (official RWKV-LM names), score held-out windows with the independent PyTorch reference
(tests/ref/rwkv7_torch.py) reading that file and the token shard with its own parsers, and compare
with `dreamstate eval` on the checkpoint and on the safetensors file; then `dreamstate import` the
file into a new run and check that its step-0 checkpoint scores the same."""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
import rwkv7_torch  # noqa: E402
from testlib import BIN, ROOT, check, finish, read_safetensors, read_shard, run  # noqa: E402

CONFIG = os.path.join(ROOT, 'configs', 'tiny.yaml')


def main():
    with tempfile.TemporaryDirectory() as tmp:
        sets = ['--set', f'run.out_dir={tmp}/run', '--set', 'train.steps=20', '--set', 'train.eval_batches=1',
                '--set', 'train.log_every=20']
        subprocess.run([BIN, 'train', CONFIG, *sets], cwd=ROOT, check=True, capture_output=True)
        ckpt = f'{tmp}/run/checkpoints/step-00000020.ckpt'
        st = f'{tmp}/tiny.safetensors'
        run('export', CONFIG, '--checkpoint', ckpt, '--out', st, *sets)
        c_ckpt = json.loads(run('eval', CONFIG, '--checkpoint', ckpt, *sets))
        c_st = json.loads(run('eval', CONFIG, '--checkpoint', st, *sets))
        check(c_ckpt['loss'] == c_st['loss'], f"eval of .ckpt and exported .safetensors agree ({c_ckpt['loss']:.6f})")

        weights = read_safetensors(st)
        check(len(weights) == 72 and weights['blocks.0.att.r_k'].shape == (2, 64)
              and weights['blocks.1.att.x_r'].shape == (1, 1, 128), 'official names and shapes in the export')
        tokens = read_shard(os.path.join(ROOT, c_ckpt['data']))
        T, windows = 64, 8
        span = len(tokens) - T - 1
        offs = [span * w // (windows - 1) for w in range(windows)]
        x = torch.tensor(np.stack([tokens[o:o + T] for o in offs]))
        y = torch.tensor(np.stack([tokens[o + 1:o + T + 1] for o in offs]))
        P = {k: torch.tensor(v, dtype=torch.float64) for k, v in weights.items()}
        with torch.no_grad():
            logits = rwkv7_torch.forward(P, x, 2, 128)
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1)).item()
        rel = abs(loss - c_ckpt['loss']) / loss
        check(rel < 1e-5, f'PyTorch on the exported weights: held-out loss {loss:.6f} vs C {c_ckpt["loss"]:.6f} '
                          f'(rel {rel:.2g})')

        sets_imp = ['--set', f'run.out_dir={tmp}/imported', '--set', 'train.eval_batches=1']
        run('import', CONFIG, '--safetensors', st, *sets_imp)
        c_imp = json.loads(run('eval', CONFIG, '--checkpoint', f'{tmp}/imported/checkpoints/step-00000000.ckpt', *sets_imp))
        check(c_imp['loss'] == c_ckpt['loss'], 'imported step-0 checkpoint scores the same')
    finish()


if __name__ == '__main__':
    main()
