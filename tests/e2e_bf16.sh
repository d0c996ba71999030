#!/usr/bin/env bash
# `train.precision: bf16` end to end (lm task, default corpus, tiny model, one thread per rank):
#  - the log names the bf16 products and MFU's bf16 peak; the loss falls as in fp32 (final loss within 2%
#    of the fp32 run's) while the curves differ (bf16 really is on);
#  - SIGKILL at a random step, then `train` again: the resumed run's losses equal an uninterrupted bf16
#    run's exactly; the checkpoints hold fp32 weights and moments (the size of the fp32 run's) and evaluate;
#  - 1, 2 and 4 ranks (train.micro_batch fixed, fp64 reduce), and 2 ranks with ZeRO-1: the same loss
#    curve, and ZeRO-1 writes the 1-rank checkpoint byte for byte;
#  - DS_BF16_BACKEND=reference (what a CPU without AVX512_BF16 runs): the same rounding of the product
#    operands through BLIS; its curve stays within 1% of oneDNN's; an unknown DS_BF16_BACKEND exits 2.
cd "$(dirname "$0")/.."
. tests/lib.sh bf16
MPI=(mpirun --oversubscribe -np)
losses() { grep -o '"step":[0-9]*,"loss":[0-9.e+-]*' "$1"; }
steps_in() { local n; n=$(grep -c '"step"' "$1" 2>/dev/null); echo "${n:-0}"; }
ONE=(--set run.threads=1 --set train.micro_batch=2 --set train.eval_every=0 --set train.log_every=20)
BF16=(--set train.precision=bf16)

# 1. fp32 and bf16, 60 steps
$BIN train configs/tiny.yaml "${ONE[@]}" --set train.steps=60 --set run.out_dir="$TMP/fp32" 2>"$TMP/fp32.log" \
  || bad "fp32 run: $(tail -1 "$TMP/fp32.log")"
$BIN train configs/tiny.yaml "${ONE[@]}" "${BF16[@]}" --set train.steps=60 --set checkpoint.every=10 \
  --set run.out_dir="$TMP/a" 2>"$TMP/a.log" || bad "bf16 run: $(tail -1 "$TMP/a.log")"
grep -q 'matrix products: bf16' "$TMP/a.log" && grep -q 'measured bf16 peak' "$TMP/a.log" \
  && ok "bf16 run: $(grep -o 'matrix products: .*' "$TMP/a.log"); $(grep -o 'measured bf16 peak [0-9]* GFLOP/s' "$TMP/a.log")" \
  || bad "bf16 run: the log does not name bf16 products and peak: $(head -8 "$TMP/a.log")"
/usr/bin/python3 - "$TMP" <<'PY' && ok "bf16 trains like fp32" || bad "bf16 and fp32 curves"
import json, sys
runs = {r: [json.loads(l)['loss'] for l in open(f'{sys.argv[1]}/{r}/train.jsonl')] for r in ('fp32', 'a')}
a, b = runs['fp32'], runs['a']
differ = max(abs(x - y) / x for x, y in zip(a, b))
print(f'  final loss fp32 {a[-1]:.4f}, bf16 {b[-1]:.4f} (first {a[0]:.4f}); curves differ by up to {differ:.3g}')
sys.exit(0 if len(a) == len(b) == 60 and abs(b[-1] - a[-1]) <= 0.02 * a[-1] and b[-1] < a[0] - 0.5 and differ > 1e-6 else 1)
PY

# 2. SIGKILL at a random step, resume: the same losses exactly; fp32 checkpoints
kill_at=$(( 15 + RANDOM % 35 ))
$BIN train configs/tiny.yaml "${ONE[@]}" "${BF16[@]}" --set train.steps=60 --set checkpoint.every=10 \
  --set run.out_dir="$TMP/b" 2>"$TMP/b1.log" &
pid=$!
while kill -0 $pid 2>/dev/null && [ "$(steps_in "$TMP/b/train.jsonl")" -lt $kill_at ]; do
  sleep 0.02
done
kill -9 $pid 2>/dev/null; wait $pid 2>/dev/null
killed_after=$(steps_in "$TMP/b/train.jsonl")
$BIN train configs/tiny.yaml "${ONE[@]}" "${BF16[@]}" --set train.steps=60 --set checkpoint.every=10 \
  --set run.out_dir="$TMP/b" 2>"$TMP/b2.log"
