#!/usr/bin/env bash
# `dreamstate analyze-states`, plot_run.py and report.py end to end: a tiny checkpoint (30
# steps), labelled contexts from 3 sources, train and held-out state sets, then
#  - analyze-states train -> test (held-out set also as --extra) on 1 rank: the numbers are recomputed
#    independently from the shard files with numpy and scikit-learn (per-head normalisation, PCA
#    eigenvalues, kNN accuracy, silhouette, probe, the bag-of-tokens and last-hidden (extract-states
#    --ln-out) controls, and the random-init control rows (extract-states --random-init, --control) from
#    their own shards), extra kNN = test kNN (same rows), the JSON holds real and shuffled metrics per
#    layer, cosine t-SNE maps for 2 seeds with their trustworthiness (= sklearn's on the printed map and
#    the numpy PCA coordinates, to 5e-3), the t-SNE PNGs are valid PNGs;
#  - the same on 2 ranks: eigenvalues equal to 1e-6 relative, kNN accuracies (real and shuffled, controls
#    included) equal;
#  - leave-one-out mode (no --test) against scikit-learn's leave-one-out vote;
#  - plot_run.py and report.py on the tiny run (and on a log with alpha_* and loss_* fields);
#  - bad input (--control of other records, of another --max-tokens, without its held-out set, a bad
#    NAME; a bad --tsne-metric) exits 2 with one line and writes nothing.
cd "$(dirname "$0")/.."
. tests/lib.sh analyze
PY=/usr/bin/python3

TRAIN=(train configs/tiny.yaml --set train.eval_every=0 --set train.eval_batches=1 --set run.threads=2)
$BIN "${TRAIN[@]}" --set train.steps=30 --set run.out_dir="$TMP/run" >/dev/null 2>"$TMP/train.log" \
  || bad "tiny training: $(tail -2 "$TMP/train.log")"
