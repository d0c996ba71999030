#!/usr/bin/python3
"""The part-A continuation table over DiT training seeds (src/eval/README.md §3): one `eval-states`
JSON per seed of the state DiT (the same RWKV-7, states and held-out contexts), and optionally the
JSONs of control DiTs (e.g. trained with diffusion.shuffle_condition).

For every initial state: the pooled continuation CE (token-weighted over held-out contexts) and its
difference to the zero state. The rows that do not depend on the DiT (zero, class mean, true, tuned)
must agree across the seed files (else they are not runs of one job: exit 2). The generated rows vary
with the seed: each seed's pooled difference, then their mean with a 95% CI across seeds (Student t,
n - 1 degrees of freedom; with one seed, the JSON's bootstrap CI over contexts instead), the difference
to the class mean and to the tuned state with the same kind of CI, and the share of the tuned state's
gain over zero that a generated state recovers. kNN@1 label accuracy of the generated states, per seed
and mean. A control's generated row is reported with its own bootstrap CI.

Usage: part_a_table.py SEED.json... [--control NAME=FILE.json]... [--out-md FILE] [--out-json FILE]
Prints the markdown table (and writes it and the numbers as JSON if asked), atomically."""
import argparse
import json
import math
import os
import sys

# the DiT-independent initial states, and how the table names each initial state
FIXED = ["zero", "class_mean", "true_modelled", "true_full", "tuned"]
NAMES = {"zero": "zero", "class_mean": "class mean (train states of the label)",
         "generated": "generated (DiT, DDIM, its label)", "generated_wrong_label": "generated under a wrong label",
         "true_modelled": "true state, modelled layers", "true_full": "true state, all layers + token shift (= prompting)",
         "tuned": "tuned for its label (state tuning)"}
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}


def fail(msg):
    print(f"part_a_table: {msg}", file=sys.stderr)
    sys.exit(2)


def t95(df):
    """The two-sided 95% quantile of Student's t with df degrees of freedom."""
    return T95.get(df, 1.96 + 2.5 / df)  # beyond 10: within 0.3% of the exact value


