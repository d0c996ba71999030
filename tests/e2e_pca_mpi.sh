#!/usr/bin/env bash
# Distributed PCA: `build/tests/test_analysis --pca-mpi` under mpirun on 1, 2
# and 4 ranks, each rank reading its own uneven block of rows (shares ~ rank + 1; one run with an empty
# rank), on a covariance-route set (n > d) and a Gram-route set (n < d), plus each set through the
# other route. Every result is compared with numpy in float64 on the whole matrix: eigenvalues to 1e-6
# relative, components up to sign, the mean, the total variance and the transformed coordinates.
cd "$(dirname "$0")/.."
. tests/lib.sh pca-mpi
BIN=build/tests/test_analysis
PY=/usr/bin/python3
export OMP_NUM_THREADS=1
[ -x "$BIN" ] || { echo "FAIL $BIN not built"; echo "0 passed, 1 failed"; exit 1; }

# Data: float32 rows = 3 + Z diag(s) Q^T + 0.01 noise, s_i = 10 * 0.8^i (distinct, well-gapped).
$PY - "$TMP" <<'EOF'
import sys, numpy as np
tmp = sys.argv[1]
for name, n, d, r in (("cov", 403, 60, 14), ("gram", 150, 700, 16)):
    rng = np.random.default_rng(n * d)
    q, _ = np.linalg.qr(rng.standard_normal((d, r)))
    x = 3 + (rng.standard_normal((n, r)) * 10 * 0.8 ** np.arange(r)) @ q.T + 0.01 * rng.standard_normal((n, d))
    with open(f"{tmp}/{name}.bin", "wb") as f:
        np.array([n, d], "<i8").tofile(f)
        x.astype("<f4").tofile(f)
EOF

# compare OUT against numpy on DATA; prints one line per failed quantity, exits 1 on failure
cat > "$TMP/check.py" <<'EOF'
import sys, numpy as np
out, data, expect_route = sys.argv[1], sys.argv[2], int(sys.argv[3])
raw = open(data, "rb").read()
n, d = np.frombuffer(raw[:16], "<i8")
x = np.frombuffer(raw[16:], "<f4").reshape(n, d).astype(np.float64)
b = open(out, "rb").read()
route, k = np.frombuffer(b[:8], "<i4")
n2, d2 = np.frombuffer(b[8:24], "<i8")
total, t_fit, t_tr = np.frombuffer(b[24:48], "<f8")
o = 48
eig = np.frombuffer(b[o:o + 8 * k], "<f8"); o += 8 * k
mean = np.frombuffer(b[o:o + 8 * d], "<f8"); o += 8 * d
comp = np.frombuffer(b[o:o + 4 * k * d], "<f4").reshape(k, d).astype(np.float64); o += 4 * k * d
coords = np.frombuffer(b[o:o + 4 * n * k], "<f4").reshape(n, k).astype(np.float64)
ref_mean = x.mean(0)
xc = x - ref_mean
if d <= n:
    w, v = np.linalg.eigh(xc.T @ xc / (n - 1)); w, v = w[::-1][:k], v[:, ::-1][:, :k].T
else:
    _, s, vt = np.linalg.svd(xc, full_matrices=False); w, v = s[:k] ** 2 / (n - 1), vt[:k]
v = v * np.sign(np.sum(v * comp, axis=1))[:, None]          # align signs with the result
errs = {
    "eigenvalues (rel)": np.max(np.abs(eig - w) / w),
    "components (max abs)": np.max(np.abs(comp - v)),
    "mean (max abs / max)": np.max(np.abs(mean - ref_mean)) / np.max(np.abs(ref_mean)),
    "total variance (rel)": abs(total - np.sum(xc * xc) / (n - 1)) / total,
    "coordinates (max abs / max)": np.max(np.abs(coords - xc @ v.T)) / np.max(np.abs(xc @ v.T)),
}
limits = {"eigenvalues (rel)": 1e-6, "components (max abs)": 1e-6, "mean (max abs / max)": 1e-12,
          "total variance (rel)": 1e-12, "coordinates (max abs / max)": 1e-5}
bad = [f"{key} {errs[key]:.2e} > {limits[key]:.0e}" for key in errs if not errs[key] <= limits[key]]
signs_ok = all(c[np.argmax(np.abs(c))] > 0 for c in comp)
if not signs_ok: bad.append("sign convention: the largest |entry| of a component is negative")
if route != expect_route: bad.append(f"route {route}, expected {expect_route}")
if (n2, d2) != (n, d): bad.append(f"shape {n2}x{d2}")
print("; ".join(bad) if bad else "eigenvalue rel err %.1e, component err %.1e, coordinate err %.1e" %
      (errs["eigenvalues (rel)"], errs["components (max abs)"], errs["coordinates (max abs / max)"]))
sys.exit(1 if bad else 0)
EOF

# run NAME DATA K ROUTE SPLIT NP EXPECT_ROUTE(1 covariance, 2 Gram)
run() {
  local name=$1 data=$2 k=$3 route=$4 split=$5 np=$6 expect=$7
  local out="$TMP/$name.out" log="$TMP/$name.log"
  if ! mpirun --oversubscribe -np "$np" "$BIN" --pca-mpi "$TMP/$data.bin" "$out" "$k" "$route" "$split" >"$log" 2>&1; then
    fail=$((fail+1)); echo "FAIL $name: mpirun exited non-zero"; tail -5 "$log"; return
  fi
  local msg
  if msg=$($PY "$TMP/check.py" "$out" "$TMP/$data.bin" "$expect" 2>&1); then
    pass=$((pass+1)); echo "ok   $name: $msg ($(grep -o 'fit [0-9.]* s' "$log"); rows per rank:$(grep -o 'rank:.*' "$log" | cut -d: -f2))"
  else
    fail=$((fail+1)); echo "FAIL $name: $msg"
  fi
}

for np in 1 2 4; do
  run "covariance-np$np" cov 8 auto uneven $np 1
  run "gram-np$np" gram 10 auto uneven $np 2
done
run "gram-np4-empty-rank" gram 10 auto gap 4 2
run "covariance-np3-empty-rank" cov 8 auto gap 3 1
run "cov-data-via-gram-np2" cov 8 gram uneven 2 2
run "gram-data-via-covariance-np2" gram 10 covariance uneven 2 1
run "gram-k1-np4" gram 1 auto uneven 4 2

# bad input: more components than rows allow -> one line, exit code 2
mpirun --oversubscribe -np 2 "$BIN" --pca-mpi "$TMP/gram.bin" "$TMP/bad.out" 150 auto uneven >"$TMP/bad.log" 2>&1
rc=$?
if [ $rc -ne 0 ] && grep -q "150 components need at least 151 rows" "$TMP/bad.log" && [ ! -e "$TMP/bad.out" ]; then
  pass=$((pass+1)); echo "ok   k > n - 1 rejected with a one-line reason, no output written"
else
  fail=$((fail+1)); echo "FAIL k > n - 1: rc=$rc"; tail -3 "$TMP/bad.log"
fi

finish
