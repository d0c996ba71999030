#!/usr/bin/env bash
# The command line itself (src/cli/args.c, one parser for every command):
#  - every command prints its usage for --help (exit 0) and refuses an unknown option with one line
#    naming the command and the option, exit 2;
#  - '--flag=value' and '--flag value' give the same result (prepare-data, build-contexts, plan);
#  - prepare-data's bad command lines exit 2 with one line and leave no files;
#  - the layering rule: only src/cli reads argv, and no public header declares a *_main function.
cd "$(dirname "$0")/.."
. tests/lib.sh cli

commands=(train eval prepare-data export import build-contexts extract-states analyze-states generate sample-state
          interpolate-state edit-state eval-states plan config-help)

# 1. --help and unknown options, every command
for c in "${commands[@]}"; do
  if $BIN "$c" --help >"$TMP/help" 2>"$TMP/err" && grep -q "^usage: dreamstate $c" "$TMP/help" && [ ! -s "$TMP/err" ]; then
    ok "$c --help"
  else
    bad "$c --help: $(head -c 300 "$TMP/err")"
  fi
  expect_bad_input "$c --frobnicate" "$c: unknown option '--frobnicate' (see --help)" $BIN "$c" --frobnicate
  expect_bad_input "$c --frobnicate=1" "$c: unknown option '--frobnicate' (see --help)" $BIN "$c" --frobnicate=1
done
$BIN --help | grep -q "'--flag=value'" && ok "dreamstate --help names both option forms" || bad "dreamstate --help"
expect_bad_input "a switch given a value" "plan: --json takes no value" $BIN plan configs/tiny.yaml --nodes 1 --json=yes
expect_bad_input "--set without a value" "train: --set needs section.key=value" $BIN train configs/tiny.yaml --set
expect_bad_input "a second config file" "eval: more than one config file ('configs/tiny.yaml', 'x.yaml')" \
  $BIN eval configs/tiny.yaml x.yaml --checkpoint c.ckpt
expect_bad_input "--set=k=v reaches the config" "train.steps" $BIN plan configs/tiny.yaml --nodes 1 --set=train.steps=-1

# 2. both option forms
mkdir -p "$TMP/in"
for i in $(seq 1 40); do printf 'document %d\nsecond line %d\n%%\n' "$i" "$i"; done >"$TMP/in/a.txt"
$BIN prepare-data --split-on % --valid-fraction 0.3 --seed 42 --out "$TMP/p1" "$TMP/in" >"$TMP/p1.log" 2>&1 \
  && $BIN prepare-data --split-on=% --valid-fraction=0.3 --seed=42 --out="$TMP/p2" "$TMP/in" >"$TMP/p2.log" 2>&1 \
  && cmp -s "$TMP/p1/train.bin" "$TMP/p2/train.bin" && cmp -s "$TMP/p1/valid.bin" "$TMP/p2/valid.bin" \
  && [ -s "$TMP/p1/valid.bin" ] && ok "prepare-data: --flag=value gives the same shards" \
  || bad "prepare-data --flag=value: $(tail -2 "$TMP/p2.log")"
$BIN prepare-data --out "$TMP/p3" -- "$TMP/in/a.txt" >/dev/null 2>&1 && [ -s "$TMP/p3/train.bin" ] \
  && ok "prepare-data: '--' ends the options" || bad "prepare-data with '--'"
if [ -d /usr/share/common-licenses ]; then
  $BIN build-contexts --sources licenses --max-per-label 6 --min-bytes 40 --max-bytes 200 --seed 3 \
    --out "$TMP/c1.jsonl" >/dev/null 2>&1 \
    && $BIN build-contexts --sources=licenses --max-per-label=6 --min-bytes=40 --max-bytes=200 --seed=3 \
      --out="$TMP/c2.jsonl" >/dev/null 2>&1 \
    && cmp -s "$TMP/c1.jsonl" "$TMP/c2.jsonl" && [ -s "$TMP/c1.jsonl" ] \
    && ok "build-contexts: --flag=value gives the same contexts" || bad "build-contexts --flag=value"
fi
$BIN plan configs/tiny.yaml --nodes 1,2 --nodes 4 --threads 1 --bandwidth 5 --node-memory 64 --json >"$TMP/plan1" 2>&1 \
  && $BIN plan configs/tiny.yaml --nodes=1,2 --nodes=4 --threads=1 --bandwidth=5 --node-memory=64 --json >"$TMP/plan2" 2>&1 \
  && cmp -s "$TMP/plan1" "$TMP/plan2" && grep -q '"inter_gbps":5' "$TMP/plan1" \
  && ok "plan: --flag=value gives the same prediction" || bad "plan --flag=value: $(head -c 300 "$TMP/plan2")"
expect_bad_input "a value parsed strictly in both forms" "generate: --top-p '0.5x' is not a number" \
  $BIN generate configs/tiny.yaml --checkpoint x.ckpt --top-p=0.5x

# 3. prepare-data's command line (its library part: test_data)
expect_bad_input "prepare-data unknown option" "prepare-data: unknown option '--frobnicate'" \
  $BIN prepare-data --frobnicate --out "$TMP/p5" "$TMP/in"
expect_bad_input "prepare-data without --out" "prepare-data: --out DIR is required" $BIN prepare-data "$TMP/in"
expect_bad_input "prepare-data fraction 1.5" "--valid-fraction '1.5' must be a number in [0, 1)" \
  $BIN prepare-data --valid-fraction 1.5 --out "$TMP/p5" "$TMP/in"
expect_bad_input "prepare-data --out without a value" "--out needs a value" $BIN prepare-data --out
expect_bad_input "prepare-data without INPUT" "prepare-data: no INPUT given" $BIN prepare-data --out "$TMP/p5"
expect_bad_input "prepare-data unknown format" "prepare-data: unknown --format 'arrow' (shards or binidx)" \
  $BIN prepare-data --format=arrow --out "$TMP/p5" "$TMP/in"
[ ! -e "$TMP/p5" ] && ok "refused prepare-data runs left no files" || bad "a refused prepare-data run wrote $TMP/p5"

# 4. layering: argv is read in src/cli only, and no public header declares a command's main
argv_users=$(grep -rlwE 'argv|argc' src --include='*.c' --include='*.h' | grep -v '^src/cli/')
[ -z "$argv_users" ] && ok "no file outside src/cli reads argv" || bad "argv outside src/cli: $argv_users"
mains=$(grep -rnE '\b[A-Za-z0-9_]+_main[[:space:]]*\(' include)
[ -z "$mains" ] && ok "no header under include/ declares a *_main function" || bad "*_main declared: $mains"
[ "$(grep -rlE '^int main[[:space:]]*\(' src)" = "src/cli/main.c" ] && ok "src/cli/main.c is the only main" \
  || bad "main() outside src/cli/main.c: $(grep -rlE '^int main' src)"

finish
