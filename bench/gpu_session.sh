#!/usr/bin/env bash
# One GPU session, as run on a lent machine (docs/benchmarks.md, "GPU"): the CUDA tests, then the three GPU
# benchmarks (speech encoding against the bf16 floor, exact search against the torch reference, the API under
# load against in-process batched encoding), each writing JSON into OUTDIR. About 6 minutes on one H200.
#
#   bash bench/gpu_session.sh [OUTDIR]
#
# The machine's python3 must hold torch with CUDA, transformers and sentence-transformers. Wheels of what it
# lacks wait in .whl/ (under 25 MB: faiss-cpu, soundfile + cffi + pycparser, soxr, fastapi + starlette +
# opentelemetry-api, uvicorn, pydantic + pydantic-core + annotated-types + typing-inspection + typing-extensions,
# pydantic-settings + python-dotenv, python-multipart; for Python 3.12; bench/fetch_gpu_wheels.sh gets them): they are installed to /tmp/site first,
# since such machines reach no package index. STEPS picks steps (default "tests speech search api").
set -uo pipefail
out=${1:-${OUT:-/tmp/gpu_session}}
mkdir -p "$out"
steps=" ${STEPS:-tests speech search api} "
export PYTHONPATH=.
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH=/tmp/site:.
fi
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1 TOKENIZERS_PARALLELISM=false
stamp() { echo "== $(date -u +%H:%M:%S) $*"; }
stamp start
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
python3 -c "import sys, torch, transformers, sentence_transformers as st, faiss; print(sys.version.split()[0], \
'torch', torch.__version__, 'cuda', torch.version.cuda, 'transformers', transformers.__version__, \
'sentence-transformers', st.__version__, 'faiss', faiss.__version__, 'faiss GPUs', faiss.get_num_gpus())" \
  | tee -a "$out/gpu.txt"

if [[ $steps == *" tests "* ]]; then
  stamp tests
  timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py tests/test_torch_search.py \
    tests/test_encode_batching.py tests/test_index_sharded.py tests/test_api_batching.py \
    tests/test_speech_encoder.py >"$out/pytest.log" 2>&1
  echo "pytest rc $?"; tail -n 15 "$out/pytest.log"
fi

if [[ $steps == *" search "* ]]; then
  stamp search
  timeout 90 python3 bench/bench_search_gpu.py --n 1600000 --dim 768 --k 10 --queries 1,32,1024 \
    --out "$out/bench_search.json" 2>&1 | tee "$out/bench_search.log" | grep -v -i warn
fi

if [[ $steps == *" speech "* ]]; then
  stamp speech
  # the old path (fp32 weights under autocast, batches by count) and each change on top of it
  timeout 200 python3 bench/bench_speech.py --size xlsr-300m --train-updates 0 --repeats 3 --floor \
    --encode-variants "autocast@16,autocast@64,cast@64,cast+seconds@64,cast+seconds@128" --encode-seconds 960 \
    --out "$out/bench_speech.json" >"$out/bench_speech.log" 2>&1
  echo "bench_speech rc $?"; grep -E "^floor|^encode|^\|" "$out/bench_speech.log" | tail -n 16
fi

if [[ $steps == *" api "* ]]; then
  stamp api
  model=/tmp/bench_model
  [ -d $model/samu ] || python3 bench/make_bench_model.py --size xlsr-300m --out $model >/dev/null 2>&1
  timeout 240 python3 bench/bench_api.py --speech-model $model/samu --device cuda --synthetic-size 200000 \
    --requests 400 --warmup 20 --concurrency 1,8,32,128 --batch-size 64 --batch-seconds 400 --batch-wait-ms 5 \
    --batched-baseline 32 --seconds 6 --json "$out/bench_api.json" >"$out/bench_api.log" 2>&1
  echo "bench_api rc $?"; grep -v -i -E "warn|INFO" "$out/bench_api.log" | tail -n 14
fi
stamp done
