#!/usr/bin/env bash
# Issue 14's reverse direction on CPU (docs/transfer.md, "Reverse direction"): source Scientific, target a
# 10,000-user sample of Games; ANT and UniSRec, ground-built / fine-tune / re-learning, seed 2020; then what
# `adaptation: auto` picks there, replayed from the three runs. Resumable: run it again and finished runs are
# skipped, an interrupted one continues from its -last.pth. One thread: ~10 hours in all on this project's CPU.
# Run it from a separate worktree, in the background:
#   nohup setsid bash scripts/experiments/reverse_scientific_to_games.sh > ../reverse.log 2>&1 &
# Settings: OUT (results root, default ../reverse_runs), FIRST (cells to run before the rest, as
# "<model>:<mode>,<mode> ..."; default: ANT's ground-built and fine-tune, whose run records the auto replay
# needs, then UniSRec's cells).
set -uo pipefail
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
OUT=${OUT:-../reverse_runs}
DATA=../shared/datasets
FIRST=${FIRST:-"ANT:ground_built,fine_tune UniSRec:ground_built,fine_tune,re_learning"}
mkdir -p "$OUT"

# 1. features (MiniLM, mean pooling) and the target sample
[ -f dataset/Scientific/Scientific.text.npy ] || python -m recbole_mm.preprocess.benchmark --src $DATA/Scientific || exit 1
[ -f dataset/Games/Games.text.npy ] || python -m recbole_mm.preprocess.benchmark --src $DATA/Games || exit 1
[ -f dataset/Games_u10000/Games_u10000.train.inter ] || python -m recbole_mm.preprocess.subsample \
    --src $DATA/Games --users 10000 --features dataset/Games --out dataset || exit 1

# 2. pre-training on Scientific, 10 epochs (its image adaptor is not used on Games, which has no images)
for MODEL in ANT UniSRec; do
  DATA=$DATA bash scripts/experiments/pretrain_snapshot.sh $MODEL Scientific $OUT/pretrain_${MODEL}_Scientific 10 \
      > $OUT/pretrain_${MODEL}_Scientific.log 2>&1 || { echo "pre-training $MODEL failed"; exit 1; }
done
CKS=ANT:$OUT/pretrain_ANT_Scientific/snapshots/e10.pth,UniSRec:$OUT/pretrain_UniSRec_Scientific/snapshots/e10.pth
cells() {  # <models> <modes>
  python -m recbole_mm.bench.transfer --target=Games_u10000 --sources=Scientific --models=$1 --checkpoints=$CKS \
      --modes=$2 --seeds=2020 --data_path=dataset --out=$OUT/games_u10000 --show_progress=False
}

# 3. the target cells (those in FIRST first, then the table of all six), the auto replay after each step:
# it replays the models whose three runs are in and names the others it skips
for C in $FIRST ANT,UniSRec:ground_built,fine_tune,re_learning; do
  cells ${C%%:*} ${C#*:} >> $OUT/cells.log 2>&1; echo "$(date) $C done"
  python -m recbole_mm.bench.auto_replay $OUT/games_u10000 >> $OUT/cells.log 2>&1
done
echo "$(date) all done"
