#!/usr/bin/python3
"""The part-B job's report (src/eval/README.md §4): OUT/report.md holds the ablation table of
jobs/hybrid-ablation.sh (OUT/table.md, OUT/table.json) and the comparisons that answer the paper's
question (does a context-generated W_r/W_k/W_v beat the obvious baselines?), each with a reading
generated from its numbers.

Usage: part_b_report.py OUT
Every comparison is a difference of held-out L_LM (positions t >= P) paired by seed, mean and 95% t
interval over the seeds (src/tools/hybrid_table.py's mean_ci); with one seed there is no interval and
no verdict. A difference "holds" when its interval excludes zero. Variants missing from the table are
skipped with a line saying so."""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hybrid_table import mean_ci, write_atomic  # noqa: E402

# (variant, baseline, what the difference answers); variant minus baseline, lower is better
COMPARISONS = [
    ("learned", "static", "Does the hybrid beat fine-tuning every weight of the RWKV-7 on the same tokens?"),
    ("learned", "static-restricted", "Does it beat fine-tuning only the matrices it generates (same layers)?"),
    ("learned", "direct", "Does the diffusion formulation beat a deterministic hypernetwork of the same size?"),
    ("learned", "shuffled", "Does the context matter: is the true condition better than another window's?"),
    ("ln_out_prefix", "learned", "Is the RWKV-7's own hidden state a better condition than the first token?"),
    ("mean_prefix", "learned", "Is the mean prefix embedding a better condition than the first token?"),
]


def fail(msg):
    print(f"part_b_report: {msg}", file=sys.stderr)
    sys.exit(2)


def verdict(delta, ci):
    if ci is None:
        return "no interval (one seed)"
    if ci[0] < 0 < ci[1] or ci[0] == 0 or ci[1] == 0:
        return "not distinguishable"
    return "better" if delta < 0 else "worse"


def main():
    if len(sys.argv) != 2 or sys.argv[1].startswith("-"):
        fail("usage: part_b_report.py OUT (a jobs/hybrid-ablation.sh output directory)")
    out = sys.argv[1]
    try:
        table = json.load(open(os.path.join(out, "table.json")))
        md = open(os.path.join(out, "table.md")).read().strip()
    except (OSError, ValueError) as e:
        fail(f"{e}: run jobs/hybrid-ablation.sh to the end first")
    rows = {r["variant"]: r for r in table["rows"]}
    n = len(table["seeds"])
    lines = [f"# Part B report: {os.path.abspath(out)}", "",
             f"Held-out L_LM on positions t >= P, {n} seed(s) ({', '.join(map(str, table['seeds']))}); "
             f"differences paired by seed with 95% t intervals.", "", "## 1. The ablation table", "", md, "",
             "## 2. The questions", "", "| question | variant - baseline | difference [95% CI] | verdict |",
             "|---|---|---|---|"]
    answers = {}
    for var, base, question in COMPARISONS:
        if var not in rows or base not in rows:
            lines.append(f"| {question} | {var} - {base} | (not run) | |")
            continue
        diffs = [a - b for a, b in zip(rows[var]["val_loss_seeds"], rows[base]["val_loss_seeds"])]
        d, ci = mean_ci(diffs)
        v = verdict(d, ci)
        answers[(var, base)] = (d, ci, v)
        ci_text = "" if ci is None else f" [{ci[0]:+.4f}, {ci[1]:+.4f}]"
        lines.append(f"| {question} | {var} - {base} | {d:+.4f}{ci_text} | {v} |")
    lines.append("")
    read = []

    def said(key, text, better, otherwise):
        a = answers.get(key)
        if not a:
            return
        d, _, v = a
        read.append(f"{text} {d:+.4f} nats/token ({v})" +
                    (f": {better}" if v == "better" else f": {otherwise}" if v != "no interval (one seed)" else ""))

    said(("learned", "static"), "Hybrid minus the static fine-tune:",
         "the paper's claim that a generated W_r/W_k/W_v beats static weights holds at this size.",
         "the paper's claim is not shown at this size.")
    said(("learned", "static-restricted"), "Hybrid minus fine-tuning the same matrices of the same layers:",
         "generating the matrices beats training them.", "generating the matrices is not shown to beat training them.")
    said(("learned", "direct"), "Hybrid minus a deterministic hypernetwork of the same size:",
         "the diffusion formulation adds something.", "the diffusion formulation is not shown to add anything.")
    said(("learned", "shuffled"), "True condition minus another window's:",
         "the generated weights depend on the context.",
         "no evidence that the generated weights depend on the context (a context-independent weight shift).")
    said(("ln_out_prefix", "learned"), "Condition from the RWKV-7's ln_out over the prefix minus the first token:",
         "the model's own hidden state is the better condition.", "not a better condition.")
    learned = rows.get("learned")
    if learned and learned.get("alpha"):
        alphas = ", ".join(f"{k} {v:.3f}" for k, v in learned["alpha"].items())
        mean_alpha = sum(learned["alpha"].values()) / len(learned["alpha"])
        read.append(f"The learned alpha (the static weights' share) ends at {alphas}, from 0.9: "
                    + ("the fused matrices stay mostly static." if mean_alpha > 0.5 else "the generated matrices dominate."))
    if learned and rows.get("static") and learned.get("flops_vs_ref"):
        read.append(f"A hybrid training step costs {learned['flops_vs_ref']:.2f}x the static fine-tune's FLOPs per token.")
    if n < 3:
        read.append(f"With {n} seed(s) there is no verdict (no interval): the job's default at --size large is 3 seeds.")
    lines += ["**Reading.** " + ". ".join(r.rstrip(".") for r in read) + ".", ""]
    write_atomic(os.path.join(out, "report.md"), "\n".join(lines))
    print("\n".join(lines[lines.index("## 2. The questions"):]))


if __name__ == "__main__":
    main()
