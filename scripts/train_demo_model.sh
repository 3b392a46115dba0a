#!/usr/bin/env bash
# Reproduce the offline demo SAMU model from scratch (text -> speech -> manifests -> training -> assets).
# Needs: the demo extra (pip install -e ".[demo]"), espeak-ng (apt-get install espeak-ng), ~6 GB of disk.
# Time on a 2-core CPU: text ~5 min, speech ~10 min, backbone frames ~1 h, training ~1 h (1,500 updates at ~2.2 s on 2 idle cores).
set -euo pipefail
cd "$(dirname "$0")/.."
python scripts/gather_parallel_text.py --download --packages work/pkgs --out work/demo_data
python scripts/synthesize_speech.py --data work/demo_data --jobs 2 --max-train-per-lang 4000 --en-splits test,dev
python scripts/make_demo_manifests.py --data work/demo_data --out work/demo_run
miner train scripts/demo_train.toml
python scripts/package_demo_assets.py --run runs/demo --data work/demo_run
