#!/usr/bin/env bash
# DREAMSTATE part A end to end on pinned Debian text, over MPI:
#   1. labelled contexts from Debian text (C headers, Python, shell, licences, man pages: the files
#      configs/text-manifest.tsv pins), split by document into train / held-out -> OUT/contexts
#   2. a tiny RWKV-7 (configs/tiny.yaml) trained on the train documents of those domains -> OUT/lm;
#      or, with --model FILE, the user's RWKV-7 (official .pth or .safetensors, World tokenizer, shape
#      read from the file; configs/from-weights.yaml) instead
#   3. the final state of every context (extract-states)               -> OUT/states-{train,held}
#   4. tuned states: RWKV-PEFT state tuning of the frozen RWKV-7, one set per label, on the same train
#      contexts (run.task state_tuning, configs/tiny-state-tuning.yaml) -> OUT/tuned/states
#   5. the state DiT (run.task state_diffusion, configs/tiny-states.yaml) -> OUT/dit
#   6. one sampled state per label (sample-state)                      -> OUT/samples
#   7. the part-A numbers (eval-states): held-out denoising loss, nearest-neighbour label accuracy
#      of generated states, continuation loss from zero / class-mean / generated / true / tuned states
#   8. the state manifold (analyze-states: PCA, t-SNE, kNN and silhouette vs shuffled labels) and a
#      report with plots                                               -> OUT/report.md
# usage: jobs/part-a.sh [--size smoke|ci|default] [--ranks R] [--out DIR] [--model FILE]
# (smoke: every stage at a minimal size, numbers meaningless; ci: what `make run` does)
# Steps whose output exists are skipped and training resumes from its checkpoint, so a rerun continues
# where a killed or signalled one stopped (USR1 or TERM: the training in flight checkpoints and the job
# exits 75; slurm/part-a.sbatch runs it under Slurm and requeues it).
set -euo pipefail
cd "$(dirname "$0")/.."
. jobs/lib.sh part-a.sh default "$@"
case "$SIZE" in
  ci)      PER_LABEL=40; LM_PER_LABEL=300; LM=(--set train.steps=600 --set train.ctx_len=128)
           TUNE=(--set train.steps=200); DIT=(); SAMPLES=6 ;;
  smoke)   PER_LABEL=16; LM_PER_LABEL=100; LM=(--set train.steps=100 --set train.ctx_len=128)
           TUNE=(--set train.steps=20 --set train.eval_every=10); DIT=(--set train.steps=100 --set train.eval_every=50)
           SAMPLES=2 ;;
  default) PER_LABEL=120; LM_PER_LABEL=1000; LM=(--set train.steps=2000 --set train.ctx_len=128)
           TUNE=(--set train.steps=600); DIT=(--set train.steps=5000); SAMPLES=16 ;;
  *) echo "part-a.sh: --size must be smoke, ci or default" >&2; exit 2 ;;
esac
OUT=${OUT:-runs/part-a-$SIZE}
SOURCES=c-headers,python,shell,licenses,man
mkdir -p "$OUT"

stage "1. labelled contexts ($PER_LABEL per label), split by document into train / held-out"
if [ ! -s "$OUT/contexts/held.jsonl" ]; then
  mkdir -p "$OUT/contexts"
  $BIN build-contexts --out "$OUT/contexts/train.jsonl" --held-out "$OUT/contexts/held.jsonl" \
    --sources "$SOURCES" --max-per-label "$PER_LABEL" --min-bytes 384 --max-bytes 512
