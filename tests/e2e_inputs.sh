#!/usr/bin/env bash
# Inputs are checked before any work, each refusal one line and exit 2:
#  - a FIFO given as any input file (config, token shard, binidx, vocabulary, .ckpt, safetensors, state
#    file, state index and its shards, contexts) is refused at once instead of blocking in open();
#  - a config that sets nothing, and a run.out_dir or checkpoint.dir that cannot be made a directory;
#  - run.threads above the cores the process may run on;
#  - stop signals in a run whose steps take seconds: one SIGTERM finishes the step and checkpoints
#    (exit 0), a second one ends the process at once (exit 143) and the last checkpoint stays valid;
#  - the held-out data is checked at start like the training data (token ids, length), a data set
#    tokenized with another tokenizer than data.tokenizer is refused naming both (binidx records none);
#  - on 2 ranks an error that only rank 1 finds is printed (with its rank), a config error once;
#  - a safetensors weights file with a tensor the model does not have is refused naming it.
cd "$(dirname "$0")/.."
. tests/lib.sh inputs
T=(timeout -k 1 20)  # a command that blocks (and catches SIGTERM) fails its check instead of hanging the test

# Fixtures: a small byte-tokenized dataset, a one-step checkpoint of configs/tiny.yaml on it and its
# safetensors export.
for i in $(seq 1 300); do printf 'document %d: some text to train on, line %d.\n%%\n' "$i" "$i"; done >"$TMP/docs.txt"
$BIN prepare-data --split-on % --valid-fraction 0.2 --out "$TMP/data" "$TMP/docs.txt" >/dev/null 2>"$TMP/prep.log" \
  || bad "prepare-data: $(tail -1 "$TMP/prep.log")"
DATA=(--set data.train="$TMP/data/train.bin" --set data.valid="$TMP/data/valid.bin")
FAST=(--set run.threads=1 --set train.steps=1 --set train.eval_batches=1 --set train.ctx_len=16)
$BIN train configs/tiny.yaml "${DATA[@]}" "${FAST[@]}" --set run.out_dir="$TMP/run" >/dev/null 2>"$TMP/run.log" \
  || bad "fixture run: $(tail -1 "$TMP/run.log")"
CKPT="$TMP/run/checkpoints/step-00000001.ckpt"
$BIN export configs/tiny.yaml --checkpoint "$CKPT" --out "$TMP/model.safetensors" >/dev/null 2>"$TMP/export.log" \
  || bad "fixture export: $(tail -1 "$TMP/export.log")"

# 1. FIFOs
mkfifo "$TMP/fifo" "$TMP/fifo.yaml" "$TMP/fifo.bin" "$TMP/bi.bin" "$TMP/bi.idx" "$TMP/fifo.ckpt" \
  "$TMP/fifo.safetensors" "$TMP/fifo.jsonl" "$TMP/states" "$TMP/shard.bin"
FIFO="not a regular file (a FIFO)"
expect_bad_input "config FIFO" "fifo.yaml: $FIFO" "${T[@]}" $BIN train "$TMP/fifo.yaml"
expect_bad_input "data.train FIFO" "fifo.bin: $FIFO" "${T[@]}" $BIN train configs/tiny.yaml "${FAST[@]}" \
  --set data.train="$TMP/fifo.bin" --set run.out_dir="$TMP/r1"
expect_bad_input "data.valid FIFO" "fifo: $FIFO" "${T[@]}" $BIN train configs/tiny.yaml "${DATA[@]}" "${FAST[@]}" \
  --set data.valid="$TMP/fifo" --set run.out_dir="$TMP/r1"
expect_bad_input "binidx FIFOs" "$FIFO" "${T[@]}" $BIN train configs/tiny.yaml "${FAST[@]}" \
  --set data.train="$TMP/bi" --set run.out_dir="$TMP/r1"
expect_bad_input "data.vocab_file FIFO" "fifo: vocab file: $FIFO" "${T[@]}" $BIN prepare-data --tokenizer world \
  --vocab "$TMP/fifo" --out "$TMP/p" "$TMP/docs.txt"
expect_bad_input "eval --checkpoint FIFO (.ckpt)" "fifo.ckpt: $FIFO" "${T[@]}" $BIN eval configs/tiny.yaml "${DATA[@]}" \
  --checkpoint "$TMP/fifo.ckpt"
