#!/usr/bin/python3
"""The loss curves of several training runs in one PNG: each run's train loss (mean over windows of
--smooth steps, a line) and held-out loss (val_loss, markers), from RUN_DIR/train.jsonl, against step.

Usage: plot_compare.py --out PNG [--title TEXT] [--smooth N] LABEL=RUN_DIR [LABEL=RUN_DIR ...]
(jobs/bf16-quality.sh: fp32 against bf16). The PNG is written to a temporary file and renamed; a run
without step records exits with code 2 and a one-line reason."""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from plot_run import load_log, plt, save, series  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--title", default="")
    ap.add_argument("--smooth", type=int, default=20)
    ap.add_argument("runs", nargs="+", metavar="LABEL=RUN_DIR")
    a = ap.parse_args()
    fig, ax = plt.subplots(figsize=(8, 4.8))
    for i, spec in enumerate(a.runs):
        label, _, run_dir = spec.partition("=")
        if not run_dir:
            print(f"plot_compare: '{spec}' is not LABEL=RUN_DIR", file=sys.stderr)
            sys.exit(2)
        try:
            rows = load_log(run_dir)
        except ValueError as e:
            print(f"plot_compare: {e}", file=sys.stderr)
            sys.exit(2)
        color = f"C{i}"
        steps, loss = series(rows, "loss")
        n = max(1, a.smooth)
        mids = [sum(steps[j:j + n]) / len(steps[j:j + n]) for j in range(0, len(steps), n)]
        means = [sum(loss[j:j + n]) / len(loss[j:j + n]) for j in range(0, len(loss), n)]
        ax.plot(mids, means, color=color, lw=1.2, label=f"{label}: train loss (mean of {n} steps)")
        vs, vl = series(rows, "val_loss")
        if vs:
            ax.plot(vs, vl, color=color, ls="--", marker="o", ms=3.5, lw=0.8,
                    label=f"{label}: held-out loss (final {vl[-1]:.4f})")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy, nats/token")
    ax.set_title(a.title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save(fig, a.out)


if __name__ == "__main__":
    main()
