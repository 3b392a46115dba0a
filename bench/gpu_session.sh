#!/usr/bin/env bash
# One GPU session, as run on a lent machine (docs/benchmarks.md, "GPU"): the CUDA tests, then bench_speech.py.
#
#   bash bench/gpu_session.sh [OUTDIR]
#
# The machine's python3 must hold torch with CUDA, transformers and sentence-transformers. Wheels of what it
# lacks (faiss-cpu, soundfile + cffi + pycparser, soxr, for Python 3.12) may wait in .whl/: they are installed
# to /tmp/site first, since such machines reach no package index. BENCH_ARGS passes options to the
# bench; SKIP_TESTS=1 runs the bench alone.
set -uo pipefail
out=${1:-${OUT:-/tmp/gpu_session}}
mkdir -p "$out"
export PYTHONPATH=.
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH=/tmp/site:.
fi
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
python3 -c "import sys, torch, transformers, sentence_transformers as st, faiss; print(sys.version.split()[0], \
'torch', torch.__version__, 'cuda', torch.version.cuda, 'transformers', transformers.__version__, \
'sentence-transformers', st.__version__, 'faiss', faiss.__version__, 'faiss GPUs', faiss.get_num_gpus())" \
  | tee -a "$out/gpu.txt"
if [ -z "${SKIP_TESTS:-}" ]; then
  timeout 240 python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py tests/test_speech_encoder.py \
    tests/test_train_loop.py tests/test_train_features.py tests/test_index_sharded.py >"$out/pytest.log" 2>&1
  echo "pytest rc $?"; tail -n 25 "$out/pytest.log"
fi
timeout 300 python3 bench/bench_speech.py ${BENCH_ARGS:-} --out "$out/bench_speech.json" >"$out/bench_speech.log" 2>&1
echo "bench rc $?"; grep -v -i -E "warn|rationality|upd/s|it/s]" "$out/bench_speech.log" | tail -n 22
