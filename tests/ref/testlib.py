"""What the PyTorch-side tests share: the ok/FAIL tally, running bin/dreamstate, and independent
readers (written from the format descriptions, not from the C code) of safetensors (F32) and of this
project's token shards (include/dreamstate/data.h)."""
import json
import os
import struct
import subprocess
import sys

import numpy as np

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))
BIN = os.path.join(ROOT, 'bin', 'dreamstate')
_tally = {'passed': 0, 'failed': 0}


def check(cond, what):
    _tally['passed' if cond else 'failed'] += 1
    print(('ok   ' if cond else 'FAIL ') + what, flush=True)


def finish():
    """Prints "N passed, N failed" and exits 1 if anything failed."""
    print(f"{_tally['passed']} passed, {_tally['failed']} failed")
    sys.exit(1 if _tally['failed'] else 0)


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
