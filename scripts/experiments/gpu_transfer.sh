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

pretrain() {  # model domain: snapshots at PRETRAIN_EPOCHS in $RUNS/pretrain_<model>_<domain>/snapshots/e<E>.pth
  local dir=$RUNS/pretrain_$1_$2 E LAST CKPT
  mkdir -p $dir/snapshots
  for E in $PRETRAIN_EPOCHS; do
    LAST=$(ls -t $dir/*-last.pth 2>/dev/null | head -1)
    python run_recbole_mm.py --model=$1 --stage=pretrain --dataset=$2 --data_path=$DATA --epochs=$E \
        --checkpoint_dir=$dir ${LAST:+--resume_from=$LAST} >> $RUNS/logs/pretrain_$1_$2.log 2>&1 \
        || { touch $dir/failed; echo "$1 pre-training on $2 failed"; tail -20 $RUNS/logs/pretrain_$1_$2.log; return 1; }
    CKPT=$(ls -t $dir/$1-pretrain-$2-*.pth | grep -v -- -last.pth | head -1)
    cp "$CKPT" $dir/snapshots/e$E.pth.tmp && mv $dir/snapshots/e$E.pth.tmp $dir/snapshots/e$E.pth
    echo "$1 pre-trained on $2 for $E epochs after $(elapsed) s"
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
  *) echo "unknown PLAN=$PLAN (scientific | reverse)"; exit 1 ;;
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
