#!/usr/bin/env python3
"""The module layering, checked from #include lines.

A module is a folder under src/; a public header include/dreamstate/X.h belongs to the module named
for it in HEADER_OWNER. Every `#include "..."` in src/ and include/ is an edge from the including
file's module to the included file's. The check fails (exit 1, listing each offending edge with the
lines that make it) on an edge to a higher layer of LAYERS, on a cycle among modules (same-layer edges
are allowed, cycles are not), and on <mpi.h> in a module of layer MPI_FREE_UP_TO or below (the models
included). On success it prints one summary line.

    tests/check_layers.py [REPO]      check REPO (default: this repository)
    tests/check_layers.py --self-test check synthetic trees that must fail (and one that must pass),
                                      then this repository
Standard library only.
"""
import os
import re
import sys
import tempfile

LAYERS = {
    "common": 0, "config": 0,                                # foundation
    "kernels": 1, "blas": 1, "tensor": 1,                    # compute, the parameter table
    "rwkv7": 2, "diffusion": 2, "dit": 2, "hybrid": 2,       # models
    "optim": 3, "data": 3, "checkpoint": 3,                  # training building blocks, model files
    "dist": 4,                                               # MPI
    "eval": 5,
    "train": 6,
    "cli": 7,
}
MPI_FREE_UP_TO = 3  # layers 0..3 (foundation, compute, models, building blocks) never see <mpi.h>

HEADER_OWNER = {
    "dreamstate/analysis.h": "eval",
    "dreamstate/blas.h": "blas",
    "dreamstate/checkpoint.h": "checkpoint",
    "dreamstate/common.h": "common",
    "dreamstate/config.h": "config",
    "dreamstate/data.h": "data",
    "dreamstate/diffusion.h": "diffusion",
    "dreamstate/dist.h": "dist",
    "dreamstate/dit.h": "dit",
    "dreamstate/eval.h": "eval",
    "dreamstate/hybrid.h": "hybrid",
    "dreamstate/kernels.h": "kernels",
    "dreamstate/optim.h": "optim",
    "dreamstate/plan.h": "train",
    "dreamstate/progress.h": "common",
    "dreamstate/rwkv7.h": "rwkv7",
    "dreamstate/state_dit.h": "dit",
    "dreamstate/state_dit_file.h": "checkpoint",
    "dreamstate/state_record.h": "rwkv7",
    "dreamstate/tensor.h": "tensor",
    "dreamstate/states.h": "data",
    "dreamstate/train.h": "train",
    "dreamstate/weights.h": "checkpoint",
}

INCLUDE_LOCAL = re.compile(r'^\s*#\s*include\s*"([^"]+)"')
INCLUDE_MPI = re.compile(r"^\s*#\s*include\s*<mpi\.h>")
SOURCE = (".c", ".h")


def source_files(root, top):
    """Paths (relative to root, '/'-separated) of the C sources and headers under root/top, sorted."""
    out = []
    for d, dirs, files in os.walk(os.path.join(root, top)):
        dirs.sort()
        out += [os.path.relpath(os.path.join(d, f), root).replace(os.sep, "/") for f in files if f.endswith(SOURCE)]
    return sorted(out)


def check(root, layers, owners):
    """Returns (problems, summary): a list of one-line problems (empty when the tree is layered)."""
    problems = []

    def module_of(path):
        parts = path.split("/")
        if parts[0] == "src":
            if len(parts) < 3:
                problems.append(f"{path}: outside any module (put it in a folder src/<module>/)")
                return None
            module = parts[1]
        else:
            rel = path[len("include/"):]
            module = owners.get(rel)
            if module is None:
                problems.append(f"{path}: public header missing from HEADER_OWNER in tests/check_layers.py "
                                f"(add \"{rel}\": \"<module>\")")
                return None
        if module not in layers:
            problems.append(f"{path}: module '{module}' has no layer (add it to LAYERS in tests/check_layers.py)")
            return None
        return module

    for rel, module in sorted(owners.items()):
        if not os.path.isfile(os.path.join(root, "include", rel)):
            problems.append(f"HEADER_OWNER in tests/check_layers.py lists include/{rel}, which does not exist "
                            f"(remove the entry)")

    edges = {}  # (from module, to module) -> ["file:line", ...]
    files = source_files(root, "src") + source_files(root, "include")
    modules = set()
    for path in files:
        src = module_of(path)
        if src is None:
            continue
        modules.add(src)
        with open(os.path.join(root, path), encoding="utf-8", errors="replace") as f:
            lines = f.read().split("\n")
        for n, line in enumerate(lines, 1):
            where = f"{path}:{n}"
            if INCLUDE_MPI.match(line) and layers[src] <= MPI_FREE_UP_TO:
                problems.append(f"{where}: <mpi.h> in {src} (layer {layers[src]}): layers 0-{MPI_FREE_UP_TO} know nothing "
                                f"about MPI (dist wraps it)")
            m = INCLUDE_LOCAL.match(line)
            if not m:
                continue
            name = m.group(1)
            beside = os.path.normpath(os.path.join(os.path.dirname(path), name)).replace(os.sep, "/")
            public = "include/" + name
            if os.path.isfile(os.path.join(root, beside)):
                target = beside
            elif os.path.isfile(os.path.join(root, public)):
                target = public
            else:
                problems.append(f'{where}: #include "{name}" found neither beside the file nor in include/')
                continue
            dst = module_of(target)
            if dst is not None and dst != src:
                edges.setdefault((src, dst), []).append(where)

    for (src, dst), where in sorted(edges.items()):
        if layers[dst] > layers[src]:
            problems.append(f"upward edge {src} (layer {layers[src]}) -> {dst} (layer {layers[dst]}): {', '.join(where)}")

    for cycle in cycles(modules, edges):
        steps = [f"{a} -> {b} ({edges[(a, b)][0]})" for a, b in zip(cycle, cycle[1:] + cycle[:1])]
        problems.append("cycle: " + "; ".join(steps))

    summary = f"layers: {len(modules)} modules, {len(edges)} edges, no cycle, no upward edge"
    return problems, summary


