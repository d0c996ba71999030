#!/usr/bin/env bash
# DREAMSTATE part B ablation (src/eval/README.md §4) on this machine, over MPI:
#   1. an RWKV-7 base on the built-in corpus (configs/tiny.yaml; --size large: C=256, L=4)  -> OUT/base;
#      or, with --model FILE, the user's RWKV-7 (official .pth or .safetensors; shape from the file),
#      then fine-tuned on the built-in corpus in World tokens
#   2. from that base, with the same steps, windows, tokens and scored positions (t >= P) each:
#        static        the static baseline: no generated matrices, the whole RWKV-7 fine-tuned
#        alpha-0.1/0.5/0.9  the hybrid with alpha fixed
#        learned       the hybrid as configured (configs/tiny-hybrid.yaml: W_r, W_k, W_v of layer 0,
#                      first-token condition, alpha learned from 0.9)
#        W_r, W_kv     learned alpha, generating W_r only / W_k and W_v only
#        mean_prefix   learned alpha, condition = mean embedding of the first P tokens
#        attn_prefix   learned alpha, condition = learned attention pooling of the first P tokens
#      and the baselines (src/hybrid/README.md §1.7-1.9):
#        direct        a deterministic hypernetwork of the same size: the same DiT once on the static
#                      weights, no noise, trained on L_LM only (hybrid.generator direct)
#        shuffled      the learned hybrid with each window's condition taken from another window, in
#                      training and in the held-out evaluation (hybrid.shuffle_condition): a control
#        static-restricted  the static fine-tune of W_r, W_k, W_v of the hybrid's layers only, every
#                      other weight frozen (hybrid.static_scope targeted)
#        ln_out_prefix learned alpha, condition = mean of the frozen RWKV-7's ln_out over the first P tokens
#      each with --seeds N seeds (run.seed = the config's seed + 0..N-1: the DiT's initialisation, the
#      hybrid's noise and the order of the training windows; the base and the held-out windows are shared)
#   3. the table (OUT/table.md, OUT/table.json): held-out L_LM and perplexity on positions >= P (mean over
#      the seeds with a 95% t interval), the difference to the static baseline paired by seed, final
#      alphas, tokens/s, throughput, estimated training GFLOP per step and FLOPs per token relative to the
#      static baseline.
#   4. the report (OUT/report.md): the table and the comparisons that answer the paper's question (the
#      hybrid against static, static-restricted, direct and shuffled; the ln_out and mean-prefix conditions
#      against the first token), each a difference paired by seed with its interval and a reading.
# usage: jobs/hybrid-ablation.sh [--size smoke|small|large] [--seeds N] [--ranks R] [--out DIR] [--model FILE]
# --seeds defaults to 3 at --size large and 1 at small and smoke (what CI runs).
# small (what CI runs) takes 1-2 minutes on 2 idle cores, large about 15 (30 on a busy machine); smoke
# runs every stage for a few steps (numbers meaningless: tests/e2e_slurm_jobs.sh).
# Finished runs are not redone (a rerun resumes each one from its last checkpoint), so a killed or
# signalled job continues (USR1 or TERM: the training in flight checkpoints and the job exits 75;
# slurm/part-b.sbatch runs it under Slurm and requeues it).
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS=""; ARGS=()  # --seeds is this job's own; the rest goes to jobs/lib.sh
while [ $# -gt 0 ]; do
  case "$1" in --seeds) SEEDS=${2:-}; shift $(( $# > 1 ? 2 : 1 )) ;; *) ARGS+=("$1"); shift ;; esac
done
. jobs/lib.sh hybrid-ablation.sh small ${ARGS[@]+"${ARGS[@]}"}
[ -n "$SEEDS" ] || { [ "$SIZE" = large ] && SEEDS=3 || SEEDS=1; }
case "$SEEDS" in ''|*[!0-9]*|0) echo "hybrid-ablation.sh: --seeds must be a whole number >= 1, got '$SEEDS'" >&2; exit 2 ;; esac
# MODEL: both the base and the hybrid; BASE / HYBRID: training of each
case "$SIZE" in
  smoke) MODEL=()
         BASE=(--set train.steps=100)
         HYBRID=(--set train.steps=6 --set train.eval_every=3 --set train.eval_batches=1) ;;
  small) MODEL=()
         BASE=(--set train.steps=300)
         HYBRID=(--set train.steps=150 --set train.eval_every=75) ;;
  large) MODEL=(--set model.n_layer=4 --set model.n_embd=256 --set train.ctx_len=128)
         BASE=(--set train.steps=1000 --set checkpoint.every=500)
         HYBRID=(--set train.steps=400 --set train.eval_every=200 --set checkpoint.every=200 --set hybrid.prefix=32
                 --set dit.hidden=128) ;;
  *) echo "hybrid-ablation.sh: --size must be smoke, small or large" >&2; exit 2 ;;
esac
OUT=${OUT:-runs/hybrid-ablation-$SIZE}
mkdir -p "$OUT"
QUIET='^(dreamstate|  (init|generates|static|held-out)|done|nothing|step [0-9]+/[0-9]+ .*val)'  # the log lines shown

if [ -n "$WEIGHTS" ]; then
  stage "1. RWKV-7 base: $WEIGHTS (shape from the file, World tokenizer)"
  use_weights "$OUT"
  INIT=$WEIGHTS
  MODEL=(--set data.tokenizer=world); [ "$SIZE" = large ] && MODEL+=(--set train.ctx_len=128)
