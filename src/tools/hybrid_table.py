#!/usr/bin/python3
"""Table of a hybrid ablation (jobs/hybrid-ablation.sh): one row per run, read from OUT/NAME/train.jsonl
(run.task hybrid), plus a first row for the untouched base (base_val_loss of the runs).

Usage: hybrid_table.py OUT NAME=DESCRIPTION...   (the first NAME is the reference for the deltas and
the relative throughput; the job passes the static fine-tuning baseline)
Columns: held-out L_LM on positions >= prefix and its perplexity (the final evaluation), the difference
to the reference, the eval-path L_pd, the final alpha values, tokens/s (median over the steps, tokens
read = ctx_len per window), throughput relative to the reference (wall clock: only meaningful on an
otherwise idle machine) and the estimated training FLOPs per token relative to the reference (matrix
products of the RWKV-7 and the DiT; independent of the machine's load). Writes OUT/table.md and
OUT/table.json (temporary file, then rename) and prints the Markdown table. A missing or unfinished
run exits with code 2 and a one-line reason."""
import json
import math
import os
import statistics
import sys


def die(msg):
    print(f"hybrid_table.py: {msg}", file=sys.stderr)
    sys.exit(2)


def read_run(out, name):
    path = os.path.join(out, name, "train.jsonl")
    try:
        rows = [json.loads(line) for line in open(path) if line.strip()]
    except (OSError, ValueError) as e:
        die(f"{path}: {e}")
    evals = [r for r in rows if "val_loss" in r]
    if not evals:
        die(f"{path}: no held-out evaluation (run unfinished?)")
    last = evals[-1]
    alpha = {k[len("alpha_"):]: v for k, v in last.items() if k.startswith("alpha_")}
    return {
        "steps": last["step"],
        "val_loss": last["val_loss"],
        "val_ppl": math.exp(last["val_loss"]),
        "val_loss_pd": last.get("val_loss_pd"),
        "base_val_loss": last["base_val_loss"],
        "alpha": alpha,
        "tokens_per_s": statistics.median(r["tokens_per_s"] for r in rows),
        "flops_per_token": last.get("train_flops_per_token"),
    }


def alpha_text(alpha):
    if not alpha:
        return "-"
    layers = sorted({k.split("_")[0] for k in alpha}, key=int)
    parts = []
    for key, v in alpha.items():
        layer, mat = key.split("_")
        parts.append(f"{mat} {v:.3f}" if len(layers) == 1 else f"{layer}{mat} {v:.3f}")
    return ", ".join(parts)


def write_atomic(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def main():
    if len(sys.argv) < 3 or any("=" not in a for a in sys.argv[2:]):
        die("usage: hybrid_table.py OUT NAME=DESCRIPTION...")
    out = sys.argv[1]
    variants = [a.split("=", 1) for a in sys.argv[2:]]
    runs = {name: read_run(out, name) for name, _ in variants}
    ref_name = variants[0][0]
    ref = runs[ref_name]
    bases = {round(r["base_val_loss"], 6) for r in runs.values()}
    if len(bases) != 1:
        die(f"the runs start from different bases (base_val_loss {sorted(bases)}): not one ablation")
    base = ref["base_val_loss"]
    rows = [{"variant": "base", "description": "hybrid.init untouched (no training)", "val_loss": base,
             "val_ppl": math.exp(base), "delta_vs_ref": base - ref["val_loss"], "val_loss_pd": None, "alpha": {},
             "tokens_per_s": None, "throughput_vs_ref": None, "flops_per_token": None, "flops_vs_ref": None,
             "steps": 0}]
    for name, desc in variants:
        r = runs[name]
        rows.append({"variant": name, "description": desc, "val_loss": r["val_loss"], "val_ppl": r["val_ppl"],
                     "delta_vs_ref": r["val_loss"] - ref["val_loss"], "val_loss_pd": r["val_loss_pd"],
                     "alpha": r["alpha"], "tokens_per_s": r["tokens_per_s"],
                     "throughput_vs_ref": r["tokens_per_s"] / ref["tokens_per_s"],
                     "flops_per_token": r["flops_per_token"],
                     "flops_vs_ref": (r["flops_per_token"] / ref["flops_per_token"]
                                      if r["flops_per_token"] and ref["flops_per_token"] else None),
                     "steps": r["steps"]})
    head = ("| variant | what | held-out L_LM (t >= P) | perplexity | vs " + ref_name +
            " | eval L_pd | final alpha | tokens/s | throughput vs " + ref_name + " | train FLOPs/token vs " +
            ref_name + " |")
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        pd = "-" if r["val_loss_pd"] is None else f"{r['val_loss_pd']:.4f}"
        tps = "-" if r["tokens_per_s"] is None else f"{r['tokens_per_s']:.0f}"
        rel = "-" if r["throughput_vs_ref"] is None else f"{r['throughput_vs_ref']:.2f}x"
        flops = "-" if r["flops_vs_ref"] is None else f"{r['flops_vs_ref']:.2f}x"
        lines.append(f"| {r['variant']} | {r['description']} | {r['val_loss']:.4f} | {r['val_ppl']:.3f} | "
                     f"{r['delta_vs_ref']:+.4f} | {pd} | {alpha_text(r['alpha'])} | {tps} | {rel} | {flops} |")
    md = "\n".join(lines) + "\n"
    write_atomic(os.path.join(out, "table.md"), md)
    write_atomic(os.path.join(out, "table.json"), json.dumps({"reference": ref_name, "rows": rows}, indent=1) + "\n")
    print(md, end="")


if __name__ == "__main__":
    main()
