#!/usr/bin/env bash
# The README's main job (`make run`): a small end-to-end DREAMSTATE run over MPI on pinned Debian text.
#   part A: jobs/part-a.sh --size ci      RWKV-7 -> labelled states -> state DiT -> sampled states,
#                                         eval-states numbers, state-manifold analysis and report
#   part B: jobs/hybrid-ablation.sh --size small   the hybrid RWKV-7 (parameter DiT -> W_r, W_k, W_v)
#                                         against a static fine-tune, with its ablation table
# usage: jobs/dreamstate.sh [--ranks R] [--out DIR]   (outputs in DIR/part-a and DIR/hybrid, default runs/)
set -euo pipefail
cd "$(dirname "$0")/.."
RANKS=2; OUT=runs
while [ $# -gt 0 ]; do
  case "$1" in
    --ranks) RANKS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "dreamstate.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
echo "##### DREAMSTATE part A: state diffusion #####"
bash jobs/part-a.sh --size ci --ranks "$RANKS" --out "$OUT/part-a"
echo
echo "##### DREAMSTATE part B: the hybrid #####"
bash jobs/hybrid-ablation.sh --size small --ranks "$RANKS" --out "$OUT/hybrid"
