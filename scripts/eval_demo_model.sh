#!/usr/bin/env bash
# Evaluate a trained demo model on held-out meanings (the numbers in docs/benchmarks.md and the model card).
# Usage: scripts/eval_demo_model.sh [MODEL_DIR] [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-runs/demo_more4/final}
OUT=${2:-runs/demo_more4/eval}
RUN=work/demo_run
mkdir -p "$OUT"
# X->EN speech-to-text against >= 5,000 English sentences (all test meanings + held-out distractors), with topline.
miner eval retrieval --queries $RUN/queries_x_en.tsv --db $RUN/en_db.txt --model "$MODEL" --json "$OUT/x_en.json" | tee "$OUT/x_en.md"
# EN->X: English speech against French sentences.
miner eval retrieval --queries $RUN/queries_en_x.tsv --db $RUN/fr_db.txt --model "$MODEL" --json "$OUT/en_x.json" | tee "$OUT/en_x.md"
# Speech-to-speech X->EN: the search side is English speech of the test and dev meanings.
miner eval retrieval --queries $RUN/queries_x_en.tsv --db $RUN/en_speech_db.tsv --model "$MODEL" --no-topline --json "$OUT/s2s_x_en.json" | tee "$OUT/s2s_x_en.md"
# The ASR cascade (Whisper-base transcribes, the text encoder embeds) on 30 queries per language (it runs ~1 clip/s here).
awk -F'\t' 'NR==1 || ++n[$3] <= 30' $RUN/queries_x_en.tsv > $RUN/queries_asr.tsv
miner eval retrieval --queries $RUN/queries_asr.tsv --db $RUN/en_db.txt --model "$MODEL" --baseline asr --json "$OUT/asr.json" | tee "$OUT/asr.md"
