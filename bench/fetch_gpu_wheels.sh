#!/usr/bin/env bash
# Download the wheels bench/gpu_session.sh installs on a GPU machine that reaches no package index (Python 3.12,
# x86-64), into .whl/ (keep it out of git: `echo /.whl/ >> .git/info/exclude`). Versions: the ones installed
# here, so the GPU run uses what the tests ran with. About 23 MB.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
platforms=()
for p in manylinux_2_35 manylinux_2_34 manylinux_2_31 manylinux_2_28 manylinux_2_27 manylinux_2_24 manylinux_2_17 \
  manylinux2014 manylinux1; do platforms+=(--platform "${p}_x86_64"); done
for name in faiss-cpu fastapi starlette uvicorn pydantic pydantic_core pydantic-settings python-dotenv \
  python-multipart annotated-types typing-inspection typing_extensions soundfile cffi pycparser soxr opentelemetry-api; do
  version=$(python3 -m pip show "$name" 2>/dev/null | sed -n 's/^Version: //p')
  [ -n "$version" ] || { echo "$name is not installed here: install the project first" >&2; exit 1; }
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d .whl "$name==$version"
done
du -sh .whl
