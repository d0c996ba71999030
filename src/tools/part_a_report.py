#!/usr/bin/python3
"""The part-A job's report (src/eval/README.md §3.2): OUT/report.md holds every table and figure of the
job, each followed by a reading generated from its numbers.

Usage: part_a_report.py OUT
OUT is a part-A job directory (jobs/part-a.sh). Reads contexts/, lm/, part-a-table.json,
eval-states.json, panel/panel.json and panel.md, analysis/ and analysis-personas/ (the last two and
the panel are optional: a section says when its input is missing). Writes OUT/report.md atomically.

How the readings decide (stated so that a reader can check them):
  - a difference "holds" when its 95% interval excludes zero, and is "not distinguishable" otherwise;
  - states "cluster by label" in a layer set when kNN@1 on held-out states exceeds the shuffled-label
    control's; a control "explains" the structure when its kNN@1 is within 0.05 of the states';
  - generated states are "on the manifold" when their Fréchet distance to the held-out states is
    within 2x the train-subset floor, per layer."""
import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from part_a_table import write_atomic  # noqa: E402


def fail(msg):
    print(f"part_a_report: {msg}", file=sys.stderr)
    sys.exit(2)


def load(path, required=True):
    if not os.path.exists(path):
        if required:
            fail(f"{path} is missing: run jobs/part-a.sh to the end first")
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        fail(f"{path}: {e}")


def fmt(v, digits=4, sign=False):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return f"{v:+.{digits}f}" if sign else f"{v:.{digits}f}"


def ci(lo_hi, digits=4):
    lo, hi = lo_hi
    return "" if lo is None else f"[{lo:+.{digits}f}, {hi:+.{digits}f}]"


def excludes_zero(lo_hi):
    lo, hi = lo_hi
    return lo is not None and (lo > 0 or hi < 0)


def verdict(delta, lo_hi, better="lower"):
    """'better' / 'worse' / 'not distinguishable' for a difference where lower is better."""
    if not excludes_zero(lo_hi):
        return "not distinguishable"
    return "better" if (delta < 0) == (better == "lower") else "worse"


def count_contexts(path):
    counts = {}
    with open(path) as f:
        for line in f:
            if line.strip():
                label = json.loads(line)["label"]
                counts[label] = counts.get(label, 0) + 1
    return counts


def lm_summary(out):
    cfg = os.path.join(out, "lm", "config.yaml")
    log = os.path.join(out, "lm", "train.jsonl")
    if not os.path.exists(log):
        return None
    last_val = None
    steps = 0
    with open(log) as f:
        for line in f:
            r = json.loads(line)
            steps = r["step"]
            if "val_loss" in r:
                last_val = r["val_loss"]
    shape = {}
    if os.path.exists(cfg):
        section = ""
        with open(cfg) as f:
            for line in f:
                if line and not line[0].isspace() and line.rstrip().endswith(":"):
                    section = line.strip()[:-1]
                elif section in ("model", "data") and ":" in line:
                    k, v = line.strip().split(":", 1)
                    shape[f"{section}.{k.strip()}"] = v.split("#")[0].strip()
    return {"steps": steps, "val_loss": last_val, "shape": shape}


def section_inputs(out, es):
    train = count_contexts(os.path.join(out, "contexts", "train.jsonl"))
    held = count_contexts(os.path.join(out, "contexts", "held.jsonl"))
    lines = ["## 1. Inputs", "", "| label | train contexts | held-out contexts |", "|---|---|---|"]
    for label in train:
        lines.append(f"| {label} | {train[label]} | {held.get(label, 0)} |")
    lines.append(f"| **all** | **{sum(train.values())}** | **{sum(held.values())}** |")
    lm = lm_summary(out)
    lines.append("")
    if lm:
        s = lm["shape"]
        lines.append(f"RWKV-7 `{es['rwkv_model']}` trained by the job for {lm['steps']} steps "
                     f"(tokenizer {s.get('data.tokenizer', es['tokenizer'])}), held-out LM loss "
                     f"{fmt(lm['val_loss'])} nats/token.")
    else:
        lines.append(f"RWKV-7 `{es['rwkv_model']}` from `{es['rwkv_weights']}` (tokenizer {es['tokenizer']}).")
    lines += ["", f"**Reading.** {sum(train.values())} train states over {len(train)} labels (the DiT's data) and "
              f"{sum(held.values())} held-out ones from documents the language model and the DiT never saw; "
              f"states are read after the first {es['train']['max_tokens']} tokens of each context. "
              "Labels short of their quota had fewer source documents; persona labels (if present) have only "
              "a few short prompts each and count in the manifold analysis, not in the continuation numbers "
              "(a prompt has no tokens after its state).", ""]
    return lines