CKPT=$(ls "$TMP"/run/checkpoints/*.ckpt 2>/dev/null | tail -1)
[ -n "$CKPT" ] && ok "tiny checkpoint $(basename "$CKPT")" || bad "no checkpoint"
$BIN build-contexts --out "$TMP/train.jsonl" --held-out "$TMP/held.jsonl" --sources c-headers,python,licenses \
  --max-per-label 30 --max-bytes 256 >"$TMP/build.log" 2>&1 && ok "build-contexts: $(grep total "$TMP/build.log" | xargs)" \
  || bad "build-contexts: $(tail -2 "$TMP/build.log")"
EXTRACT=(extract-states configs/tiny.yaml --checkpoint "$CKPT" --set run.threads=2 --max-tokens 200 --ln-out)
RANDOM_INIT=(extract-states configs/tiny.yaml --random-init --set run.threads=2 --max-tokens 200)
$BIN "${EXTRACT[@]}" --contexts "$TMP/train.jsonl" --out "$TMP/s" >/dev/null 2>"$TMP/s.log" \
  && $BIN "${EXTRACT[@]}" --contexts "$TMP/held.jsonl" --out "$TMP/h" --labels-from "$TMP/s/index.txt" >/dev/null 2>"$TMP/h.log" \
  && ok "train and held-out state sets" || bad "extract-states: $(tail -2 "$TMP/s.log" "$TMP/h.log")"
grep -q "extract-states: 72/72 contexts (rank 0) (100%) | .* | ETA" "$TMP/s.log" && ok "extract-states progress line" \
  || bad "extract-states progress line missing: $(tail -3 "$TMP/s.log")"
$BIN "${RANDOM_INIT[@]}" --contexts "$TMP/train.jsonl" --out "$TMP/rs" >/dev/null 2>"$TMP/rs.log" \
  && $BIN "${RANDOM_INIT[@]}" --contexts "$TMP/held.jsonl" --out "$TMP/rh" --labels-from "$TMP/s/index.txt" >/dev/null 2>&1 \
  && ok "random-init train and held-out state sets" || bad "extract-states --random-init: $(tail -2 "$TMP/rs.log")"

ANALYZE=(analyze-states "$TMP/s/index.txt" --test "$TMP/h/index.txt" --extra "$TMP/h/index.txt" --extra-name held-out
         --control "random-init=$TMP/rs/index.txt,$TMP/rh/index.txt" --tsne-metric cosine --tsne-seeds 0,1)
$BIN "${ANALYZE[@]}" --out "$TMP/a1" >"$TMP/a1.txt" 2>"$TMP/a1.log" && ok "analyze-states, 1 rank" \
  || bad "analyze-states, 1 rank: $(tail -3 "$TMP/a1.log")"
sed 's/^/     /' "$TMP/a1.txt"
mpirun --oversubscribe -np 2 $BIN "${ANALYZE[@]}" --out "$TMP/a2" --no-plots >"$TMP/a2.txt" 2>"$TMP/a2.log" \
  && ok "analyze-states, 2 ranks" || bad "analyze-states, 2 ranks: $(tail -3 "$TMP/a2.log")"
grep -q "analyze-states PCA: 6/6 layer sets (100%) | .* | ETA" "$TMP/a1.log" && ok "analyze-states progress lines" \
  || bad "analyze-states progress lines missing: $(cat "$TMP/a1.log")"
$BIN analyze-states "$TMP/s/index.txt" --layers last --out "$TMP/loo" --no-plots --k 1,3 >"$TMP/loo.txt" 2>"$TMP/loo.log" \
  && ok "analyze-states, leave-one-out" || bad "analyze-states, leave-one-out: $(tail -3 "$TMP/loo.log")"

# Independent recomputation from the shard files (format: include/dreamstate/states.h).
$PY - "$TMP" <<'PY' && ok "analysis.json matches numpy/scikit-learn; 1 vs 2 ranks agree" || bad "analysis check (above)"
import json, os, struct, sys
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.manifold import trustworthiness
from sklearn.metrics import silhouette_score
from sklearn.neighbors import KNeighborsClassifier
from sklearn.preprocessing import StandardScaler
tmp = sys.argv[1]
problems = []
def expect(cond, what):
    if not cond: problems.append(what)

def read(index):
    d = os.path.dirname(index)
    lines = open(index).read().splitlines()
    labels, conds, states = [], [], []
    for _, name, count in (l.split() for l in lines if l.startswith("shard ")):
        raw = open(f"{d}/{name}", "rb").read()
        magic, ver, L, C, H, N, cond_dim, flags, meta, n, rb = struct.unpack_from("<8s8IQQ", raw, 0)
        rec = np.frombuffer(raw, np.uint8, n * rb, 64).reshape(n, rb)
        labels.append(rec[:, :4].copy().view("<i4")[:, 0])
        f = rec[:, 8:].copy().view("<f4").astype(np.float64)
        conds.append(f[:, :cond_dim])
        states.append(f[:, cond_dim:].reshape(n, L, 2 * C + H * N * N)[:, :, C:C + H * N * N].reshape(n, L, H, N * N))
    return np.concatenate(labels), np.concatenate(conds), np.concatenate(states), C

ytr, ctr, wtr, C = read(f"{tmp}/s/index.txt")
yte, cte, wte, _ = read(f"{tmp}/h/index.txt")
def normaliser(w):   # per-head statistics over a set's train records
    mu = w.mean(axis=(0, 3), keepdims=True)
    return mu, np.sqrt(((w - mu) ** 2).mean(axis=(0, 3), keepdims=True))
mu, sd = normaliser(wtr)
def features(w, layers, stats=None):
    m, s = stats or (mu, sd)
    return ((w - m) / s)[:, layers].reshape(len(w), -1)

a1, a2 = (json.load(open(f"{tmp}/{d}/analysis.json")) for d in ("a1", "a2"))
K, ks = a1["components"], [str(k) for k in a1["knn_k"]]
n, nt = len(ytr), len(yte)
expect(K == min(50, n - 1) and a1["evaluation"] == "train -> test", f"components {K}, evaluation {a1['evaluation']}")
expect([l["layer"] for l in a1["layers"]] == ["0", "1", "all"], "layers 0, 1, all")
def knn(x, y, q, yq, k):
    return KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute").fit(x, y).score(q, yq)
def probe(x, y, q, yq):
    s = StandardScaler().fit(x)
    m = LogisticRegression(C=1.0, multi_class="multinomial", tol=1e-10, max_iter=100000).fit(s.transform(x), y)
    return m.score(s.transform(q), yq)
report = []
# the random-init control's rows: the same pipeline on its own shards (same records, in the same order here)
rytr, _, rwtr, _ = read(f"{tmp}/rs/index.txt")
ryte, _, rwte, _ = read(f"{tmp}/rh/index.txt")
expect(np.array_equal(rytr, ytr) and np.array_equal(ryte, yte), "random-init records carry the same labels")
rstats = normaliser(rwtr)
ctl1 = [c for c in a1["controls"] if c["name"] == "random-init"]
ctl2 = [c for c in a2["controls"] if c["name"] == "random-init"]
expect([c["layer"] for c in ctl1] == ["0", "1", "all"] and len(ctl2) == 3, "random-init control rows per layer set")
pairs = [(e1, e2, wtr, wte, None, "") for e1, e2 in zip(a1["layers"], a2["layers"])]
pairs += [(e1, e2, rwtr, rwte, rstats, "random-init ") for e1, e2 in zip(ctl1, ctl2)]
coords = {}
for e1, e2, Wtr, Wte, stats, what in pairs:
    layers = [0, 1] if e1["layer"] == "all" else [int(e1["layer"])]
    x, q = features(Wtr, layers, stats), features(Wte, layers, stats)
    mean = x.mean(0)
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    eig = s[:K] ** 2 / (n - 1)
    got = np.array(e1["eigenvalues"])
    rel = np.max(np.abs(got - eig) / eig)
    expect(rel < 1e-5, f"{what}layer {e1['layer']}: eigenvalues vs numpy rel err {rel:.1e}")
    evr = np.array(e1["explained_variance_ratio"])
    expect(np.allclose(evr, eig / np.sum((x - mean) ** 2) * (n - 1), rtol=1e-5), f"layer {e1['layer']}: EVR")
    px, pq = (x - mean) @ vt[:K].T, (q - mean) @ vt[:K].T
    if not what: coords[e1["layer"]] = np.vstack([px, pq])
    for k in ks:
        ref = knn(px, ytr, pq, yte, int(k))
        expect(abs(e1["knn"][k] - ref) < 1e-9, f"{what}layer {e1['layer']}: kNN@{k} {e1['knn'][k]} vs sklearn {ref}")
        expect(what or e1["extra_knn_accuracy"][k] == e1["knn"][k], f"layer {e1['layer']}: extra kNN@{k} != test kNN")
    sil = silhouette_score(pq, yte, metric="cosine")
    expect(abs(e1["silhouette"] - sil) < 1e-4, f"layer {e1['layer']}: silhouette {e1['silhouette']} vs {sil}")
    pr = probe(px, ytr, pq, yte)
    expect(abs(e1["probe"] - pr) <= 1.01 / nt, f"layer {e1['layer']}: probe {e1['probe']} vs sklearn {pr}")
    sh = e1["shuffled"]
    expect(set(sh) >= {"knn", "silhouette", "probe"} and set(sh["knn"]) == set(ks), f"layer {e1['layer']}: shuffled keys")
    expect(all(0 <= v <= 1 for v in list(sh["knn"].values()) + [sh["probe"]]), f"layer {e1['layer']}: shuffled range")
    # 1 vs 2 ranks: the features are the same bits, only the PCA's rounding differs
    rel2 = np.max(np.abs(np.array(e2["eigenvalues"]) - got) / got)
    expect(rel2 < 1e-6, f"layer {e1['layer']}: 1 vs 2 ranks eigenvalues rel diff {rel2:.1e}")
    expect(e1["knn"] == e2["knn"] and sh["knn"] == e2["shuffled"]["knn"], f"layer {e1['layer']}: 1 vs 2 ranks kNN")
    expect(e1["probe"] == e2["probe"], f"layer {e1['layer']}: 1 vs 2 ranks probe")
    report.append(f"{what}layer {e1['layer']}: eig err {rel:.1e} (2 ranks {rel2:.1e}), kNN@5 {e1['knn']['5']:.3f} "
                  f"(shuffled {sh['knn']['5']:.3f}), silhouette {e1['silhouette']:.3f} (shuffled {sh['silhouette']:.3f})")
named = {c["name"]: c for c in a1["controls"]}
for name, part in (("bag-of-tokens", 1), ("last-hidden", 2)):   # cond = [first token | mean token | ln_out(x) of the last]
    for k in ks:
        ref = knn(ctr[:, part * C:(part + 1) * C], ytr, cte[:, part * C:(part + 1) * C], yte, int(k))
        expect(abs(named[name]["knn"][k] - ref) < 1e-9, f"{name} kNN@{k} {named[name]['knn'][k]} vs sklearn {ref}")
    report.append(f"{name} (control): kNN@5 {named[name]['knn']['5']:.3f}")
# t-SNE: cosine, seeds 0 and 1, each map's trustworthiness against sklearn on the printed map
p = a1["panels"]
expect(a1["tsne"]["metric"] == "cosine" and a1["tsne"]["seeds"] == [0, 1], f"t-SNE settings {a1['tsne']}")
expect(len(p) == 6 and all(len(q["x"]) == n + nt and sum(q["kind"]) == nt for q in p), "panels: 3 layer sets x 2 seeds, train + extra points")
for q in p:
    layer = q["file"].split("-")[0]
    lay = [l for l in a1["layers"] if l["layer"] == layer][0]
    got = lay["tsne_seeds"][q["seed"]]["trustworthiness"]
    ref = trustworthiness(coords[layer], np.column_stack([q["x"], q["y"]]), n_neighbors=5, metric="cosine")
    expect(abs(got - ref) < 5e-3 and got == q["metrics"]["trustworthiness@5"],
           f"{q['title']}: trustworthiness {got:.4f} vs sklearn {ref:.4f}")
    if q["seed"] == 1: report.append(f"{q['title']}: trustworthiness {got:.4f} (sklearn {ref:.4f})")
# leave-one-out: sklearn's vote over kneighbors(X=None), cosine, on the last layer
loo = json.load(open(f"{tmp}/loo/analysis.json"))["layers"]
x = features(wtr, [1])
mean = x.mean(0)
_, s, vt = np.linalg.svd(x - mean, full_matrices=False)
px = (x - mean) @ vt[:K].T
for k in (1, 3):
    m = KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute").fit(px, ytr)
    nb = m.kneighbors(return_distance=False)
    votes = np.array([np.bincount(ytr[r], minlength=3).argmax() for r in nb])
    ref = np.mean(votes == ytr)
    expect(len(loo) == 1 and abs(loo[0]["knn"][str(k)] - ref) < 1e-9, f"leave-one-out kNN@{k} {loo[0]['knn']} vs {ref}")
print("\n".join("     " + r for r in report))
print("\n".join("     PROBLEM " + r for r in problems))
sys.exit(1 if problems else 0)
PY

# the t-SNE PNGs: PNG magic, and matplotlib reads an image of sensible size
$PY - "$TMP/a1" <<'PY' && ok "t-SNE PNGs: tsne-layer{0,1,all}{,-seed1}.png are valid PNGs" || bad "t-SNE PNGs"
import sys, matplotlib.image as im
for name in ("0", "1", "all", "0-seed1", "1-seed1", "all-seed1"):
    path = f"{sys.argv[1]}/tsne-layer{name}.png"
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n", f"{path}: not a PNG"
    h, w = im.imread(path).shape[:2]
    assert h > 200 and w > 200, f"{path}: {w}x{h}"
PY
[ ! -e "$TMP/a2/tsne-layer0.png" ] && ok "--no-plots draws nothing" || bad "--no-plots drew"

# plot_run.py and report.py: the tiny run, and a log with task-specific fields and a torn last line
$PY src/tools/plot_run.py "$TMP/run" >/dev/null 2>"$TMP/plot.log" && [ -s "$TMP/run/plots/loss.png" ] \
  && [ -s "$TMP/run/plots/throughput.png" ] && [ ! -e "$TMP/run/plots/alpha.png" ] \
  && ok "plot_run.py: loss.png, throughput.png, no alpha.png" || bad "plot_run.py: $(cat "$TMP/plot.log")"
mkdir -p "$TMP/hy"
$PY - "$TMP/hy/train.jsonl" <<'PY'
import json, sys
with open(sys.argv[1], "w") as f:
    for s in range(1, 41):
        r = {"step": s, "loss": 6 / s ** 0.5, "loss_lm": 5 / s ** 0.5, "loss_pd": 100 / s, "samples_per_s": 50 + s,
             "alpha_0_r": 0.9 - s / 400, "alpha_0_k": 0.9 + s / 800}
        if s % 10 == 0: r["val_loss"] = 5 / s ** 0.5
        f.write(json.dumps(r) + "\n")
    f.write('{"step": 41, "loss"')
PY
$PY src/tools/plot_run.py "$TMP/hy" >/dev/null 2>"$TMP/plot.log" && [ -s "$TMP/hy/plots/alpha.png" ] \
  && [ -s "$TMP/hy/plots/throughput.png" ] && ok "plot_run.py: alpha_* and samples_per_s, torn last line skipped" \
  || bad "plot_run.py on a hybrid-like log: $(cat "$TMP/plot.log")"
$PY src/tools/report.py "$TMP/run" --analysis "$TMP/a1" >/dev/null 2>"$TMP/report.log" || bad "report.py: $(cat "$TMP/report.log")"
$PY - "$TMP/run" <<'PY' && ok "report.md: config, final metrics, plots, per-layer real/shuffled table, t-SNE images" || bad "report.md"
import os, re, sys
run = sys.argv[1]
md = open(f"{run}/report.md").read()
need = ["`model.n_layer`: 2", "| last loss |", "| mean tokens_per_s |", "| layer 0 |", "| layer 1 |", "| all layers |",
        "| bag-of-tokens (control) |", "kNN@5 real / shuffled"]
missing = [s for s in need if s not in md]
links = re.findall(r"!\[[^]]*\]\(([^)]+)\)", md)
broken = [l for l in links if not os.path.exists(os.path.join(run, l))]
assert not missing and len(links) == 5 and not broken, f"missing {missing}, links {links}, broken {broken}"
PY
expect_bad_input "report.py without train.jsonl" "train.jsonl: No such file or directory" $PY src/tools/report.py "$TMP/h"

# bad input
$BIN "${TRAIN[@]}" --set train.steps=1 --set model.n_layer=1 --set run.out_dir="$TMP/one" >/dev/null 2>&1
$BIN "${EXTRACT[@]}" --checkpoint "$(ls "$TMP"/one/checkpoints/*.ckpt)" --set model.n_layer=1 --contexts "$TMP/held.jsonl" \
  --out "$TMP/shape" >/dev/null 2>&1
grep -v '"label": *"license"' "$TMP/held.jsonl" >"$TMP/two.jsonl"
$BIN "${EXTRACT[@]}" --contexts "$TMP/two.jsonl" --out "$TMP/two" >/dev/null 2>&1
A=(analyze-states "$TMP/s/index.txt" --no-plots)
expect_bad_input "missing index" "nope/index.txt: cannot open" $BIN analyze-states "$TMP/nope/index.txt" --out "$TMP/x1"
expect_bad_input "unknown layer" "--layers '5' is not last, all or a list" $BIN "${A[@]}" --layers 5 --out "$TMP/x2"
expect_bad_input "K too large" "--components 72 is out of range: at most 71" $BIN "${A[@]}" --components 72 --out "$TMP/x3"
expect_bad_input "test set of another shape" "the test states have L=1 C=128 H=2, the train states L=2" \
  $BIN "${A[@]}" --test "$TMP/shape/index.txt" --out "$TMP/x4"
expect_bad_input "test set of another label list" "the test set's label 1 is 'python', the train set's 'license'" \
  $BIN "${A[@]}" --test "$TMP/two/index.txt" --out "$TMP/x5"
expect_bad_input "k too large" "--k 72 exceeds the 71 train records" $BIN "${A[@]}" --k 1,72 --out "$TMP/x6"
CTL=(--test "$TMP/h/index.txt")
expect_bad_input "--control of other records" "control 'held' holds states of the contexts in" \
  $BIN "${A[@]}" "${CTL[@]}" --control "held=$TMP/rh/index.txt,$TMP/rh/index.txt" --out "$TMP/x7"
expect_bad_input "--control without its held-out set" "--control r needs a held-out set too" \
  $BIN "${A[@]}" "${CTL[@]}" --control "r=$TMP/rs/index.txt" --out "$TMP/x8"
expect_bad_input "--control with a bad name" "--control 'a b=x' is not NAME=TRAIN_INDEX[,TEST_INDEX]" \
  $BIN "${A[@]}" --control "a b=x" --out "$TMP/x9"
$BIN extract-states configs/tiny.yaml --random-init --set run.threads=2 --max-tokens 100 --contexts "$TMP/train.jsonl" \
  --out "$TMP/r100" >/dev/null 2>&1
expect_bad_input "--control of another --max-tokens" "of up to 100 tokens" \
  $BIN "${A[@]}" --control "short=$TMP/r100/index.txt" --out "$TMP/xa"
expect_bad_input "--tsne-metric unknown" "--tsne-metric 'manhattan' is not euclidean or cosine" \
  $BIN "${A[@]}" --tsne-metric manhattan --out "$TMP/xb"
ls -d "$TMP"/x? >/dev/null 2>&1 && bad "refused runs left output: $(ls -d "$TMP"/x?)" || ok "refused runs left no output"

finish
