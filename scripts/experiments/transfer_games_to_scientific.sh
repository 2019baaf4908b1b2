#!/usr/bin/env bash
# Issue 14's real-data transfer runs (docs/transfer.md), resumable: run it again and it continues
# (pre-training from its -last.pth state, each target run from its own; finished runs are skipped).
# Long: run it from a separate `git worktree` at a fixed commit, in the background, with a log:
#   git worktree add --detach ../rmm-run HEAD && cd ../rmm-run && \
#   nohup setsid bash scripts/experiments/transfer_games_to_scientific.sh > ../transfer.log 2>&1 &
# Settings: OUT (results root, default ../transfer_runs), SNAPSHOTS (pre-training epochs kept).
set -uo pipefail
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
OUT=${OUT:-../transfer_runs}
SNAPSHOTS=${SNAPSHOTS:-"10 20 30 40"}
DATA=../shared/datasets
mkdir -p "$OUT"

# 1. features (MiniLM, mean pooling: the same encoder for source and target)
[ -f dataset/Scientific/Scientific.text.npy ] || python -m recbole_mm.preprocess.benchmark --src $DATA/Scientific
[ -f dataset/Games/Games.text.npy ] || python -m recbole_mm.preprocess.benchmark --src $DATA/Games

# 2. pre-training on Games, a snapshot of the transferable checkpoint at each epoch count
for MODEL in ANT UniSRec; do
  CK=$OUT/pretrain_${MODEL}_Games
  for E in $SNAPSHOTS; do
    DATA=$DATA bash scripts/experiments/pretrain_snapshot.sh $MODEL Games $CK $E || exit 1
  done
  python -m recbole_mm.bench.pretrain_curve $CK/snapshots/e${SNAPSHOTS##* }.pth --labels="$MODEL on Games" \
      --out=$OUT/pretrain_${MODEL}_Games_curve
done

# 3. Scientific as the target: every adaptation mode from each snapshot
for E in $SNAPSHOTS; do
  python -m recbole_mm.bench.transfer --target=Scientific --sources=Games --models=ANT \
      --checkpoints=ANT:$OUT/pretrain_ANT_Games/snapshots/e$E.pth \
      --modes=ground_built,fine_tune,fine_tune:fine_tune_freeze_encoder=False,re_learning,auto,ground_built:missing_modality=adaptor \
      --data_path=$DATA --out=$OUT/scientific_from_games_e$E
done
