#!/usr/bin/python3
"""Writes RUN_DIR/report.md for one run: the key facts of RUN_DIR/config.yaml, final metrics from
RUN_DIR/train.jsonl (last loss, best and last val loss, mean throughput, the last value of other
numeric fields), the plots of plot_run.py (made here), and for each --analysis DIR (the output of
`dreamstate analyze-states`) a per-layer table of kNN accuracy, silhouette and probe accuracy with
real vs shuffled labels, the controls, and the t-SNE PNGs.

Usage: report.py RUN_DIR [--analysis DIR]...
The report is written to a temporary file and renamed. A missing train.jsonl or an unreadable
analysis.json exits with code 2 and a one-line reason."""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import plot_run  # noqa: E402  (needs the path above)

# config.yaml keys worth a line in the report, by section; the task-specific sections only for their task
TASK_SECTIONS = {"state_diffusion": ("dit", "diffusion"), "hybrid": ("dit", "hybrid"), "state_tuning": ("state_tuning",)}
CONFIG_FACTS = {
    "run": ["name", "task", "seed", "threads"],
    "model": ["n_layer", "n_embd", "head_size", "vocab_size"],
    "data": ["tokenizer", "train", "valid"],
    "train": ["steps", "batch_size", "micro_batch", "ctx_len", "eval_every", "grad_reduce", "precision"],
    "optim": ["lr", "lr_final", "warmup_steps", "weight_decay", "grad_clip"],
    "dit": ["hidden", "depth", "heads", "patch_size"],
    "diffusion": ["states", "layers", "condition", "schedule"],
    "hybrid": ["init", "layers", "matrices", "param", "condition", "alpha", "lambda_lm", "lambda_pd"],
    "state_tuning": ["init", "contexts", "contexts_valid", "per_label", "skip_tokens"],
}


def fail(msg):
    print(f"report: {msg}", file=sys.stderr)
    sys.exit(2)


def config_facts(run_dir):
    """[(key, value)] of the known keys present in config.yaml; [] if it is missing or unreadable."""
    try:
        import yaml
        with open(os.path.join(run_dir, "config.yaml")) as f:
            cfg = yaml.safe_load(f)
    except Exception:  # no file, no yaml module, a parse error: the report is still useful without it
        return []
    if not isinstance(cfg, dict):
        return []
    task = (cfg.get("run") or {}).get("task", "lm")
    optional = {s for sections in TASK_SECTIONS.values() for s in sections} - set(TASK_SECTIONS.get(task, ()))
    facts = []
    for section, keys in CONFIG_FACTS.items():
        sec = cfg.get(section) if section not in optional else None
        if isinstance(sec, dict):
            facts += [(f"{section}.{k}", sec[k]) for k in keys if k in sec and sec[k] not in ("", None)]
    return facts


def fmt(v, digits=4):
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return "-" if v is None else str(v)


def final_metrics(rows):
    """[(name, text)] summarising train.jsonl."""
    last = rows[-1]
    out = [("steps logged", f"{len(rows)} (last step {last['step']})")]
    steps, loss = plot_run.series(rows, "loss")
    if loss:
        out.append(("last loss", f"{loss[-1]:.4f} (step {steps[-1]})"))
    vsteps, val = plot_run.series(rows, "val_loss")
    if val:
        best = min(range(len(val)), key=lambda i: val[i])
        out.append(("best val loss", f"{val[best]:.4f} (step {vsteps[best]})"))
        out.append(("last val loss", f"{val[-1]:.4f} (step {vsteps[-1]})"))
    for key in ("tokens_per_s", "samples_per_s"):
        _, v = plot_run.series(rows, key)
        if v:
            out.append((f"mean {key}", f"{sum(v) / len(v):.1f} over {len(v)} steps"))
    shown = {"step", "loss", "val_loss", "tokens_per_s", "samples_per_s"}
    for key in plot_run.numeric_fields(rows, lambda k: k not in shown):
        s, v = plot_run.series(rows, key)
        out.append((f"last {key}", f"{fmt(v[-1])} (step {s[-1]})"))
    return out


def load_analysis(d):
    path = os.path.join(d, "analysis.json")
    try:
        with open(path) as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        fail(f"cannot read {path}: {e}")
    if not isinstance(doc, dict) or not isinstance(doc.get("layers"), list):
        fail(f"{path}: not an analyze-states result (no \"layers\" list)")
    return doc


