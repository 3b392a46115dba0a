#!/usr/bin/env bash
# #16 item 6 (experiment): unfreeze Whisper-base's top layer, or keep the backbone frozen with the adapter only, at
# equal training time. Both arms warm-start from the shipped default on the same small mixture of both domains
# (300 catalog clips per language, English included, and 250 open-domain utterances per language, all training
# voices) with the same settings; the unfrozen arm trains the top layer with the head on frames cached below it.
#
# Equal time: a 20-update probe of each arm measures its seconds per update (frames already cached); the frozen arm
# runs FROZEN_UPDATES and the unfrozen arm as many updates as fit in the same time. Then both are scored on the dev
# sets (the choice) and the tests (reported, never used to choose).
#
# Needs the evaluation data of scripts/train_demo_model.sh (work/demo_data, work/demo_run, work/open_data,
# work/open_eval). Run from the repository root: bash scripts/experiments/top_layers.sh
set -euo pipefail
FROZEN_UPDATES=${FROZEN_UPDATES:-200}
LANGS=fr,de,es,it,pt,nl,pl,ru,sv
python scripts/synthesize_speech.py --data work/demo_data --jobs 2 --langs "$LANGS" --splits train \
  --en-splits train --max-train-per-lang 300
python scripts/make_demo_manifests.py --data work/demo_data --out work/top_layers/catalog --train-per-lang 300 \
  --langs "$LANGS,en"
python scripts/synthesize_open.py --text work/open_data/open_text.tsv --out work/open_data --train-per-lang 250 \
  --splits train --jobs 2
python scripts/make_open_train.py --open work/open_data/open_train.tsv --replay work/top_layers/catalog/train.tsv \
  --replay-per-lang 300 --open-per-lang 250 --out work/top_layers/train.tsv

# Seconds per update of one arm: the time between its train.log lines for steps 10 and 20 of a probe run.
seconds_per_update() {
  python - "$1/train.log" <<'PY'
import re, sys
from datetime import datetime
t = {}
for line in open(sys.argv[1]):
    m = re.match(r"(\S+ \S+) .* step (\d+) loss", line)
    if m:
        t[int(m.group(2))] = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f")
print(f"{(t[20] - t[10]).total_seconds() / 10:.3f}")
PY
}
for arm in frozen unfrozen; do  # the probes also fill the frame caches (train and dev) of each arm
  rm -rf "runs/top_probe_$arm"
  miner train "scripts/experiments/top_layers_$arm.toml" --out-dir "runs/top_probe_$arm" --max-updates 20 \
    eval_every=0 save_every=0
done
S_FROZEN=$(seconds_per_update runs/top_probe_frozen)
S_UNFROZEN=$(seconds_per_update runs/top_probe_unfrozen)
UNFROZEN_UPDATES=$(python -c "print(max(20, round($FROZEN_UPDATES * $S_FROZEN / $S_UNFROZEN)))")
echo "s/update: frozen $S_FROZEN, unfrozen $S_UNFROZEN -> updates $FROZEN_UPDATES vs $UNFROZEN_UPDATES" \
  | tee runs/top_layers_plan.txt
miner train scripts/experiments/top_layers_frozen.toml --max-updates "$FROZEN_UPDATES" \
  head_only_updates="$FROZEN_UPDATES"
miner train scripts/experiments/top_layers_unfrozen.toml --max-updates "$UNFROZEN_UPDATES" \
  head_only_updates="$UNFROZEN_UPDATES"
for arm in frozen unfrozen; do
  for set in open_dev:work/open_eval/queries_dev.tsv:work/open_eval/en_db.txt \
      catalog_dev:work/demo_run/dev.tsv:work/demo_run/en_dev_db.txt \
      unseen:work/open_eval/queries_unseen.tsv:work/open_eval/en_db.txt \
      catalog:work/demo_run/queries_x_en.tsv:work/demo_run/en_db.txt; do
    IFS=: read -r name queries db <<< "$set"
    miner eval retrieval --queries "$queries" --db "$db" --model "runs/top_$arm/final" \
      --json "runs/top_$arm/eval_$name.json"
  done
done
