#!/usr/bin/env bash
# Stage 3 of the bundled model on one lent GPU, time-boxed: train on from INIT (default: the
# bundled model) with `shapes-latent-gpu` (conveyor, batch 32) in a few variants side by side,
# then score each with `make quality`'s protocol (scripts/quality.sh: 128 val images, 10 Euler
# steps, guidance 1).
#   scripts/gpu_stage3.sh OUT [TRAIN_SECONDS] [DEVICE]
#   ONLY="shipped" scripts/gpu_stage3.sh OUT 480      (one variant, the GPU to itself)
# The bundled model of 2026-12-04 is variant p80 of the first version of this script, run on the
# model bundled before it (`shapes-latent-local`); p80 is now the config as shipped.
# The variants share the GPU (each is bound by kernel launches at this size, not by arithmetic).
# A 30-step calibration run of each measures its step time; each then resumes to as many steps as
# fit in TRAIN_SECONDS, with a linear decay over the last 30 % (optim.schedule wsd).
# Leaves OUT/<variant>.tar (the run without checkpoints or weights: config, metrics, val.jsonl, quality/),
# OUT/<variant>.fp16.safetensors (its EMA model, as bundled) and
# OUT/summary.md. PY names the Python that holds torch (default: the project's .venv, else python3).
set -uo pipefail
OUT=${1:?usage: scripts/gpu_stage3.sh OUT [TRAIN_SECONDS] [DEVICE]}
TRAIN_SECONDS=${2:-330}
DEVICE=${3:-cuda}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PY:-$ROOT/.venv/bin/python}
[ -x "$PY" ] || PY=python3
RUNS=${RUNS:-/tmp/stage3-runs}
CALIBRATION_STEPS=${CALIBRATION_STEPS:-30}
BATCH=${BATCH:-32}
QUALITY_N=${QUALITY_N:-128}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$OUT" "$RUNS"

# scripts/quality.sh calls $BIN/comit and $BIN/python: give it both for this Python.
BIN=$RUNS/bin && mkdir -p "$BIN"
printf '#!/bin/sh\nexec "%s" -m comit "$@"\n' "$PY" > "$BIN/comit" && chmod +x "$BIN/comit"
ln -sf "$(command -v "$PY")" "$BIN/python"

INIT=${INIT:-bundled}
MIN_STEPS=${MIN_STEPS:-100}
# Measured on 2026-12-04 (docs/training.md, "Stage 3 on a GPU"): global crop first 80 % beat 50 %,
# lr 5e-4 beat 2e-4. Next: all sequences global-first, and a higher lr.
declare -A VARIANTS=(
  [shipped]=""
  [p100]="step.global_first_p=1.0"
  [lr1e-3]="optim.lr=1e-3"
)
[ -n "${ONLY:-}" ] && for v in "${!VARIANTS[@]}"; do [[ " $ONLY " == *" $v "* ]] || unset "VARIANTS[$v]"; done
COMMON=(init.weights=$INIT optim.batch_size=$BATCH loop.device=$DEVICE loop.log_every=10 loop.keep_last=1)
log() { echo "[$(date +%T)] $*" | tee -a "$OUT/summary.md"; }

log "calibration: ${!VARIANTS[*]}, $CALIBRATION_STEPS steps each, batch $BATCH, side by side on $DEVICE"
"$PY" -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no cuda')" | tee -a "$OUT/summary.md"
for v in "${!VARIANTS[@]}"; do
  rm -rf "$RUNS/$v"
  "$PY" -m comit train shapes-latent-gpu --out "$RUNS/$v" "${COMMON[@]}" ${VARIANTS[$v]} \
      loop.max_steps=$CALIBRATION_STEPS loop.checkpoint_every=$CALIBRATION_STEPS loop.eval_every=0 \
      optim.decay_steps=1 > "$RUNS/$v.log" 2>&1 &
done
wait
start=$(date +%s)

steps_for() {  # steps that fit in TRAIN_SECONDS at the measured speed (the last logged interval)
  "$PY" - "$RUNS/$1/metrics.jsonl" "$TRAIN_SECONDS" "$BATCH" "$MIN_STEPS" <<'EOF'
import json, sys
records = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
seconds_per_step = int(sys.argv[3]) / records[-1]["images_per_s"]
print(max(int(float(sys.argv[2]) / seconds_per_step) // 10 * 10, int(sys.argv[4])))
EOF
}
for v in "${!VARIANTS[@]}"; do
  if ! steps=$(steps_for "$v"); then log "$v: calibration failed"; tail -5 "$RUNS/$v.log" | tee -a "$OUT/summary.md"; continue; fi
  decay=$((steps * 3 / 10)); every=$((steps / 4))
  log "$v: ${VARIANTS[$v]} -> $steps steps (decay $decay)"
  "$PY" -m comit train --out "$RUNS/$v" --resume loop.max_steps=$steps optim.decay_steps=$decay \
      loop.eval_every=$every loop.checkpoint_every=$every >> "$RUNS/$v.log" 2>&1 &
done
wait
log "training done in $(( $(date +%s) - start )) s"

for v in "${!VARIANTS[@]}"; do
  [ -d "$RUNS/$v/model" ] || { log "$v: no model"; tail -5 "$RUNS/$v.log" | tee -a "$OUT/summary.md"; continue; }
  BIN=$BIN bash "$ROOT/scripts/quality.sh" "$RUNS/$v/model" "$RUNS/$v/quality" $QUALITY_N > "$RUNS/$v.quality.log" 2>&1 &
done
wait
for v in "${!VARIANTS[@]}"; do
  log "## $v: ${VARIANTS[$v]}"
  [ -f "$RUNS/$v/val.jsonl" ] && cat "$RUNS/$v/val.jsonl" >> "$OUT/summary.md"
  if [ -f "$RUNS/$v/quality/quality.md" ]; then cat "$RUNS/$v/quality/quality.md" >> "$OUT/summary.md"
  else tail -5 "$RUNS/$v.quality.log" >> "$OUT/summary.md"; fi
  cp "$RUNS/$v.log" "$RUNS/$v/train.log"
  # The weights travel apart, in float16 as they are bundled: the float32 file alone is over 16 MB.
  [ -f "$RUNS/$v/model/model.safetensors" ] && "$PY" - "$RUNS/$v/model/model.safetensors" "$OUT/$v.fp16.safetensors" <<'PYEOF'
import sys
from safetensors import safe_open
from safetensors.torch import save_file
with safe_open(sys.argv[1], "pt") as f:
    tensors = {k: f.get_tensor(k) for k in f.keys()}
    metadata = f.metadata()
save_file({k: t.half() if t.is_floating_point() else t for k, t in tensors.items()}, sys.argv[2], metadata=metadata)
PYEOF
  tar -C "$RUNS" --exclude=checkpoints --exclude=model.safetensors -cf "$OUT/$v.tar" "$v"
done
log "done in $(( $(date +%s) - start )) s after calibration"
