#!/usr/bin/env bash
# Inputs are checked before any work, each refusal one line and exit 2:
#  - a FIFO given as any input file (config, token shard, binidx, vocabulary, .ckpt, safetensors, state
#    file, state index and its shards, contexts) is refused at once instead of blocking in open();
#  - a config that sets nothing, and a run.out_dir or checkpoint.dir that cannot be made a directory;
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

finish
