#!/usr/bin/env bash
# The bundled model's recipe on one machine, in one command: 74 minutes from a fresh clone, alone
# on a 2-core AMD EPYC with bf16 units (bf16, 2026-12-07; docs/results/recipe-e2e-2026-12-07/), about
# 77 minutes on a 2-core Intel Xeon in fp32 and about 2 hours on a 2-core AMD EPYC with AVX2 only;
# its model meets every quality target (docs/training.md, "One recipe, one machine"); the bundled
# model was made by the same two steps. Bundle a run of your own with
#   .venv/bin/python scripts/bundle_model.py OUT/global OUT/fill --command "..." --minutes M
#   scripts/train_bundled.sh [OUT]            (default runs/bundled)
# Step 1 (OUT/global, 32-35 min): shapes-latent-global, the global crop alone from a fresh model,
#   until the decoder reads the message (docs/training.md, "One recipe, one machine").
# Step 2 (OUT/fill, 42 min): shapes-latent-fill from step 1's EMA model: local crops on the
#   conveyor with the fill write. Its model/ is the one to bundle.
# Each step resumes from its last checkpoint if it was stopped; extra arguments (config overrides,
# e.g. loop.precision=bf16) are passed to both steps.
set -euo pipefail
OUT=${1:-runs/bundled}
shift || true
BIN=${BIN:-$(dirname "$0")/../.venv/bin}
COMIT="$BIN/comit"
[ -x "$COMIT" ] || COMIT=comit

train() {  # NAME CONFIG [ARGS...]: train, or resume a run that was stopped; skip a finished one
    local run="$OUT/$1" config=$2
    shift 2
    if [ -f "$run/model/model.safetensors" ]; then
        echo "$run is finished: kept"
    elif [ -d "$run/checkpoints" ]; then
        "$COMIT" train "$config" --out "$run" --resume "$@"
    else
        "$COMIT" train "$config" --out "$run" "$@"
    fi
}

train global shapes-latent-global "$@"
train fill shapes-latent-fill "init.weights=$OUT/global/model" "$@"
