#!/usr/bin/python3
"""Checks the analysis metrics and t-SNE (src/eval/metrics.c, tsne.c) against scikit-learn 1.2, and
src/tools/plot_scatter.py, through `build/tests/test_analysis --metrics / --tsne / --tsne-kl`.

Metrics, on synthetic sets (Gaussian blobs, cosine data with row scales, integer lattices full of
distance and vote ties, imbalanced classes with a singleton, an overlapping 64-D set, a binary set):
  - kNN predictions (train -> test) equal KNeighborsClassifier(algorithm="brute").predict for every
    k, hence equal accuracy; leave-one-out predictions equal the vote over kneighbors(X=None);
  - silhouette of train and test within 1e-6 of silhouette_score (observed ~1e-16);
  - the probe solves the same strictly convex problem as StandardScaler + LogisticRegression(
    multinomial, C = 1/l2) (newton-cg to tol 1e-8: sklearn's default lbfgs stops at ftol ~1e-14
    relative, where the probabilities are only ~1e-4 settled): objective within 1e-10 relative, test
    probabilities within 1e-6, predictions equal except on rows whose two best classes are within
    1e-6 (none so far), hence equal accuracy;
  - the bundle and the shuffled-label control equal sklearn's numbers on the same permutation (the
    permutation recomputed here from ds_rng's splitmix64).
t-SNE, Euclidean and cosine (sklearn's metric="cosine": squared cosine distances): KL(P||Q) of a given
embedding equals sklearn's _joint_probabilities + _kl_divergence (exact, 1e-5 relative: sklearn runs the
perplexity search on float32 distances) and _joint_probabilities_nn + _kl_divergence_bh (Barnes-Hut,
1e-3: sklearn's tree works in float32); full runs separate 5 clusters (5-NN accuracy > 0.95) with a
final KL within 15% of sklearn.manifold.TSNE's on the same data, and the map's trustworthiness equals
sklearn.manifold.trustworthiness of the same map. (sklearn runs on the same float32 values the C side reads.)
Trustworthiness of fixed embeddings (random, and a PCA projection; k = 5, 12; Euclidean and cosine)
within 1e-12 of sklearn's. Fréchet distance (ds_frechet_rows) of fixed sets, full-rank and with fewer
rows than dimensions, against numpy.cov and scipy.linalg.sqrtm: |mu1 - mu2|^2 + tr(S1 + S2 - 2 sqrtm(S1 S2)).
Plot: the scatter JSON renders to a PNG with one colour per label."""
import json
import os
import subprocess
import sys
import tempfile

import warnings

import numpy as np
from scipy import linalg, stats
from sklearn.linear_model import LogisticRegression
from sklearn.manifold import TSNE, _t_sne, trustworthiness
from sklearn.metrics import pairwise_distances, silhouette_score
from sklearn.neighbors import KNeighborsClassifier, NearestNeighbors
from sklearn.preprocessing import StandardScaler

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.join(ROOT, "build/tests/test_analysis")
PLOT = os.path.join(ROOT, "src/tools/plot_scatter.py")
passed = failed = 0


def check(cond, what):
    global passed, failed
    if cond:
        passed += 1
        print(f"ok   {what}")
    else:
        failed += 1
        print(f"FAIL {what}")


def run(*args):
    r = subprocess.run([BIN, *map(str, args)], capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"{' '.join(map(str, args))}: exit {r.returncode}: {r.stderr.strip()}")


# ---- ds_rng (src/common/util.c) in Python, for the shuffled-label control
M64 = (1 << 64) - 1


def splitmix64(x):
    x = (x + 0x9E3779B97F4A7C15) & M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & M64
    return x ^ (x >> 31)


def ds_shuffle(labels, seed):
    out = list(labels)
    for i in range(len(out) - 1, 0, -1):
        j = splitmix64(splitmix64(splitmix64(seed) ^ 0x5348) ^ i) % (i + 1)
        out[i], out[j] = out[j], out[i]
    return np.array(out)