def section_steering(out, table):
    with open(os.path.join(out, "part-a-table.md")) as f:
        md = f.read().strip()
    rows = {r["state"]: r for r in table["rows"]}
    g, mean = rows["generated"], rows["class_mean"]
    tuned = rows.get("tuned")
    n = table["n_seeds"]
    lines = ["## 2. Do generated states steer RWKV-7? (continuation CE on held-out contexts)", "", md, ""]
    read = [f"A generated state of the context's label gives {fmt(g['vs_zero'], sign=True)} nats/token vs the zero "
            f"state {ci(g['ci'])} ({g['ci_kind']}, {n} DiT seed{'s' if n > 1 else ''}): "
            f"**{verdict(g['vs_zero'], g['ci'])}** than no state."]
    read.append(f"Against the class-mean state it is {fmt(g['vs_class_mean']['delta'], sign=True)} "
                f"{ci(g['vs_class_mean']['ci'])}: **{verdict(g['vs_class_mean']['delta'], g['vs_class_mean']['ci'])}**.")
    if tuned and "vs_tuned" in g:
        read.append(f"The state tuned for the label (the bar) is {fmt(tuned['vs_zero'], sign=True)} vs zero "
                    f"{ci(tuned['ci'])}; the generated state recovers {fmt(g['share_of_tuned_gain'], 2)} of that gain "
                    f"and is {fmt(g['vs_tuned']['delta'], sign=True)} {ci(g['vs_tuned']['ci'])} from it "
                    f"(**{verdict(g['vs_tuned']['delta'], g['vs_tuned']['ci'])}** than tuned).")
    wrong = rows.get("generated_wrong_label")
    if wrong:
        d = wrong["ce"] - g["ce"]
        read.append(f"Under a wrong label the generated state scores {fmt(d, sign=True)} relative to its own label "
                    f"({'the label matters' if d > 0 else 'no sign that the label matters'}; per-seed CI in the table).")
    for name, r in rows.items():
        if name.startswith("control:"):
            dc = g["ce"] - r["ce"]
            apart = g["ci"][0] is not None and r["ci"][0] is not None and \
                (g["ci"][1] < r["ci"][0] or r["ci"][1] < g["ci"][0])
            read.append(f"The {name[8:]} control DiT (its conditions carry no information about the state) gives "
                        f"{fmt(r['vs_zero'], sign=True)} {ci(r['ci'])} vs zero; the true-condition DiT is "
                        f"{fmt(dc, sign=True)} from it and their intervals {'do not overlap' if apart else 'overlap'}, "
                        f"so the condition is {'shown' if apart and dc < 0 else 'not shown'} to steer at this size.")
    true_full = rows.get("true_full")
    if true_full:
        read.append(f"For scale: the context's own full state (= prompting) gains {fmt(-true_full['vs_zero'])} "
                    f"over zero: what a state read from the context itself carries.")
    lines += ["**Reading.** " + " ".join(read), ""]
    return lines


