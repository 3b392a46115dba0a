#!/usr/bin/env bash
# Evaluate a demo model on the open-domain tests (scripts/synthesize_open.py, scripts/make_open_eval.py):
# X->EN on held-out chapters spoken by voices never used in training (Pico de/es/fr/it, Festival ru) and by
# espeak-ng (seen voice, all nine languages), EN->FR, each as SAMU, the ASR cascade, the fusion, and the text topline.
# The cascade and the fusion run on 15 queries per language (Whisper-base decodes at ~2-5 audio-s per s here).
# Usage: scripts/eval_open_model.sh [MODEL_DIR] [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-miner/demo_assets/model}
OUT=${2:-runs/eval_open}
EVAL=work/open_eval
mkdir -p "$OUT"
[ -f $EVAL/en_db.txt ] || python scripts/make_open_eval.py --data work/open_data --out $EVAL --asr-per-lang 15
run() {  # name queries db model [extra args]
  local name=$1 queries=$2 db=$3 model=$4; shift 4
  miner eval retrieval --queries "$queries" --db "$db" --model "$model" --json "$OUT/$name.json" "$@" | tee "$OUT/$name.md"
}
run unseen_samu $EVAL/queries_unseen.tsv $EVAL/en_db.txt "$MODEL"
run seen_samu $EVAL/queries_seen.tsv $EVAL/en_db.txt "$MODEL"
run en_fr_samu $EVAL/queries_en_fr.tsv $EVAL/fr_db.txt "$MODEL"
# The fusion weight is chosen on dev clips (held-out dev chapters), then SAMU, the ASR cascade and the fusion are
# scored from one pass over each subset (a fused run also reports its two sides).
miner eval fusion-weight --queries $EVAL/queries_dev_asr.tsv --db $EVAL/en_db.txt --model "$MODEL" --save \
  --json "$OUT/fusion_weight.json" | tee "$OUT/fusion_weight.md"
run unseen_subset_fused $EVAL/queries_unseen_asr.tsv $EVAL/en_db.txt "fused:$MODEL"
run seen_subset_fused $EVAL/queries_seen_asr.tsv $EVAL/en_db.txt "fused:$MODEL"
