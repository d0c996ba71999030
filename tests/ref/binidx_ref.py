"""Independent binidx reader and writer and a model of RWKV-LM's sample order, written from the
format description (Megatron's MMapIndexedDataset as RWKV-LM's make_data.py writes it) with numpy
only; nothing here is derived from the C code.

Index NAME.idx: magic b"MMIDIDX\\x00\\x00", <Q version 1, <B dtype code, <Q sequence count n,
<Q document-index count d, then int32 sizes[n], int64 pointers[n] (byte offsets into NAME.bin),
int64 doc_idx[d]. make_data.py writes every document followed by token 0 as one uint16 sequence
and doc_idx = 0, 1, ..., n.

RWKV-LM's sampler: sample ii = 1 + epoch * 40320 + idx * world_size + rank reads ctx_len + 1 tokens
at ((int(P * (sqrt(5) - 1) / 2) * ii**3) % P) * ctx_len, with Python's integers (no overflow)."""
import math
import struct

import numpy as np

MAGIC = b"MMIDIDX\x00\x00"
CODES = {1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64, 8: np.uint16}
SAMPLES_PER_EPOCH = 40320


def write(prefix, docs, code=8):
    """Writes docs (lists of ids) as make_data.py does: each one + [0] is a sequence."""
    dtype = np.dtype(CODES[code])
    seqs = [np.array(list(doc) + [0], dtype=dtype) for doc in docs]
    sizes = np.array([len(s) for s in seqs], dtype="<i4")
    pointers = np.zeros(len(seqs), dtype="<i8")
    pointers[1:] = np.cumsum(sizes[:-1], dtype=np.int64) * dtype.itemsize
    doc_idx = np.arange(len(seqs) + 1, dtype="<i8")
    with open(prefix + ".bin", "wb") as f:
        for s in seqs:
            f.write(s.astype(dtype.newbyteorder("<")).tobytes())
    with open(prefix + ".idx", "wb") as f:
        f.write(MAGIC + struct.pack("<QBQQ", 1, code, len(sizes), len(doc_idx)))
        f.write(sizes.tobytes() + pointers.tobytes() + doc_idx.tobytes())


def read(prefix):
    """{"code", "sizes", "pointers", "doc_idx", "tokens" (all of NAME.bin)}; asserts the layout."""
    raw = open(prefix + ".idx", "rb").read()
    assert raw[:9] == MAGIC, "magic"
    version, code, n, d = struct.unpack_from("<QBQQ", raw, 9)
    assert version == 1 and code in CODES, (version, code)
    assert len(raw) == 34 + 12 * n + 8 * d, "index length"
    sizes = np.frombuffer(raw, "<i4", n, 34)
    pointers = np.frombuffer(raw, "<i8", n, 34 + 4 * n)
    doc_idx = np.frombuffer(raw, "<i8", d, 34 + 12 * n)
    tokens = np.fromfile(prefix + ".bin", dtype=np.dtype(CODES[code]).newbyteorder("<"))
    return {"code": code, "sizes": sizes, "pointers": pointers, "doc_idx": doc_idx, "tokens": tokens}


def documents(data):
    """The sequences of a read() result, each without its final 0 (make_data.py's separator)."""
    itemsize = data["tokens"].itemsize
    out = []
    for ptr, size in zip(data["pointers"], data["sizes"]):
        seq = data["tokens"][ptr // itemsize: ptr // itemsize + size]
        assert seq[-1] == 0, "every document ends with 0"
        out.append([int(t) for t in seq[:-1]])
    return out


def is_prime(n):
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    d = 3
    while d * d <= n:
        if n % d == 0:
            return False
        d += 2
    return True


def magic_prime(n_tokens, ctx_len):
    """make_data.py's choice: the largest prime = 2 mod 3 at or below n_tokens // ctx_len - 1."""
    for p in range(n_tokens // ctx_len - 1, 0, -1):
        if p % 3 == 2 and is_prime(p):
            return p
    return 0


def rwkv_lm_offset(prime, ctx_len, epoch, idx, world_size, rank):
    """Token offset of RWKV-LM's sample idx on rank `rank` in mini-epoch `epoch`."""
    ii = 1 + epoch * SAMPLES_PER_EPOCH + idx * world_size + rank
    factor = int(prime * ((math.sqrt(5) - 1) / 2))
    return ((factor * ii * ii * ii) % prime) * ctx_len


def rwkv_lm_step_offsets(prime, ctx_len, step, world_size, micro_bsz):
    """Every offset RWKV-LM's global step `step` trains on (all ranks), as its DataLoader hands out
    idx: rank r's step s of a mini-epoch is idx s * micro_bsz .. (s + 1) * micro_bsz - 1."""
    steps_per_epoch = SAMPLES_PER_EPOCH // (world_size * micro_bsz)
    epoch, s = divmod(step, steps_per_epoch)
    return sorted(rwkv_lm_offset(prime, ctx_len, epoch, idx, world_size, rank)
                  for rank in range(world_size) for idx in range(s * micro_bsz, (s + 1) * micro_bsz))
