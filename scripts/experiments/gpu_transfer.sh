#!/usr/bin/env bash
# Issue 14 on one lent GPU (H100/H200, 16 cores): transfer-table cells on real data, PAR at a time,
# as many as fit before DEADLINE seconds. Each cell is one `python -m recbole_mm.bench.transfer` run
# (one model, mode and seed) kept as <RUNS>/<table>/<key>.json, so the same command on CPU later skips
# what is done and rebuilds table.md / table.csv / table.png.
#
#   PLAN=scientific  source Games, target Scientific: ANT, UniSRec (3 seeds), ANT_e, UniSRec_e, auto
#                    (needs ANT_CK, ANT pre-trained on Games; pre-trains UniSRec on Games here)
#   PLAN=reverse     source Scientific, target Games: ANT and UniSRec pre-trained on Scientific here,
#                    then ground-built / fine-tune / re-learning on Games; and, with ANT_CK, the
#                    Scientific cells of ANT under the current defaults
#   PLAN=recipe      ANT pre-trained on Games (10 epochs) with the defaults and with other temperature /
#                    batch / negatives, and on Games + Scientific; fine-tune and re-learning on
#                    Scientific, 2 seeds; with TITLE_FEATURES (a folder with Scientific.text.npy of the
#                    titles alone), Scientific as titles
#
#   PLAN=scientific DATA=<folder with Scientific/ and Games/, features included> ANT_CK=<file> \
#       bash scripts/experiments/gpu_transfer.sh
set -uo pipefail
set -m  # every background job its own process group: the deadline stops a whole job at once
START=$(date +%s)
PLAN=${PLAN:-scientific}
DEADLINE=${DEADLINE:-470}
DATA=${DATA:-../shared/datasets}
ANT_CK=${ANT_CK:-}
RUNS=${RUNS:-devruns}
PAR=${PAR:-12}
SEEDS=${SEEDS:-"2020 2021 2022"}
PRETRAIN_EPOCHS=${PRETRAIN_EPOCHS:-"10 20 40"}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONUNBUFFERED=1
mkdir -p $RUNS/logs
elapsed() { echo $(( $(date +%s) - START )); }

# 0. smoke: one ground-built epoch on the GPU (fails fast, before the long jobs start)
python -m recbole_mm.bench.transfer --target=Scientific --models=ANT --modes=ground_built --seeds=1 --epochs=1 \
    --data_path=$DATA --out=$RUNS/.smoke > $RUNS/logs/smoke.log 2>&1
