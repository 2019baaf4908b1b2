#!/usr/bin/env bash
# Issue 14's pre-training recipe study on CPU (docs/transfer.md, "The pre-training recipe"), resumable: run it
# again and finished pre-trainings and cells are skipped, an interrupted one continues from its -last.pth.
# ANT pre-trained on Games for 10 epochs with each variant, then fine-tuned and re-learnt on Scientific (seed 2020);
# and Scientific's text as titles alone (like Games'), all three modes from the default pre-training (_titles);
# and the issue's goal, the default pre-training's three modes over 3 seeds (_goal).
# Run it from a separate worktree, in the background (one thread: ~20 hours in all on this project's CPU):
#   nohup setsid bash scripts/experiments/recipe_games_to_scientific.sh > ../recipe.log 2>&1 &
# Settings: OUT (results root, default ../recipe_runs), SEEDS, GOAL_SEEDS, VARIANTS (which, in which order; default
# all),
# TITLE_FEATURES (Scientific's features with the titles alone as its text; default: made in $OUT/titles_features by
# `python -m recbole_mm.preprocess.benchmark --src ../shared/datasets/Scientific --text_fields=title --out <folder>`).
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
# _mixed pre-trains on Games + Scientific: Games has no images, and the domains of one pre-training share modalities;
# _titles is no pre-training variant: Scientific as titles alone, all three modes from the default pre-training;
# _goal: the default pre-training's three modes with GOAL_SEEDS (into cells_default: the default row's mean)
VARIANTS=${VARIANTS:-"_default _t0.1 _all _b1024 _t0.05 _b4096 _mixed _titles _goal"}
GOAL_SEEDS=${GOAL_SEEDS:-"2020 2021 2022"}
TITLE_FEATURES=${TITLE_FEATURES:-$OUT/titles_features}
pretrain() {  # <variant> <domains>
  DATA=$DATA bash scripts/experiments/pretrain_snapshot.sh ANT $2 $OUT/pretrain$1 10 ${VARIANT[$1]} \
      > $OUT/pretrain$1.log 2>&1 || { echo "pre-training $1 failed: $OUT/pretrain$1.log"; return 1; }
}
cells() {  # <out name> <sources> <pretrain variant> <modes> <seeds> [bench.transfer options]; log: $LOG or
  # $OUT/cells<out name>.log
  local NAME=$1 SOURCES=$2 FROM=$3 MODES=$4 CELL_SEEDS=$5; shift 5
  python -m recbole_mm.bench.transfer --target=Scientific --sources=$SOURCES --models=ANT \
      --checkpoints=ANT:$OUT/pretrain$FROM/snapshots/e10.pth --modes=$MODES --seeds=${CELL_SEEDS// /,} \
      --data_path=$DATA --out=$OUT/cells$NAME --show_progress=False "$@" > ${LOG:-$OUT/cells$NAME.log} 2>&1
}
ALL_MODES=ground_built,fine_tune,re_learning
for V in $VARIANTS; do  # all named before any runs: a typo is refused before hours of the others
  [ -n "${VARIANT[$V]+set}" ] || [ $V = _goal ] || [ $V = _titles ] || {
    echo "VARIANTS: unknown variant '$V'; expected some of: ${!VARIANT[*]} _titles _goal"; exit 2; }
done
for V in $VARIANTS; do
  if [ $V = _goal ]; then  # the issue's goal, checked with 3 seeds: every mode from the default pre-training
    pretrain _default Games || continue
    LOG=$OUT/cells_goal.log cells _default Games _default $ALL_MODES "$GOAL_SEEDS"
  elif [ $V = _titles ]; then
    pretrain _default Games || continue
    [ -f $TITLE_FEATURES/Scientific.text.npy ] || python -m recbole_mm.preprocess.benchmark --src $DATA/Scientific \
        --text_fields=title --out $TITLE_FEATURES > $OUT/titles_features.log 2>&1 || continue
    cells _titles Games _default $ALL_MODES "$SEEDS" --feature_dir=$TITLE_FEATURES
  else
    DOMAINS=Games; [ $V = _mixed ] && DOMAINS=Games,Scientific
    pretrain $V $DOMAINS || continue
    cells $V $DOMAINS $V fine_tune,re_learning "$SEEDS"
  fi
  echo "$(date) $V done"
done
CURVES=$(ls $OUT/pretrain_{default,t0.1,t0.05,b1024,b4096,all,mixed}/snapshots/e10.pth 2>/dev/null)
LABELS=$(for C in $CURVES; do V=${C#$OUT/pretrain_}; echo ${V%%/*}; done | paste -sd,)
[ -n "$CURVES" ] && python -m recbole_mm.bench.pretrain_curve $CURVES --labels=$LABELS --out=$OUT/pretrain_curves
python -m recbole_mm.bench.recipe $OUT   # recipe.md / recipe.csv: a row per variant
