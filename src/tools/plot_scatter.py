#!/usr/bin/python3
"""Draws the t-SNE scatter of `dreamstate analyze-states` to a PNG: one panel per entry of the JSON's
"panels", points coloured by label, marker shape by "kind" (e.g. real vs generated states), the
panel's metrics under its title. Schema (include/dreamstate/analysis.h):

    {"label_names": [...],                                   optional
     "panels": [{"title": str, "x": [...], "y": [...], "label": [int, ...],
                 "kind": [int, ...], "kind_names": [...],     optional
                 "metrics": {name: number, ...}}]}            optional

Usage: plot_scatter.py ANALYSIS.json OUT.png [--panel TITLE] [--columns N] [--dpi N] [--each]
--each: one PNG per panel; OUT.png must contain "{}", replaced by the panel's "file" key (a string,
default: the panel's position), e.g. tsne-layer{}.png -> tsne-layer0.png, tsne-layerall.png.
Each PNG is written to a temporary file and renamed, so it is never left half-written.
Bad input exits with code 2 and a one-line reason."""
import argparse
import json
import math
import os
import sys
import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend choice)

MARKERS = "o^sDvP*X"


def fail(msg):
    print(f"plot_scatter: {msg}", file=sys.stderr)
    sys.exit(2)


def load_panels(path, only):
    try:
        with open(path) as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        fail(f"cannot read {path}: {e}")
    panels = doc.get("panels") if isinstance(doc, dict) else None
    if not isinstance(panels, list) or not panels:
        fail(f"{path}: no \"panels\" list")
    for i, p in enumerate(panels):
        n = len(p.get("x", []))
        for key in ("y", "label") + (("kind",) if "kind" in p else ()):
            if len(p.get(key, [])) != n:
                fail(f"{path}: panel {i} has {n} x values but {len(p.get(key, []))} {key} values")
    if only is not None:
        panels = [p for p in panels if p.get("title") == only]
        if not panels:
            fail(f"{path}: no panel titled {only!r}")
    return doc.get("label_names"), panels


def draw(ax, panel, label_names, colours):
    labels, kinds = panel["label"], panel.get("kind", [0] * len(panel["x"]))
    kind_names = panel.get("kind_names")
    for kind in sorted(set(kinds)):
        for lab in sorted(set(labels)):
            idx = [i for i in range(len(labels)) if labels[i] == lab and kinds[i] == kind]
            if not idx:
                continue
            name = label_names[lab] if label_names and 0 <= lab < len(label_names) else str(lab)
            if kind_names and len(set(kinds)) > 1:
                name += f" ({kind_names[kind] if kind < len(kind_names) else kind})"
            ax.scatter([panel["x"][i] for i in idx], [panel["y"][i] for i in idx], s=9, alpha=0.75,
                       color=colours(lab % 20), marker=MARKERS[kind % len(MARKERS)], linewidths=0, label=name)
    title = panel.get("title", "")
    metrics = panel.get("metrics") or {}
    if metrics:
        # wrapped to the panel's width (about 50 characters at this size)
        title += "\n" + textwrap.fill(", ".join(f"{k} {v:.3g}" if isinstance(v, (int, float)) else f"{k} {v}"
                                                for k, v in metrics.items()), 50)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([]), ax.set_yticks([])
    ax.legend(fontsize=7, markerscale=1.5, loc="best", frameon=False)


def save(fig, png, dpi):
    tmp = f"{png}.tmp.{os.getpid()}"
    try:
        fig.savefig(tmp, dpi=dpi, format="png")
        os.replace(tmp, png)
    except OSError as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        fail(f"cannot write {png}: {e}")
    plt.close(fig)


def figure(panels, label_names, columns):
    cols = columns if columns > 0 else math.ceil(math.sqrt(len(panels)))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 4.2 * rows), squeeze=False)
    colours = plt.get_cmap("tab20" if max(max(p["label"], default=0) for p in panels) >= 10 else "tab10")
    for ax, panel in zip(axes.flat, panels):
        draw(ax, panel, label_names, colours)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("json"), ap.add_argument("png")
    ap.add_argument("--panel", help="draw only the panel with this title")
    ap.add_argument("--columns", type=int, default=0, help="panels per row (default: near-square grid)")
    ap.add_argument("--dpi", type=int, default=120)
    ap.add_argument("--each", action="store_true", help="one PNG per panel, OUT.png containing {}")
    args = ap.parse_args()
    label_names, panels = load_panels(args.json, args.panel)
    if not args.each:
        save(figure(panels, label_names, args.columns), args.png, args.dpi)
        return
    if "{}" not in args.png:
        fail(f"--each needs {{}} in the output name, got {args.png}")
    names = [str(p.get("file", i)) for i, p in enumerate(panels)]
    bad = [n for n in names if not n or "/" in n or n.startswith(".")]
    if bad or len(set(names)) != len(names):
        fail(f"{args.json}: panel \"file\" names must be distinct, non-empty and without '/' (got {names})")
    for name, panel in zip(names, panels):
        save(figure([panel], label_names, 1), args.png.replace("{}", name), args.dpi)


if __name__ == "__main__":
    main()