expect_bad_input "eval --checkpoint FIFO (.safetensors)" "fifo.safetensors: $FIFO" "${T[@]}" $BIN eval configs/tiny.yaml \
  "${DATA[@]}" --checkpoint "$TMP/fifo.safetensors"
expect_bad_input "import --safetensors FIFO" "fifo.safetensors: $FIFO" "${T[@]}" $BIN import configs/tiny.yaml \
  --safetensors "$TMP/fifo.safetensors" --set run.out_dir="$TMP/r2"
expect_bad_input "extract-states --contexts FIFO" "fifo.jsonl: $FIFO" "${T[@]}" $BIN extract-states configs/tiny.yaml \
  --checkpoint "$CKPT" --contexts "$TMP/fifo.jsonl" --out "$TMP/x"
expect_bad_input "generate --state FIFO" "states: $FIFO" "${T[@]}" $BIN generate configs/tiny.yaml --checkpoint "$CKPT" \
  --state "$TMP/states" --max-tokens 1
expect_bad_input "analyze-states on a FIFO index" "fifo: $FIFO" "${T[@]}" $BIN analyze-states "$TMP/fifo" --out "$TMP/a"
sig=$(grep -ao 'rwkv7 L=[^"]*' "$TMP/run/checkpoints/step-00000001.ckpt" | head -1)
printf 'dreamstate-states 1\nmodel %s\nshape L=2 C=128 H=2 N=64 cond_dim=0 flags=0\ncheckpoint c\ncontexts x\ntokenizer byte\nmax_tokens 8\nrecords 1\nlabels 1\nlabel a\nshards 1\nshard shard.bin 1\n' \
  "$sig" >"$TMP/index.txt"
expect_bad_input "a state index listing a FIFO shard" "shard.bin: $FIFO" "${T[@]}" $BIN analyze-states "$TMP/index.txt" \
  --out "$TMP/a"

# 2. configs (the parser's own cases: tests/test_config.c) and run directories
: >"$TMP/empty.yaml"
expect_bad_input "an empty config" "empty.yaml: the config file is empty" $BIN train "$TMP/empty.yaml"
expect_bad_input "run.out_dir under a file" "run.out_dir: $TMP/docs.txt: cannot create directory: a file of" $BIN train \
  configs/tiny.yaml "${DATA[@]}" "${FAST[@]}" --set run.out_dir="$TMP/docs.txt/run"
expect_bad_input "run.out_dir is a file" "run.out_dir: $TMP/docs.txt: cannot create directory: a file of" $BIN train \
  configs/tiny.yaml "${DATA[@]}" "${FAST[@]}" --set run.out_dir="$TMP/docs.txt"
expect_bad_input "checkpoint.dir under a file" "checkpoint.dir: $TMP/docs.txt: cannot create directory" $BIN train configs/tiny.yaml \
  "${DATA[@]}" "${FAST[@]}" --set run.out_dir="$TMP/r3" --set checkpoint.dir="$TMP/docs.txt/ckpt"
expect_bad_input "import into an uncreatable checkpoint.dir" "docs.txt: cannot create directory" $BIN import \
  configs/tiny.yaml --safetensors "$TMP/model.safetensors" --set checkpoint.dir="$TMP/docs.txt/ckpt"

# 3. threads and stop signals
cores=$(nproc)
expect_bad_input "run.threads above the cores" "run.threads $((cores + 1)) exceeds the $cores core(s)" $BIN train \
  configs/tiny.yaml "${DATA[@]}" "${FAST[@]}" --set run.threads=$((cores + 1)) --set run.out_dir="$TMP/r4"
expect_bad_input "run.threads 4096" "run.threads 4096 exceeds" $BIN train configs/tiny.yaml "${DATA[@]}" "${FAST[@]}" \
  --set run.threads=4096 --set run.out_dir="$TMP/r4"
[ ! -e "$TMP/r4" ] && ok "refused before the run directory exists" || bad "$TMP/r4 was made"
SLOW=(configs/tiny.yaml "${DATA[@]}" --set run.threads=1 --set model.n_embd=512 --set model.n_layer=4
      --set train.ctx_len=256 --set train.steps=1000 --set train.eval_every=0 --set checkpoint.every=1)
