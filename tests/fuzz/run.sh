#!/usr/bin/env bash
# Runs the fuzzing harnesses (build/fuzz/fuzz_*, `make fuzz-build`) one after another, each for
# SECONDS on its working corpus WORK/corpus-NAME (the seeds of tests/fuzz/corpus/NAME copied in, what
# earlier runs found kept), and prints a table of executions per harness. A finding (crash, UBSan
# report, timeout, out-of-memory, leak, a property a harness checks) is saved as
# WORK/findings/NAME-* and fails the run (exit 1), after the other harnesses have run.
#
#   tests/fuzz/run.sh SECONDS [NAME...]     NAME: config, ckpt, ... (default: every harness)
#   FUZZ_WORK=DIR                           working directory (default build/fuzz)
set -u
cd "$(dirname "$0")/../.."
seconds=${1:?usage: tests/fuzz/run.sh SECONDS [NAME...]}
shift
work=${FUZZ_WORK:-build/fuzz}
names=("$@")
if [ ${#names[@]} -eq 0 ]; then
  for bin in build/fuzz/fuzz_*; do [ -x "$bin" ] && names+=("${bin#build/fuzz/fuzz_}"); done
fi
[ ${#names[@]} -gt 0 ] || { echo "fuzz: no harnesses in build/fuzz; run 'make fuzz-build'" >&2; exit 2; }
mkdir -p "$work/findings" "$work/logs"
failed=0
rows=()
for name in "${names[@]}"; do
  bin=build/fuzz/fuzz_$name corpus=$work/corpus-$name log=$work/logs/$name.log
  [ -x "$bin" ] || { echo "fuzz: $bin missing; run 'make fuzz-build'" >&2; exit 2; }
  mkdir -p "$corpus"
  cp -n tests/fuzz/corpus/"$name"/* "$corpus"/ 2>/dev/null
  echo "fuzz: $name for ${seconds}s (log: $log)"
  # -close_fd_mask=1: prepare-data's report on stdout; leaks are findings (fuzz.c frees what a die leaves)
  "$bin" -max_total_time="$seconds" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 -close_fd_mask=1 \
    -artifact_prefix="$work/findings/$name-" "$corpus" >"$log" 2>&1
  rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1)
  if [ "$rc" -eq 0 ]; then
    result=ok
  else
    failed=1
    artifact=$(sed -n 's/.*Test unit written to //p' "$log" | tail -1)
    what=$(grep -m1 -E '^(==[0-9]+==ERROR|fuzz:|SUMMARY|.*runtime error)' "$log" | cut -c1-150)
    result="FINDING (exit $rc): $what $artifact"
  fi
  rows+=("$(printf '%-12s %12s %8s %10s  %s' "$name" "${execs:-?}" "${rate:-?}" "${cov:-cov: ?}" "$result")")
done
printf '\n%-12s %12s %8s %10s  %s\n' harness executions exec/s coverage result
printf '%s\n' "${rows[@]}"
exit $failed