def section_manifold_fit(es_list):
    es = es_list[0]
    lines = ["## 3. Are generated states on the state manifold? (label accuracy, memorisation, Fréchet)", ""]
    knn = es["knn"]
    lines += ["| states | n | kNN@1 label accuracy | kNN@5 | mean cosine distance to nearest train state |",
              "|---|---|---|---|---|"]
    h = knn["held_out"]
    lines.append(f"| held-out (real) | {h['n']} | {fmt(h['accuracy'][0], 3)} | {fmt(h['accuracy'][1], 3)} | "
                 f"{fmt(h['nearest_train_distance'], 3)} |")
    for i, e in enumerate(es_list):
        gk = e["knn"]["generated"]
        lines.append(f"| generated, DiT seed {i + 1} | {gk['n']} | {fmt(gk['accuracy'][0], 3)} | "
                     f"{fmt(gk['accuracy'][1], 3)} | {fmt(gk['nearest_train_distance'], 3)} |")
    chance = 1.0 / max(1, len([l for l in knn.get("per_label", [])]))
    lines += ["", f"Chance kNN@1 over the {len(knn.get('per_label', []))} scored labels: {chance:.3f}.", ""]
    fd = es.get("frechet")
    fd_read = ""
    if fd:
        lines += [f"Fréchet distance to the held-out states per modelled layer, in a {fd.get('components', '?')}-component "
                  "PCA of the train states (floor: as many train states as generated):", "",
                  "| layer | generated | floor (train vs held-out) | ratio |", "|---|---|---|---|"]
        ratios = []
        for layer in fd["layers"]:
            gen, flo, ratio = layer["generated"], layer["train_floor"], layer["ratio"]
            ratios.append(ratio)
            lines.append(f"| {layer['layer']} | {fmt(gen, 2)} | {fmt(flo, 2)} | {fmt(ratio, 2)} |")
        lines.append("")
        on = all(r <= 2 for r in ratios)
        fd_read = (f" The Fréchet distance of generated states is {', '.join(fmt(r, 2) for r in ratios)}x the floor "
                   f"per layer: generated states are {'within' if on else 'beyond'} 2x the sampling floor, "
                   f"i.e. {'close to' if on else 'off'} the held-out distribution in its leading components.")
    gk = knn["generated"]
    mem = gk["nearest_train_distance"] < 0.5 * h["nearest_train_distance"]
    lines += ["**Reading.** " +
              f"Real held-out states are recognised by label at kNN@1 {fmt(h['accuracy'][0], 3)}; generated states of "
              f"DiT seed 1 at {fmt(gk['accuracy'][0], 3)} (chance {chance:.3f}). Their nearest train state is "
              f"{fmt(gk['nearest_train_distance'], 3)} away against {fmt(h['nearest_train_distance'], 3)} for "
              f"held-out states: {'suspiciously close (memorisation?)' if mem else 'no sign of memorisation'}." + fd_read, ""]
    return lines


def section_panel(out):
    panel = load(os.path.join(out, "panel", "panel.json"), required=False)
    lines = ["## 4. Steering panel (the paper's Table 1, scored)", ""]
    if panel is None:
        return lines + ["(not run: no panel/panel.json)", ""]
    with open(os.path.join(out, "panel", "panel.md")) as f:
        md = f.read().strip()
    lines += [md, ""]
    c = panel["classifier"]
    k = panel["kinds"]
    def share(name):
        r = k[name]
        return f"{fmt(r['accuracy'], 2)} [{fmt(r['ci95'][0], 2)}, {fmt(r['ci95'][1], 2)}]"
    gen_lo = k["generated"]["ci95"][0]
    zero_hi = k["zero"]["ci95"][1]
    lines += ["**Reading.** " +
              f"The classifier reads held-out text of a continuation's length at {fmt(c['held_out_accuracy_cut'], 2)} "
              f"(chance {fmt(c['chance'], 2)}), so it can tell the labels apart. Continuations are classified as the "
              f"state's label at {share('generated')} from generated states, {share('tuned')} from tuned, "
              f"{share('class_mean')} from class-mean and {share('zero')} from the zero state (one text for all labels: "
              f"chance), {share('interpolated')} for the midpoints between labels (either endpoint counts: chance is twice "
              "as high). "
              + ("Generated states steer the text measurably: their interval lies above the zero state's."
                 if gen_lo > zero_hi else
                 "The generated states' interval overlaps the zero state's: steering of free-running text is not "
                 f"shown with {panel['continuations_per_label']} continuation(s) per label."), ""]
    return lines


def layer_name(r):
    return "all (concatenated)" if r["layer"] == "all" else str(r["layer"])


