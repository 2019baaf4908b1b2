#!/usr/bin/env bash
# Issue 14's pre-training recipe study on CPU (docs/transfer.md, "The pre-training recipe"), resumable: run it
# again and finished pre-trainings and cells are skipped, an interrupted one continues from its -last.pth.
# ANT pre-trained on Games for 10 epochs with each variant, then fine-tuned and re-learnt on Scientific (seed 2020);
# then Scientific's text as titles alone (like Games'), all three modes from the default pre-training.
# Run it from a separate worktree, in the background (one thread: ~20 hours in all on this project's CPU):
#   nohup setsid bash scripts/experiments/recipe_games_to_scientific.sh > ../recipe.log 2>&1 &
# Settings: OUT (results root, default ../recipe_runs), TITLE_FEATURES (a folder holding Scientific.text.npy of the
# titles alone and the image files: `python -m recbole_mm.preprocess.benchmark --src ../shared/datasets/Scientific
# --text_fields=title --out <folder>`, then link Scientific.image.npy and its key file there), SEEDS.
set -uo pipefail
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
OUT=${OUT:-../recipe_runs}
SEEDS=${SEEDS:-2020}
DATA=../shared/datasets
mkdir -p "$OUT"
declare -A VARIANT=( [_default]="" [_t0.05]="--temperature=0.05" [_t0.1]="--temperature=0.1"
                     [_b1024]="--train_batch_size=1024" [_b4096]="--train_batch_size=4096"
                     [_all]="--pretrain_negatives=all" [_mixed]="--modalities=text" )
# _mixed pre-trains on Games + Scientific: Games has no images, and the domains of one pre-training share modalities
for V in _default _t0.1 _all _b1024 _t0.05 _b4096 _mixed; do
  DOMAINS=Games; [ $V = _mixed ] && DOMAINS=Games,Scientific
  DATA=$DATA bash scripts/experiments/pretrain_snapshot.sh ANT $DOMAINS $OUT/pretrain$V 10 ${VARIANT[$V]} \
      > $OUT/pretrain$V.log 2>&1 || { echo "pre-training $V failed: $OUT/pretrain$V.log"; continue; }
  python -m recbole_mm.bench.transfer --target=Scientific --sources=$DOMAINS --models=ANT \
      --checkpoints=ANT:$OUT/pretrain$V/snapshots/e10.pth --modes=fine_tune,re_learning --seeds=${SEEDS// /,} \
      --data_path=$DATA --out=$OUT/cells$V --show_progress=False > $OUT/cells$V.log 2>&1
  echo "$(date) $V done"
done
python -m recbole_mm.bench.pretrain_curve $OUT/pretrain_{default,t0.1,t0.05,b1024,b4096,all,mixed}/snapshots/e10.pth \
    --labels=default,t0.1,t0.05,b1024,b4096,full-softmax,games+scientific --out=$OUT/pretrain_curves
if [ -n "${TITLE_FEATURES:-}" ]; then
  python -m recbole_mm.bench.transfer --target=Scientific --sources=Games --models=ANT \
      --checkpoints=ANT:$OUT/pretrain_default/snapshots/e10.pth --modes=ground_built,fine_tune,re_learning \
      --seeds=${SEEDS// /,} --data_path=$DATA --feature_dir=$TITLE_FEATURES --out=$OUT/cells_titles \
      --show_progress=False > $OUT/cells_titles.log 2>&1
fi
