#!/usr/bin/python3
"""binidx and RWKV-LM's sample order against the independent Python model in binidx_ref.py.

- Python-written binidx (uint16, int32, uint8) read by the C reader (`build/tests/test_binidx --read`)
  gives the same token stream; C-written binidx (`--write`) reads back in Python to the same documents
  and is byte-identical to the Python writer's files.
- The C offsets (`--offsets P CTX FIRST N`) of the first 1000 samples equal RWKV-LM's for two magic
  primes (one large enough that ii^3 * phi overflows 64 bits), also far into training; and a step of
  the C loop's global sample numbers holds exactly the windows of RWKV-LM's step with real_bsz =
  batch_size, across a mini-epoch boundary.
- `bin/dreamstate prepare-data --format binidx --tokenizer world` of JSONL (json.dumps lines: ASCII with
  \\u escapes, surrogate pairs, other keys; plain and gzipped) reads back in Python to each document's
  ids from the independent World tokenizer of world_tokenizer_ref.py, followed by 0, in input order
  (train and valid interleave as the input order when documents are held out); bad lines are refused
  as FILE:LINE with exit code 2, writing nothing.
- `bin/dreamstate train` trains 2 steps on Python-written binidx with data.sampler rwkv_lm (the prime
  make_data.py would pick), and refuses bad input with one line and exit code 2, writing nothing."""
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import binidx_ref  # noqa: E402
import world_tokenizer_ref  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
C_TEST = os.path.join(ROOT, "build", "tests", "test_binidx")
DREAMSTATE = os.path.join(ROOT, "bin", "dreamstate")
passed = failed = 0


def check(cond, what):
    global passed, failed
    if cond:
        passed += 1
    else:
        failed += 1
        print(f"FAIL: {what}", file=sys.stderr)


def random_docs(rng, n_docs, vocab, max_len=400):
    return [[int(t) for t in rng.integers(1, vocab, size=rng.integers(0, max_len))] for _ in range(n_docs)]


def c_read(path, tmp):
    out = os.path.join(tmp, "stream.i32")
    run = subprocess.run([C_TEST, "--read", path, out], capture_output=True, text=True)
    if run.returncode != 0:
        return run, None, None
    return run, np.fromfile(out, dtype="<i4"), [int(x) for x in run.stdout.split()]


def test_python_to_c(tmp, rng):
    for code, vocab in ((8, 65536), (4, 200000), (1, 256)):
        prefix = os.path.join(tmp, f"py{code}")
        docs = random_docs(rng, 150, vocab)
        binidx_ref.write(prefix, docs, code)
        stream = np.concatenate([np.array(d + [0], dtype=np.int64) for d in docs])
        for path in (prefix, prefix + ".bin", prefix + ".idx"):
            run, got, info = c_read(path, tmp)
            check(run.returncode == 0 and np.array_equal(got, stream),
                  f"C reads Python-written binidx {path} (code {code}): {run.stderr.strip()}")
            check(info == [len(stream), len(docs), int(stream.max()) + 1],
                  f"C counts for code {code}: {info} (tokens, docs, largest id + 1)")


def test_c_to_python(tmp, rng):
    for vocab, code in ((65536, 8), (100000, 4)):
        docs = random_docs(rng, 120, vocab)
        docs[7] = []  # an empty document is its separator alone
        records = os.path.join(tmp, "docs.i32")
        with open(records, "wb") as f:
            for d in docs:
                f.write(np.array([len(d)] + d, dtype="<i4").tobytes())
        prefix = os.path.join(tmp, f"c{vocab}")
        run = subprocess.run([C_TEST, "--write", prefix, str(vocab), records], capture_output=True, text=True)
        check(run.returncode == 0, f"C writer: {run.stderr.strip()}")
        data = binidx_ref.read(prefix)
        check(data["code"] == code and binidx_ref.documents(data) == docs,
              f"Python reads the C-written binidx (vocab {vocab}) to the same documents")
        check(list(data["doc_idx"]) == list(range(len(docs) + 1)), "doc_idx is 0..n as make_data.py writes it")
        ref = os.path.join(tmp, f"ref{vocab}")
        binidx_ref.write(ref, docs, code)
        same = all(open(prefix + ext, "rb").read() == open(ref + ext, "rb").read() for ext in (".bin", ".idx"))
        check(same, f"C and Python writers give byte-identical files (vocab {vocab})")
        leftovers = [n for n in os.listdir(tmp) if ".tmp." in n]
        check(not leftovers, f"no temporary files left: {leftovers}")