def analysis_section(d, doc, run_dir):
    ks = [str(k) for k in doc.get("knn_k", [])]
    train, test = doc.get("train") or {}, doc.get("test")
    lines = [f"### Analysis: `{d}`", ""]
    lines.append(f"- states: `{train.get('index', '?')}` ({train.get('records', '?')} records"
                 + (f"; test `{test.get('index')}`, {test.get('records')} records" if test else "") + ")")
    lines.append(f"- evaluation: {doc.get('evaluation', '?')}; PCA to {doc.get('components', '?')} components; "
                 f"cosine kNN; {doc.get('ranks', '?')} rank(s)")
    if doc.get("label_names"):
        lines.append(f"- labels: {', '.join(doc['label_names'])}")
    extra = doc.get("extra")
    lines.append("")
    head = ["features", "EVR"] + [f"kNN@{k} real / shuffled" for k in ks] + ["silhouette real / shuffled",
                                                                             "probe real / shuffled"]
    if extra:
        head += [f"{extra.get('name', 'extra')} kNN@{ks[len(ks) // 2]}" if ks else "extra"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def row(name, entry, evr):
        shuf = entry.get("shuffled") or {}
        cells = [name, evr]
        cells += [f"{fmt(entry.get('knn', {}).get(k), 3)} / {fmt(shuf.get('knn', {}).get(k), 3)}" for k in ks]
        cells += [f"{fmt(entry.get(m), 3)} / {fmt(shuf.get(m), 3)}" for m in ("silhouette", "probe")]
        if extra:
            acc = (entry.get("extra_knn_accuracy") or {}).get(ks[len(ks) // 2]) if ks else None
            cells.append(fmt(acc, 3))
        return "| " + " | ".join(cells) + " |"

    for layer in doc["layers"]:
        name = "all layers" if layer.get("layer") == "all" else f"layer {layer.get('layer')}"
        lines.append(row(name, layer, fmt(layer.get("explained_variance"), 3)))
    for control in doc.get("controls", []):
        if "layer" in control:   # a state control's layer set (analyze-states --control)
            where = "all layers" if control["layer"] == "all" else f"layer {control['layer']}"
            lines.append(row(f"{control.get('name')} {where} (control)", control, fmt(control.get("explained_variance"), 3)))
        else:
            lines.append(row(f"{control.get('name')} (control)", control, "-"))
    lines.append("")
    for layer in doc["layers"]:
        png = os.path.join(d, f"tsne-layer{layer.get('layer')}.png")
        title = "all layers" if layer.get("layer") == "all" else f"layer {layer.get('layer')}"
        if os.path.exists(png):
            lines += [f"![t-SNE, {title}]({os.path.relpath(png, run_dir)})", ""]
    return lines


def write_atomic(path, text):
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        fail(f"cannot write {path}: {e}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--analysis", action="append", default=[], metavar="DIR",
                    help="an analyze-states output directory (repeatable)")
    args = ap.parse_args()
    run_dir = args.run_dir
    try:
        rows = plot_run.load_log(run_dir)
        plots = plot_run.make_plots(run_dir)
    except ValueError as e:
        fail(str(e))
    except OSError as e:
        fail(f"cannot write plots: {e}")
    analyses = [(d, load_analysis(d)) for d in args.analysis]

    name = os.path.basename(os.path.normpath(run_dir))
    lines = [f"# Run report: {name}", "", f"Run directory: `{os.path.abspath(run_dir)}`", ""]
    facts = config_facts(run_dir)
    lines += ["## Configuration", ""]
    lines += [f"- `{k}`: {fmt(v)}" for k, v in facts] if facts else ["(no readable config.yaml)"]
    lines += ["", "## Final metrics", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in final_metrics(rows)]
    lines += ["", "## Plots", ""]
    for plot, path in plots.items():
        lines += [f"![{plot}]({os.path.relpath(path, run_dir)})", ""]
    if analyses:
        lines += ["## State analysis (A1, src/eval/README.md §1)", ""]
        for d, doc in analyses:
            lines += analysis_section(d, doc, run_dir)
    write_atomic(os.path.join(run_dir, "report.md"), "\n".join(lines) + "\n")
    print(os.path.join(run_dir, "report.md"))


if __name__ == "__main__":
    main()
