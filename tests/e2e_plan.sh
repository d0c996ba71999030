#!/usr/bin/env bash
# `dreamstate plan` from the command line: --help states the assumptions and lists the tasks; bad
# arguments exit 2 with a one-line reason and print no table; --json is valid JSON whose rows agree with
# the table's invariants (tokens/s = batch x ctx / step, step = compute + exposed, invalid rows where the
# batch does not split, memory per rank and node fit). The arithmetic itself is checked by test_plan.
#
# Then plan against real runs, for every task (lm, state_diffusion, hybrid) at two shapes: `plan
# --measure` (1 thread per rank) predicts the step time on 1 and 2 ranks, and short `dreamstate train`
# runs of the same config measure it (median over the steps after the first 3 of train.jsonl), run right
# after the prediction so both see the same load; each pair is printed with its ratio and must agree
# within 25%. The larger shape of each task also checks memory: the 1-rank run's peak RSS
# (/usr/bin/time) against the predicted memory per rank, the task's part within 15% (predicted less
# the plan's fixed 0.1 GB runtime allowance, against RSS less the runtime this machine's smallest run
# shows: lm-a's RSS less its predicted model part; the allocator's heap and mapped data add 10-30 MB
# that the plan does not itemise), the raw ratio printed beside it. The machine may
# be shared: each comparison prints the load average; rerun a failure on a quiet machine before
# suspecting the model.
cd "$(dirname "$0")/.."
. tests/lib.sh plan

$BIN plan --help >"$TMP/help" && grep -q "Model and assumptions" "$TMP/help" && grep -q "alpha-beta" "$TMP/help" \
  && grep -q "^  lm " "$TMP/help" && grep -q "^  state_diffusion " "$TMP/help" && grep -q "^  hybrid " "$TMP/help" \
  && ok "plan --help prints the assumptions and the tasks" || bad "plan --help"
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
  "configs/tiny-states.yaml --nodes 1 --set diffusion.states=$TMP/missing/index.txt"
  "configs/tiny-hybrid.yaml --nodes 1 --set hybrid.init=$TMP/missing.ckpt"
  "configs/tiny-hybrid.yaml --nodes 1 --set hybrid.init="
  "configs/tiny-states.yaml --nodes 1 --set train.grad_checkpoint=true"
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

# train.grad_checkpoint: fewer activations in the JSON; a node too small without it but large enough
# with it gets the note that the rows marked NO fit with checkpointing
CPJ=(configs/tiny.yaml --nodes 1 --threads 1 --set model.n_layer=4 --set train.ctx_len=512)
$BIN plan "${CPJ[@]}" --json >"$TMP/cp0.json" && $BIN plan "${CPJ[@]}" --json --set train.grad_checkpoint=true >"$TMP/cp1.json" \
  && mid=$(/usr/bin/python3 - "$TMP" <<'PY'
import json, sys
p0, p1 = (json.load(open(f'{sys.argv[1]}/cp{i}.json')) for i in (0, 1))
r0, r1 = p0['rows'][0], p1['rows'][0]
assert not p0['grad_checkpoint'] and p1['grad_checkpoint'] and p1['recompute_flops_per_unit'] > 0.15 * p1['flops_per_unit']
assert r1['activation_bytes'] < 0.6 * r0['activation_bytes'], (r1['activation_bytes'], r0['activation_bytes'])
assert r0['memory_per_rank_bytes'] - r1['memory_per_rank_bytes'] == r0['activation_bytes'] - r1['activation_bytes']
assert r1['step_s'] > r0['step_s']  # default rates: the recomputation takes time
print((r0['memory_per_rank_bytes'] + r1['memory_per_rank_bytes']) / 2e9)
PY
) && $BIN plan "${CPJ[@]}" --node-memory "$mid" | grep -q "rows marked NO fit with train.grad_checkpoint: true" \
  && ok "train.grad_checkpoint: fewer activations, more time, and a too-small node is told it fits with it" \
  || bad "plan with train.grad_checkpoint"

