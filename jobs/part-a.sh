#!/usr/bin/env bash
# DREAMSTATE part A end to end on pinned Debian text, over MPI:
#   1. labelled contexts from Debian text (C headers, Python, shell, licences, man pages: the files
#      configs/text-manifest.tsv pins; at the default and smoke sizes also JavaScript, Perl, changelogs
#      and the persona prompts of configs/personas.jsonl), split by document into train / held-out
#      -> OUT/contexts
#   2. an RWKV-7 trained on the train documents of those domains -> OUT/lm: at the ci and smoke sizes
#      a tiny byte-level one (configs/tiny.yaml), at the default size a World-tokenizer L6 C384
#      (configs/part-a-world.yaml, about an hour on 2 cores); or, with --model FILE, the user's RWKV-7
#      (official .pth or .safetensors, World tokenizer, shape read from the file;
#      configs/from-weights.yaml) instead
#   3. the final state of every context, with its ln_out hidden state as a control condition
#      (extract-states --ln-out)                                      -> OUT/states-{train,held}
#      the same contexts through the same architecture at random initialisation (the random-network
#      control; not with --model)                                    -> OUT/states-random-{train,held}
#      every persona prompt, for the persona map (Fig. 2)             -> OUT/states-personas
#   4. tuned states: RWKV-PEFT state tuning of the frozen RWKV-7, one set per label, on the same train
#      contexts (run.task state_tuning, configs/tiny-state-tuning.yaml) -> OUT/tuned/states
#   5. the state DiT (run.task state_diffusion, configs/tiny-states.yaml) -> OUT/dit; at the default
#      and smoke sizes also with other training seeds (-> OUT/dit-seed2, -seed3) and the
#      shuffled-condition control (diffusion.shuffle_condition -> OUT/dit-shuffled)
#   6. one sampled state per label (sample-state)                      -> OUT/samples
#   7. the part-A numbers (eval-states, per DiT): held-out denoising loss, nearest-neighbour label
#      accuracy of generated states, continuation loss from zero / class-mean / generated / true /
#      tuned states -> OUT/eval-states*.json; over the seeds, with the control -> OUT/part-a-table.md
#   8. the steering panel (Table 1): continuations from zero / class-mean / generated / tuned /
#      interpolated states, scored by continuation CE and a label classifier -> OUT/panel
#   9. the state manifold (analyze-states: PCA, cosine t-SNE with 3 seeds and their trustworthiness,
#      kNN and silhouette vs shuffled labels, the condition and random-network controls; the persona
#      map) -> OUT/analysis, OUT/analysis-personas
#  10. one report of every table and figure above, each with its reading -> OUT/report.md
# usage: jobs/part-a.sh [--size smoke|ci|default] [--ranks R] [--out DIR] [--model FILE]
# (smoke: every stage at a minimal size, numbers meaningless; ci: what `make run` does)
# Steps whose output exists are skipped and training resumes from its checkpoint, so a rerun continues
# where a killed or signalled one stopped (USR1 or TERM: the training in flight checkpoints and the job
# exits 75; slurm/part-a.sbatch runs it under Slurm and requeues it).
set -euo pipefail
cd "$(dirname "$0")/.."
. jobs/lib.sh part-a.sh default "$@"
# the labels (build-contexts sources) and the language model of each size
# and the context lengths in bytes (a World token is 3-4 bytes of this text: 128 tokens for the state
# and up to 128 scored after it)
SOURCES=c-headers,python,shell,licenses,man; LM_CONFIG=configs/tiny.yaml; LM_TOKENIZER=byte; BYTES=(384 512); CHUNKS=4
PERSONAS=(--extra-contexts configs/personas.jsonl)
# ci: 1,000 DiT steps (the config's 2,500 take 5 minutes more): at this size no number answers
# anything, and CI (30 minutes in all) runs this job at this size once and at the smoke size twice
case "$SIZE" in
  ci)      PER_LABEL=40; LM_PER_LABEL=300; LM=(--set train.steps=600 --set train.ctx_len=128)
           TUNE=(--set train.steps=200); DIT=(--set train.steps=1000 --set train.eval_every=250); SAMPLES=6
           DIT_SEEDS=1; CONTROL=0; PANEL=2; PERSONAS=() ;;
  smoke)   PER_LABEL=16; LM_PER_LABEL=100; LM=(--set train.steps=100 --set train.ctx_len=128)
           TUNE=(--set train.steps=20 --set train.eval_every=10); DIT=(--set train.steps=100 --set train.eval_every=50)
           SAMPLES=2; DIT_SEEDS=2; CONTROL=1; PANEL=1 ;;
  default) PER_LABEL=400; CHUNKS=16; LM_PER_LABEL=1000; LM=()
           SOURCES=c-headers,python,shell,licenses,man,javascript,perl,changelogs
           LM_CONFIG=configs/part-a-world.yaml; LM_TOKENIZER=world; BYTES=(1024 1536)
           TUNE=(--set train.steps=600); DIT=(--set train.steps=2000 --set train.precision=bf16); SAMPLES=16
           DIT_SEEDS=3; CONTROL=1; PANEL=6 ;;
  *) echo "part-a.sh: --size must be smoke, ci or default" >&2; exit 2 ;;
