#!/usr/bin/python3
"""Table of a hybrid ablation (jobs/hybrid-ablation.sh): one row per variant over its seeds, read from
OUT/NAME/seed-SEED/train.jsonl (run.task hybrid), plus a first row for the untouched base (base_val_loss
of the runs).

Usage: hybrid_table.py OUT --seeds S1,S2,... NAME=DESCRIPTION...   (the first NAME is the reference for
the differences and the relative costs; the job passes the static fine-tuning baseline)
Columns: seeds; held-out L_LM on positions >= prefix (the final evaluation) as the mean over the seeds
with its 95% confidence interval (t distribution with n - 1 degrees of freedom; with 1 seed "1 seed, no
CI"); the perplexity of that mean; the difference to the reference, paired by seed (variant minus
reference of the same seed: the same data order), mean and 95% CI the same way; the eval-path L_pd and
the final alpha values (means over the seeds); tokens/s (the median over a run's steps, tokens read =
ctx_len per window, then the mean over the seeds), throughput relative to the reference (wall clock:
only meaningful on an otherwise idle machine), the estimated training FLOPs per optimizer step (GFLOP;
batch_size windows of ctx_len tokens) and per token relative to the reference (matrix products of the
RWKV-7 and the DiT, src/hybrid/README.md §5; independent of the machine's load). Writes OUT/table.md and OUT/table.json (temporary file, then rename) and prints the
Markdown table. A missing or unfinished run exits with code 2 and a one-line reason."""
import json
import math
import os
import statistics
import sys

# t quantiles t_{0.975, df} for df = 1..30; beyond, the Cornish-Fisher expansion (error < 1e-4)
T975 = (12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281, 2.2010, 2.1788, 2.1604,
        2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860, 2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555,
        2.0518, 2.0484, 2.0452, 2.0423)


def t975(df):
    if df <= len(T975):
        return T975[df - 1]
    z = 1.959964
    return z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)