steps_in() { local n; n=$(grep -c '"step"' "$1" 2>/dev/null); echo "${n:-0}"; }
# run_and_signal NAME SIGNALS...: a slow run; once its first checkpoint is written, each signal 0.3 s
# apart (inside the second step); sets rc, dt (seconds from the last signal to the exit) and n (steps)
run_and_signal() {
  local name=$1; shift
  $BIN train "${SLOW[@]}" --set run.out_dir="$TMP/$name" >/dev/null 2>"$TMP/$name.log" &
  local job=$! t0
  while [ ! -e "$TMP/$name/checkpoints/step-00000001.ckpt" ] && kill -0 $job 2>/dev/null; do sleep 0.05; done
  for s in "$@"; do sleep 0.3; t0=$(date +%s.%N); kill -"$s" $job; done
  wait $job; rc=$?
  dt=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.2f", b-a}')
  n=$(steps_in "$TMP/$name/train.jsonl")
}
run_and_signal once TERM
[ $rc -eq 0 ] && [ -e "$TMP/once/checkpoints/$(printf 'step-%08d.ckpt' "$n")" ] && grep -q "stopped by a signal" "$TMP/once.log" \
  && ok "one SIGTERM: the step finished, checkpoint of step $n, exit 0 after ${dt}s" \
  || bad "one SIGTERM: exit $rc after ${dt}s, $n steps: $(tail -1 "$TMP/once.log")"
run_and_signal twice TERM TERM
last=$(ls "$TMP/twice/checkpoints"/step-*.ckpt | tail -1)
if [ $rc -eq 143 ] && awk -v d="$dt" 'BEGIN{exit !(d < 1.5)}' \
   && [ "$(tail -1 "$TMP/twice.log")" = "dreamstate: interrupted by a second signal inside a step; the last checkpoint is intact" ]; then
  ok "second SIGTERM: exit 143 ${dt}s after it (a step takes seconds): $(tail -1 "$TMP/twice.log")"
else
  bad "second SIGTERM: exit $rc ${dt}s after it: $(tail -1 "$TMP/twice.log")"
fi
$BIN eval "${SLOW[@]}" --set train.eval_batches=1 --checkpoint "$last" >/dev/null 2>"$TMP/eval.log" \
  && ok "the last checkpoint $(basename "$last") is intact" || bad "$(basename "$last"): $(tail -1 "$TMP/eval.log")"
run_and_signal usr1 USR1 USR1
[ $rc -eq 0 ] && [ -e "$TMP/usr1/checkpoints/$(printf 'step-%08d.ckpt' "$n")" ] \
  && ok "SIGUSR1 twice: still finishes the step and checkpoints (step $n), exit 0" || bad "SIGUSR1 twice: exit $rc"

# 4. held-out data, tokenizers, errors on several ranks
/usr/bin/python3 -c "import sys; sys.path.insert(0, 'tests/ref'); import binidx_ref
binidx_ref.write('$TMP/big_ids', [[1 + (i * 7) % 299 for i in range(200)] + [300]])" || bad "binidx fixture"
expect_bad_input "an id beyond the model in data.valid" "big_ids: data vocabulary 301 exceeds model.vocab_size 256" \
  $BIN train configs/tiny.yaml "${DATA[@]}" "${FAST[@]}" --set data.valid="$TMP/big_ids" --set run.out_dir="$TMP/r5"
printf 'hi\n' >"$TMP/short.txt"
$BIN prepare-data --valid-fraction 0 --out "$TMP/short" "$TMP/short.txt" >/dev/null 2>&1 || bad "short fixture"
expect_bad_input "a held-out set shorter than a window" "short/train.bin: 4 tokens of held-out data, fewer than train.ctx_len + 2 = 18" \
  $BIN train configs/tiny.yaml "${DATA[@]}" "${FAST[@]}" --set data.valid="$TMP/short/train.bin" --set run.out_dir="$TMP/r5"
expect_bad_input "a training set shorter than a window" "short/train.bin: 4 tokens of training data" \
  $BIN train configs/tiny.yaml "${DATA[@]}" "${FAST[@]}" --set data.train="$TMP/short/train.bin" --set run.out_dir="$TMP/r5"
[ ! -e "$TMP/r5" ] && ok "refused before the run directory exists" || bad "$TMP/r5 was made"
$BIN prepare-data --tokenizer world --vocab src/data/rwkv_vocab_v20230424.txt --split-on % --valid-fraction 0.2 \
  --out "$TMP/world" "$TMP/docs.txt" >/dev/null 2>&1 || bad "world fixture"
