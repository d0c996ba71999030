#!/usr/bin/python3
"""Checks src/tools/pth_to_safetensors.py and the C safetensors reader/writer against PyTorch.

A fake tiny RWKV-7 state_dict with official key names (bf16, fp16 and fp32 tensors, some keys with
the DeepSpeed "_forward_module." prefix) is saved with torch.save, converted, and the result is read
back with the few-line reader below (json + numpy, independent of the converter's own reader). The C
implementation is cross-checked through `build/tests/test_checkpoint --roundtrip-safetensors IN OUT`
on the converter's output and on a hand-written F16/BF16 file full of edge values."""
import contextlib
import importlib.util
import io
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONVERTER = os.path.join(ROOT, "src/tools/pth_to_safetensors.py")
C_BINARY = os.path.join(ROOT, "build/tests/test_checkpoint")
passed = failed = 0


def check(cond, what):
    global passed, failed
    if cond:
        passed += 1
    else:
        failed += 1
        print(f"FAIL: {what}", file=sys.stderr)


def read_st(path):
    """Independent reader: (header dict without __metadata__, metadata, {name: float64 array}, tiled)."""
    raw = open(path, "rb").read()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    meta = header.pop("__metadata__", {})
    data = raw[8 + n:]
    codes = {"F32": "<f4", "F16": "<f2"}
    out = {}
    for name, info in header.items():
        b, e = info["data_offsets"]
        if info["dtype"] == "BF16":
            a = (np.frombuffer(data[b:e], "<u2").astype(np.uint32) << 16).view("<f4")
        else:
            a = np.frombuffer(data[b:e], codes[info["dtype"]])
        out[name] = a.reshape(info["shape"])
    spans = sorted(info["data_offsets"] for info in header.values())
    tiled = spans[0][0] == 0 and spans[-1][1] == len(data) and all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    return header, meta, out, tiled