else
  stage "1. RWKV-7 base ($SIZE, $RANKS ranks)"
  train_stage "$OUT/base" "$QUIET" configs/tiny.yaml "${MODEL[@]}" "${BASE[@]}" --set train.eval_every=0 \
    --set train.log_every=100
  INIT=$(ls "$OUT"/base/checkpoints/*.ckpt | tail -1)
fi

VARIANTS=(
  "static=static baseline: matrices none, the whole RWKV-7 fine-tuned|--set hybrid.matrices=none --set hybrid.train_static=1"
  "alpha-0.1=hybrid, W_rkv, alpha fixed 0.1|--set hybrid.alpha=fixed --set hybrid.alpha_init=0.1"
  "alpha-0.5=hybrid, W_rkv, alpha fixed 0.5|--set hybrid.alpha=fixed --set hybrid.alpha_init=0.5"
  "alpha-0.9=hybrid, W_rkv, alpha fixed 0.9|--set hybrid.alpha=fixed --set hybrid.alpha_init=0.9"
  "learned=hybrid, W_rkv, alpha learned (from 0.9)|"
  "W_r=hybrid, W_r only, alpha learned|--set hybrid.matrices=r"
  "W_kv=hybrid, W_k + W_v, alpha learned|--set hybrid.matrices=kv"
  "mean_prefix=hybrid, W_rkv, alpha learned, condition mean_prefix|--set hybrid.condition=mean_prefix"
  "attn_prefix=hybrid, W_rkv, alpha learned, condition attn_prefix|--set hybrid.condition=attn_prefix"
  "direct=hypernetwork: the same DiT once, no noise, L_LM only, W_rkv, alpha learned|--set hybrid.generator=direct --set hybrid.lambda_pd=0"
  "shuffled=hybrid, W_rkv, alpha learned, condition from another window (train and held-out)|--set hybrid.shuffle_condition=true"
  "static-restricted=static baseline: only W_r, W_k, W_v of the hybrid's layers fine-tuned|--set hybrid.matrices=none --set hybrid.train_static=1 --set hybrid.static_scope=targeted"
  "ln_out_prefix=hybrid, W_rkv, alpha learned, condition = mean ln_out of the frozen RWKV-7 over the prefix|--set hybrid.condition=ln_out_prefix"
)
H=(configs/tiny-hybrid.yaml "${MODEL[@]}" "${HYBRID[@]}" --set hybrid.init="$INIT" --set train.log_every=50)
steps=$(awk '/^train:/{t=1} t && /^  steps:/{print $2; exit}' configs/tiny-hybrid.yaml)
for a in "${HYBRID[@]}"; do case "$a" in train.steps=*) steps=${a#train.steps=} ;; esac; done
ctx=64; prefix=$(awk '/^  prefix:/{print $2; exit}' configs/tiny-hybrid.yaml)
for a in "${MODEL[@]}" "${HYBRID[@]}"; do
  case "$a" in train.ctx_len=*) ctx=${a#train.ctx_len=} ;; hybrid.prefix=*) prefix=${a#hybrid.prefix=} ;; esac
done
batch=$(awk '/^  batch_size:/{print $2; exit}' configs/tiny-hybrid.yaml)
seed0=$(awk '/^run:/{r=1} r && /^  seed:/{print $2; exit}' configs/tiny-hybrid.yaml)
seeds=$(seq -s , "$seed0" $(( seed0 + SEEDS - 1 )))
cat <<EOF

=== 2. Part-B ablation: ${#VARIANTS[@]} variants x $SEEDS seed(s) ($seeds) from $INIT ===
Each run: $steps steps x $batch windows of $ctx tokens (the same windows in every run of a seed), $RANKS ranks.
Compared on the held-out L_LM of positions t >= $prefix only (the same positions for every run, so the
prefix-pooled condition cannot see the tokens it helps predict), over the same held-out windows.
Reading it: x0 of the parameter diffusion is theta_static (a regulariser, src/hybrid/README.md §1.3): every
context dependence comes from L_LM. The static baseline trains every RWKV-7 weight, the hybrids keep
them frozen and train only the DiT and alpha. With first-token conditioning there are only 256
distinct conditions (a token-indexed mixture of weights). The intervals are 95% t intervals over the
seeds (the differences paired by seed); with one seed there is none, and differences of a few 1e-3 are noise.
tokens/s is wall clock (compare it on an otherwise idle machine only); GFLOP/step and FLOPs/token are the
estimated training cost, independent of the machine's load.
EOF
names=()
for v in "${VARIANTS[@]}"; do names+=("${v%%|*}"); done
# seed by seed, so that a job stopped part-way has whole tables of its first seeds
# (src/tools/hybrid_table.py OUT --seeds <those>)
for seed in ${seeds//,/ }; do
  for v in "${VARIANTS[@]}"; do
    head=${v%%|*}; name=${head%%=*}; extra=${v#*|}
    echo "--- $name, seed $seed: ${head#*=}"
    # shellcheck disable=SC2086
    train_stage "$OUT/$name/seed-$seed" "$QUIET" "${H[@]}" $extra --set run.name="$name" --set run.seed="$seed"
  done
done

stage "3. Table ($OUT/table.md, $OUT/table.json)"
/usr/bin/python3 src/tools/hybrid_table.py "$OUT" --seeds "$seeds" "${names[@]}"

stage "4. Report ($OUT/report.md): the baselines' comparisons, each with its reading"
/usr/bin/python3 src/tools/part_b_report.py "$OUT" | tail -n +3
