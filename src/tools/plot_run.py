#!/usr/bin/python3
"""Plots of one training run from RUN_DIR/train.jsonl (one JSON object per step: step, loss, lr,
grad_norm, tokens_per_s, sometimes val_loss, and task-specific numbers such as loss_lm, loss_pd,
alpha_*, eval_*):

    RUN_DIR/plots/loss.png        every field whose name contains "loss", against step (log y when
                                  the values span more than 10x); sparse fields (val_loss) get markers
    RUN_DIR/plots/throughput.png  tokens_per_s and/or samples_per_s, if logged
    RUN_DIR/plots/alpha.png       the alpha_* fields (fusion coefficients), if any

Usage: plot_run.py RUN_DIR. Fields may come and go between lines; a line that is not a JSON object
(e.g. a half-written last line) is skipped. Each PNG is written to a temporary file and renamed.
A missing or empty train.jsonl exits with code 2 and a one-line reason."""
import json
import math
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend choice)


def fail(msg):
    print(f"plot_run: {msg}", file=sys.stderr)
    sys.exit(2)


def is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def load_log(run_dir):
    """The train.jsonl records as dicts (with "step" filled in from the line order where absent)."""
    path = os.path.join(run_dir, "train.jsonl")
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror}")
    rows = []
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            if not is_number(row.get("step")):
                row["step"] = len(rows) + 1
            rows.append(row)
    if not rows:
        raise ValueError(f"{path} has no step records")
    return rows


def series(rows, key):
    """(steps, values) of the rows where `key` is a finite number."""
    pts = [(r["step"], r[key]) for r in rows if is_number(r.get(key))]
    return [p[0] for p in pts], [p[1] for p in pts]


def numeric_fields(rows, keep):
    seen = []
    for r in rows:
        for k, v in r.items():
            if k != "step" and k not in seen and is_number(v) and keep(k):
                seen.append(k)
    return seen


def save(fig, path):
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        fig.savefig(tmp, dpi=110, format="png")
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.remove(tmp)


def line_plot(rows, keys, title, ylabel, path, log_if_wide=False):
    """One line per key against step; False if none of the keys has a value."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    lo, hi, drawn = math.inf, -math.inf, 0
    for key in keys:
        x, y = series(rows, key)
        if not x:
            continue
        sparse = len(x) < 0.5 * len(rows)   # e.g. val_loss every eval_every steps
        ax.plot(x, y, marker="o" if sparse else None, markersize=3, linewidth=1.2 if sparse else 0.9, label=key)
        lo, hi, drawn = min(lo, min(y)), max(hi, max(y)), drawn + 1
    if not drawn:
        plt.close(fig)
        return False
    if log_if_wide and lo > 0 and hi / lo > 10:
        ax.set_yscale("log")
    ax.set_xlabel("step"), ax.set_ylabel(ylabel), ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    save(fig, path)
    return True


def make_plots(run_dir):
    """Writes the plots of run_dir; returns {name: path} of those written (loss, throughput, alpha)."""
    rows = load_log(run_dir)
    out = os.path.join(run_dir, "plots")
    os.makedirs(out, exist_ok=True)
    name = os.path.basename(os.path.normpath(run_dir))
    written = {}
    plans = [
        ("loss", numeric_fields(rows, lambda k: "loss" in k), f"{name}: loss", "loss", True),
        ("throughput", [k for k in ("tokens_per_s", "samples_per_s") if series(rows, k)[0]], f"{name}: throughput",
         "per second", False),
        ("alpha", numeric_fields(rows, lambda k: k.startswith("alpha_")), f"{name}: fusion coefficients", "alpha", False),
    ]
    for plot, keys, title, ylabel, log in plans:
        path = os.path.join(out, f"{plot}.png")
        if keys and line_plot(rows, keys, title, ylabel, path, log):
            written[plot] = path
    return written


def main():
    if len(sys.argv) != 2 or sys.argv[1] in ("-h", "--help"):
        print(__doc__)
        sys.exit(0 if len(sys.argv) == 2 else 2)
    try:
        written = make_plots(sys.argv[1])
    except ValueError as e:
        fail(str(e))
    except OSError as e:
        fail(f"cannot write plots: {e}")
    for path in written.values():
        print(path)


if __name__ == "__main__":
    main()
