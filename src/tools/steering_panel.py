#!/usr/bin/python3
"""The part-A steering panel (src/eval/README.md §3.1), in the manner of the paper's Table 1, scored:
RWKV-7 continues a newline from five kinds of initial state per label, and an independent text
classifier says which label each continuation reads like.

  zero          no state
  class mean    mean train WKV state of the label, modelled layers only (as eval-states' class mean)
  generated     a DDIM sample of the state DiT for the label (`sample-state --n N`, one per continuation)
  tuned         the label's tuned state (run.task state_tuning, OUT/tuned/states/<label>.safetensors)
  interpolated  halfway between a generated state of the label and one of the next label
                (`interpolate-state --space state`: linear in the modelled WKV states)

The classifier (scikit-learn: TF-IDF of character 2-4-grams, multinomial logistic regression) is
trained on the train contexts' text only; its accuracy on held-out context text cut to the length of a
continuation is the reference for how well short text reveals its label at all. Per kind: the share
of continuations classified as the state's label (for interpolated: as either endpoint's), with a 95%
Wilson interval, per label and pooled; the continuation CE of the same kind of state from the job's
eval-states JSON (held-out contexts, teacher-forced; none for interpolated) beside it; one example text
per label and kind.

Usage: steering_panel.py --config LM.yaml --checkpoint LM_WEIGHTS --dit DIT.ckpt --job OUT
                         [--continuations N] [--tokens T] [--out DIR]
OUT is the part-A job directory (contexts/, states-train/, tuned/states/, eval-states.json). Writes
DIR/panel.json and DIR/panel.md (default OUT/panel), atomically; the states it makes go to DIR/states.
Exit 2 with one line on missing or inconsistent inputs."""
import argparse
import json
import math
import os
import struct
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from part_a_table import write_atomic  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.path.join(ROOT, "bin", "dreamstate")
KINDS = ["zero", "class_mean", "generated", "tuned", "interpolated"]
KIND_NAMES = {"zero": "zero", "class_mean": "class mean", "generated": "generated (DiT)",
              "tuned": "tuned (state tuning)", "interpolated": "interpolated (halfway to the next label)"}


def fail(msg):
    print(f"steering_panel: {msg}", file=sys.stderr)
    sys.exit(2)


def run(*args):
    # one thread per command unless the caller says otherwise (the job exports its own)
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    r = subprocess.run([BIN, *args], capture_output=True, text=True, errors="replace", env=env)
    if r.returncode != 0:
        fail(f"dreamstate {args[0]}: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}")
    return r.stdout


def read_contexts(path):
    try:
        rows = [json.loads(line) for line in open(path)]
        return [r["text"] for r in rows], [r["label"] for r in rows]
    except (OSError, ValueError, KeyError) as e:
        fail(f"{path}: {e}")


def class_mean_wkv(index_path):
    """{label: WKV [L, H, 64, 64] mean over the label's records}, from the shards (include/dreamstate/states.h)."""
    d = os.path.dirname(index_path)
    lines = open(index_path).read().splitlines()
    labels = [l.split(" ", 1)[1] for l in lines if l.startswith("label ")]
    sums, counts = {}, {}
    for line in lines:
        if not line.startswith("shard "):
            continue
        raw = open(os.path.join(d, line.split()[1]), "rb").read()
        magic, ver, L, C, H, N, cond_dim, flags, meta_bytes, n, rb = struct.unpack_from("<8s8IQQ", raw, 0)
        if magic != b"DSSTATES" or ver != 1 or rb != 8 + 4 * (cond_dim + L * (2 * C + H * N * N)):
            fail(f"{line.split()[1]}: not a version-1 state shard")
        for i in range(n):
            off = 64 + i * rb
            label = struct.unpack_from("<i", raw, off)[0]
            s = np.frombuffer(raw, dtype="<f4", count=L * (2 * C + H * N * N), offset=off + 8 + 4 * cond_dim)
            wkv = s.reshape(L, 2 * C + H * N * N)[:, C:C + H * N * N].reshape(L, H, N, N).astype(np.float64)
            sums[label] = sums.get(label, 0) + wkv
            counts[label] = counts.get(label, 0) + 1
    return {labels[k]: (sums[k] / counts[k]).astype(np.float32) for k in sums}


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    return {k: np.frombuffer(data[v["data_offsets"][0]:v["data_offsets"][1]], dtype="<f4").reshape(v["shape"])
            for k, v in header.items() if k != "__metadata__"}


