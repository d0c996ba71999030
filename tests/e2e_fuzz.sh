#!/usr/bin/env bash
# The fuzzing harnesses' short pass (tests/fuzz/README.md): builds them with clang under ASan + UBSan
# (`make fuzz-build`) and runs each for a few seconds, about half a minute in all, on a fresh copy of its
# seed corpus, whose regression seeds replay every earlier finding. Any finding (a crash, a UBSan
# report, a timeout, a leak, an exit code other than 2 or a message of more than one line for bad
# input, a property a harness checks) fails it. Without clang and its libFuzzer runtime it fails,
# saying to run `make deps`.
cd "$(dirname "$0")/.."
. tests/lib.sh fuzz
if ! command -v clang >/dev/null; then
  bad "clang not found: the fuzzing harnesses need clang and libFuzzer; run 'make deps'"; finish; exit 1
fi
if ! make -j2 fuzz-build >"$TMP/build.log" 2>&1; then
  tail -5 "$TMP/build.log"; bad "make fuzz-build"; finish; exit 1
fi
harnesses=(build/fuzz/fuzz_*)
seconds=$(( 30 / ${#harnesses[@]} )); [ "$seconds" -ge 3 ] || seconds=3
FUZZ_WORK="$TMP" tests/fuzz/run.sh "$seconds" >"$TMP/run.log" 2>&1
sed -n '/^harness /,$p' "$TMP/run.log"
while read -r name execs rate _ _ result; do
  if [ "$result" = ok ] && [ "$execs" -gt 0 ] 2>/dev/null; then ok "fuzz_$name: $execs executions in ${seconds}s"
  else bad "fuzz_$name: $execs executions: $result (log: kept in $TMP/logs/$name.log with KEEP=1)"; fi
done < <(sed -n '/^harness /,$p' "$TMP/run.log" | tail -n +2)
[ -n "$(sed -n '/^harness /,$p' "$TMP/run.log")" ] || { cat "$TMP/run.log"; bad "tests/fuzz/run.sh printed no table"; }
finish
