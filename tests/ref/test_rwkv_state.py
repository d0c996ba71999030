"""RWKV-PEFT state files between dreamstate and PyTorch, on a tiny model trained a few steps and
exported to safetensors (official names), with the independent reference tests/ref/rwkv7_torch.py:
 (a) `generate --state-out S.safetensors --format rwkv-state` after prompt P: the file holds only
     blocks.{i}.att.time_state [H, 64, 64] F32 (read with an independent parser); the reference
     starting from those WKV states (token-shift zero) on prompt Q gives the logits that
     `generate --state S.safetensors --prompt Q --logits-out` writes;
 (b) the reference's own final WKV states after P, saved as an RWKV-PEFT .pth and converted with
     src/tools/pth_to_safetensors.py, read by `generate --state`: the same next-token logits as the
     reference continuing from them;
 (c) bad state files (layer count, head count, extra tensors, a .pth given directly, and a --format
     that contradicts the extension) are refused with one line and exit code 2, writing nothing.
Errors are max |c - ref| / max |ref| over the logits of the last position, at most 1e-5."""
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
from testlib import BIN, ROOT, check, finish, read_safetensors, run  # noqa: E402

CONFIG = os.path.join(ROOT, 'configs', 'tiny.yaml')
CONVERT = os.path.join(ROOT, 'src', 'tools', 'pth_to_safetensors.py')
L, C, H = 2, 128, 2
TOL = 1e-5
P_TEXT = 'The quick brown fox jumps over the lazy dog. '
Q_TEXT = 'A fortune: '


def header(path):
    """The JSON header of a safetensors file."""
    with open(path, 'rb') as f:
        n = struct.unpack('<Q', f.read(8))[0]
        return json.loads(f.read(n))


def write_safetensors(path, tensors):
    """Independent writer: {name: float32 array}, no metadata."""
    head, offset, blobs = {}, 0, []
    for name, a in tensors.items():
        b = np.ascontiguousarray(a, '<f4').tobytes()
        head[name] = {'dtype': 'F32', 'shape': list(a.shape), 'data_offsets': [offset, offset + len(b)]}
        offset += len(b)
        blobs.append(b)
    text = json.dumps(head).encode()
    with open(path, 'wb') as f:
        f.write(struct.pack('<Q', len(text)) + text + b''.join(blobs))


def tokens(text):
    return torch.tensor([list(text.encode())])  # the byte tokenizer: id = byte


def reference(P, text, states=None, return_states=False):
    """Last-position logits (and the final WKV states) of the reference on `text` from `states`."""
    init = None if states is None else [torch.tensor(s, dtype=torch.float64)[None] for s in states]
    with torch.no_grad():
        out = rwkv7_torch.forward(P, tokens(text), L, C, init, return_states)
    if return_states:
        return out[0][0, -1].numpy(), [s[0].numpy() for s in out[1]]
    return out[0, -1].numpy()


def rel(c, ref):
    return float(np.abs(c - ref).max() / np.abs(ref).max())