esac
OUT=${OUT:-runs/part-a-$SIZE}
mkdir -p "$OUT"

stage "1. labelled contexts ($PER_LABEL per label), split by document into train / held-out"
if [ ! -s "$OUT/contexts/held.jsonl" ]; then
  mkdir -p "$OUT/contexts"
  $BIN build-contexts --out "$OUT/contexts/train.jsonl" --held-out "$OUT/contexts/held.jsonl" \
    --sources "$SOURCES" --max-per-label "$PER_LABEL" --min-bytes "${BYTES[0]}" --max-bytes "${BYTES[1]}" --chunks-per-doc "$CHUNKS" \
    ${PERSONAS[@]+"${PERSONAS[@]}"}
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
    $BIN prepare-data --tokenizer "$LM_TOKENIZER" --split-on '%%%' --out "$OUT/lm-data" "$OUT/contexts/lm-train.txt"
  fi
  train_stage "$OUT/lm" '^(dreamstate|  data|done|nothing|step [0-9]+/[0-9]+ .*val)' "$LM_CONFIG" ${LM[@]+"${LM[@]}"} \
    --set data.train="$OUT/lm-data/train.bin" --set data.valid="$OUT/lm-data/valid.bin" --set train.log_every=100
  LM_CKPT=$(ls "$OUT"/lm/checkpoints/*.ckpt | tail -1)
  if [ "$LM_TOKENIZER" = world ]; then TUNE+=(--set data.tokenizer=world); fi
fi

stage "3. states (extract-states, $RANKS ranks): the model's$([ -z "$WEIGHTS" ] && echo ', a random-initialised one'"'"'s')$([ ${#PERSONAS[@]} -gt 0 ] && echo ', the personas')"
# extract NAME WEIGHTS-ARGS...: OUT/NAME-{train,held} of the job's contexts
extract() {
  local name=$1 part; shift
  for part in train held; do
    [ -s "$OUT/$name-$part/index.txt" ] && continue
    local labels=(); [ $part = held ] && labels=(--labels-from "$OUT/$name-train/index.txt")
    "${MPI[@]}" $BIN extract-states "$LM_CONFIG" "${THREADS[@]}" "$@" --ln-out \
      --contexts "$OUT/contexts/$part.jsonl" --out "$OUT/$name-$part" --max-tokens 128 "${labels[@]}"
  done
}
extract states --checkpoint "$LM_CKPT"
# the random-network control: the same architecture at its initialisation (the LM's run.seed)
[ -z "$WEIGHTS" ] && extract states-random --random-init
if [ ${#PERSONAS[@]} -gt 0 ] && [ ! -s "$OUT/states-personas/index.txt" ]; then
  "${MPI[@]}" $BIN extract-states "$LM_CONFIG" "${THREADS[@]}" --checkpoint "$LM_CKPT" \
    --contexts configs/personas.jsonl --out "$OUT/states-personas" --max-tokens 128
fi

stage "4. tuned states (run.task state_tuning, $RANKS ranks): one set per label, trained on the tokens after the
   first 128 of each train context (what eval-states scores after a state)"
train_stage "$OUT/tuned" '^(dreamstate|  contexts|  held-out|done|nothing|tuned|step [0-9]+/[0-9]+ .*val)' \
  configs/tiny-state-tuning.yaml "${TUNE[@]}" --set state_tuning.init="$LM_CKPT" \
  --set state_tuning.contexts="$OUT/contexts/train.jsonl" --set state_tuning.contexts_valid="$OUT/contexts/held.jsonl"
[ -s "$OUT/tuned/states/index.txt" ] || { echo "part-a.sh: state tuning wrote no $OUT/tuned/states/index.txt" >&2; exit 1; }

stage "5. state DiT (run.task state_diffusion, $RANKS ranks): $DIT_SEEDS training seed(s)$([ $CONTROL = 1 ] && echo ', and the shuffled-condition control')"
# DITS: NAME=DIR|settings of each state DiT (the first is the job's model: samples, report)
DITS=("seed1=$OUT/dit|")
for i in $(seq 2 "$DIT_SEEDS"); do DITS+=("seed$i=$OUT/dit-seed$i|--set run.seed=$((1233 + i))"); done
[ "$CONTROL" = 1 ] && DITS+=("shuffled=$OUT/dit-shuffled|--set diffusion.shuffle_condition=true")
for d in "${DITS[@]}"; do
  spec=${d#*=}; dir=${spec%%|*}; extra=${spec#*|}
  echo "--- ${d%%=*}: $dir ${extra:-(the seed of configs/tiny-states.yaml)}"
  # shellcheck disable=SC2086
  train_stage "$dir" "" configs/tiny-states.yaml ${DIT[@]+"${DIT[@]}"} $extra \
    --set diffusion.states="$OUT/states-train/index.txt" --set diffusion.states_valid="$OUT/states-held/index.txt"
done
MODEL=$(ls "$OUT"/dit/checkpoints/*.ckpt | tail -1)

stage "6. one sampled state per label (DDIM-50)"
mkdir -p "$OUT/samples"
for label in $(awk '$1=="label"{print $2}' "$OUT/states-train/index.txt"); do
  [ -s "$OUT/samples/$label.state" ] && continue
  $BIN sample-state "$MODEL" --label "$label" --out "$OUT/samples/$label.state"
done

stage "7. part-A numbers (eval-states, $RANKS ranks), per DiT"
seeds=(); controls=()
for d in "${DITS[@]}"; do
  name=${d%%=*}; spec=${d#*=}; dir=${spec%%|*}
  json=$OUT/eval-states-$name.json; [ "$name" = seed1 ] && json=$OUT/eval-states.json
  case "$name" in seed*) seeds+=("$json"); n=${name#seed} ;; *) controls+=(--control "$name=$json"); n=1 ;; esac
  [ -s "$json" ] && continue
  # the sampler's noise and the bootstrap follow the DiT's seed, so the seeds are independent draws
  eval_states() {
    "${MPI[@]}" $BIN eval-states "$(ls "$dir"/checkpoints/*.ckpt | tail -1)" \
      --states "$OUT/states-train/index.txt" --held-out "$OUT/states-held/index.txt" --tuned "$OUT/tuned/states/index.txt" \
      --samples-per-label "$SAMPLES" --seed $((1233 + n)) --out "$json"
  }
  # the job's model's full table; the others' in their JSON (never >/dev/stdout: reopening a Slurm
  # output file truncates it)
  if [ "$name" = seed1 ]; then eval_states; else eval_states >/dev/null; fi
done
echo
echo "continuation CE over the DiT seeds$([ $CONTROL = 1 ] && echo ' and the shuffled-condition control'):"
/usr/bin/python3 src/tools/part_a_table.py "${seeds[@]}" ${controls[@]+"${controls[@]}"} \
  --out-md "$OUT/part-a-table.md" --out-json "$OUT/part-a-table.json"

stage "8. steering panel: $PANEL continuation(s) per label and kind of state, scored"
[ -s "$OUT/panel/panel.json" ] || /usr/bin/python3 src/tools/steering_panel.py --config "$LM_CONFIG" \
  --checkpoint "$LM_CKPT" --dit "$MODEL" --job "$OUT" --continuations "$PANEL" --out "$OUT/panel"

stage "9. state manifold (analyze-states, $RANKS ranks)"
controls=(); [ -z "$WEIGHTS" ] && controls=(--control "random-init=$OUT/states-random-train/index.txt,$OUT/states-random-held/index.txt")
[ -s "$OUT/analysis/analysis.json" ] || "${MPI[@]}" $BIN analyze-states "$OUT/states-train/index.txt" \
  --test "$OUT/states-held/index.txt" ${controls[@]+"${controls[@]}"} --tsne-metric cosine --tsne-seeds 0,1,2 \
  --out "$OUT/analysis" --threads "$NTHREADS"
if [ ${#PERSONAS[@]} -gt 0 ] && [ ! -s "$OUT/analysis-personas/analysis.json" ]; then
  # 48 prompts: leave-one-out kNN, a cross-validated probe, a perplexity the few points allow
  "${MPI[@]}" $BIN analyze-states "$OUT/states-personas/index.txt" --tsne-metric cosine --tsne-seeds 0,1,2 \
    --perplexity 10 --out "$OUT/analysis-personas" --threads "$NTHREADS"
fi

stage "10. report"
/usr/bin/python3 src/tools/report.py "$OUT/dit" --analysis "$OUT/analysis" >/dev/null
/usr/bin/python3 src/tools/part_a_report.py "$OUT"
echo "report: $OUT/report.md (the DiT's training: $OUT/dit/report.md; t-SNE maps in $OUT/analysis)"