# ---- plan against real runs ----
# fixtures: a tiny RWKV-7 (the hybrid's init and the states' model), labelled contexts, their states
$BIN train configs/tiny.yaml --set train.steps=1 --set train.eval_every=0 --set train.eval_batches=1 \
  --set run.threads=1 --set run.out_dir="$TMP/base" >/dev/null 2>"$TMP/base.log" \
  || bad "base: $(tail -1 "$TMP/base.log")"
$BIN build-contexts --out "$TMP/contexts.jsonl" --sources c-headers,licenses --max-per-label 8 --max-bytes 128 \
  >/dev/null 2>&1 || bad "build-contexts"
$BIN extract-states configs/tiny.yaml --checkpoint "$TMP/base/checkpoints/step-00000001.ckpt" \
  --contexts "$TMP/contexts.jsonl" --out "$TMP/states" --max-tokens 32 --set run.threads=1 >/dev/null 2>"$TMP/x.log" \
  || bad "extract-states: $(tail -1 "$TMP/x.log")"

RUN=(--set run.threads=1 --set train.steps=8 --set train.eval_every=0 --set train.eval_batches=1
     --set train.log_every=1000 --set checkpoint.every=0 --set checkpoint.keep=1)
LM_A=(configs/tiny.yaml --set train.batch_size=8 --set train.micro_batch=2)
LM_B=(configs/tiny.yaml --set model.n_embd=256 --set model.vocab_size=8192 --set train.ctx_len=16
      --set train.batch_size=4 --set train.micro_batch=2)
SD=(configs/tiny-states.yaml --set diffusion.states="$TMP/states/index.txt")
SD_A=("${SD[@]}" --set dit.hidden=128 --set dit.depth=2 --set dit.heads=4 --set dit.patch_size=8
      --set train.batch_size=16 --set train.micro_batch=4)
SD_B=("${SD[@]}" --set diffusion.layers=all --set dit.hidden=512 --set dit.depth=2 --set dit.heads=8
      --set dit.patch_size=8 --set train.batch_size=4 --set train.micro_batch=2)
HY_A=(configs/tiny-hybrid.yaml --set hybrid.init="$TMP/base/checkpoints/step-00000001.ckpt" --set train.batch_size=8
      --set train.micro_batch=2)
HY_B=(configs/tiny-hybrid.yaml --set hybrid.init="$TMP/lm-b-1/checkpoints/step-00000008.ckpt"  # lm-b's 1-rank run
      --set hybrid.train_static=1 --set hybrid.prefix=4 --set train.ctx_len=16 --set train.batch_size=4
      --set train.micro_batch=2)
# `plan --measure` once per shape: 2 nodes of 1 rank over a link with the intra-node numbers is the
# 2-rank run on this node, so its rows predict both runs (with the same threads per rank)
intra=$(/usr/bin/python3 -c "import json,sys; p=json.load(sys.stdin); print(p['intra_gbps'], p['intra_latency_us'])" \
        < "$TMP/plan.json")
