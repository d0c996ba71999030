"""A user's official RWKV-7 checkpoint, end to end: random weights of the World 0.1B shape in the
released layout (bf16 .pth, layer 0 without v0/v1/v2; tests/ref/official_weights.py) go through the
converter and `dreamstate eval` with no model shape in the config (every dimension and LoRA rank is
read from the file), and the held-out loss equals the independent PyTorch reference
(tests/ref/rwkv7_torch.py, float64) on the same weights and tokens to 1e-5 relative. A config that
gives a shape the file contradicts is refused with one line naming both values."""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
import official_weights  # noqa: E402
import rwkv7_torch  # noqa: E402
from testlib import BIN, ROOT, check, finish, read_shard  # noqa: E402

CONVERTER = os.path.join(ROOT, 'src', 'tools', 'pth_to_safetensors.py')


def main():
    L, C, V, Dw, Da, Dv, Dg = official_weights.SHAPES['0.1b']
    with tempfile.TemporaryDirectory() as tmp:
        pth, st = f'{tmp}/RWKV-x070-World-0.1B-random.pth', f'{tmp}/model.safetensors'
        sd = official_weights.make_state_dict(L, C, V, Dw, Da, Dv, Dg, seed=7)
        torch.save(sd, pth)
        subprocess.run(['/usr/bin/python3', CONVERTER, pth, st], check=True, capture_output=True)

        text = f'{tmp}/text.txt'
        with open(text, 'w') as f:
            f.write(open(os.path.join(ROOT, 'README.md')).read())
        subprocess.run([BIN, 'prepare-data', '--tokenizer', 'world', '--valid-fraction', '0', '--out', f'{tmp}/data',
                        text], check=True, capture_output=True)
        T, B, batches = 32, 2, 1
        config = f'{tmp}/eval.yaml'
        with open(config, 'w') as f:
            f.write(f'data:\n  tokenizer: world\n  train: {tmp}/data/train.bin\n  valid: {tmp}/data/train.bin\n'
                    f'train:\n  ctx_len: {T}\n  batch_size: {B}\n  eval_batches: {batches}\n')
        r = subprocess.run([BIN, 'eval', config, '--checkpoint', st], capture_output=True, text=True)
        check(r.returncode == 0, f'eval of the converted official-layout file with no model keys (rc {r.returncode}: '
                                 f'{r.stderr.strip()[-300:]})')
        if r.returncode != 0:
            return
        c = json.loads(r.stdout)

        tokens = read_shard(f'{tmp}/data/train.bin')
        windows = B * batches
        span = len(tokens) - T - 1
        offs = [span * w // (windows - 1) for w in range(windows)]
        x = torch.tensor(np.stack([tokens[o:o + T] for o in offs]))
        y = torch.tensor(np.stack([tokens[o + 1:o + T + 1] for o in offs]))
        P = {k: v.to(torch.float64) for k, v in sd.items()}
        del sd
        with torch.no_grad():
            logits = rwkv7_torch.forward(P, x, L, C)
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V), y.reshape(-1)).item()
        rel = abs(loss - c['loss']) / loss
        check(rel < 1e-5, f'0.1B shape from the file: PyTorch loss {loss:.6f} vs dreamstate {c["loss"]:.6f} '
                          f'(rel {rel:.2g})')

        bad = subprocess.run([BIN, 'eval', config, '--checkpoint', st, '--set', 'model.n_embd=512'],
                             capture_output=True, text=True)
        lines = bad.stderr.strip().splitlines()
        check(bad.returncode == 2 and len(lines) == 1 and '512' in lines[0] and '768' in lines[0]
              and 'model.n_embd' in lines[0], f'a contradicting model.n_embd is refused in one line: {lines}')
        bad = subprocess.run([BIN, 'eval', config, '--checkpoint', pth], capture_output=True, text=True)
        check(bad.returncode == 2 and 'pth_to_safetensors' in bad.stderr, 'a .pth given directly says how to convert it')
    finish()


if __name__ == '__main__':
    main()
