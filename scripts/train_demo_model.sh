#!/usr/bin/env bash
# Reproduce the offline demo SAMU model from scratch (text -> speech -> manifests -> training -> merge -> assets).
# Needs: the demo extra (pip install -e ".[demo]"), espeak-ng (apt-get install espeak-ng).
# Time on a 2-core CPU: text ~5 min, speech ~30 min, backbone frames ~2 h 20 min (141k clips, computed by the
# stages that first need them), teacher embeddings ~1 h, training ~4 h 15 in six warm-started stages
# (~1.4-2.8 s per update), then stage 7 (~1 h) and stage 9b (~85 min from no frame cache) and the merges. Disk:
# ~40 GB (clips ~14 GB, frame cache ~25 GB).
set -euo pipefail
cd "$(dirname "$0")/.."
python scripts/gather_parallel_text.py --download --packages work/pkgs --out work/demo_data
python scripts/synthesize_speech.py --data work/demo_data --jobs 2 --max-train-per-lang 7000 --en-splits test,dev
python scripts/make_demo_manifests.py --data work/demo_data --out work/demo_run --more-train-per-lang 3000
# Later stages' clips come after, so each earlier train_more*.tsv (its spare clips are taken from the clips
# synthesized before it) stays as it was.
python scripts/synthesize_speech.py --data work/demo_data --jobs 2 --max-train-per-lang 12000 --en-splits test,dev
python scripts/make_demo_manifests.py --data work/demo_data --out work/demo_run --more-train-per-lang 8000 \
  --more-out train_more2.tsv
python scripts/synthesize_speech.py --data work/demo_data --jobs 2 --max-train-per-lang 20000 --en-splits test,dev
python scripts/make_demo_manifests.py --data work/demo_data --out work/demo_run --more-train-per-lang 16000 \
  --more-out train_more3.tsv
miner train scripts/demo_train.toml        # stage 1: adapter head, T1 targets, 36k clips (runs/demo)
miner train scripts/demo_train_t3.toml     # stage 2: + T3 targets (runs/demo_t3)
miner train scripts/demo_train_more.toml   # stage 3: + 23k more clips (runs/demo_more)
miner train scripts/demo_train_more2.toml  # stage 4: still more clips (runs/demo_more2)
miner train scripts/demo_train_more3.toml  # stage 5: more clips, T3 negatives from all sources (runs/demo_more3)
miner train scripts/demo_train_more4.toml  # stage 6: 1,200 more updates on stage 5's clips (runs/demo_more4)
# Stage 7: open-domain speech. Long, general sentences from Debian's translated books and fortune cookies, single
# and joined up to 25 s, by every training voice (espeak-ng variants, Festival, Piper; needs the `voices` extra and
# festival + festvox-* from Debian), augmented; 250 catalog clips per language replayed. Text ~1 min, speech
# ~11 min, teacher targets ~8 min, frames of 8,250 clips (15.6 h) ~35 min, 500 updates (runs/demo_open).
python scripts/gather_open_text.py --debs work/debs --out work/open_data --download
python scripts/synthesize_open.py --text work/open_data/open_text.tsv --out work/open_data --train-per-lang 1200 --jobs 2
python scripts/synthesize_open.py --text work/open_data/open_text.tsv --out work/open_data --train-per-lang 1200 \
  --splits dev_clean --jobs 2     # dev pages by Festival and Piper (clean dev speech for the fusion's gate), 1 min
python scripts/make_open_train.py --open work/open_data/open_train.tsv --replay work/demo_run/train.tsv \
  --open-per-lang 600 --replay-per-lang 250 --out work/open_run/train.tsv
python scripts/make_open_eval.py --data work/open_data --out work/open_eval --asr-per-lang 15
miner train scripts/demo_train_open.toml   # stage 7 (runs/demo_open)
miner eval fusion-weight --queries work/open_eval/queries_dev_asr.tsv --db work/open_eval/en_db.txt \
  --model runs/demo_open/final --save      # the fused encoder's weight, chosen on dev
# The default model: stages 6 and 7 merged in weight space (WiSE-FT, `miner merge`), the weight chosen where the mean
# of the two domains' dev R@1 is highest (0.6; ~25 min: the backbone runs once for all weights), then packaged
# (mining threshold) with its fusion weight and confidence gate chosen on five dev sets. Both parents ship beside it.
python scripts/experiments/sweep_merge.py --old runs/demo_more4/final --new runs/demo_open/final \
  --weights 0,0.2,0.3,0.4,0.5,0.6,0.7,0.8,1 --set open_dev:work/open_eval/queries_dev.tsv:work/open_eval/en_db.txt \
  --set catalog_dev:work/demo_run/dev.tsv:work/demo_run/en_dev_db.txt --json runs/merge/sweep.json
miner merge runs/demo_more4/final runs/demo_open/final -w 0.6 -o runs/merge/w06
python scripts/package_demo_assets.py --model runs/merge/w06 --data work/demo_run --open-eval work/open_eval \
  --out miner/demo_assets
# Stage 9b: that merged model fine-tuned on both domains at once, English catalog speech included (3,000 catalog
# clips per language and 3,000 English, 500 open-domain utterances per language; ~85 min here from no frame cache,
# then a 4-weight sweep), and merged with it again at w 0.7 (the highest mean dev R@1 of the two domains,
# docs/results/stage9b_sweep.json); packaged over the first merge (mining threshold), its gate chosen on five dev
# sets. The first merge is re-creatable from the shipped parents: miner merge model_catalog model_open -w 0.6.
bash scripts/experiments/stage9_mixture.sh b
miner merge miner/demo_assets/model runs/stage9b/final -w 0.7 -o runs/merge/s9b07
python scripts/package_demo_assets.py --model runs/merge/s9b07 --data work/demo_run --open-eval work/open_eval \
  --out miner/demo_assets
awk -F'\t' 'NR==1 || ++n[$3] <= 10' work/demo_run/dev.tsv > work/demo_run/dev_asr10.tsv
miner eval fusion-weight --queries work/open_eval/queries_dev_asr.tsv --db work/open_eval/en_db.txt \
  --queries work/open_eval/queries_dev_en_fr.tsv --db work/open_eval/fr_db.txt \
  --queries work/demo_run/dev_asr10.tsv --db work/demo_run/en_dev_db.txt \
  --queries work/open_eval/queries_dev_clean.tsv --db work/open_eval/en_db.txt \
  --queries work/open_eval/queries_dev_clean_en_fr.tsv --db work/open_eval/fr_db.txt --model miner/demo_assets/model --save
# The parents ship beside the default, head only (7 MB each: a run's final/ also holds the frozen backbone), with
# their training cards.
for run in demo_more4:catalog demo_open:open stage9b:mixture; do
  src=runs/${run%%:*}/final dst=miner/demo_assets/model_${run#*:}
  rm -rf "$dst"
  python -c "import sys; from miner.encoders.samu import SpeechEncoder as S
S.from_pretrained(sys.argv[1], device='cpu').save_pretrained(sys.argv[2], include_backbone=False)" "$src" "$dst"
  cp "$src/MODEL_CARD.md" "$dst/"
done