# ---- data sets: (name, Xtrain, ytrain, Xtest, ytest, metric, ks, l2, compare leave-one-out)
def blobs(rng, n_classes, per_train, per_test, dim, spread):
    centres = rng.standard_normal((n_classes, dim)) * spread
    def draw(per):
        y = np.repeat(np.arange(n_classes), per)
        return centres[y] + rng.standard_normal((len(y), dim)), y
    xtr, ytr = draw(per_train)
    xte, yte = draw(per_test)
    p = rng.permutation(len(ytr))
    return xtr[p], ytr[p], xte, yte


def datasets():
    rng = np.random.default_rng(2024)
    out = []
    xtr, ytr, xte, yte = blobs(rng, 3, 50, 30, 20, 1.0)
    out.append(("blobs-euclidean", xtr, ytr, xte, yte, "euclidean", [1, 5, 10], 1.0, True))
    xtr, ytr, xte, yte = blobs(rng, 4, 40, 25, 32, 0.6)
    xtr *= rng.uniform(0.1, 10, (len(xtr), 1)); xte *= rng.uniform(0.1, 10, (len(xte), 1))
    out.append(("blobs-cosine", xtr, ytr, xte, yte, "cosine", [1, 3, 7], 0.5, True))
    # lattice points with duplicates: ties in distance everywhere, even k gives tied votes
    xtr = rng.integers(0, 6, (80, 2)).astype(float); ytr = rng.integers(0, 3, 80)
    xte = rng.integers(0, 6, (50, 2)).astype(float); yte = rng.integers(0, 3, 50)
    out.append(("lattice-ties", xtr, ytr, xte, yte, "euclidean", [1, 2, 4, 6, 9], 1.0, False))
    # distinct lattice points (no duplicates): leave-one-out with distance and vote ties
    pts = np.array([(a, b, c) for a in range(4) for b in range(4) for c in range(3)], float)
    sel = rng.permutation(len(pts))
    xtr, xte = pts[sel[:30]], pts[sel[30:]]
    ytr, yte = rng.integers(0, 4, 30), rng.integers(0, 4, len(pts) - 30)
    out.append(("lattice-distinct", xtr, ytr, xte, yte, "euclidean", [1, 2, 3, 4, 6], 1.0, True))
    # imbalanced, labels not 0..K-1, a singleton class in train and test, a test-only label
    sizes = {2: 50, 5: 20, 7: 6, 11: 1}
    centres = {c: rng.standard_normal(8) * 3 for c in (2, 5, 7, 11, 13)}
    def imb(scale, extra):
        y = np.array([c for c, s in sizes.items() for _ in range(max(1, s // scale))] + extra)
        return np.array([centres[c] + rng.standard_normal(8) for c in y]), y
    xtr, ytr = imb(1, [])
    xte, yte = imb(2, [13, 13])
    out.append(("imbalanced", xtr, ytr, xte, yte, "euclidean", [1, 4, 8], 1.0, True))
    xtr, ytr, xte, yte = blobs(rng, 5, 60, 40, 64, 0.25)
    out.append(("overlapping-64d", xtr, ytr, xte, yte, "euclidean", [1, 5, 15], 2.0, True))
    xtr, ytr, xte, yte = blobs(rng, 2, 40, 30, 10, 0.4)
    out.append(("binary-cosine", xtr, ytr, xte, yte, "cosine", [1, 5], 1.0, True))
    return out


def write_metrics_input(path, xtr, ytr, xte, yte):
    with open(path, "wb") as f:
        np.array([len(ytr), len(yte), xtr.shape[1]], "<i8").tofile(f)
        xtr.astype("<f4").tofile(f); ytr.astype("<i4").tofile(f)
        xte.astype("<f4").tofile(f); yte.astype("<i4").tofile(f)


def sk_probe(xtr, ytr, l2):
    scaler = StandardScaler().fit(xtr)
    clf = LogisticRegression(C=1 / l2, multi_class="multinomial", solver="newton-cg", tol=1e-8, max_iter=1000)
    clf.fit(scaler.transform(xtr), ytr)
    return scaler, clf


def probe_agrees(pred, ref_pred, ref_proba):
    """Predictions equal, except where sklearn's two most likely classes are within 1e-6 (a row that
    close to a decision boundary may flip within the solvers' remaining error)."""
    top2 = np.sort(ref_proba, axis=1)[:, -2:]
    differ = np.array(pred) != ref_pred
    return bool(np.all(top2[differ, 1] - top2[differ, 0] < 1e-6))


def probe_objective(scaler, clf, xtr, ytr, l2):
    """sum_i -log p(y_i) + l2/2 |W|^2 in the full multinomial parameterisation."""
    p = clf.predict_proba(scaler.transform(xtr))
    idx = np.searchsorted(clf.classes_, ytr)
    w = clf.coef_
    if len(clf.classes_) == 2:  # sklearn keeps W1 of the symmetric optimum W0 = -W1 for a binary problem
        w = np.vstack([-w, w])
    return -np.sum(np.log(p[np.arange(len(ytr)), idx])) + 0.5 * l2 * np.sum(w * w)


def test_metrics(tmp):
    for name, xtr, ytr, xte, yte, metric, ks, l2, loo in datasets():
        # the C side reads float32: give sklearn exactly the same numbers
        xtr = xtr.astype(np.float32).astype(np.float64); xte = xte.astype(np.float32).astype(np.float64)
        inp, out = f"{tmp}/{name}.bin", f"{tmp}/{name}.json"
        write_metrics_input(inp, xtr, ytr, xte, yte)
        run("--metrics", inp, out, metric, l2, ",".join(map(str, ks)))
        r = json.load(open(out))
        for s, k in enumerate(ks):
            clf = KNeighborsClassifier(n_neighbors=k, algorithm="brute", metric=metric).fit(xtr, ytr)
            ref = clf.predict(xte)
            mine = np.array(r["knn_pred"][s])
            check(np.array_equal(mine, ref) and r["knn_accuracy"][s] == np.mean(ref == yte),
                  f"{name}: kNN k={k} predictions equal sklearn's ({np.sum(mine != ref)} differ), "
                  f"accuracy {r['knn_accuracy'][s]:.4f} vs {np.mean(ref == yte):.4f}")
            if loo:
                nbrs = clf.kneighbors(return_distance=False)       # X=None: each row without itself
                ref_loo = clf.classes_[stats.mode(clf._y[nbrs], axis=1, keepdims=False).mode]
                mine_loo = np.array(r["knn_loo_pred"][s])
                check(np.array_equal(mine_loo, ref_loo) and r["knn_loo_accuracy"][s] == np.mean(ref_loo == ytr),
                      f"{name}: leave-one-out k={k} equal ({np.sum(mine_loo != ref_loo)} differ), "
                      f"accuracy {r['knn_loo_accuracy'][s]:.4f}")
        for split, x, y in (("train", xtr, ytr), ("test", xte, yte)):
            ref = silhouette_score(x, y, metric=metric)
            err = abs(r[f"silhouette_{split}"] - ref)
            check(err <= 1e-6, f"{name}: silhouette ({split}) {r[f'silhouette_{split}']:.12f} vs sklearn {ref:.12f} "
                               f"(diff {err:.1e})")
        scaler, clf = sk_probe(xtr, ytr, l2)
        ref_pred = clf.predict(scaler.transform(xte))
        ref_acc = np.mean(ref_pred == yte)
        ref_obj = probe_objective(scaler, clf, xtr, ytr, l2)
        proba = np.array(r["probe_proba"]).reshape(len(yte), -1)
        ref_proba = clf.predict_proba(scaler.transform(xte))
        obj_err = abs(r["probe_objective"] - ref_obj) / ref_obj
        check(obj_err <= 1e-10 and r["probe_classes"] == list(clf.classes_),
              f"{name}: probe objective {r['probe_objective']:.10g} vs sklearn's {ref_obj:.10g} (rel {obj_err:.1e}, "
              f"{r['probe_iterations']} L-BFGS iterations)")
        perr = np.max(np.abs(proba - ref_proba))
        n_diff = int(np.sum(np.array(r["probe_pred"]) != ref_pred))
        check(perr <= 1e-6 and probe_agrees(r["probe_pred"], ref_pred, ref_proba),
              f"{name}: probe accuracy {r['probe_accuracy']:.4f} vs sklearn {ref_acc:.4f} ({n_diff} predictions "
              f"differ), max |p - p_sklearn| {perr:.1e}")
        # the bundle (real labels) and the shuffled control (seed 1: train with 1, test with 2)
        b = r["bundle"]
        check(b["knn_accuracy"] == r["knn_accuracy"] and b["silhouette"] == r["silhouette_test"] and
              b["probe_accuracy"] == r["probe_accuracy"], f"{name}: bundle equals the separate metrics")
        str_, ste = ds_shuffle(ytr, 1), ds_shuffle(yte, 2)
        c = r["control"]
        ref_knn = [np.mean(KNeighborsClassifier(n_neighbors=k, algorithm="brute", metric=metric)
                           .fit(xtr, str_).predict(xte) == ste) for k in ks]
        sc, cl = sk_probe(xtr, str_, l2)
        ref_pacc = np.mean(cl.predict(sc.transform(xte)) == ste)
        ref_sil = silhouette_score(xte, ste, metric=metric)
        check(c["knn_accuracy"] == ref_knn and abs(c["silhouette"] - ref_sil) <= 1e-6 and
              c["probe_accuracy"] == ref_pacc,
              f"{name}: shuffled control kNN {np.round(c['knn_accuracy'], 3).tolist()} probe {c['probe_accuracy']:.3f} "
              f"silhouette {c['silhouette']:.3f} equal sklearn on the same permutation")


def clusters(seed, k=5, per=60, dim=50, spread=1.5):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(k), per)
    x = (rng.standard_normal((k, dim)) * spread)[y] + rng.standard_normal((len(y), dim))
    return x.astype(np.float32), y


def write_labelled(path, x, y):
    with open(path, "wb") as f:
        np.array(x.shape, "<i8").tofile(f)
        x.astype("<f4").tofile(f); y.astype("<i4").tofile(f)


def loo_knn_accuracy(x, y, k=5):
    clf = KNeighborsClassifier(n_neighbors=k, algorithm="brute").fit(x, y)
    nbrs = clf.kneighbors(return_distance=False)
    return np.mean(stats.mode(y[nbrs], axis=1, keepdims=False).mode == y)


def test_tsne(tmp, metric):
    x, y = clusters(7)
    x64 = x.astype(np.float64)
    n = len(y)
    inp = f"{tmp}/clusters.bin"
    write_labelled(inp, x, y)
    # KL of a fixed embedding against sklearn's own P and KL (sklearn 1.2 squares every metric's distances)
    emb = np.random.default_rng(3).standard_normal((n, 2)) * 3
    emb.astype("<f8").tofile(f"{tmp}/emb.bin")
    run("--tsne-kl", inp, f"{tmp}/emb.bin", f"{tmp}/kl_exact.json", "exact", metric)
    run("--tsne-kl", inp, f"{tmp}/emb.bin", f"{tmp}/kl_bh.json", "barnes_hut", metric)
    P = _t_sne._joint_probabilities(pairwise_distances(x64, metric=metric) ** 2, 30.0, 0)
    ref_exact, _ = _t_sne._kl_divergence(emb.ravel(), P, 1, n, 2)
    graph = NearestNeighbors(n_neighbors=min(n - 1, 91), algorithm="brute", metric=metric).fit(x64) \
        .kneighbors_graph(mode="distance")
    graph.data **= 2
    Pnn = _t_sne._joint_probabilities_nn(graph, 30.0, 0)
    ref_bh, _ = _t_sne._kl_divergence_bh(emb.ravel().astype(np.float32), Pnn, 1, n, 2, angle=0.5)
    mine_exact = json.load(open(f"{tmp}/kl_exact.json"))["kl"]
    mine_bh = json.load(open(f"{tmp}/kl_bh.json"))["kl"]
    e1, e2 = abs(mine_exact - ref_exact) / ref_exact, abs(mine_bh - ref_bh) / ref_bh
    check(e1 <= 1e-5, f"t-SNE {metric} exact KL of a fixed embedding {mine_exact:.8f} vs sklearn {ref_exact:.8f} (rel {e1:.1e})")
    check(e2 <= 1e-3, f"t-SNE {metric} Barnes-Hut KL of a fixed embedding {mine_bh:.8f} vs sklearn {ref_bh:.8f} (rel {e2:.1e})")
    # full runs, against one sklearn run (its Barnes-Hut: its exact method takes ~10 s in numpy, and
    # the two reach KL within 0.1% of each other on this set)
    sk = TSNE(perplexity=30, method="barnes_hut", init="random", learning_rate="auto", random_state=0,
              metric=metric).fit(x64)
    for method in ("exact", "barnes_hut"):
        out = f"{tmp}/tsne_{metric}_{method}.json"
        run("--tsne", inp, out, method, metric)
        r = json.load(open(out))
        p = r["panels"][0]
        emb = np.column_stack([p["x"], p["y"]])
        acc = loo_knn_accuracy(emb, np.array(p["label"]))
        rel = abs(r["kl"] - sk.kl_divergence_) / sk.kl_divergence_
        check(acc > 0.95 and p["label"] == y.tolist(), f"t-SNE {metric} {method}: embedding 5-NN accuracy {acc:.3f} "
                                                       f"(sklearn's embedding: {loo_knn_accuracy(sk.embedding_, y):.3f})")
        check(rel < 0.15, f"t-SNE {metric} {method}: final KL {r['kl']:.4f} vs sklearn.manifold.TSNE {sk.kl_divergence_:.4f}")
        # the map as the JSON prints it (%.17g): the same doubles the C side scored
        ref_t = trustworthiness(x64, emb, n_neighbors=5, metric=metric)
        check(abs(r["trustworthiness"] - ref_t) <= 1e-12, f"t-SNE {metric} {method}: map trustworthiness "
              f"{r['trustworthiness']:.6f} vs sklearn {ref_t:.6f} (sklearn's own map: "
              f"{trustworthiness(x64, sk.embedding_, n_neighbors=5, metric=metric):.6f})")
    if metric == "cosine":   # a second seed: another map of the same quality
        run("--tsne", inp, f"{tmp}/tsne_seed1.json", "exact", metric, 1)
        r1, r0 = json.load(open(f"{tmp}/tsne_seed1.json")), json.load(open(f"{tmp}/tsne_cosine_exact.json"))
        check(r1["panels"][0]["x"] != r0["panels"][0]["x"] and abs(r1["kl"] - r0["kl"]) < 0.15 * r0["kl"],
              f"t-SNE cosine seed 1: a different map, KL {r1['kl']:.4f} vs seed 0 {r0['kl']:.4f}")
    return f"{tmp}/tsne_{metric}_exact.json"


def test_trustworthiness(tmp):
    x, y = clusters(11, k=4, per=40, dim=12, spread=1.0)
    x64 = x.astype(np.float64)
    inp = f"{tmp}/trust.bin"
    write_labelled(inp, x, y)
    rng = np.random.default_rng(5)
    centred = x64 - x64.mean(0)
    pca2 = centred @ np.linalg.svd(centred, full_matrices=False)[2][:2].T
    for name, emb in (("random", rng.standard_normal((len(y), 2))), ("PCA", pca2)):
        emb.astype("<f8").tofile(f"{tmp}/temb.bin")
        for metric in ("euclidean", "cosine"):
            for k in (5, 12):
                run("--trust", inp, f"{tmp}/temb.bin", f"{tmp}/trust.json", metric, k)
                mine = json.load(open(f"{tmp}/trust.json"))["trustworthiness"]
                ref = trustworthiness(x64, emb, n_neighbors=k, metric=metric)
                check(abs(mine - ref) <= 1e-12, f"trustworthiness of a {name} map ({metric}, k={k}) {mine:.10f} "
                                                f"vs sklearn {ref:.10f}")


def test_frechet(tmp):
    rng = np.random.default_rng(17)
    mix = rng.standard_normal((6, 6))
    sets = [("full rank, 6-D", rng.standard_normal((60, 6)), rng.standard_normal((45, 6)) @ mix * 0.5 + 0.7),
            ("fewer rows than dimensions", rng.standard_normal((5, 8)), rng.standard_normal((7, 8)) * 2 + 1),
            ("identical sets", rng.standard_normal((30, 4)), None)]
    for name, a, b in sets:
        b = a.copy() if b is None else b
        a, b = a.astype(np.float32).astype(np.float64), b.astype(np.float32).astype(np.float64)
        with open(f"{tmp}/fd.bin", "wb") as f:
            np.array([len(a), len(b), a.shape[1]], "<i8").tofile(f)
            a.astype("<f4").tofile(f); b.astype("<f4").tofile(f)
        run("--frechet", f"{tmp}/fd.bin", f"{tmp}/fd.json")
        r = json.load(open(f"{tmp}/fd.json"))
        S1, S2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # sqrtm of a singular product warns
            covmean = linalg.sqrtm(S1 @ S2).real
        ref = np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(S1 + S2 - 2 * covmean)
        stats_err = max(np.max(np.abs(np.array(r["mean1"]) - a.mean(0))), np.max(np.abs(np.array(r["cov2"]) - S2.ravel())))
        err = abs(r["frechet"] - ref)
        check(err <= 1e-6 * max(1.0, abs(ref)) and stats_err < 1e-12,
              f"Fréchet distance, {name}: {r['frechet']:.10g} vs numpy/scipy {ref:.10g} (diff {err:.1e}; "
              f"mean/cov diff {stats_err:.1e})")


def test_plot(tmp, tsne_json):
    import matplotlib.image as mpimg
    png = f"{tmp}/scatter.png"
    r = subprocess.run([sys.executable, PLOT, tsne_json, png], capture_output=True, text=True)
    ok = r.returncode == 0 and os.path.exists(png)
    img = mpimg.imread(png) if ok else np.zeros((1, 1, 4))
    # count the distinct saturated colours drawn: one per label (tab10 colours, not grey/white)
    rgb = (img[..., :3] * 255).astype(int).reshape(-1, 3)
    sat = rgb[(rgb.max(1) - rgb.min(1)) > 60]
    colours = {tuple(c) for c, cnt in zip(*np.unique(sat // 8, axis=0, return_counts=True)) if cnt > 30}
    check(ok and img.shape[0] > 200 and img.shape[1] > 200 and len(colours) >= 5,
          f"plot_scatter: {img.shape[1]}x{img.shape[0]} PNG with {len(colours)} distinct label colours")
    # two panels with kinds (real / generated), metrics, label names
    doc = json.load(open(tsne_json))
    p = doc["panels"][0]
    two = dict(p, title="layer 3", kind=[i % 2 for i in range(len(p["x"]))], kind_names=["real", "generated"])
    json.dump({"label_names": doc["label_names"], "panels": [p, two]}, open(f"{tmp}/two.json", "w"))
    r = subprocess.run([sys.executable, PLOT, f"{tmp}/two.json", f"{tmp}/two.png"], capture_output=True, text=True)
    wide = mpimg.imread(f"{tmp}/two.png") if r.returncode == 0 else np.zeros((1, 1, 4))
    check(r.returncode == 0 and wide.shape[1] > 1.5 * wide.shape[0], f"plot_scatter: two panels side by side "
                                                                       f"({wide.shape[1]}x{wide.shape[0]})")
    # bad input: exit 2, one line, no output file
    json.dump({"panels": [dict(p, y=p["y"][:-1])]}, open(f"{tmp}/bad.json", "w"))
    r = subprocess.run([sys.executable, PLOT, f"{tmp}/bad.json", f"{tmp}/bad.png"], capture_output=True, text=True)
    check(r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and not os.path.exists(f"{tmp}/bad.png"),
          f"plot_scatter: mismatched lengths rejected ({r.stderr.strip()})")


def main():
    # newton-cg is asked for more than float64 lets it certify; the checks above measure what it reached
    warnings.filterwarnings("ignore", message=".*(failed to converge|Line Search failed|line search algorithm).*")
    with tempfile.TemporaryDirectory() as tmp:
        test_metrics(tmp)
        tsne_json = test_tsne(tmp, "euclidean")
        test_tsne(tmp, "cosine")
        test_trustworthiness(tmp)
        test_frechet(tmp)
        test_plot(tmp, tsne_json)
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