def main():
    with tempfile.TemporaryDirectory() as tmp:
        sets = ['--set', f'run.out_dir={tmp}/run', '--set', 'train.steps=10', '--set', 'train.eval_batches=1',
                '--set', 'train.log_every=10']
        subprocess.run([BIN, 'train', CONFIG, *sets], cwd=ROOT, check=True, capture_output=True)
        weights = f'{tmp}/tiny.safetensors'
        run('export', CONFIG, '--checkpoint', f'{tmp}/run/checkpoints/step-00000010.ckpt', '--out', weights, *sets)
        P = {k: torch.tensor(v, dtype=torch.float64) for k, v in read_safetensors(weights).items()}
        gen = ['generate', CONFIG, '--checkpoint', weights, *sets, '--max-tokens', '0']
        names = [f'blocks.{i}.att.time_state' for i in range(L)]

        # (a) C writes the state of P; the reference continues from it with Q
        S = f'{tmp}/p.safetensors'
        run(*gen, '--prompt', P_TEXT, '--state-out', S, '--format', 'rwkv-state')
        h = header(S)
        meta = h.pop('__metadata__', {})
        check(sorted(h) == names and all(h[n]['dtype'] == 'F32' and h[n]['shape'] == [H, 64, 64] for n in names),
              f'--state-out rwkv-state: tensors {sorted(h)}, F32 [{H}, 64, 64]')
        check(meta.get('format') == 'rwkv-state' and meta.get('model', '').startswith(f'rwkv7 L={L} C={C} ')
              and meta.get('prompt_tokens') == str(len(P_TEXT)), f'metadata {meta}')
        file_states = [read_safetensors(S)[n] for n in names]
        _, ref_states = reference(P, P_TEXT, return_states=True)
        err = max(rel(a, b) for a, b in zip(file_states, ref_states))
        check(err < TOL, f'the file holds the WKV states of P (vs the reference from zero: rel {err:.2g})')
        run(*gen, '--state', S, '--prompt', Q_TEXT, '--logits-out', f'{tmp}/a.npy')
        c_logits = np.load(f'{tmp}/a.npy')
        ref = reference(P, Q_TEXT, file_states)
        err = rel(c_logits, ref)
        check(c_logits.dtype == np.float32 and c_logits.shape == (256,) and err <= TOL,
              f'(a) generate --state {os.path.basename(S)} --logits-out vs reference from its WKV states: rel {err:.2g}')
        zero = reference(P, Q_TEXT)
        check(rel(zero, ref) > 50 * TOL, f'the state matters (zero-state logits differ by rel {rel(zero, ref):.2g})')

        # (b) the reference makes a state; an RWKV-PEFT .pth, converted, read by C
        P2 = 'Hacker slang: kludge, '
        _, states = reference(P, P2, return_states=True)
        pth = f'{tmp}/ref.pth'
        torch.save({n: torch.tensor(s, dtype=torch.float32) for n, s in zip(names, states)}, pth)
        converted = f'{tmp}/ref.safetensors'
        subprocess.run(['/usr/bin/python3', CONVERT, pth, converted], check=True, capture_output=True)
        run(*gen, '--state', converted, '--prompt', Q_TEXT, '--logits-out', f'{tmp}/b.npy')
        stored = [s.astype(np.float32) for s in states]  # what the .pth holds
        err = rel(np.load(f'{tmp}/b.npy'), reference(P, Q_TEXT, stored))
        check(err <= TOL, f'(b) reference state of P2 as converted .pth, C continues with Q: rel {err:.2g}')

        # (c) bad input: one line, exit 2, nothing written
        rng = np.random.default_rng(1)
        bad = {'layers': {f'blocks.{i}.att.time_state': rng.standard_normal((H, 64, 64)) for i in range(L + 1)},
               'heads': {n: rng.standard_normal((H + 1, 64, 64)) for n in names}}
        for kind, sd in bad.items():
            torch.save({k: torch.tensor(v, dtype=torch.float32) for k, v in sd.items()}, f'{tmp}/{kind}.pth')
            subprocess.run(['/usr/bin/python3', CONVERT, f'{tmp}/{kind}.pth', f'{tmp}/{kind}.safetensors'], check=True,
                           capture_output=True)
        extra = {n: s for n, s in zip(names, stored)}
        extra['blocks.0.att.x_r'] = np.zeros((1, 1, C), np.float32)
        write_safetensors(f'{tmp}/extra.safetensors', extra)
        cases = [
            ('layer count', ['--state', f'{tmp}/layers.safetensors'], f'state of {L + 1} layers, the model has {L}'),
            ('head count', ['--state', f'{tmp}/heads.safetensors'], f'state of {H + 1} heads, the model has {H}'),
            ('extra tensors', ['--state', f'{tmp}/extra.safetensors'], 'not an RWKV state file'),
            ('.pth directly', ['--state', pth], f'src/tools/pth_to_safetensors.py {pth} OUT.safetensors'),
            ('--format contradicting .safetensors', ['--format', 'dreamstate'], 'contradicts the extension'),
            ('--format contradicting .state', ['--format', 'rwkv-state', '--state-out', f'{tmp}/out.state'],
             'contradicts the extension'),
        ]
        for what, args, reason in cases:
            out, logits = f'{tmp}/refused.safetensors', f'{tmp}/refused.npy'
            r = subprocess.run([BIN, *gen, '--prompt', Q_TEXT, '--state-out', out, '--logits-out', logits, *args],
                               cwd=ROOT, capture_output=True, text=True)
            lines = r.stderr.strip().split('\n')
            written = [p for p in (out, logits, f'{tmp}/out.state') if os.path.exists(p)]
            check(r.returncode == 2 and len(lines) == 1 and reason in lines[0] and not written,
                  f'(c) {what}: exit {r.returncode}, {lines[0]!r}{", wrote " + str(written) if written else ""}')
    finish()


if __name__ == '__main__':
    main()