def section_analysis(out, name, title, persona=False):
    a = load(os.path.join(out, name, "analysis.json"), required=False)
    lines = [title, ""]
    if a is None:
        return lines + [f"(not run: no {name}/analysis.json)", ""], None
    lines += ["| layer | kNN@1 | shuffled labels | silhouette | probe | t-SNE trustworthiness (per seed) |",
              "|---|---|---|---|---|---|"]
    for r in a["layers"]:
        trust = ", ".join(fmt(t["trustworthiness"], 3) for t in r.get("tsne_seeds", [r.get("tsne", {})])
                          if "trustworthiness" in t)
        lines.append(f"| {layer_name(r)} | {fmt(r['knn']['1'], 3)} | {fmt(r['shuffled']['knn']['1'], 3)} | "
                     f"{fmt(r['silhouette'], 3)} | {fmt(r['probe'], 3)} | {trust} |")
    controls = a.get("controls", [])
    if controls:
        lines += ["", "Controls (the same records, scored the same way):", "",
                  "| control | what | layer | kNN@1 | shuffled labels | silhouette | probe |", "|---|---|---|---|---|---|---|"]
        for c in controls:
            lines.append(f"| {c['name']} | {c.get('features') if 'layer' not in c else 'WKV states of ' + c['checkpoint']} | "
                         f"{layer_name(c) if 'layer' in c else '-'} | {fmt(c['knn']['1'], 3)} | "
                         f"{fmt(c['shuffled']['knn']['1'], 3)} | {fmt(c['silhouette'], 3)} | {fmt(c['probe'], 3)} |")
    # the first t-SNE seed's map of each layer set; the other seeds' maps lie beside them
    pngs = sorted(p for p in os.listdir(os.path.join(out, name)) if p.endswith(".png") and "-seed" not in p)
    if pngs:
        lines.append("")
        lines += [f"![{p}]({name}/{p})" for p in pngs]
        lines += ["", f"(cosine t-SNE, first seed; the other seeds' maps: `{name}/tsne-layer*-seed*.png`)"]
    lines.append("")
    return lines, a


def reading_analysis(a, persona):
    if a is None:
        return []
    best = max(a["layers"], key=lambda r: r["knn"]["1"])
    clusters = [layer_name(r) for r in a["layers"] if r["knn"]["1"] > r["shuffled"]["knn"]["1"]]
    text = (f"States cluster by label (kNN@1 above the shuffled-label control) in layer set(s) {', '.join(clusters) or 'none'}; "
            f"the best is {layer_name(best)} at {fmt(best['knn']['1'], 3)} vs {fmt(best['shuffled']['knn']['1'], 3)} shuffled.")
    explained = []
    for c in a.get("controls", []):
        if c["knn"]["1"] >= best["knn"]["1"] - 0.05:
            explained.append(f"{c['name']}{' layer ' + layer_name(c) if 'layer' in c else ''} ({fmt(c['knn']['1'], 3)})")
    if a.get("controls"):
        text += (" Controls that reach it (within 0.05, or above): " + ", ".join(explained) +
                 " — the label is as readable from them, so the states' clustering is not by itself evidence of "
                 "anything beyond the tokens they read." if explained else
                 " No control comes within 0.05 of it: the trained network's states carry more label information "
                 "than the tokens' bag, the first token, the last hidden state or a random network's states.")
    if persona:
        text += " (Personas: few prompts per label, leave-one-out scoring; read the map as the paper's Fig. 2, the numbers as a check.)"
    return ["**Reading.** " + text, ""]


def main():
    if len(sys.argv) != 2 or sys.argv[1].startswith("-"):
        fail("usage: part_a_report.py OUT (a part-A job directory)")
    out = sys.argv[1]
    table = load(os.path.join(out, "part-a-table.json"))
    es_list = [load(p) for p in table["seeds"]]
    es = es_list[0]
    lines = [f"# Part A report: {os.path.abspath(out)}", "",
             f"State DiT `{es['signature']}` on the states of RWKV-7 `{es['rwkv_model']}`. Every number below is "
             "from this job's files; the DiT's own training curves are in [dit/report.md](dit/report.md).", ""]
    lines += section_inputs(out, es)
    lines += section_steering(out, table)
    lines += section_manifold_fit(es_list)
    lines += section_panel(out)
    sec, a = section_analysis(out, "analysis", "## 5. State manifold: do states cluster by label, beyond the controls?")
    lines += sec + reading_analysis(a, False)
    sec, p = section_analysis(out, "analysis-personas", "## 6. Persona map (the paper's Fig. 2)", persona=True)
    lines += sec + reading_analysis(p, True)
    d = es["denoising"]
    lines += ["## 7. Denoising loss of the state DiT", "",
              f"Epsilon-MSE at t = {', '.join(map(str, d['t']))}: held-out mean {fmt(d['held_out']['mean'])}, "
              f"train mean {fmt(d['train']['mean'])}.", "",
              "**Reading.** " + ("Held-out and train losses agree within 10%: the DiT generalises to unseen contexts' states."
                                 if abs(d["held_out"]["mean"] - d["train"]["mean"]) <= 0.1 * d["train"]["mean"] else
                                 "The held-out loss exceeds the train loss by more than 10%: the DiT overfits the train states."), ""]
    write_atomic(os.path.join(out, "report.md"), "\n".join(lines))


if __name__ == "__main__":
    main()