def seed_ci(values):
    """(mean, lo, hi) of a 95% CI across seeds (Student t); lo = hi = None for one value."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, None, None
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = t95(n - 1) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def load(path):
    try:
        with open(path) as f:
            j = json.load(f)
        pooled = j["continuation"]["pooled"]
        return {"path": path, "seed_model": j["model"], "signature": j["signature"],
                "pooled": pooled, "states": j["continuation"]["initial_states"],
                "knn1": j["knn"]["generated"]["accuracy"][0], "knn1_held": j["knn"]["held_out"]["accuracy"][0]}
    except (OSError, ValueError, KeyError, IndexError, TypeError) as e:
        fail(f"{path}: not an eval-states JSON ({e})")


def fmt(v, digits=4, sign=False):
    if v is None:
        return ""
    return f"{v:+.{digits}f}" if sign else f"{v:.{digits}f}"


def ci_text(lo, hi):
    return "" if lo is None else f"[{lo:+.4f}, {hi:+.4f}]"


def build(seeds, controls):
    ref = seeds[0]
    for s in seeds[1:]:
        for name in FIXED:
            if (name in ref["pooled"]) != (name in s["pooled"]) or \
                    (name in ref["pooled"] and abs(ref["pooled"][name]["ce"] - s["pooled"][name]["ce"]) > 1e-9):
                fail(f"{s['path']}: the {name} row differs from {ref['path']}'s: not seeds of one job's DiT")
    zero = ref["pooled"]["zero"]["ce"]
    rows = []
    for name in FIXED:
        if name in ref["pooled"]:
            p = ref["pooled"][name]
            rows.append({"state": name, "what": NAMES[name], "ce": p["ce"], "vs_zero": p["delta_vs_zero"] if name != "zero" else None,
                         "ci": p["ci95"] if name != "zero" else None, "ci_kind": "bootstrap over contexts"})
    mean_ce = ref["pooled"]["class_mean"]["ce"]
    tuned_ce = ref["pooled"]["tuned"]["ce"] if "tuned" in ref["pooled"] else None
    for name in ("generated", "generated_wrong_label"):
        per_seed = [s["pooled"][name]["ce"] for s in seeds]
        ce, _, _ = seed_ci(per_seed)
        d, lo, hi = seed_ci([c - zero for c in per_seed])
        kind = "t across seeds"
        if len(seeds) == 1:
            lo, hi = ref["pooled"][name]["ci95"]
            kind = "bootstrap over contexts (one seed)"
        row = {"state": name, "what": NAMES[name], "ce": ce, "vs_zero": d, "ci": [lo, hi], "ci_kind": kind,
               "per_seed_ce": per_seed}
        m, mlo, mhi = seed_ci([c - mean_ce for c in per_seed])
        row["vs_class_mean"] = {"delta": m, "ci": [mlo, mhi]}
        if tuned_ce is not None:
            t, tlo, thi = seed_ci([c - tuned_ce for c in per_seed])
            row["vs_tuned"] = {"delta": t, "ci": [tlo, thi]}
            gain = zero - tuned_ce
            row["share_of_tuned_gain"] = (zero - ce) / gain if gain > 0 else None
        rows.append(row)
    for label, c in controls:
        p = c["pooled"]["generated"]
        rows.append({"state": f"control:{label}", "what": f"generated by the {label} DiT (control), its label",
                     "ce": p["ce"], "vs_zero": p["delta_vs_zero"], "ci": p["ci95"], "ci_kind": "bootstrap over contexts",
                     "knn1": c["knn1"]})
    knn = seed_ci([s["knn1"] for s in seeds])
    return {"seeds": [s["path"] for s in seeds], "n_seeds": len(seeds), "zero_ce": zero, "rows": rows,
            "knn1_generated": {"per_seed": [s["knn1"] for s in seeds], "mean": knn[0], "ci": [knn[1], knn[2]]},
            "knn1_held_out": ref["knn1_held"], "contexts": ref["pooled"]["contexts"], "tokens": ref["pooled"]["tokens"]}


def markdown(t):
    n = t["n_seeds"]
    out = [f"| initial state of RWKV-7 | continuation CE, nats/token | vs zero | 95% CI | CI over |",
           "|---|---|---|---|---|"]
    for r in t["rows"]:
        out.append(f"| {r['what']} | {fmt(r['ce'])} | {fmt(r['vs_zero'], sign=True)} | "
                   f"{ci_text(*(r['ci'] or [None, None]))} | {r['ci_kind'] if r['vs_zero'] is not None else ''} |")
    out.append("")
    out.append(f"{t['contexts']} held-out contexts, {t['tokens']:.0f} scored tokens; generated rows: mean over "
               f"{n} DiT seed{'s' if n > 1 else ''} (per seed: " +
               ", ".join(fmt(c) for c in next(r for r in t["rows"] if r["state"] == "generated")["per_seed_ce"]) + ").")
    g = next(r for r in t["rows"] if r["state"] == "generated")
    out.append(f"Generated vs class mean: {fmt(g['vs_class_mean']['delta'], sign=True)} "
               f"{ci_text(*g['vs_class_mean']['ci'])}" +
               (f"; vs tuned: {fmt(g['vs_tuned']['delta'], sign=True)} {ci_text(*g['vs_tuned']['ci'])}; "
                f"share of the tuned state's gain over zero recovered: {fmt(g['share_of_tuned_gain'], 2)}"
                if "vs_tuned" in g else "") + ".")
    k = t["knn1_generated"]
    knn_ci = "" if k["ci"][0] is None else f"[{k['ci'][0]:.3f}, {k['ci'][1]:.3f}] across seeds"
    out.append(f"kNN@1 label accuracy of generated states: {fmt(k['mean'], 3)} {knn_ci} "
               f"(held-out real states: {fmt(t['knn1_held_out'], 3)}).")
    return "\n".join(out) + "\n"


def write_atomic(path, text):
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("seeds", nargs="+")
    ap.add_argument("--control", action="append", default=[], metavar="NAME=FILE.json")
    ap.add_argument("--out-md")
    ap.add_argument("--out-json")
    a = ap.parse_args()
    controls = []
    for c in a.control:
        if "=" not in c:
            fail(f"--control '{c}': expected NAME=FILE.json")
        name, path = c.split("=", 1)
        controls.append((name, load(path)))
    t = build([load(p) for p in a.seeds], controls)
    md = markdown(t)
    print(md, end="")
    if a.out_md:
        write_atomic(a.out_md, md)
    if a.out_json:
        write_atomic(a.out_json, json.dumps(t, indent=1) + "\n")


if __name__ == "__main__":
    main()