grep -q 'resumed from' "$TMP/b2.log" && diff <(losses "$TMP/a/train.jsonl") <(losses "$TMP/b/train.jsonl") >/dev/null \
  && ok "bf16: killed after step $killed_after, resumed ($(grep -o 'resumed from.*' "$TMP/b2.log" | sed "s|$TMP/||")): 60 losses equal the uninterrupted run's" \
  || bad "bf16 resume: $(grep -o 'resumed from.*' "$TMP/b2.log"); $(diff <(losses "$TMP/a/train.jsonl") <(losses "$TMP/b/train.jsonl") | head -3)"
# the .ckpt container holds fp32 tensors only (checkpoint.h): the same size as the fp32 run's, and it evaluates
ca=$TMP/a/checkpoints/step-00000060.ckpt cf=$TMP/fp32/checkpoints/step-00000060.ckpt
[ "$(stat -c %s "$ca")" = "$(stat -c %s "$cf")" ] && $BIN eval configs/tiny.yaml --checkpoint "$ca" --set run.threads=1 \
  >"$TMP/eval.txt" 2>&1 && ok "bf16 checkpoint: fp32 weights and moments ($(stat -c %s "$ca") bytes, as fp32's), evaluates: $(tail -1 "$TMP/eval.txt")" \
  || bad "bf16 checkpoint: $(stat -c %s "$ca") vs $(stat -c %s "$cf") bytes; $(tail -1 "$TMP/eval.txt")"

# 3. 1, 2 and 4 ranks, and 2 with ZeRO-1
for n in 1 2 4; do
  "${MPI[@]}" $n $BIN train configs/tiny.yaml "${ONE[@]}" "${BF16[@]}" --set train.steps=30 --set run.out_dir="$TMP/r$n" \
    2>"$TMP/r$n.log" || bad "$n ranks: exit $? ($(tail -1 "$TMP/r$n.log"))"
done
"${MPI[@]}" 2 $BIN train configs/tiny.yaml "${ONE[@]}" "${BF16[@]}" --set train.steps=30 --set train.zero_stage=1 \
  --set run.out_dir="$TMP/z2" 2>"$TMP/z2.log" || bad "2 ranks ZeRO-1: exit $?"
same=1
for r in r2 r4 z2; do diff <(losses "$TMP/r1/train.jsonl") <(losses "$TMP/$r/train.jsonl") >/dev/null || same=0; done
[ $same = 1 ] && [ "$(losses "$TMP/r1/train.jsonl" | wc -l)" = 30 ] \
  && ok "bf16: 1, 2, 4 ranks and 2 with ZeRO-1: the same 30 losses (final $(losses "$TMP/r1/train.jsonl" | tail -1))" \
  || bad "bf16: loss curves differ between rank counts"
cmp -s "$TMP/r1/checkpoints/step-00000030.ckpt" "$TMP/z2/checkpoints/step-00000030.ckpt" \
  && ok "bf16: ZeRO-1 on 2 ranks writes the 1-rank checkpoint byte for byte" || bad "bf16: ZeRO-1 checkpoint differs"

# 4. the reference path, as on a CPU without bf16 instructions; a bad backend name
DS_BF16_BACKEND=reference $BIN train configs/tiny.yaml "${ONE[@]}" "${BF16[@]}" --set train.steps=30 \
  --set run.out_dir="$TMP/ref" 2>"$TMP/ref.log" || bad "reference backend: exit $? ($(tail -1 "$TMP/ref.log"))"
grep -q 'matrix products: bf16, reference' "$TMP/ref.log" || bad "reference backend not in the log: $(grep -o 'matrix products.*' "$TMP/ref.log")"
/usr/bin/python3 - "$TMP" <<'PY' && ok "DS_BF16_BACKEND=reference: the curve of oneDNN's bf16 to 1%" || bad "reference and oneDNN curves differ"
import json, sys
a, b = ([json.loads(l)['loss'] for l in open(f'{sys.argv[1]}/{r}/train.jsonl')] for r in ('r1', 'ref'))
worst = max(abs(x - y) / x for x, y in zip(a, b))
print(f'  max relative difference over 30 steps {worst:.3g} (final {a[-1]:.4f} vs {b[-1]:.4f})')
sys.exit(0 if len(a) == len(b) == 30 and worst <= 0.01 else 1)
PY
DS_BF16_BACKEND=fast expect_bad_input "unknown DS_BF16_BACKEND" "DS_BF16_BACKEND=fast: use onednn, reference" \
  $BIN train configs/tiny.yaml "${ONE[@]}" "${BF16[@]}" --set train.steps=1 --set run.out_dir="$TMP/bad"
finish
