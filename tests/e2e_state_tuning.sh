#!/usr/bin/env bash
# run.task state_tuning end to end (src/rwkv7/README.md §3.4; the gradient itself is checked against
# PyTorch by tests/ref/test_state_tuning_torch.py): a tiny RWKV-7 (80 steps), labelled contexts with a
# held-out split, then per-label state tuning of its frozen weights:
#  - 1 and 2 MPI ranks give the same train.jsonl (losses, gradient norms, held-out losses) byte for
#    byte, the same final checkpoint and the same tuned states;
#  - resumed from the step-10 checkpoint, a run logs the same steps 11-30 and ends with the same states;
#  - with train.grad_checkpoint (blocks recomputed in the frozen backward) the same log and states;
#  - the tuned states beat the zero state on the held-out contexts, and differ between labels;
#  - OUT/states/: a state dataset of one record per label (WKV = the label's set, token shifts zero,
#    context -1) and RWKV-PEFT state files with the same WKV states; with per_label false every label's
#    record is the one shared set;
#  - bad input (no state_tuning.init, a held-out label the train contexts lack) exits 2 with one line.
cd "$(dirname "$0")/.."
. tests/lib.sh state-tuning
PY=/usr/bin/python3

$BIN train configs/tiny.yaml --set train.steps=80 --set train.eval_every=0 --set checkpoint.every=80 \
  --set run.threads=1 --set run.out_dir="$TMP/lm" >/dev/null 2>"$TMP/lm.log" || bad "tiny RWKV-7: $(tail -2 "$TMP/lm.log")"
