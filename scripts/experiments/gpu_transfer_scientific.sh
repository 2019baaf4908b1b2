#!/usr/bin/env bash
# Issue 14 on one lent GPU (H100/H200, 16 cores): the Scientific-target cells of the real transfer
# table with 3 seeds, and UniSRec pre-trained on Games, as many as fit before DEADLINE seconds.
# Each cell is one `python -m recbole_mm.bench.transfer` run (one model, mode and seed) kept as
# <RUNS>/scientific_from_games/<key>.json, so the same command on CPU later skips what is done and
# rebuilds table.md / table.csv / table.png. Cells run PAR at a time on the one GPU.
#
#   DATA=<folder with Scientific/ and Games/, features included> ANT_CK=<ANT pre-trained on Games> \
#       bash scripts/experiments/gpu_transfer_scientific.sh
set -uo pipefail
set -m  # every background job its own process group: the deadline stops a whole job at once
START=$(date +%s)
DEADLINE=${DEADLINE:-470}
DATA=${DATA:-../shared/datasets}
ANT_CK=${ANT_CK:?ANT checkpoint pre-trained on Games}
RUNS=${RUNS:-devruns}
PAR=${PAR:-12}
SEEDS=${SEEDS:-"2020 2021 2022"}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONUNBUFFERED=1
TABLE=$RUNS/scientific_from_games
UNI=$RUNS/pretrain_UniSRec_Games
mkdir -p $RUNS/logs $TABLE $UNI/snapshots
elapsed() { echo $(( $(date +%s) - START )); }

# 0. smoke: one fine-tuning epoch on the GPU (fails fast, before the long jobs start)
python -m recbole_mm.bench.transfer --target=Scientific --sources=Games --models=ANT --checkpoints=ANT:$ANT_CK \
    --modes=fine_tune --seeds=1 --epochs=1 --data_path=$DATA --out=$RUNS/smoke > $RUNS/logs/smoke.log 2>&1
if ! grep -q "${SMOKE_DEVICE:-cuda}" $RUNS/smoke/*.json 2>/dev/null; then
  echo "smoke failed after $(elapsed) s"; tail -30 $RUNS/logs/smoke.log; exit 1
fi
echo "smoke ok after $(elapsed) s: $(grep -o '"device": "[^"]*"' $RUNS/smoke/*.json | head -1)"

# 1. UniSRec pre-training on Games: snapshots at 10, 20 and 40 epochs (resumed from its last state)
(
  for E in 10 20 40; do
    LAST=$(ls -t $UNI/*-last.pth 2>/dev/null | head -1)
    python run_recbole_mm.py --model=UniSRec --stage=pretrain --dataset=Games --data_path=$DATA --epochs=$E \
        --checkpoint_dir=$UNI ${LAST:+--resume_from=$LAST} >> $RUNS/logs/pretrain_UniSRec.log 2>&1 \
        || { touch $UNI/failed; echo "UniSRec pre-training failed"; tail -20 $RUNS/logs/pretrain_UniSRec.log; exit 1; }
    CKPT=$(ls -t $UNI/UniSRec-pretrain-Games-*.pth | grep -v -- -last.pth | head -1)
    cp "$CKPT" $UNI/snapshots/e$E.pth.tmp && mv $UNI/snapshots/e$E.pth.tmp $UNI/snapshots/e$E.pth
    echo "UniSRec e$E pre-trained after $(elapsed) s"
  done
) &
PRETRAIN=$!

# 2. the cells, in order of priority
UNI_CK=$UNI/snapshots/e10.pth
cell() {  # model mode seed [checkpoint]
  local wait="" ck=""
  [ -n "${4:-}" ] && ck="--checkpoints=$1:$4"
  [ "${4:-}" = "$UNI_CK" ] && wait="while [ ! -f $UNI_CK ]; do [ -f $UNI/failed ] && exit 1; sleep 5; done; "
  echo "${wait}python -m recbole_mm.bench.transfer --target=Scientific --sources=Games --models=$1 $ck --modes=$2 --seeds=$3 --data_path=$DATA --out=$TABLE > $RUNS/logs/$1-${2//[:=]/_}-$3.log 2>&1"
}
{
  for S in $SEEDS; do
    cell ANT ground_built $S; cell ANT fine_tune $S $ANT_CK; cell ANT re_learning $S $ANT_CK
  done
  for S in $SEEDS; do cell UniSRec ground_built $S; done
  for S in $SEEDS; do cell UniSRec fine_tune $S $UNI_CK; cell UniSRec re_learning $S $UNI_CK; done
  for S in $SEEDS; do cell ANT fine_tune:fine_tune_freeze_encoder=False $S $ANT_CK; done
  for S in $SEEDS; do cell ANT ground_built:missing_modality=adaptor $S; done
  for S in $SEEDS; do cell UniSRec fine_tune:fine_tune_freeze_encoder=False $S $UNI_CK; done
  for M in ground_built fine_tune re_learning; do cell ANT_e $M 2020 $ANT_CK; done
  for M in ground_built fine_tune re_learning; do cell UniSRec_e $M 2020 $UNI_CK; done
  cell ANT auto 2020 $ANT_CK
} > $RUNS/jobs.txt
tr '\n' '\0' < $RUNS/jobs.txt | xargs -0 -P $PAR -I{} bash -c "{}" &
CELLS=$!

while kill -0 $CELLS 2>/dev/null && [ $(elapsed) -lt $DEADLINE ]; do
  sleep 20
  echo "$(elapsed) s: $(ls $TABLE/*.json 2>/dev/null | wc -l) cells done; $(ls $UNI/snapshots 2>/dev/null | tr '\n' ' ')"
done
kill -TERM -- -$CELLS -$PRETRAIN 2>/dev/null; sleep 3; kill -KILL -- -$CELLS -$PRETRAIN 2>/dev/null
echo "stopped after $(elapsed) s: $(ls $TABLE/*.json 2>/dev/null | wc -l) of $(wc -l < $RUNS/jobs.txt) cells"
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv 2>/dev/null