def cycles(modules, edges):
    """One cycle (a list of modules) per strongly connected component of more than one module."""
    succ = {m: sorted(b for a, b in edges if a == m) for m in modules}
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def strongconnect(v):  # Tarjan; the graph has a few dozen nodes, so recursion is fine
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in succ[v]:
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(cycle_through(v, component, succ))

    for v in sorted(modules):
        if v not in index:
            strongconnect(v)
    return found


def cycle_through(start, component, succ):
    """A shortest cycle from start back to start inside component (breadth-first)."""
    parent, frontier = {start: None}, [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in succ[v]:
                if w == start:
                    path = [v]
                    while parent[path[-1]] is not None:
                        path.append(parent[path[-1]])
                    return path[::-1]
                if w in component and w not in parent:
                    parent[w] = v
                    nxt.append(w)
        frontier = nxt
    raise AssertionError("a strongly connected component without a cycle")


def write_tree(root, files):
    for path, text in files.items():
        os.makedirs(os.path.dirname(os.path.join(root, path)), exist_ok=True)
        with open(os.path.join(root, path), "w") as f:
            f.write(text)


def self_test():
    """Synthetic trees: a layered one passes; each kind of problem fails with its message."""
    owners = {"dreamstate/common.h": "common", "dreamstate/rwkv7.h": "rwkv7", "dreamstate/data.h": "data",
              "dreamstate/checkpoint.h": "checkpoint", "dreamstate/train.h": "train"}
    layered = {
        "include/dreamstate/common.h": "",
        "include/dreamstate/rwkv7.h": '#include "dreamstate/common.h"\n',
        "include/dreamstate/data.h": "",
        "include/dreamstate/checkpoint.h": '#include "dreamstate/rwkv7.h"\n',
        "include/dreamstate/train.h": "",
        "src/common/util.c": '#include "dreamstate/common.h"\n',
        "src/rwkv7/model.c": '#include "dreamstate/rwkv7.h"\n#include "impl.h"\n',
        "src/rwkv7/impl.h": '#include "dreamstate/common.h"\n',
        "src/data/states.c": '#include "dreamstate/data.h"\n#include "dreamstate/checkpoint.h"\n',
        "src/checkpoint/weights.c": '#include "dreamstate/checkpoint.h"\n',
        "src/train/train.c": '#include "dreamstate/train.h"\n#include "dreamstate/data.h"\n#include <mpi.h>\n',
    }
    cases = [  # (name, changed files, extra owners, expected text in some problem; None: must pass)
        ("layered", {}, {}, None),
        ("upward edge", {"src/rwkv7/model.c": '#include "dreamstate/train.h"\n'}, {},
         "upward edge rwkv7 (layer 2) -> train (layer 6): src/rwkv7/model.c:1"),
        ("cycle", {"src/checkpoint/weights.c": '#include "dreamstate/data.h"\n'}, {},
         "cycle: checkpoint -> data (src/checkpoint/weights.c:1); data -> checkpoint (src/data/states.c:2)"),
        ("cycle through a header", {"include/dreamstate/rwkv7.h": '#include "dreamstate/checkpoint.h"\n'}, {},
         "cycle: checkpoint -> rwkv7 (include/dreamstate/checkpoint.h:1); rwkv7 -> checkpoint"),
        ("mpi in a model", {"src/rwkv7/impl.h": "#include <mpi.h>\n"}, {}, "src/rwkv7/impl.h:1: <mpi.h> in rwkv7"),
        ("header missing from the table", {"include/dreamstate/extra.h": ""}, {},
         "include/dreamstate/extra.h: public header missing from HEADER_OWNER"),
        ("stale table entry", {}, {"dreamstate/gone.h": "data"}, "lists include/dreamstate/gone.h, which does not exist"),
        ("module without a layer", {"src/misc/x.c": ""}, {}, "module 'misc' has no layer"),
        ("unresolved include", {"src/data/states.c": '#include "nowhere.h"\n'}, {}, '#include "nowhere.h" found neither'),
    ]
    failures = 0
    for name, changes, extra_owners, expect in cases:
        with tempfile.TemporaryDirectory() as root:
            write_tree(root, {**layered, **changes})
            problems, summary = check(root, LAYERS, {**owners, **extra_owners})
        if expect is None:
            ok = not problems and summary == "layers: 5 modules, 4 edges, no cycle, no upward edge"
        else:
            ok = any(expect in p for p in problems)
        if not ok:
            failures += 1
            print(f"self-test '{name}' FAILED: expected {expect or 'no problem'!r}, got {problems or summary!r}")
    print(f"self-test: {len(cases) - failures} of {len(cases)} synthetic trees judged right")
    return failures == 0


def main(argv):
    args = argv[1:]
    ok = True
    if args[:1] == ["--self-test"]:
        ok = self_test()
        args = args[1:]
    root = args[0] if args else os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    problems, summary = check(root, LAYERS, HEADER_OWNER)
    for p in problems:
        print(p)
    if problems:
        print(f"layers: {len(problems)} problem(s)")
        return 1
    print(summary)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
