#!/usr/bin/env bash
# Issue 17 on one lent GPU: the Scientific comparison rows of the four reworked models, trained to early
# stopping, PAR runs at a time, as many as fit before DEADLINE seconds. Features are built here from the
# raw benchmark folder with the text encoder ENCODER (a local transformers folder; the offline MiniLM
# converted to float16 fits the device's carry limit), so nothing large has to be carried:
#
#   RAW=<folder with Scientific.text, .item2index, .clip_image.npz, .train/.valid/.test.inter>
#   ENCODER=<text encoder folder> RUNS=devruns_fidelity DEADLINE=470 PAR=8 bash scripts/experiments/gpu_fidelity.sh
#
# Every run writes its result JSON under log/<Model>/ and its files under $RUNS/<name>/; the rows:
#   NOVA, SASRec++ (issue 17 parts 1-2), ODMT pooled / tokens, PMMRec pooled / tokens (paper settings:
#   dot scores, lr 1e-4, AdamW) and PMMRec cosine (lr 1e-3), for SEEDS.
set -uo pipefail
set -m
START=$(date +%s)
RAW=${RAW:?RAW: the raw Scientific folder}
ENCODER=${ENCODER:?ENCODER: a local text encoder folder}
RUNS=${RUNS:-devruns_fidelity}
DEADLINE=${DEADLINE:-470}
PAR=${PAR:-8}
SEEDS=${SEEDS:-"2020"}
MAX_TOKENS=${MAX_TOKENS:-32}
DEVICE=${DEVICE:-cuda}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONUNBUFFERED=1
elapsed() { echo $(( $(date +%s) - START )); }
mkdir -p $RUNS/logs $RUNS/data/Scientific
cp $RAW/Scientific.*.inter $RUNS/data/Scientific/

# 1. pooled and token-level features from the raw folder (seconds on a GPU; kept when there already)
[ -f $RUNS/data/Scientific/Scientific.text_tokens.npy ] || {
python -m recbole_mm.preprocess.benchmark --src $RAW --out $RUNS/data/Scientific --text_encoder $ENCODER \
    --device $DEVICE > $RUNS/logs/features.log 2>&1 || { echo "pooled features failed"; tail -20 $RUNS/logs/features.log; exit 1; }
python -m recbole_mm.preprocess.token_features --src $RAW --out $RUNS/data/Scientific --text_encoder $ENCODER \
    --max_tokens $MAX_TOKENS --device $DEVICE >> $RUNS/logs/features.log 2>&1 \
    || { echo "token features failed"; tail -20 $RUNS/logs/features.log; exit 1; }
}
echo "features after $(elapsed) s: $(ls $RUNS/data/Scientific | tr '\n' ' ')"

run() {  # name model [settings...]: one training run to early stopping
  local name=$1 model=$2; shift 2
  echo "python run_recbole_mm.py --model=$model --dataset=Scientific --data_path=$RUNS/data --hidden_size=256 \
--checkpoint_dir=$RUNS/$name --show_progress=False $* > $RUNS/logs/$name.log 2>&1"
}

{
  for S in $SEEDS; do
    run ODMT-tokens-$S ODMT --item_inputs=tokens --seed=$S
    run PMMRec-tokens-$S PMMRec --item_inputs=tokens --seed=$S
    run ODMT-pooled-$S ODMT --item_inputs=pooled --seed=$S
    run PMMRec-pooled-$S PMMRec --item_inputs=pooled --seed=$S
    run PMMRec-cosine-pooled-$S PMMRec --item_inputs=pooled --similarity=cosine --learning_rate=0.001 --seed=$S
    run NOVA-$S NOVA --seed=$S
    run SASRecPP-$S SASRec++ --seed=$S
  done
} > $RUNS/jobs.txt

# 2. the runs, PAR at a time, stopped at DEADLINE (a stopped run keeps its -last.pth: rerun to resume)
running=()
while read -r job; do
  while [ $(jobs -rp | wc -l) -ge $PAR ] && [ $(elapsed) -lt $DEADLINE ]; do sleep 2; done
  [ $(elapsed) -ge $DEADLINE ] && break
  bash -c "$job" & running+=($!)
done < $RUNS/jobs.txt
while [ $(jobs -rp | wc -l) -gt 0 ] && [ $(elapsed) -lt $DEADLINE ]; do sleep 2; done
for pid in $(jobs -rp); do kill -- -$pid 2>/dev/null; done
echo "stopped after $(elapsed) s"
grep -h "test result" $RUNS/logs/*.log | cut -c1-200
