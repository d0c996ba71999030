# Shared by the end-to-end scripts (tests/e2e_*.sh): after `cd` to the repository root,
# `. tests/lib.sh NAME` sets BIN, a temporary directory TMP (removed at exit unless KEEP=1 is set),
# Open MPI's permission to run as root, the ok/bad counters and:
#   expect_bad_input WHAT TEXT CMD...   CMD must exit 2 with one line on stderr that contains TEXT
#   finish                              prints "N passed, N failed"; status 0 only without failures
set -u
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
BIN=bin/dreamstate
TMP=$(mktemp -d "/tmp/ds-$1.XXXXXX")
trap '[ -n "${KEEP:-}" ] || rm -rf "$TMP"' EXIT
pass=0; fail=0
ok() { pass=$((pass+1)); echo "ok   $*"; }
bad() { fail=$((fail+1)); echo "FAIL $*"; }
expect_bad_input() {
  local what=$1 text=$2; shift 2
  "$@" >/dev/null 2>"$TMP/err"; local rc=$?
  if [ $rc -eq 2 ] && [ "$(wc -l <"$TMP/err")" -eq 1 ] && grep -qF -- "$text" "$TMP/err"; then ok "$what: $(cat "$TMP/err")"
  else bad "$what: exit $rc: $(cat "$TMP/err")"; fi
}
finish() {
  echo "$pass passed, $fail failed"
  [ "$fail" -eq 0 ]
}