def c_offsets(prime, ctx_len, first, n):
    run = subprocess.run([C_TEST, "--offsets", str(prime), str(ctx_len), str(first), str(n)],
                         capture_output=True, text=True, check=True)
    return [int(x) for x in run.stdout.split()]


def test_offsets():
    # 2926181: RWKV-LM's MiniPile demo prime (ctx_len 512); 999999999989: phi * ii^3 overflows 64 bits
    for prime, ctx_len in ((2926181, 512), (999999999989, 4096)):
        assert binidx_ref.is_prime(prime) and prime % 3 == 2
        want = [binidx_ref.rwkv_lm_offset(prime, ctx_len, 0, g, 1, 0) for g in range(1000)]
        check(c_offsets(prime, ctx_len, 0, 1000) == want, f"first 1000 offsets for P = {prime}")
        far = 123456789012
        epoch, idx = divmod(far, binidx_ref.SAMPLES_PER_EPOCH)
        want = [binidx_ref.rwkv_lm_offset(prime, ctx_len, epoch, idx + k, 1, 0) for k in range(100)]
        check(c_offsets(prime, ctx_len, far, 100) == want, f"offsets of samples {far}.. for P = {prime}")
    # the mapping: 4 ranks x micro_bsz 3 = real_bsz 12 = train.batch_size, 3360 steps per mini-epoch;
    # the C loop's step S is global samples S * 12 .. S * 12 + 11
    prime, ctx_len, batch = 2926181, 512, 12
    for step in (0, 1, 3359, 3360, 3361, 10 * 3360 + 5):
        c_step = sorted(c_offsets(prime, ctx_len, step * batch, batch))
        check(c_step == binidx_ref.rwkv_lm_step_offsets(prime, ctx_len, step, 4, 3),
              f"step {step}: the C windows are RWKV-LM's (4 ranks x micro_bsz 3)")


def prepare(tmp, name, inputs, *options):
    out = os.path.join(tmp, name)
    cmd = [DREAMSTATE, "prepare-data", "--format", "binidx", "--tokenizer", "world", "--out", out, *options, *inputs]
    return subprocess.run(cmd, capture_output=True, text=True), out