fi
wc -l "$OUT"/contexts/*.jsonl

if [ -n "$WEIGHTS" ]; then
  stage "2. RWKV-7 language model: $WEIGHTS (shape from the file, World tokenizer)"
  use_weights "$OUT"
  LM_CONFIG=configs/from-weights.yaml; LM_CKPT=$WEIGHTS; TUNE+=(--set data.tokenizer=world)
else
  stage "2. RWKV-7 language model on the train documents of the same domains ($RANKS ranks)"
  # The same builder with the same seed puts every document on the same side of the split, so the
  # language model never reads a held-out document.
  if [ ! -s "$OUT/lm-data/valid.bin" ]; then
    $BIN build-contexts --out "$OUT/contexts/lm-train.jsonl" --held-out "$OUT/contexts/lm-held.jsonl" \
      --sources "$SOURCES" --max-per-label "$LM_PER_LABEL" --chunks-per-doc 16 --min-bytes 256 --max-bytes 2048 >/dev/null
    /usr/bin/python3 src/tools/contexts_text.py "$OUT/contexts/lm-train.jsonl" "$OUT/contexts/lm-train.txt"
    $BIN prepare-data --split-on '%%%' --out "$OUT/lm-data" "$OUT/contexts/lm-train.txt"
  fi
  train_stage "$OUT/lm" '^(dreamstate|  data|done|nothing|step [0-9]+/[0-9]+ .*val)' configs/tiny.yaml "${LM[@]}" \
    --set data.train="$OUT/lm-data/train.bin" --set data.valid="$OUT/lm-data/valid.bin" --set train.log_every=100
  LM_CONFIG=configs/tiny.yaml; LM_CKPT=$(ls "$OUT"/lm/checkpoints/*.ckpt | tail -1)
fi

stage "3. states (extract-states, $RANKS ranks)"
for part in train held; do
  [ -s "$OUT/states-$part/index.txt" ] && continue
  extra=(); [ $part = held ] && extra=(--labels-from "$OUT/states-train/index.txt")
  "${MPI[@]}" $BIN extract-states "$LM_CONFIG" "${THREADS[@]}" --checkpoint "$LM_CKPT" \
    --contexts "$OUT/contexts/$part.jsonl" --out "$OUT/states-$part" --max-tokens 128 "${extra[@]}"
done

stage "4. tuned states (run.task state_tuning, $RANKS ranks): one set per label, trained on the tokens after the
   first 128 of each train context (what eval-states scores after a state)"
train_stage "$OUT/tuned" '^(dreamstate|  contexts|  held-out|done|nothing|tuned|step [0-9]+/[0-9]+ .*val)' \
  configs/tiny-state-tuning.yaml "${TUNE[@]}" --set state_tuning.init="$LM_CKPT" \
  --set state_tuning.contexts="$OUT/contexts/train.jsonl" --set state_tuning.contexts_valid="$OUT/contexts/held.jsonl"
[ -s "$OUT/tuned/states/index.txt" ] || { echo "part-a.sh: state tuning wrote no $OUT/tuned/states/index.txt" >&2; exit 1; }

stage "5. state DiT (run.task state_diffusion, $RANKS ranks)"
train_stage "$OUT/dit" "" configs/tiny-states.yaml ${DIT[@]+"${DIT[@]}"} \
  --set diffusion.states="$OUT/states-train/index.txt" --set diffusion.states_valid="$OUT/states-held/index.txt"
MODEL=$(ls "$OUT"/dit/checkpoints/*.ckpt | tail -1)

stage "6. one sampled state per label (DDIM-50)"
mkdir -p "$OUT/samples"
for label in $(awk '$1=="label"{print $2}' "$OUT/states-train/index.txt"); do
  [ -s "$OUT/samples/$label.state" ] && continue
  $BIN sample-state "$MODEL" --label "$label" --out "$OUT/samples/$label.state"
done

stage "7. part-A numbers (eval-states, $RANKS ranks)"
[ -s "$OUT/eval-states.json" ] || "${MPI[@]}" $BIN eval-states "$MODEL" --states "$OUT/states-train/index.txt" --held-out "$OUT/states-held/index.txt" \
  --tuned "$OUT/tuned/states/index.txt" --samples-per-label "$SAMPLES" --out "$OUT/eval-states.json"

stage "8. state manifold (analyze-states, $RANKS ranks) and report"
"${MPI[@]}" $BIN analyze-states "$OUT/states-train/index.txt" --test "$OUT/states-held/index.txt" \
  --out "$OUT/analysis" --threads "$NTHREADS"
/usr/bin/python3 src/tools/report.py "$OUT/dit" --analysis "$OUT/analysis" >/dev/null
echo "report: $OUT/dit/report.md (plots in $OUT/dit/plots, t-SNE in $OUT/analysis)"
