#!/usr/bin/python3
"""Convert an official RWKV-LM RWKV-7 ("x070") .pth checkpoint to safetensors, or back.

  pth_to_safetensors.py MODEL.pth OUT.safetensors
  pth_to_safetensors.py --to-pth MODEL.safetensors OUT.pth [--dtype bf16|fp32]

RWKV-PEFT state files (only blocks.N.att.time_state [H, 64, 64] tensors) convert the same way, in
both directions, with __metadata__ {"format": "rwkv-state"}.

The official key names and shapes are kept (src/rwkv7/README.md §5): [1,1,C] mixes stay
[1,1,C], r_k is [H,N], LoRA matrices are [in,out], Linear weights [out,in]. A DeepSpeed
"_forward_module." prefix is stripped. Tensors are written as float32 (bf16/fp16 are widened
exactly), with __metadata__ {"format": "rwkv7-x070", "source": <input file name>}. The key set
is checked (complete layers 0..L-1; layer 0 may lack v0/v1/v2) and all shapes must agree on one
set of dimensions; DeepEmbed variants (rwkv7a/rwkv7b) and unknown keys are refused.

Debian's torch 1.13 has no `safetensors` package, so the format is written by hand. Outputs are
written atomically (temp file, fsync, rename). Bad input exits with code 2 and a one-line reason.
Run with /usr/bin/python3 (the interpreter that has torch).
"""
import argparse
import json
import os
import re
import sys

import numpy as np
import torch

FORMAT = "rwkv7-x070"
STATE_FORMAT = "rwkv-state"
TIME_STATE = re.compile(r"blocks\.(\d+)\.att\.time_state")
PREFIX = "_forward_module."