def test_prepare_data(tmp):
    trie = world_tokenizer_ref.build_trie(world_tokenizer_ref.load_vocab())
    texts = ["Hello, world!\nA second line.", "Grüße — naïve café", "你好，世界。 こんにちは", "emoji 😀🚀 and 𝄞",
             "quotes \" and \\ backslash\ttab", "Привет " * 40, "x", "\\u00e9 is six characters here",
             "nul \x00 and control \x01\x1f\x7f characters"]
    texts += [f"document {i}: {'lorem ipsum ' * (i % 7)}" for i in range(60)]
    lines = [json.dumps({"id": i, "text": t, "meta": {"n": [i, 1.5, None, True]}}) for i, t in enumerate(texts)]
    assert all(line.isascii() for line in lines) and "\\ud83d\\ude00" in lines[3]  # ensure_ascii: surrogate pairs
    first = os.path.join(tmp, "docs.jsonl")
    with open(first, "w") as f:
        f.write("\n".join(lines[:40]) + "\n\n")  # a blank line is skipped
    second = os.path.join(tmp, "more.jsonl.gz")
    with gzip.open(second, "wt") as f:
        f.write("\n".join(lines[40:]) + "\n")
    want = [world_tokenizer_ref.encode(trie, t.encode("utf-8")) for t in texts]

    run, out = prepare(tmp, "prepared", [first, second], "--valid-fraction", "0")
    check(run.returncode == 0, f"prepare-data --format binidx of JSONL: {run.stderr.strip()}")
    if run.returncode == 0:
        data = binidx_ref.read(os.path.join(out, "train"))
        check(data["code"] == 8 and binidx_ref.documents(data) == want,
              "the binidx documents are the Python World tokenizer's ids of the JSONL texts, in order")
        check(list(data["doc_idx"]) == list(range(len(texts) + 1)), "doc_idx 0..n as make_data.py writes it")
        check(sorted(os.listdir(out)) == ["train.bin", "train.idx"], f"only the train pair: {os.listdir(out)}")

    # held out by document: train and valid are each in input order and together hold every document
    run, out = prepare(tmp, "split", [first, second], "--valid-fraction", "0.3", "--seed", "5")
    check(run.returncode == 0, f"prepare-data with a valid split: {run.stderr.strip()}")
    if run.returncode == 0:
        train = binidx_ref.documents(binidx_ref.read(os.path.join(out, "train")))
        valid = binidx_ref.documents(binidx_ref.read(os.path.join(out, "valid")))
        ti = vi = 0
        for ids in want:
            if ti < len(train) and train[ti] == ids:
                ti += 1
            elif vi < len(valid) and valid[vi] == ids:
                vi += 1
        check(ti == len(train) and vi == len(valid) and ti + vi == len(want) and 5 < vi < 40,
              f"train ({len(train)}) and valid ({len(valid)}) interleave to the {len(want)} documents in order")

    bad_lines = {
        "no text": ('{"id": 1, "title": "x"}', 'column 24: missing "text"'),
        "not an object": ('["text", "x"]', "column 1: expected '{'"),
        "truncated": ('{"text": "cut off here', "column 23: unterminated string"),
        "bad escape": ('{"text": "a \\x41"}', "column 14: bad escape '\\x'"),
        "text not a string": ('{"text": 42}', 'column 10: "text" must be a string'),
        "lone surrogate": ('{"text": "\\ud83d"}', "column 17: high surrogate \\uD83D not followed by a low one"),
    }
    for name, (line, reason) in bad_lines.items():
        path = os.path.join(tmp, "bad.jsonl")
        with open(path, "w") as f:
            f.write(lines[0] + "\n" + lines[1] + "\n" + line + "\n" + lines[2] + "\n")
        before = listing(tmp)
        run, out = prepare(tmp, "refused/out", [path], "--valid-fraction", "0")
        err = run.stderr
        check(run.returncode == 2 and err.count("\n") == 1 and f"{path}:3: {reason}" in err,
              f"bad JSONL ({name}): want exit 2 and one line '{path}:3: {reason}', got {run.returncode}: {err!r}")
        check(listing(tmp) == before and not os.path.exists(os.path.join(tmp, "refused")),
              f"bad JSONL ({name}): nothing written")


def train(tmp, name, data, *sets):
    out = os.path.join(tmp, "runs", name)
    cmd = [DREAMSTATE, "train", os.path.join(ROOT, "configs", "tiny.yaml"), "--set", f"data.train={data}",
           "--set", f"run.out_dir={out}", "--set", "train.steps=2", "--set", "train.eval_batches=1",
           "--set", "run.threads=1"]
    for s in sets:
        cmd += ["--set", s]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=tmp), out


def listing(tmp):
    return sorted(os.path.join(d, f) for d, _, files in os.walk(tmp) for f in files)


def expect_refusal(tmp, name, data, reason, *sets):
    before = listing(tmp)
    run, out = train(tmp, name, data, *sets)
    err = run.stderr
    one_line = err.endswith("\n") and err.count("\n") == 1
    check(run.returncode == 2 and one_line and reason in err,
          f"{name}: want exit 2 and one line with '{reason}', got exit {run.returncode}: {err!r}")
    check(not os.path.exists(out) and listing(tmp) == before, f"{name}: nothing written")


