#!/usr/bin/env bash
# The wheels a lent GPU machine lacks for this package (its image has torch, numpy, pillow,
# safetensors, huggingface_hub, pyyaml, typer, rich, tqdm, matplotlib, torchmetrics and
# transformers; not pydantic, diffusers or importlib_metadata), downloaded here into .whl/ for its
# Python 3.12, at the versions this project's .venv uses. The device call then carries .whl:
#   scripts/gpu_wheels.sh          (once per machine; .whl/ is git-ignored through .git/info/exclude)
#   run(carry=[".whl"], timeout_s=600, command="python3 -m pip install -q --no-index --no-deps --no-compile
#       --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD/src &&
#       COMIT='python3 -m comit' PYTHON=python3 scripts/gpu_run.sh $OUT/gpu 540")
set -euo pipefail
cd "$(dirname "$0")/.."
PIP=${PIP:-.venv/bin/pip}
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
mkdir -p .whl
versions() { "$PIP" show "$@" 2>/dev/null | awk '/^Name:/ {name=$2} /^Version:/ {print name "==" $2}'; }
mapfile -t wanted < <(versions pydantic pydantic_core annotated-types typing-inspection diffusers importlib_metadata zipp)
[ ${#wanted[@]} -eq 7 ] || { echo "error: $PIP does not have all of the packages to match; run make install first" >&2; exit 1; }
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d .whl "${wanted[@]}"
ls .whl
