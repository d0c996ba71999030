#!/usr/bin/env bash
# Nothing lost, ever: what a run directory holds survives runs that go wrong.
#  1. a checkpoint whose step= disagrees with its file name is refused; weights of an imported (step-0)
#     checkpoint reach every rank: 2 ranks train exactly as 1.
cd "$(dirname "$0")/.."
. tests/lib.sh safety
TINY=(configs/tiny.yaml --set run.threads=1 --set train.eval_every=0 --set train.eval_batches=1 --set train.log_every=100)

# a model to bring in
$BIN train "${TINY[@]}" --set train.steps=10 --set checkpoint.every=5 --set run.out_dir="$TMP/good" 2>"$TMP/good.log" \
  || bad "training a model to import: $(tail -2 "$TMP/good.log")"
$BIN export "${TINY[@]}" --checkpoint "$TMP/good/checkpoints/step-00000010.ckpt" --out "$TMP/good.safetensors" >/dev/null

# 1. step= metadata; imported weights on every rank
cp -r "$TMP/good" "$TMP/renamed"
mv "$TMP/renamed/checkpoints/step-00000010.ckpt" "$TMP/renamed/checkpoints/step-00000012.ckpt"
$BIN train "${TINY[@]}" --set train.steps=20 --set run.out_dir="$TMP/renamed" >/dev/null 2>"$TMP/err"
rc=$?
[ $rc -eq 2 ] && grep -q 'step-00000012.ckpt: checkpoint metadata step=10 does not match the file name (step 12)' "$TMP/err" \
  && ok "a checkpoint whose step= is not its file name's is refused: $(tail -1 "$TMP/err")" \
  || bad "renamed checkpoint: exit $rc: $(tail -1 "$TMP/err")"

RANKS=(--set train.micro_batch=2 --set train.steps=2)
for n in 1 2; do
  $BIN import "${TINY[@]}" "${RANKS[@]}" --set run.out_dir="$TMP/i$n" --safetensors "$TMP/good.safetensors" >/dev/null \
    && mpirun --oversubscribe -np $n $BIN train "${TINY[@]}" "${RANKS[@]}" --set run.out_dir="$TMP/i$n" 2>"$TMP/i$n.log" \
    || bad "import + train on $n rank(s): $(tail -2 "$TMP/i$n.log")"
done
l1=$(grep -o '"loss":[0-9.]*' "$TMP/i1/train.jsonl" | tr '\n' ' ')
l2=$(grep -o '"loss":[0-9.]*' "$TMP/i2/train.jsonl" | tr '\n' ' ')
good_loss=$(grep -o '"loss":[0-9.]*' "$TMP/good/train.jsonl" | tail -1 | cut -d: -f2)
[ -n "$l1" ] && [ "$l1" = "$l2" ] && awk -v a="$(cut -d' ' -f1 <<<"$l1" | cut -d: -f2)" -v g="$good_loss" 'BEGIN{exit !(a < g + 0.5)}' \
  && ok "imported (step-0) weights on 1 and 2 ranks: the same losses ($l1), those of the trained model" \
  || bad "imported weights on 2 ranks: 1 rank $l1, 2 ranks $l2 (the trained model ended at $good_loss)"

finish
