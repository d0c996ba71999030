"""Weights move between dreamstate and PyTorch: train a tiny model, `dreamstate export` it to
safetensors (official RWKV-LM names), score held-out windows with the independent PyTorch reference
(tests/ref/rwkv7_torch.py) reading that file and the token shard with its own parsers, and compare
with `dreamstate eval` on the checkpoint and on the safetensors file; then `dreamstate import` the
file into a new run and check that its step-0 checkpoint scores the same."""
import json
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
import rwkv7_torch  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))
BIN = os.path.join(ROOT, 'bin', 'dreamstate')
CONFIG = os.path.join(ROOT, 'configs', 'tiny.yaml')
passed = failed = 0


def check(cond, what):
    global passed, failed
    passed, failed = passed + bool(cond), failed + (not cond)
    print(('ok   ' if cond else 'FAIL ') + what)


def run(*args):
    return subprocess.run([BIN, *args], cwd=ROOT, check=True, capture_output=True, text=True).stdout


def read_safetensors(path):
    with open(path, 'rb') as f:
        n = struct.unpack('<Q', f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, e in header.items():
        if name == '__metadata__':
            continue
        assert e['dtype'] == 'F32'
        b, end = e['data_offsets']
        out[name] = np.frombuffer(data[b:end], np.float32).reshape(e['shape'])
    return out


def read_shard(path):
    with open(path, 'rb') as f:
        head = f.read(64)
        assert head[:8] == b'DSTOKENS'
        dtype = struct.unpack('<I', head[12:16])[0]
        count = struct.unpack('<Q', head[24:32])[0]
        return np.frombuffer(f.read(), np.uint16 if dtype == 1 else np.uint32)[:count].astype(np.int64)


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
    print(f'{passed} passed, {failed} failed')
    sys.exit(1 if failed else 0)


if __name__ == '__main__':
    main()