def mean_ci(values):
    """(mean, [low, high]) of the 95% t interval of the mean; None for the interval with one value."""
    m = statistics.fmean(values)
    if len(values) < 2:
        return m, None
    half = t975(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return m, [m - half, m + half]


def die(msg):
    print(f"hybrid_table.py: {msg}", file=sys.stderr)
    sys.exit(2)


def read_run(out, name, seed):
    path = os.path.join(out, name, f"seed-{seed}", "train.jsonl")
    try:
        rows = [json.loads(line) for line in open(path) if line.strip()]
    except (OSError, ValueError) as e:
        die(f"{path}: {e}")
    evals = [r for r in rows if "val_loss" in r]
    if not evals:
        die(f"{path}: no held-out evaluation (run unfinished?)")
    last = evals[-1]
    return {
        "steps": last["step"],
        "val_loss": last["val_loss"],
        "val_loss_pd": last.get("val_loss_pd"),
        "base_val_loss": last["base_val_loss"],
        "alpha": {k[len("alpha_"):]: v for k, v in last.items() if k.startswith("alpha_")},
        "tokens_per_s": statistics.median(r["tokens_per_s"] for r in rows),
        "flops_per_token": last.get("train_flops_per_token"),
        "flops_per_step": last.get("train_flops_per_step"),
    }


def alpha_text(alpha):
    if not alpha:
        return "-"
    layers = {k.split("_")[0] for k in alpha}
    parts = []
    for key, v in alpha.items():
        layer, mat = key.split("_")
        parts.append(f"{mat} {v:.3f}" if len(layers) == 1 else f"{layer}{mat} {v:.3f}")
    return ", ".join(parts)


def ci_text(value, ci, fmt, single=""):
    """value [low, high], or value and `single` when there is no interval (one seed)."""
    return f"{value:{fmt}}" + (single if ci is None else f" [{ci[0]:{fmt}}, {ci[1]:{fmt}}]")


def write_atomic(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def summarise(name, desc, runs, ref_runs):
    """One variant's row from its runs (one per seed) and the reference's runs of the same seeds."""
    losses = [r["val_loss"] for r in runs]
    loss, loss_ci = mean_ci(losses)
    delta, delta_ci = mean_ci([r["val_loss"] - q["val_loss"] for r, q in zip(runs, ref_runs)])
    pds = [r["val_loss_pd"] for r in runs if r["val_loss_pd"] is not None]
    alpha = {k: statistics.fmean(r["alpha"][k] for r in runs) for k in runs[0]["alpha"]}
    tps = statistics.fmean(r["tokens_per_s"] for r in runs)
    ref_tps = statistics.fmean(q["tokens_per_s"] for q in ref_runs)
    flops, ref_flops = runs[0]["flops_per_token"], ref_runs[0]["flops_per_token"]
    return {"variant": name, "description": desc, "seeds": len(runs), "val_loss": loss, "val_loss_ci": loss_ci,
            "val_loss_seeds": losses, "val_ppl": math.exp(loss), "delta_vs_ref": delta, "delta_vs_ref_ci": delta_ci,
            "val_loss_pd": statistics.fmean(pds) if pds else None, "alpha": alpha, "tokens_per_s": tps,
            "throughput_vs_ref": tps / ref_tps, "flops_per_token": flops, "flops_per_step": runs[0]["flops_per_step"],
            "flops_vs_ref": flops / ref_flops if flops and ref_flops else None, "steps": runs[0]["steps"]}


def main():
    args = sys.argv[1:]
    if len(args) < 4 or args[1] != "--seeds" or any("=" not in a for a in args[3:]):
        die("usage: hybrid_table.py OUT --seeds S1,S2,... NAME=DESCRIPTION...")
    out, seeds = args[0], args[2].split(",")
    if not all(s.isdigit() for s in seeds):
        die(f"--seeds {args[2]}: expected comma-separated run.seed values")
    variants = [a.split("=", 1) for a in args[3:]]
    runs = {name: [read_run(out, name, s) for s in seeds] for name, _ in variants}
    ref_name = variants[0][0]
    bases = {round(r["base_val_loss"], 6) for rs in runs.values() for r in rs}
    if len(bases) != 1:
        die(f"the runs start from different bases (base_val_loss {sorted(bases)}): not one ablation")
    ref = runs[ref_name]
    base = ref[0]["base_val_loss"]
    delta, delta_ci = mean_ci([base - q["val_loss"] for q in ref])
    rows = [{"variant": "base", "description": "hybrid.init untouched (no training)", "seeds": len(seeds),
             "val_loss": base, "val_loss_ci": None, "val_loss_seeds": [base], "val_ppl": math.exp(base),
             "delta_vs_ref": delta, "delta_vs_ref_ci": delta_ci, "val_loss_pd": None, "alpha": {},
             "tokens_per_s": None, "throughput_vs_ref": None, "flops_per_token": None, "flops_per_step": None,
             "flops_vs_ref": None,
             "steps": 0}]
    rows += [summarise(name, desc, runs[name], ref) for name, desc in variants]
    head = ("| variant | what | seeds | held-out L_LM (t >= P) [95% CI] | perplexity | vs " + ref_name +
            " [95% CI] | eval L_pd | final alpha | tokens/s | throughput vs " + ref_name + " | train GFLOP/step | "
            "train FLOPs/token vs " + ref_name + " |")
    lines = [head, "|" + "---|" * 12]
    for r in rows:
        loss = (f"{r['val_loss']:.4f}" if r["variant"] == "base"
                else ci_text(r["val_loss"], r["val_loss_ci"], ".4f", " (1 seed, no CI)"))
        pd = "-" if r["val_loss_pd"] is None else f"{r['val_loss_pd']:.4f}"
        tps = "-" if r["tokens_per_s"] is None else f"{r['tokens_per_s']:.0f}"
        rel = "-" if r["throughput_vs_ref"] is None else f"{r['throughput_vs_ref']:.2f}x"
        flops = "-" if r["flops_vs_ref"] is None else f"{r['flops_vs_ref']:.2f}x"
        step = "-" if r["flops_per_step"] is None else f"{r['flops_per_step'] / 1e9:.3g}"
        lines.append(f"| {r['variant']} | {r['description']} | {r['seeds']} | {loss} | {r['val_ppl']:.3f} | "
                     f"{ci_text(r['delta_vs_ref'], r['delta_vs_ref_ci'], '+.4f')} | {pd} | {alpha_text(r['alpha'])} | "
                     f"{tps} | {rel} | {step} | {flops} |")
    md = "\n".join(lines) + "\n"
    write_atomic(os.path.join(out, "table.md"), md)
    write_atomic(os.path.join(out, "table.json"),
                 json.dumps({"reference": ref_name, "seeds": [int(s) for s in seeds], "rows": rows}, indent=1) + "\n")
    print(md, end="")


if __name__ == "__main__":
    main()