# Shapes as tuples of dimension symbols (bound on first use, then checked) or literal ints.
TOP_KEYS = {
    "emb.weight": ("V", "C"),
    "blocks.0.ln0.weight": ("C",),
    "blocks.0.ln0.bias": ("C",),
    "ln_out.weight": ("C",),
    "ln_out.bias": ("C",),
    "head.weight": ("V", "C"),
}
LAYER_KEYS = {
    "ln1.weight": ("C",), "ln1.bias": ("C",), "ln2.weight": ("C",), "ln2.bias": ("C",),
    **{f"att.{m}": (1, 1, "C") for m in ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g", "w0", "a0", "v0", "k_k", "k_a")},
    **{f"att.{p}1": ("C", f"D{p}") for p in "wavg"},
    **{f"att.{p}2": (f"D{p}", "C") for p in "wavg"},
    "att.r_k": ("H", "N"),
    **{f"att.{m}.weight": ("C", "C") for m in ("receptance", "key", "value", "output")},
    "att.ln_x.weight": ("C",), "att.ln_x.bias": ("C",),
    "ffn.x_k": (1, 1, "C"),
    "ffn.key.weight": ("F", "C"),
    "ffn.value.weight": ("C", "F"),
}
LAYER0_OPTIONAL = {"att.v0", "att.v1", "att.v2"}  # the value residual is unused in layer 0
DEEPEMBED = re.compile(r"blocks\.\d+\.ffn\.(s_emb|s_emb_x|s0|s1|s2)(\.|$)")
LAYER_KEY = re.compile(r"blocks\.(\d+)\.(.+)")


class BadInput(Exception):
    pass


def natural_key(name):
    return [int(s) if s.isdigit() else s for s in re.split(r"(\d+)", name)]


def check_state_dict(sd):
    """Validates names and shapes of an RWKV-7 state dict (names already stripped)."""
    dims = {}
    layers = {}
    for name, t in sd.items():
        if DEEPEMBED.match(name):
            raise BadInput(f"'{name}' belongs to a DeepEmbed variant (rwkv7a/rwkv7b), a different "
                           "architecture that is not supported")
        m = LAYER_KEY.fullmatch(name)
        if name in TOP_KEYS:
            spec = TOP_KEYS[name]
        elif m and m.group(2) in LAYER_KEYS:
            spec = LAYER_KEYS[m.group(2)]
            layers.setdefault(int(m.group(1)), set()).add(m.group(2))
        else:
            raise BadInput(f"unknown key '{name}' (not an RWKV-7 x070 tensor)")
        shape = tuple(t.shape)
        if len(shape) != len(spec):
            raise BadInput(f"'{name}' has shape {list(shape)}, expected {len(spec)} dims {list(spec)}")
        for sym, n in zip(spec, shape):
            want = sym if isinstance(sym, int) else dims.setdefault(sym, n)
            if n != want:
                raise BadInput(f"'{name}' has shape {list(shape)}: dim {sym} is {n} here but {want} elsewhere")
    for name in TOP_KEYS:
        if name not in sd:
            raise BadInput(f"missing tensor '{name}'")
    if not layers:
        raise BadInput("no blocks.N.* layer tensors")
    if sorted(layers) != list(range(len(layers))):
        raise BadInput(f"layer numbers are not 0..L-1: {sorted(layers)}")
    for i, present in layers.items():
        optional = LAYER0_OPTIONAL if i == 0 and not present & LAYER0_OPTIONAL else set()  # all or none
        missing = set(LAYER_KEYS) - present - optional
        if missing:
            raise BadInput(f"missing tensor 'blocks.{i}.{sorted(missing)[0]}'")
    if dims["H"] * dims["N"] != dims["C"]:
        raise BadInput(f"r_k is [{dims['H']},{dims['N']}] but C = {dims['C']}")
    return dims, len(layers)


def is_state_file(sd):
    """An RWKV-PEFT state-tuning file: only blocks.N.att.time_state tensors."""
    return bool(sd) and all(TIME_STATE.fullmatch(k) for k in sd)


def check_time_states(sd):
    """Validates an RWKV-PEFT state dict: blocks.0..L-1.att.time_state, each [H, 64, 64] with one H."""
    layers = sorted(int(TIME_STATE.fullmatch(k).group(1)) for k in sd)
    if layers != list(range(len(layers))):
        raise BadInput(f"time_state layer numbers are not 0..L-1: {layers}")
    shapes = {tuple(t.shape) for t in sd.values()}
    if len(shapes) != 1 or len(next(iter(shapes))) != 3 or next(iter(shapes))[1:] != (64, 64):
        raise BadInput(f"time_state tensors must all be [H, 64, 64], found {sorted(shapes)}")
    H = next(iter(shapes))[0]
    return {"H": H, "N": 64, "C": H * 64}, len(layers)


def check_any(sd):
    return (STATE_FORMAT, *check_time_states(sd)) if is_state_file(sd) else (FORMAT, *check_state_dict(sd))


def atomic_write(path, write):
    """Calls write(file) on a temp file next to `path`, then fsyncs and renames it into place."""
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_safetensors(path, tensors, metadata):
    """tensors: list of (name, float32 numpy array) in file order."""
    header = {"__metadata__": metadata}
    offset = 0
    for name, a in tensors:
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # keep the data section 8-byte aligned

    def write(f):
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        for _, a in tensors:
            f.write(np.ascontiguousarray(a, dtype="<f4").tobytes())

    atomic_write(path, write)


def read_safetensors(path):
    """Returns {name: float32 torch tensor} and the metadata; accepts F32, F16 and BF16."""
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8:
        raise BadInput(f"{path}: not a safetensors file")
    n = int.from_bytes(raw[:8], "little")
    try:
        header = json.loads(raw[8:8 + n])
    except ValueError as e:
        raise BadInput(f"{path}: malformed safetensors header ({e})")
    if not isinstance(header, dict):
        raise BadInput(f"{path}: safetensors header is not a JSON object")
    metadata = header.pop("__metadata__", {})
    data = raw[8 + n:]
    out = {}
    for name, info in header.items():
        try:
            b, e = info["data_offsets"]
            dtype, shape = info["dtype"], info["shape"]
        except (KeyError, TypeError, ValueError):
            raise BadInput(f"{path}: malformed entry for tensor '{name}'")
        if not 0 <= b <= e <= len(data):
            raise BadInput(f"{path}: tensor '{name}' data_offsets [{b}, {e}] outside the data section")
        buf = data[b:e]
        if dtype == "F32":
            a = np.frombuffer(buf, "<f4")
        elif dtype == "F16":
            a = np.frombuffer(buf, "<f2").astype(np.float32)
        elif dtype == "BF16":
            a = (np.frombuffer(buf, "<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            raise BadInput(f"{path}: tensor '{name}' has dtype {dtype} (need F32, F16 or BF16)")
        if a.size != int(np.prod(shape, dtype=np.int64)):
            raise BadInput(f"{path}: tensor '{name}' size does not match its shape {shape}")
        out[name] = torch.from_numpy(a.reshape(shape).copy())
    return out, metadata


def pth_to_safetensors(src, dst):
    try:
        obj = torch.load(src, map_location="cpu")
    except Exception as e:
        raise BadInput(f"{src}: cannot load ({e})")
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise BadInput(f"{src}: not a state_dict of tensors")
    sd = {}
    for k, v in obj.items():
        name = k[len(PREFIX):] if k.startswith(PREFIX) else k
        if name in sd:
            raise BadInput(f"{src}: '{name}' appears both with and without the '{PREFIX}' prefix")
        if not v.is_floating_point():
            raise BadInput(f"{src}: tensor '{k}' has dtype {v.dtype}, expected a floating-point type")
        sd[name] = v
    try:
        kind, dims, n_layer = check_any(sd)
    except BadInput as e:
        raise BadInput(f"{src}: {e}")
    tensors = [(k, sd[k].detach().to(torch.float32).contiguous().numpy()) for k in sorted(sd, key=natural_key)]
    write_safetensors(dst, tensors, {"format": kind, "source": os.path.basename(src)})
    return dims, n_layer


def safetensors_to_pth(src, dst, dtype):
    sd, metadata = read_safetensors(src)
    try:
        kind, dims, n_layer = check_any(sd)
        if metadata.get("format", kind) != kind:
            raise BadInput(f"format is '{metadata['format']}', but the tensors are those of '{kind}'")
    except BadInput as e:
        raise BadInput(f"{src}: {e}")
    target = torch.bfloat16 if dtype == "bf16" else torch.float32
    out = {k: sd[k].to(target) for k in sorted(sd, key=natural_key)}
    atomic_write(dst, lambda f: torch.save(out, f))
    return dims, n_layer


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("input", help="official .pth (or .safetensors with --to-pth)")
    ap.add_argument("output", help="output .safetensors (or .pth with --to-pth)")
    ap.add_argument("--to-pth", action="store_true", help="convert safetensors back to an official-style .pth")
    ap.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16",
                    help="tensor dtype of the .pth written by --to-pth (default bf16, like released models)")
    args = ap.parse_args()
    try:
        if args.to_pth:
            dims, n_layer = safetensors_to_pth(args.input, args.output, args.dtype)
        else:
            dims, n_layer = pth_to_safetensors(args.input, args.output)
    except BadInput as e:
        print(f"pth_to_safetensors: {e}", file=sys.stderr)
        sys.exit(2)
    except OSError as e:
        print(f"pth_to_safetensors: {e}", file=sys.stderr)
        sys.exit(1)
    shape = " ".join(f"{k}={dims[k]}" for k in ("C", "V", "H", "F", "Dw", "Da", "Dv", "Dg") if k in dims)
    print(f"wrote {args.output}: L={n_layer} {shape}")


if __name__ == "__main__":
    main()