measure() {  # NAME CONFIG...: predict, then train on 1 rank (peak RSS) and on 2 ranks
  local name=$1 t0=$SECONDS load0; shift
  load0=$(cut -d' ' -f1 /proc/loadavg)
  # shellcheck disable=SC2086
  $BIN plan "$@" --nodes 1,2 --threads 1 --measure --bandwidth ${intra% *} --latency ${intra#* } --json \
    >"$TMP/$name.plan.json" 2>"$TMP/$name.plan.log" || bad "$name: plan: $(tail -1 "$TMP/$name.plan.log")"
  /usr/bin/time -f "%M" -o "$TMP/$name.rss" $BIN train "$@" "${RUN[@]}" --set run.out_dir="$TMP/$name-1" \
    >/dev/null 2>"$TMP/$name-1.log" || bad "$name, 1 rank: $(tail -1 "$TMP/$name-1.log")"
  mpirun --oversubscribe -np 2 $BIN train "$@" "${RUN[@]}" --set run.out_dir="$TMP/$name-2" >/dev/null \
    2>"$TMP/$name-2.log" || bad "$name, 2 ranks: $(tail -1 "$TMP/$name-2.log")"
  echo "$load0 $(cut -d' ' -f1 /proc/loadavg) $((SECONDS - t0))" >"$TMP/$name.load"
}
measure lm-a "${LM_A[@]}"
measure lm-b "${LM_B[@]}"
measure sd-a "${SD_A[@]}"
measure sd-b "${SD_B[@]}"
measure hy-a "${HY_A[@]}"
measure hy-b "${HY_B[@]}"
# The 25% bound is asserted only on a quiet machine (the highest 1-minute load average seen during the
# runs below 1.5): under contention --measure's best-of-several and the runs' median steps part ways.
# Loaded, the ratios are printed and the check is reported as not asserted.
max_load=$(cat "$TMP"/*.load | awk '{for (i = 1; i <= 2; i++) if ($i > m) m = $i} END {print m + 0}')
if awk -v l="$max_load" 'BEGIN {exit !(l < 1.5)}'; then strict=1; else strict=0; fi
/usr/bin/python3 - "$TMP" <<'PY' \
  && ok "plan --measure within 25% of the real step time for every task, shape and rank count" \
  || { [ "$strict" = 1 ] && bad "plan --measure vs real step times (see the ratios above)" \
       || ok "plan --measure vs real step times: ratios printed above, 25% bound NOT asserted (load average $max_load >= 1.5)"; }
import json, statistics, sys
tmp, fails = sys.argv[1], 0
print(f"  {'run':6s} {'ranks':>5s} {'predicted s':>12s} {'measured s':>11s} {'ratio':>6s}   "
      "load average (1 min) before, after; seconds")
for name in ('lm-a', 'lm-b', 'sd-a', 'sd-b', 'hy-a', 'hy-b'):
    plan = json.load(open(f'{tmp}/{name}.plan.json'))
    unit = plan['unit']
    for row in plan['rows']:
        ranks = row['ranks']
        steps = [json.loads(l) for l in open(f'{tmp}/{name}-{ranks}/train.jsonl')]
        assert len(steps) == 8, f'{name}: {len(steps)} steps'
        units = plan['batch_size'] * plan['units_per_sample']
        measured = statistics.median(units / s[f'{unit}_per_s'] for s in steps[3:])
        ratio = row['step_s'] / measured
        load = open(f'{tmp}/{name}.load').read().split()
        print(f"  {name:6s} {ranks:5d} {row['step_s']:12.4f} {measured:11.4f} {ratio:6.2f}   "
              f"{load[0]}, {load[1]}; {load[2]} s")
        fails += not 0.75 <= ratio <= 1.25
sys.exit(1 if fails else 0)
PY
/usr/bin/python3 - "$TMP" <<'PY' \
  && ok "memory: the task's part of the peak RSS of 1 rank within 15% of the prediction (larger shapes)" || bad "predicted memory per rank vs peak RSS"
import json, sys
tmp, fails, allowance = sys.argv[1], 0, 1e8   # DS_PLAN_RUNTIME_BYTES
def case(name):
    row = json.load(open(f'{tmp}/{name}.plan.json'))['rows'][0]
    return row, int(open(f'{tmp}/{name}.rss').read().split()[-1]) * 1024
row, rss = case('lm-a')
runtime = rss - (row['memory_per_rank_bytes'] - allowance)
print(f"  runtime here: {runtime / 1e6:.0f} MB (lm-a: peak RSS {rss / 1e6:.0f} MB, predicted without the allowance "
      f"{(row['memory_per_rank_bytes'] - allowance) / 1e6:.0f} MB); the plan allows {allowance / 1e6:.0f} MB")
for name in ('lm-b', 'sd-b', 'hy-b'):
    row, rss = case(name)
    task = (row['memory_per_rank_bytes'] - allowance) / (rss - runtime)
    print(f"  {name}: predicted {row['memory_per_rank_bytes'] / 1e6:.0f} MB per rank (activations "
          f"{row['activation_bytes'] / 1e6:.0f} MB, held {row['held_bytes'] / 1e6:.0f} MB), "
          f"peak RSS {rss / 1e6:.0f} MB: "
          f"ratio {row['memory_per_rank_bytes'] / rss:.2f}; without the runtime {task:.2f}")
    fails += not 0.85 <= task <= 1.15
sys.exit(1 if fails else 0)
PY
finish
