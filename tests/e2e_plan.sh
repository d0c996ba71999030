#!/usr/bin/env bash
# `dreamstate plan` from the command line: --help states the assumptions; bad arguments exit 2 with a
# one-line reason and print no table; --json is valid JSON whose rows agree with the table's invariants
# (tokens/s = batch x ctx / step, step = compute + exposed, invalid rows where the batch does not split,
# memory per rank and node fit). The arithmetic itself is checked by test_plan.
cd "$(dirname "$0")/.."
. tests/lib.sh plan

$BIN plan --help >"$TMP/help" && grep -q "Model and assumptions" "$TMP/help" && grep -q "alpha-beta" "$TMP/help" \
  && ok "plan --help prints the assumptions" || bad "plan --help"
$BIN --help | grep -q "^  plan CONFIG" && ok "plan is listed in dreamstate --help" || bad "plan missing from --help"

bad_args=(
  "configs/tiny.yaml"
  "--nodes 1"
  "configs/tiny.yaml --nodes 0"
  "configs/tiny.yaml --nodes x"
  "configs/tiny.yaml --nodes 1,,2"
  "configs/tiny.yaml --nodes 2,"
  "configs/tiny.yaml --nodes 1.5"
  "configs/tiny.yaml --nodes"
  "configs/tiny.yaml --nodes 1 --ranks-per-node 0"
  "configs/tiny.yaml --nodes 1000 --ranks-per-node 1001"
  "configs/tiny.yaml --nodes 1 --threads -1"
  "configs/tiny.yaml --nodes 1 --bandwidth 0"
  "configs/tiny.yaml --nodes 1 --bandwidth fast"
  "configs/tiny.yaml --nodes 1 --latency -1"
  "configs/tiny.yaml --nodes 1 --intra-bandwidth inf"
  "configs/tiny.yaml --nodes 1 --node-memory 0"
  "configs/tiny.yaml --nodes 1 --frobnicate"
  "configs/tiny.yaml configs/tiny.yaml --nodes 1"
  "$TMP/missing.yaml --nodes 1"
  "configs/tiny.yaml --nodes 1 --set train.batch_size=0"
  "configs/tiny.yaml --nodes 1 --set model.nope=1"
)
for args in "${bad_args[@]}"; do
  # shellcheck disable=SC2086
  $BIN plan $args >"$TMP/out" 2>"$TMP/err"
  rc=$?
  if [ $rc -eq 2 ] && [ ! -s "$TMP/out" ] && [ "$(wc -l <"$TMP/err")" -eq 1 ] && grep -q '^dreamstate: ' "$TMP/err"; then
    ok "plan $args -> exit 2: $(cat "$TMP/err")"
  else
    bad "plan $args -> exit $rc, stdout $(wc -c <"$TMP/out") bytes, stderr: $(head -c 300 "$TMP/err")"
  fi
done

$BIN plan configs/tiny.yaml --nodes 1,2,3 --nodes 4 --ranks-per-node 2 --threads 1 --bandwidth 5 --latency 2 \
  --set train.batch_size=16 >"$TMP/table" 2>&1 && grep -q "invalid: batch_size 16 is not a multiple of 6 rank(s)" "$TMP/table" \
  && [ "$(grep -cE '^ +[0-9]+ +[0-9]+ +[0-9]+ x [0-9]+ ' "$TMP/table")" -eq 3 ] \
  && ok "table: 3 valid rows and the 3-node row invalid" || { bad "table"; cat "$TMP/table"; }

$BIN plan configs/tiny.yaml --nodes 1,2,3,4 --ranks-per-node 2 --threads 1 --set train.batch_size=16 --json >"$TMP/plan.json" \
  && /usr/bin/python3 - "$TMP/plan.json" <<'PY' && ok "--json: valid, and its rows consistent" || bad "--json"
import json, sys
p = json.load(open(sys.argv[1]))
assert p['batch_size'] == 16 and p['ctx_len'] == 64 and p['threads_per_rank'] == 1 and not p['measured']
assert [r['nodes'] for r in p['rows']] == [1, 2, 3, 4] and [r['valid'] for r in p['rows']] == [True, True, False, True]
for r in (r for r in p['rows'] if r['valid']):
    assert r['ranks'] == 2 * r['nodes'] and r['micro_batch'] * r['accum'] * r['ranks'] == 16
    assert abs(r['step_s'] - r['compute_s'] - r['exposed_comm_s']) <= 1e-7 * r['step_s']
    assert abs(r['tokens_per_s'] * r['step_s'] - 16 * 64) < 1e-6 * 16 * 64
    assert 0 <= r['exposed_comm_s'] <= r['comm_s'] and r['comm_s'] > 0
    assert r['node_bytes'] == 2 * r['memory_per_rank_bytes'] and r['fits'] == (r['node_bytes'] <= p['node_memory_bytes'])
    # fp64, no ZeRO: 24 bytes per parameter + activations + runtime
    rest = r['memory_per_rank_bytes'] - 24 * p['params'] - r['activation_bytes']
    assert 0 < rest < 1e9, rest
PY

finish