def test_train(tmp, rng):
    prefix = os.path.join(tmp, "corpus")
    docs = random_docs(rng, 300, 256)
    binidx_ref.write(prefix, docs)
    n_tokens = sum(len(d) + 1 for d in docs)
    prime = binidx_ref.magic_prime(n_tokens, 64)
    run, out = train(tmp, "ok", prefix, "data.sampler=rwkv_lm")
    steps = open(os.path.join(out, "train.jsonl")).read().count('"step"') if run.returncode == 0 else 0
    check(run.returncode == 0 and f"magic prime {prime} " in run.stderr and steps == 2,
          f"train 2 steps with data.sampler rwkv_lm (make_data.py's prime {prime}): exit {run.returncode} "
          f"{run.stderr[-400:]}")
    run, _ = train(tmp, "ok_prime", prefix + ".idx", "data.sampler=rwkv_lm", f"data.magic_prime={prime}")
    check(run.returncode == 0, f"train with an explicit data.magic_prime: {run.stderr[-300:]}")

    raw_idx = open(prefix + ".idx", "rb").read()
    raw_bin = open(prefix + ".bin", "rb").read()

    def variant(name, idx=raw_idx, bin_=raw_bin):
        p = os.path.join(tmp, name)
        open(p + ".idx", "wb").write(idx)
        open(p + ".bin", "wb").write(bin_)
        return p

    p = variant("trunc_idx", idx=raw_idx[:-5])
    expect_refusal(tmp, "truncated .idx", p, f"{p}.idx: truncated")
    p = variant("short_bin", bin_=raw_bin[:-2])
    expect_refusal(tmp, ".bin shorter than its index", p, f"{p}.bin: shorter than its index says")
    p = variant("magic", idx=b"X" + raw_idx[1:])
    expect_refusal(tmp, "bad magic", p, f"{p}.idx: not a binidx index (bad magic")
    p = variant("version", idx=raw_idx[:9] + (2).to_bytes(8, "little") + raw_idx[17:])
    expect_refusal(tmp, "bad version", p, f"{p}.idx: unsupported binidx version 2")
    big = [d + [300] for d in docs[:50]]
    p = os.path.join(tmp, "big_ids")
    binidx_ref.write(p, big)
    expect_refusal(tmp, "id >= vocab", p, f"{p}: data vocabulary 301 exceeds model.vocab_size 256")
    expect_refusal(tmp, "magic prime not prime", prefix, "--set data.magic_prime=1561: must be a prime",
                   "data.sampler=rwkv_lm", "data.magic_prime=1561")
    not_2_mod_3 = next(q for q in range(prime, 0, -1) if q % 3 == 1 and binidx_ref.is_prime(q))
    expect_refusal(tmp, "magic prime not 2 mod 3", prefix, f"--set data.magic_prime={not_2_mod_3}: must be 2 mod 3",
                   "data.sampler=rwkv_lm", f"data.magic_prime={not_2_mod_3}")
    small = next(q for q in range(int(0.8 * prime), 0, -1) if q % 3 == 2 and binidx_ref.is_prime(q))
    expect_refusal(tmp, "magic prime out of range", prefix, f"{prefix}: data.magic_prime {small} must be in (0.9, 1]",
                   "data.sampler=rwkv_lm", f"data.magic_prime={small}")
    large = next(q for q in range(n_tokens // 64 + 1, 10 * prime) if q % 3 == 2 and binidx_ref.is_prime(q))
    expect_refusal(tmp, "magic prime above the slots", prefix, f"data.magic_prime {large} must be in (0.9, 1]",
                   "data.sampler=rwkv_lm", f"data.magic_prime={large}")


def main():
    rng = np.random.default_rng(11)
    tmp = tempfile.mkdtemp(prefix="ds_test_binidx_py_")
    try:
        test_python_to_c(tmp, rng)
        test_c_to_python(tmp, rng)
        test_offsets()
        test_prepare_data(tmp)
        test_train(tmp, rng)
    finally:
        shutil.rmtree(tmp)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
