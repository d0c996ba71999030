#!/usr/bin/env bash
# Runs every test program: C unit tests (build/tests/test_*), PyTorch reference tests
# (tests/ref/test_*.py, with Debian's /usr/bin/python3), the module layering check
# (tests/check_layers.py) and end-to-end CLI tests (tests/e2e_*.sh).
# Each program is one test; the last line is "N passed, N failed".
# TESTS=pattern restricts to programs whose name contains the pattern.
set -u
cd "$(dirname "$0")/.."
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
PY=/usr/bin/python3
pass=0; fail=0; failed=()
logdir=build/test-logs; mkdir -p "$logdir"
run_one() {
  local name=$1; shift
  case "$name" in *"${TESTS:-}"*) ;; *) return ;; esac
  local t0=$(date +%s.%N)
  if "$@" >"$logdir/$name.log" 2>&1; then
    pass=$((pass+1)); printf 'ok    %-40s %6.1fs  %s\n' "$name" "$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{print b-a}')" "$(tail -n1 "$logdir/$name.log")"
  else
    fail=$((fail+1)); failed+=("$name")
    printf 'FAIL  %-40s (log: %s)\n' "$name" "$logdir/$name.log"; tail -n 20 "$logdir/$name.log" | sed 's/^/      /'
  fi
}
for t in build/tests/test_*; do [ -x "$t" ] && run_one "$(basename "$t")" "$t"; done
for t in tests/ref/test_*.py; do [ -f "$t" ] && run_one "$(basename "$t")" $PY "$t"; done
run_one check_layers.py $PY tests/check_layers.py --self-test
for t in tests/e2e_*.sh; do [ -f "$t" ] && run_one "$(basename "$t")" bash "$t"; done
[ ${#failed[@]} -gt 0 ] && echo "failed: ${failed[*]}"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
