#!/usr/bin/env bash
# Pre-train one model to an epoch count and keep the transferable checkpoint as <dir>/snapshots/e<epochs>.pth.
# Resumable: a snapshot already there is kept; an interrupted pre-training continues from its -last.pth.
#   bash scripts/experiments/pretrain_snapshot.sh <model> <domains> <dir> <epochs> [run_recbole_mm options...]
# e.g. pretrain_snapshot.sh ANT Games ../runs/pretrain_ANT_Games 10 --temperature=0.1
set -uo pipefail
MODEL=$1 DOMAINS=$2 DIR=$3 EPOCHS=$4; shift 4
DATA=${DATA:-../shared/datasets}
mkdir -p "$DIR/snapshots"
SNAP=$DIR/snapshots/e$EPOCHS.pth
[ -f "$SNAP" ] && exit 0
LAST=$(ls -t "$DIR"/*-last.pth 2>/dev/null | head -1)
python run_recbole_mm.py --model=$MODEL --stage=pretrain --dataset=$DOMAINS --data_path=$DATA --epochs=$EPOCHS \
    --checkpoint_dir="$DIR" ${LAST:+--resume_from=$LAST} "$@" || exit 1
CKPT=$(ls -t "$DIR"/$MODEL-pretrain-*.pth | grep -v -- -last.pth | head -1)
cp "$CKPT" "$SNAP.tmp" && mv "$SNAP.tmp" "$SNAP"