if ! grep -q "${SMOKE_DEVICE:-cuda}" $RUNS/.smoke/*.json 2>/dev/null; then
  echo "smoke failed after $(elapsed) s"; tail -30 $RUNS/logs/smoke.log; exit 1
fi
echo "smoke ok after $(elapsed) s: $(grep -o '"device": "[^"]*"' $RUNS/.smoke/*.json | head -1)"

pretrain() {  # model domains [tag [settings...]]: snapshots at PRETRAIN_EPOCHS in
              # $RUNS/pretrain_<model>_<domains><tag>/snapshots/e<E>.pth
  local model=$1 domains=$2 tag=${3:-} dir=$RUNS/pretrain_$1_${2//,/+}${3:-} E LAST CKPT
  shift 3 2>/dev/null || shift $#
  mkdir -p $dir/snapshots
  for E in $PRETRAIN_EPOCHS; do
    LAST=$(ls -t $dir/*-last.pth 2>/dev/null | head -1)
    python run_recbole_mm.py --model=$model --stage=pretrain --dataset=$domains --data_path=$DATA --epochs=$E \
        --checkpoint_dir=$dir ${LAST:+--resume_from=$LAST} "$@" >> $dir.log 2>&1 \
        || { touch $dir/failed; echo "$model pre-training on $domains$tag failed"; tail -20 $dir.log; return 1; }
    CKPT=$(ls -t $dir/$model-pretrain-*.pth | grep -v -- -last.pth | head -1)
    cp "$CKPT" $dir/snapshots/e$E.pth.tmp && mv $dir/snapshots/e$E.pth.tmp $dir/snapshots/e$E.pth
    echo "$model pre-trained on $domains$tag for $E epochs after $(elapsed) s"
  done
}

cell() {  # target source table model mode seed [checkpoint]: one job line (waits for a checkpoint made here)
  local ck="" wait=""
  if [ -n "${7:-}" ]; then
    ck="--checkpoints=$4:$7"
    case $7 in $RUNS/*) wait="while [ ! -f $7 ]; do [ -f $(dirname $(dirname $7))/failed ] && exit 1; sleep 5; done; ";; esac
  fi
  echo "${wait}python -m recbole_mm.bench.transfer --target=$1 --sources=$2 --models=$4 $ck --modes=$5 --seeds=$6 --data_path=$DATA --out=$RUNS/$3 > $RUNS/logs/$3-$4-${5//[:=]/_}-$6.log 2>&1"
}

case $PLAN in
  scientific)
    [ -n "$ANT_CK" ] || { echo "PLAN=scientific needs ANT_CK"; exit 1; }
    pretrain UniSRec Games & PRETRAIN=$!
    UNI=$RUNS/pretrain_UniSRec_Games/snapshots/e10.pth
    T="Scientific Games scientific_from_games"
    {
      for S in $SEEDS; do
        cell $T ANT ground_built $S; cell $T ANT fine_tune $S $ANT_CK; cell $T ANT re_learning $S $ANT_CK
      done
      for S in $SEEDS; do cell $T UniSRec ground_built $S; done
      for S in $SEEDS; do cell $T UniSRec fine_tune $S $UNI; cell $T UniSRec re_learning $S $UNI; done
      for S in $SEEDS; do cell $T ANT fine_tune:fine_tune_freeze_encoder=False $S $ANT_CK; done
      for S in $SEEDS; do cell $T ANT ground_built:missing_modality=adaptor $S; done
      for S in $SEEDS; do cell $T UniSRec fine_tune:fine_tune_freeze_encoder=False $S $UNI; done
      for M in ground_built fine_tune re_learning; do cell $T ANT_e $M 2020 $ANT_CK; done
      for M in ground_built fine_tune re_learning; do cell $T UniSRec_e $M 2020 $UNI; done
      cell $T ANT auto 2020 $ANT_CK
    } > $RUNS/jobs.txt ;;
  reverse)
    PRETRAIN_EPOCHS=10
    ( pretrain ANT Scientific & pretrain UniSRec Scientific & wait ) & PRETRAIN=$!
    T="Games Scientific games_from_scientific"
    {
      for S in $SEEDS; do
        for M in ANT UniSRec; do
          cell $T $M ground_built $S
          cell $T $M fine_tune $S $RUNS/pretrain_${M}_Scientific/snapshots/e10.pth
          cell $T $M re_learning $S $RUNS/pretrain_${M}_Scientific/snapshots/e10.pth
        done
        if [ -n "$ANT_CK" ]; then  # Scientific under the current defaults (missing_modality adaptor, auto_budget 2)
          C="Scientific Games scientific_from_games_defaults"
          cell $C ANT ground_built $S; cell $C ANT fine_tune $S $ANT_CK; cell $C ANT re_learning $S $ANT_CK
          cell $C ANT auto $S $ANT_CK
        fi
      done
    } > $RUNS/jobs.txt ;;
  recipe)  # issue 14's recipe study: the pre-training settings and the text format, ANT, Scientific target
    PRETRAIN_EPOCHS=10
    (
      pretrain ANT Games _default & pretrain ANT Games _t0.05 --temperature=0.05 &
      pretrain ANT Games _t0.1 --temperature=0.1 & pretrain ANT Games _b1024 --train_batch_size=1024 &
      pretrain ANT Games _b4096 --train_batch_size=4096 & pretrain ANT Games _all --pretrain_negatives=all &
      pretrain ANT Games,Scientific "" &
      wait
    ) & PRETRAIN=$!
    BASE=${ANT_CK:-$RUNS/pretrain_ANT_Games_default/snapshots/e10.pth}  # the same machine's default pre-training
    {
      for S in 2020 2021; do
        for V in _default _t0.05 _t0.1 _b1024 _b4096 _all; do
          for M in fine_tune re_learning; do
            cell Scientific Games recipe$V ANT $M $S $RUNS/pretrain_ANT_Games$V/snapshots/e10.pth
          done
        done
        for M in fine_tune re_learning; do
          cell Scientific Games,Scientific mixed_to_scientific ANT $M $S $RUNS/pretrain_ANT_Games+Scientific/snapshots/e10.pth
        done
        if [ -n "${TITLE_FEATURES:-}" ]; then  # Scientific's text as titles alone, like Games'
          for M in ground_built fine_tune re_learning; do
            C=$([ $M = ground_built ] || echo $BASE)
            echo "$(cell Scientific Games scientific_title ANT $M $S $C | sed "s|--data_path=|--feature_dir=$TITLE_FEATURES --data_path=|")"
          done
        fi
      done
    } > $RUNS/jobs.txt ;;
  *) echo "unknown PLAN=$PLAN (scientific | reverse | recipe)"; exit 1 ;;
esac

tr '\n' '\0' < $RUNS/jobs.txt | xargs -0 -P $PAR -I{} bash -c "{}" &
CELLS=$!
while kill -0 $CELLS 2>/dev/null && [ $(elapsed) -lt $DEADLINE ]; do
  sleep 20
  echo "$(elapsed) s: $(ls $RUNS/*/*-seed*.json 2>/dev/null | wc -l) cells done; $(ls $RUNS/pretrain_*/snapshots 2>/dev/null | tr '\n' ' ')"
done
kill -TERM -- -$CELLS -$PRETRAIN 2>/dev/null; sleep 3; kill -KILL -- -$CELLS -$PRETRAIN 2>/dev/null
echo "stopped after $(elapsed) s: $(ls $RUNS/*/*-seed*.json 2>/dev/null | wc -l) of $(wc -l < $RUNS/jobs.txt) cells"
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv 2>/dev/null