def fake_rwkv7(L=2, C=8, H=2, V=16, F=32, Dw=4, Da=4, Dv=2, Dg=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)
    sd = {"emb.weight": r(V, C).bfloat16(), "blocks.0.ln0.weight": r(C), "blocks.0.ln0.bias": r(C),
          "ln_out.weight": r(C), "ln_out.bias": r(C), "head.weight": r(V, C).bfloat16()}
    for i in range(L):
        p = f"blocks.{i}."
        for n in ("ln1", "ln2", "att.ln_x"):
            sd[p + n + ".weight"], sd[p + n + ".bias"] = r(C), r(C)
        for n in ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g", "w0", "a0", "k_k", "k_a"):
            sd[p + "att." + n] = r(1, 1, C).bfloat16()
        for n, D in (("w", Dw), ("a", Da), ("v", Dv), ("g", Dg)):
            if n == "v" and i == 0:
                continue  # layer 0 has no value-residual LoRA in some released files
            sd[p + f"att.{n}1"], sd[p + f"att.{n}2"] = r(C, D).bfloat16(), r(D, C).half()
        if i > 0:
            sd[p + "att.v0"] = r(1, 1, C)
        sd[p + "att.r_k"] = r(H, C // H).bfloat16()
        for n in ("receptance", "key", "value", "output"):
            sd[p + f"att.{n}.weight"] = r(C, C).bfloat16()
        sd[p + "ffn.x_k"] = r(1, 1, C).bfloat16()
        sd[p + "ffn.key.weight"], sd[p + "ffn.value.weight"] = r(F, C).bfloat16(), r(C, F).bfloat16()
    sd["blocks.0.ln1.weight"][0] = -0.0
    return sd


def run(*args):
    return subprocess.run(list(args), capture_output=True, text=True)


# The converter runs in-process (importing torch per subprocess would take seconds per call); one
# subprocess call (--help) checks that it also works as a script.
_spec = importlib.util.spec_from_file_location("pth_to_safetensors", CONVERTER)
converter = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(converter)


def run_converter(*args):
    """converter.main() with argv; returns an object with returncode, stdout, stderr like subprocess."""
    out, err, rc = io.StringIO(), io.StringIO(), 0
    saved, sys.argv = sys.argv, [CONVERTER, *args]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            converter.main()
    except SystemExit as e:
        rc = e.code
    finally:
        sys.argv = saved
    return subprocess.CompletedProcess(args, rc, out.getvalue(), err.getvalue())


def convert(tmp, sd, name="model.pth", prefixed=lambda k: "att." in k):
    pth, out = os.path.join(tmp, name), os.path.join(tmp, name + ".safetensors")
    torch.save({("_forward_module." + k if prefixed(k) else k): v for k, v in sd.items()}, pth)
    return run_converter(pth, out), out


def same_bits(a, b):
    a, b = np.ascontiguousarray(a, "<f4"), np.ascontiguousarray(b, "<f4")
    return a.shape == b.shape and a.tobytes() == b.tobytes()


def test_converter(tmp):
    sd = fake_rwkv7()
    p, out = convert(tmp, sd)
    check(p.returncode == 0, f"converter failed: {p.stderr}")
    if p.returncode != 0:
        return sd, None
    check("L=2 C=8 V=16 H=2 F=32 Dw=4 Da=4 Dv=2 Dg=6" in p.stdout, f"summary line: {p.stdout}")
    header, meta, got, tiled = read_st(out)
    check(meta == {"format": "rwkv7-x070", "source": "model.pth"}, f"metadata {meta}")
    check(set(got) == set(sd), f"names differ: {set(got) ^ set(sd)}")
    check(tiled, "data offsets do not tile the data section")
    check(all(info["dtype"] == "F32" for info in header.values()), "non-F32 dtype in output")
    for k, v in sd.items():
        if k in got:
            check(list(got[k].shape) == list(v.shape), f"{k}: shape {got[k].shape} vs {list(v.shape)}")
            check(same_bits(got[k], v.float().numpy()), f"{k}: values differ")
    check(np.signbit(got["blocks.0.ln1.weight"][0]), "-0.0 lost")
    check(header["blocks.1.att.x_r"]["shape"] == [1, 1, 8] and header["blocks.1.att.r_k"]["shape"] == [2, 4] and
          header["blocks.1.att.w1"]["shape"] == [8, 4] and header["blocks.1.ffn.key.weight"]["shape"] == [32, 8],
          "official shapes not kept")

    # back to .pth: fp32 is exact, bf16 equals PyTorch's own rounding
    back = os.path.join(tmp, "back.pth")
    p = run_converter("--to-pth", "--dtype", "fp32", out, back)
    check(p.returncode == 0, f"--to-pth failed: {p.stderr}")
    if p.returncode == 0:
        b = torch.load(back)
        check(set(b) == set(sd) and all(torch.equal(b[k], sd[k].float()) for k in sd), "--to-pth fp32 values")
    p = run_converter("--to-pth", out, back)
    if p.returncode == 0:
        b = torch.load(back)
        check(all(b[k].dtype == torch.bfloat16 and torch.equal(b[k], sd[k].bfloat16()) for k in sd), "--to-pth bf16")
    else:
        check(False, f"--to-pth bf16 failed: {p.stderr}")

    p = run(sys.executable, CONVERTER, "--help")
    check(p.returncode == 0 and "usage" in p.stdout and "--to-pth" in p.stdout, "--help")
    return sd, out


def test_refusals(tmp):
    def refused(sd, want, name):
        p, out = convert(tmp, sd, name=name)
        check(p.returncode == 2 and want in p.stderr and p.stderr.count("\n") == 1,
              f"{name}: rc {p.returncode}, stderr {p.stderr!r}, want {want!r}")
        check(not os.path.exists(out), f"{name}: output written despite the error")

    sd = fake_rwkv7()
    sd["blocks.0.ffn.s_emb.weight"] = torch.zeros(16, 8)
    refused(sd, "DeepEmbed", "deepembed.pth")
    sd = fake_rwkv7()
    sd["blocks.1.att.foo"] = torch.zeros(8)
    refused(sd, "unknown key 'blocks.1.att.foo'", "unknown.pth")
    sd = fake_rwkv7()
    del sd["blocks.1.att.key.weight"]
    refused(sd, "missing tensor 'blocks.1.att.key.weight'", "missing.pth")
    sd = fake_rwkv7()
    sd["blocks.1.att.w2"] = torch.zeros(5, 8)  # Dw is 4 in w1
    refused(sd, "'blocks.1.att.w2' has shape [5, 8]", "shape.pth")
    sd = fake_rwkv7()
    sd["blocks.1.att.x_r"] = torch.zeros(8)  # squeezed: not the official [1,1,C]
    refused(sd, "'blocks.1.att.x_r' has shape [8]", "squeezed.pth")
    sd = fake_rwkv7()
    sd["blocks.0.att.v1"] = torch.zeros(8, 2)  # layer 0's v-LoRA is optional, but not in part
    refused(sd, "missing tensor 'blocks.0.att.v0'", "partial_v.pth")
    sd = fake_rwkv7(L=3)
    for k in [k for k in sd if k.startswith("blocks.1.")]:
        del sd[k]
    refused(sd, "layer numbers are not 0..L-1", "gap.pth")


def c_roundtrip(src, dst):
    p = run(C_BINARY, "--roundtrip-safetensors", src, dst)
    check(p.returncode == 0, f"C round trip of {src}: {p.stderr}")
    return p.returncode == 0


def test_c_roundtrip(tmp, sd, converted):
    if not os.access(C_BINARY, os.X_OK):
        check(False, f"{C_BINARY} not built (make build/tests/test_checkpoint)")
        return
    out = os.path.join(tmp, "c_out.safetensors")
    if converted and c_roundtrip(converted, out):
        _, meta, got, tiled = read_st(out)
        check(tiled and meta == {"format": "rwkv7-x070", "source": "model.pth"}, f"C output layout/metadata {meta}")
        check(set(got) == set(sd) and all(same_bits(got[k], sd[k].float().numpy()) for k in sd), "C output values")

    # Hand-written F16/BF16/F32 file with edge values; pretty-printed JSON with \u escapes in a name.
    f16 = np.array([1, -2, 65504, 2**-24, 1023 * 2**-24, -0.0, np.inf, -np.inf, np.nan, 1 / 3], np.float16)
    bf16 = torch.tensor([1, -5, 1 / 3, 3e38, -1e-39, 2**-133, float("inf"), float("nan")]).bfloat16()
    f32 = np.array([[1.5, -0.0, 3e38], [1e-45, -np.inf, 7]], np.float32)
    blobs = [("h\u00e9", "F16", [2, 5], f16.tobytes()),
             ("b", "BF16", [8], bf16.view(torch.int16).numpy().tobytes()),
             ("f", "F32", [2, 3], f32.tobytes())]
    header, pos = {"__metadata__": {"k\"ey": "v\\al\nue"}}, 0
    for name, dt, shape, blob in reversed(blobs):  # data order differs from header order
        header[name] = {"dtype": dt, "shape": shape, "data_offsets": [pos, pos + len(blob)]}
        pos += len(blob)
    text = json.dumps(header, indent=2).encode()
    src = os.path.join(tmp, "half.safetensors")
    with open(src, "wb") as f:
        f.write(len(text).to_bytes(8, "little") + text + b"".join(b for *_, b in reversed(blobs)))
    if c_roundtrip(src, out):
        h, meta, got, _ = read_st(out)
        check(meta == {"k\"ey": "v\\al\nue"}, f"metadata with escapes: {meta}")
        check(all(info["dtype"] == "F32" for info in h.values()), "C output is not F32")
        want = {"h\u00e9": torch.from_numpy(f16).float().numpy().reshape(2, 5),
                "b": bf16.float().numpy(), "f": f32}
        for k, w in want.items():
            g = got.get(k)
            ok = g is not None and g.shape == w.shape and np.array_equal(np.isnan(g), np.isnan(w))
            ok = ok and same_bits(np.where(np.isnan(g), 0, g), np.where(np.isnan(w), 0, w))
            check(ok, f"C conversion of {k}: {g} vs {w}")

    # The C reader refuses a header that Python's json would also refuse.
    bad = os.path.join(tmp, "bad.safetensors")
    with open(bad, "wb") as f:
        text = b'{"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},}'
        f.write(len(text).to_bytes(8, "little") + text + b"\0" * 4)
    p = run(C_BINARY, "--roundtrip-safetensors", bad, out)
    check(p.returncode == 2 and "malformed safetensors header" in p.stderr, f"bad header: {p.stderr}")


def main():
    with tempfile.TemporaryDirectory() as tmp:
        sd, converted = test_converter(tmp)
        test_refusals(tmp)
        test_c_roundtrip(tmp, sd, converted)
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