CKPT=$(ls "$TMP"/lm/checkpoints/*.ckpt 2>/dev/null | tail -1)
$BIN build-contexts --out "$TMP/train.jsonl" --held-out "$TMP/held.jsonl" --sources c-headers,python,licenses \
  --max-per-label 16 --min-bytes 384 --max-bytes 512 >"$TMP/build.log" 2>&1 || bad "build-contexts: $(tail -2 "$TMP/build.log")"
TUNE=(train configs/tiny-state-tuning.yaml --set run.threads=1 --set state_tuning.init="$CKPT"
      --set state_tuning.contexts="$TMP/train.jsonl" --set state_tuning.contexts_valid="$TMP/held.jsonl"
      --set state_tuning.skip_tokens=64 --set train.ctx_len=63 --set train.batch_size=8 --set train.micro_batch=2
      --set train.steps=30 --set train.eval_every=10 --set checkpoint.every=10 --set checkpoint.keep=5
      --set train.log_every=10)
$BIN "${TUNE[@]}" --set run.out_dir="$TMP/r1" 2>"$TMP/r1.log" && ok "1 rank: $(grep '^done' "$TMP/r1.log")" \
  || bad "1 rank: $(tail -2 "$TMP/r1.log")"
mpirun --oversubscribe -np 2 $BIN "${TUNE[@]}" --set run.out_dir="$TMP/r2" 2>"$TMP/r2.log" \
  && ok "2 ranks: $(grep '^done' "$TMP/r2.log")" || bad "2 ranks: $(tail -2 "$TMP/r2.log")"
grep -E "^  (contexts|held-out)" "$TMP/r1.log"
# the step-10 checkpoint of the 1-rank run, resumed in a fresh directory on 2 ranks
mkdir -p "$TMP/r3/checkpoints" && cp "$TMP/r1/checkpoints/step-00000010.ckpt" "$TMP/r3/checkpoints/"
mpirun --oversubscribe -np 2 $BIN "${TUNE[@]}" --set run.out_dir="$TMP/r3" 2>"$TMP/r3.log" \
  && grep -q "resumed from .*step-00000010.ckpt" "$TMP/r3.log" && ok "resumed at step 10 on 2 ranks" \
  || bad "resume: $(tail -2 "$TMP/r3.log")"

strip() { sed -E 's/,"(tokens_per_s|mfu|comm_wait_s)":[^,}]*//g' "$1"; }
[ "$(strip "$TMP/r1/train.jsonl")" = "$(strip "$TMP/r2/train.jsonl")" ] && [ "$(wc -l <"$TMP/r1/train.jsonl")" -eq 30 ] \
  && ok "1 vs 2 ranks: the same 30 log lines (loss, grad_norm, val_loss, zero_state_val_loss) byte for byte" \
  || bad "1 vs 2 ranks: train.jsonl differs"
[ "$(strip "$TMP/r1/train.jsonl" | tail -20)" = "$(strip "$TMP/r3/train.jsonl")" ] \
  && ok "resumed run: steps 11-30 logged byte for byte as the uninterrupted run" || bad "resumed run: train.jsonl differs"
same=1
for f in checkpoints/step-00000030.ckpt states/index.txt states/states-r00000-of-00001.bin states/c-header.safetensors \
         states/python.safetensors states/license.safetensors; do
  for r in r2 r3; do cmp -s "$TMP/r1/$f" "$TMP/$r/$f" || { same=0; echo "  $r/$f differs"; }; done
done
[ $same = 1 ] && ok "1 rank, 2 ranks and the resumed run: the same final checkpoint, state dataset and state files" \
  || bad "final checkpoints or tuned states differ"
$BIN "${TUNE[@]}" --set train.grad_checkpoint=true --set run.out_dir="$TMP/cp" 2>"$TMP/cp.log" \
  || bad "train.grad_checkpoint: $(tail -2 "$TMP/cp.log")"
[ "$(strip "$TMP/r1/train.jsonl")" = "$(strip "$TMP/cp/train.jsonl")" ] \
  && cmp -s "$TMP/r1/states/states-r00000-of-00001.bin" "$TMP/cp/states/states-r00000-of-00001.bin" \
  && ok "train.grad_checkpoint: the same 30 log lines and tuned states byte for byte" \
  || bad "train.grad_checkpoint changes state tuning"

$PY - "$TMP/r1" <<'PY' && ok "tuned states beat the zero state on held-out contexts; OUT/states/ holds them (dataset = state files)" \
  || bad "tuned states"
import json, struct, sys
import numpy as np
sys.path.insert(0, 'tests/ref')
import testlib
out = sys.argv[1]
log = [json.loads(l) for l in open(f'{out}/train.jsonl')]
zero, tuned = log[-1]['zero_state_val_loss'], log[-1]['val_loss']
print(f'  held-out CE: zero state {zero:.4f}, tuned {tuned:.4f} (step 10: {log[9]["val_loss"]:.4f})')
assert tuned < zero - 0.005, 'tuning does not lower the held-out loss'
index = open(f'{out}/states/index.txt').read().splitlines()
labels = [l.split()[1] for l in index if l.startswith('label ')]
assert labels == ['c-header', 'license', 'python'] and 'records 3' in index, index
raw = open(f'{out}/states/states-r00000-of-00001.bin', 'rb').read()
_, _, L, C, H, N, cond_dim, _, _, n, rb = struct.unpack_from('<8s8IQQ', raw, 0)
assert n == 3 and cond_dim == 0
wkv = []
for i in range(n):
    rec = raw[64 + i * rb: 64 + (i + 1) * rb]
    label, context = struct.unpack_from('<ii', rec, 0)
    st = np.frombuffer(rec, dtype='<f4', offset=8).reshape(L, 2 * C + H * N * N)
    assert label == i and context == -1, (label, context)
    assert not st[:, :C].any() and not st[:, C + H * N * N:].any(), 'token-shift parts must be zero'
    w = st[:, C:C + H * N * N].reshape(L, H, N, N)
    f = testlib.read_safetensors(f'{out}/states/{labels[i]}.safetensors')
    assert sorted(f) == [f'blocks.{l}.att.time_state' for l in range(L)]
    for l in range(L):
        assert np.array_equal(f[f'blocks.{l}.att.time_state'], w[l]), (labels[i], l)
    wkv.append(w)
assert all(np.abs(w).max() > 0 for w in wkv), 'a set was not trained'
assert not np.array_equal(wkv[0], wkv[1]) and not np.array_equal(wkv[1], wkv[2]), 'labels share states'
PY

$BIN "${TUNE[@]}" --set state_tuning.per_label=false --set train.steps=5 --set train.eval_every=0 \
  --set run.out_dir="$TMP/shared" 2>"$TMP/shared.log" || bad "per_label false: $(tail -2 "$TMP/shared.log")"
$PY - "$TMP/shared" <<'PY' && ok "per_label false: one shared set, every label's record is it (shared.safetensors)" \
  || bad "per_label false"
import os, struct, sys
out = sys.argv[1]
assert sorted(f for f in os.listdir(f'{out}/states') if f.endswith('.safetensors')) == ['shared.safetensors']
raw = open(f'{out}/states/states-r00000-of-00001.bin', 'rb').read()
n, rb = struct.unpack_from('<QQ', raw, 40)
recs = [raw[64 + i * rb + 8: 64 + (i + 1) * rb] for i in range(n)]
assert n == 3 and recs[0] == recs[1] == recs[2] and any(recs[0]), n
PY

grep -v '"label": *"python"' "$TMP/train.jsonl" >"$TMP/two-labels.jsonl"
expect_bad_input "no state_tuning.init" "state_tuning.init: run.task state_tuning tunes" \
  $BIN train configs/tiny-state-tuning.yaml --set run.out_dir="$TMP/bad1" --set state_tuning.contexts="$TMP/train.jsonl"
expect_bad_input "a held-out label the train contexts lack" "unknown label 'python'" \
  $BIN "${TUNE[@]}" --set run.out_dir="$TMP/bad2" --set state_tuning.contexts="$TMP/two-labels.jsonl"
expect_bad_input "per_label not a boolean" "expected true or false, got 'yes'" \
  $BIN "${TUNE[@]}" --set run.out_dir="$TMP/bad3" --set state_tuning.per_label=yes
finish
