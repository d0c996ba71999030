"""Reader of the "DSDUMP01" tensor dumps written by the C tests' --dump modes (tests/test.h)."""
import numpy as np


def read_dump(path):
    out = {}
    with open(path, 'rb') as f:
        assert f.read(8) == b'DSDUMP01'
        while True:
            n = int(np.frombuffer(f.read(4), np.uint32)[0])
            if n == 0:
                return out
            name = f.read(n).decode()
            nd = int(np.frombuffer(f.read(4), np.uint32)[0])
            shape = tuple(np.frombuffer(f.read(8 * nd), np.int64))
            dt = np.float32 if int(np.frombuffer(f.read(4), np.uint32)[0]) == 0 else np.int32
            count = int(np.prod(shape)) if shape else 1
            out[name] = np.frombuffer(f.read(4 * count), dt).reshape(shape)


def rel(a, b):
    """max|a - b| / max|b|: the per-tensor relative error the reference tests bound."""
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))