def write_safetensors(path, tensors, metadata):
    header, blobs, off = {"__metadata__": metadata}, [], 0
    for name, a in tensors.items():
        b = np.ascontiguousarray(a, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path + ".tmp", "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
    os.replace(path + ".tmp", path)


def samples(dit, sdir, label, label_index, n):
    """The n DiT samples of a label (sample-state --n: FILE-<i>.safetensors, or FILE itself for one), made once."""
    base = os.path.join(sdir, f"generated-{label}.safetensors")
    paths = [base] if n == 1 else [f"{base[:-len('.safetensors')]}-{i}.safetensors" for i in range(n)]
    if not os.path.exists(paths[-1]):
        run("sample-state", dit, "--label", label, "--n", str(n), "--seed", str(100 + label_index), "--out", base)
    return paths


def wilson(k, n):
    if n == 0:
        return None, None
    z, p = 1.959964, k / n
    c = (p + z * z / (2 * n)) / (1 + z * z / n)
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return c - h, c + h


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--dit", required=True)
    ap.add_argument("--job", required=True)
    ap.add_argument("--continuations", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--out")
    a = ap.parse_args()
    out = a.out or os.path.join(a.job, "panel")
    sdir = os.path.join(out, "states")
    os.makedirs(sdir, exist_ok=True)
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    train_text, train_labels = read_contexts(os.path.join(a.job, "contexts", "train.jsonl"))
    held_text, held_labels = read_contexts(os.path.join(a.job, "contexts", "held.jsonl"))
    clf = make_pipeline(TfidfVectorizer(analyzer="char", ngram_range=(2, 4), sublinear_tf=True, max_features=50000),
                        LogisticRegression(C=10.0, max_iter=3000))
    clf.fit(train_text, train_labels)
    labels = sorted(set(train_labels))
    means = class_mean_wkv(os.path.join(a.job, "states-train", "index.txt"))
    # the continuations, and the kinds and endpoints of their initial states
    texts = {k: {l: [] for l in labels} for k in KINDS}
    tuned_dir = os.path.join(a.job, "tuned", "states")
    n = a.continuations
    for li, label in enumerate(labels):
        nxt = labels[(li + 1) % len(labels)]
        gens = samples(a.dit, sdir, label, li, n)
        # every layer of the file (its reader wants blocks 0..L-1); the mean where the DiT models the layer
        layers = {k: means[label][int(k.split(".")[1])] if np.abs(v).max() > 0 else np.zeros_like(v)
                  for k, v in read_safetensors(gens[0]).items()}
        mean_path = os.path.join(sdir, f"class-mean-{label}.safetensors")
        write_safetensors(mean_path, layers, {"format": "rwkv-state", "label": label})
        states = {"zero": [None] * n, "class_mean": [mean_path] * n, "generated": gens,
                  "tuned": [os.path.join(tuned_dir, f"{label}.safetensors")] * n, "interpolated": []}
        if not os.path.exists(states["tuned"][0]):
            states["tuned"] = []
        others = samples(a.dit, sdir, nxt, (li + 1) % len(labels), n)
        for i, other in enumerate(others):
            mid = os.path.join(sdir, f"interpolated-{label}-{i}.safetensors")
            if not os.path.exists(f"{mid[:-len('.safetensors')]}-1.safetensors"):
                run("interpolate-state", a.dit, "--from", gens[i], "--to", other, "--space", "state", "--mode", "linear",
                    "--points", "3", "--out", mid)
            states["interpolated"].append(f"{mid[:-len('.safetensors')]}-1.safetensors")
        for kind in KINDS:
            if kind == "zero" and li > 0:  # no state: the same text for every label
                texts[kind][label] = list(texts[kind][labels[0]])
                continue
            for i, s in enumerate(states[kind]):
                args = ["generate", a.config, "--checkpoint", a.checkpoint, "--prompt", "\n", "--max-tokens",
                        str(a.tokens), "--seed", str(1000 + i), "--set", "run.threads=1"]
                if s:
                    args += ["--state", s]
                texts[kind][label].append(run(*args))
    # the reference: held-out context text cut to the byte length of a continuation
    cont_len = int(np.median([len(t.encode()) for k in KINDS for l in labels for t in texts[k][l]]) or 1)
    cut = [t.encode()[:cont_len].decode(errors="ignore") for t in held_text]
    ref_acc = float(np.mean(clf.predict(cut) == np.array(held_labels)))
    full_acc = float(np.mean(clf.predict(held_text) == np.array(held_labels)))
    try:
        ev = json.load(open(os.path.join(a.job, "eval-states.json")))["continuation"]["pooled"]
    except (OSError, ValueError, KeyError):
        ev = {}
    result = {"labels": labels, "continuations_per_label": n, "tokens": a.tokens, "prompt": "\\n",
              "classifier": {"features": "TF-IDF of character 2-4-grams", "model": "multinomial logistic regression, C=10",
                             "held_out_accuracy_full_contexts": full_acc,
                             "held_out_accuracy_cut": ref_acc, "cut_bytes": cont_len, "chance": 1 / len(labels)},
              "kinds": {}}
    for kind in KINDS:
        hits = total = 0
        per_label = {}
        for li, label in enumerate(labels):
            ts = texts[kind][label]
            if not ts:
                continue
            pred = clf.predict(ts)
            want = {label, labels[(li + 1) % len(labels)]} if kind == "interpolated" else {label}
            h = int(sum(p in want for p in pred))
            per_label[label] = {"accuracy": h / len(ts), "predicted": list(map(str, pred)), "example": ts[0]}
            hits += h
            total += len(ts)
        if not total:
            continue
        lo, hi = wilson(hits, total)
        ce = ev.get(kind, {}).get("ce")
        result["kinds"][kind] = {"accuracy": hits / total, "ci95": [lo, hi], "n": total, "continuation_ce": ce,
                                 "per_label": per_label}
    write_atomic(os.path.join(out, "panel.json"), json.dumps(result, indent=1) + "\n")
    md = ["| initial state | classified as its label [95% CI] | continuation CE (eval-states) |", "|---|---|---|"]
    for kind, r in result["kinds"].items():
        md.append(f"| {KIND_NAMES[kind]} | {r['accuracy']:.2f} [{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}] | "
                  f"{'' if r['continuation_ce'] is None else format(r['continuation_ce'], '.4f')} |")
    c = result["classifier"]
    md.append("")
    md.append(f"{n} continuations of {a.tokens} tokens per label and kind, from a newline. Classifier: "
              f"{c['held_out_accuracy_full_contexts']:.2f} on held-out contexts, {c['held_out_accuracy_cut']:.2f} on "
              f"their first {cont_len} bytes (a continuation's median length); chance {c['chance']:.2f}. "
              "Interpolated counts either endpoint's label.")
    md.append("")
    md.append("| label | " + " | ".join(KIND_NAMES[k] for k in result["kinds"]) + " |")
    md.append("|---|" + "---|" * len(result["kinds"]))
    for label in labels:
        cells = []
        for k in result["kinds"]:
            e = result["kinds"][k]["per_label"].get(label)
            cells.append("" if e is None else
                         "`" + e["example"][:80].replace("`", "'").replace("|", "/").replace("\n", "⏎") + "`")
        md.append(f"| {label} | " + " | ".join(cells) + " |")
    write_atomic(os.path.join(out, "panel.md"), "\n".join(md) + "\n")
    print("\n".join(md[:len(result['kinds']) + 4]))


if __name__ == "__main__":
    main()