expect_bad_input "world-tokenized held-out data, byte tokenizer" \
  "world/valid.bin: tokenized with world (built-in rwkv_vocab_v20230424.txt), but data.tokenizer is byte" \
  $BIN train configs/tiny.yaml "${DATA[@]}" "${FAST[@]}" --set data.valid="$TMP/world/valid.bin" --set run.out_dir="$TMP/r5"
expect_bad_input "byte-tokenized data, world tokenizer" \
  "data/train.bin: tokenized with byte, but data.tokenizer is world (built-in rwkv_vocab_v20230424.txt)" \
  $BIN train configs/tiny.yaml "${DATA[@]}" "${FAST[@]}" --set data.tokenizer=world --set model.vocab_size=65536 --set run.out_dir="$TMP/r5"
expect_bad_input "eval on data of another tokenizer" "tokenized with world (built-in rwkv_vocab_v20230424.txt), but data.tokenizer is byte" \
  $BIN eval configs/tiny.yaml --set data.valid="$TMP/world/valid.bin" --checkpoint "$CKPT"
$BIN train configs/tiny.yaml "${FAST[@]}" --set data.train="$TMP/big_ids" --set data.valid="$TMP/big_ids" \
  --set data.tokenizer=world --set model.vocab_size=65536 --set model.n_layer=1 --set run.out_dir="$TMP/r6" >/dev/null 2>"$TMP/r6.log" \
  && ok "binidx data (no tokenizer recorded) trains with data.tokenizer world" || bad "binidx + world: $(tail -1 "$TMP/r6.log")"
MPI=(mpirun --oversubscribe)
"${MPI[@]}" -np 1 $BIN train configs/tiny.yaml "${DATA[@]}" "${FAST[@]}" --set run.out_dir="$TMP/r7" \
  : -np 1 $BIN train configs/tiny.yaml "${DATA[@]}" "${FAST[@]}" --set run.out_dir="$TMP/r7" --set data.valid="$TMP/nope.bin" \
  >/dev/null 2>"$TMP/r7.log"; rc=$?
[ $rc -ne 0 ] && grep -qx "dreamstate\[rank 1\]: $TMP/nope.bin: cannot open dataset: No such file or directory" "$TMP/r7.log" \
  && ok "an error only rank 1 finds is printed: $(grep '^dreamstate\[' "$TMP/r7.log")" || bad "rank 1's error: exit $rc: $(head -3 "$TMP/r7.log")"
"${MPI[@]}" -np 2 $BIN train "$TMP/empty.yaml" >/dev/null 2>"$TMP/r8.log"; rc=$?
[ $rc -eq 2 ] && [ "$(grep -c '^dreamstate' "$TMP/r8.log")" -eq 1 ] \
  && ok "a config error on 2 ranks is printed once: $(grep '^dreamstate' "$TMP/r8.log")" || bad "config error on 2 ranks: exit $rc: $(head -3 "$TMP/r8.log")"

# 5. weights with an extra tensor
/usr/bin/python3 - "$TMP/model.safetensors" "$TMP/extra.safetensors" <<'PY' || bad "extra-tensor fixture"
import json, struct, sys
raw = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
header, data = json.loads(raw[8:8 + n]), raw[8 + n:]
header["blocks.0.att.extra"] = {"dtype": "F32", "shape": [1], "data_offsets": [len(data), len(data) + 4]}
text = json.dumps(header).encode()
text += b" " * (-len(text) % 8)
open(sys.argv[2], "wb").write(struct.pack("<Q", len(text)) + text + data + bytes(4))
PY
$BIN eval configs/tiny.yaml "${DATA[@]}" --set train.eval_batches=1 --checkpoint "$TMP/model.safetensors" >/dev/null 2>"$TMP/e.log" \
  && ok "the exported weights evaluate" || bad "exported weights: $(tail -1 "$TMP/e.log")"
expect_bad_input "eval: weights with an extra tensor" "extra.safetensors: unexpected tensor 'blocks.0.att.extra'" \
  $BIN eval configs/tiny.yaml "${DATA[@]}" --checkpoint "$TMP/extra.safetensors"
expect_bad_input "import: weights with an extra tensor" "unexpected tensor 'blocks.0.att.extra'" \
  $BIN import configs/tiny.yaml --safetensors "$TMP/extra.safetensors" --set run.out_dir="$TMP/r9"

finish
