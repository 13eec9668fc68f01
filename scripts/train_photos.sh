#!/usr/bin/env bash
# COMiT on real photographs that ship with scikit-image, in one command (docs/training.md, "Your own
# images"): crops of 13 photographs to train on, crops of 2 others held out (scripts/photo_crops.py),
# then step 1 of the bundled model's recipe (shapes-latent-global: the global crop alone, in the
# bundled conv autoencoder's latents) on them, without a teacher (DINOv2 needs a download; the
# bundled shapes teacher knows only shapes), then the held-out reconstructions beside the bundled
# shapes model's.
#   scripts/train_photos.sh [OUT] [key=value ...]     (default runs/photos; overrides go to comit train)
# OUT/data: the image folder (train/, val/); OUT/run: the training run (resumed if it was stopped);
# OUT/before-after.png and OUT/paired.txt: the held-out comparison; OUT/ceiling.txt: the bundled
# autoencoder alone on the held-out crops (no reconstruction in its latents can do better).
set -euo pipefail
OUT=${1:-runs/photos}
shift || true
BIN=${BIN:-$(dirname "$0")/../.venv/bin}
COMIT="$BIN/comit"
[ -x "$COMIT" ] || COMIT=comit
PYTHON="$BIN/python"
[ -x "$PYTHON" ] || PYTHON=python

[ -d "$OUT/data/train" ] || "$PYTHON" "$(dirname "$0")/photo_crops.py" "$OUT/data"
RUN="$OUT/run"
ARGS=(shapes-latent-global --out "$RUN" "data.dataset=$OUT/data" teacher.kind=none loop.max_steps=1500
      loop.eval_every=250 name=photos "$@")
if [ -f "$RUN/model/model.safetensors" ]; then
    echo "$RUN is finished: kept"
elif [ -d "$RUN/checkpoints" ]; then
    "$COMIT" train "${ARGS[@]}" --resume
else
    "$COMIT" train "${ARGS[@]}"
fi
"$PYTHON" "$(dirname "$0")/autoencoder_ceiling.py" "$RUN/model" --data "$OUT/data" | tee "$OUT/ceiling.txt"
"$PYTHON" "$(dirname "$0")/before_after.py" bundled "$RUN/model" --data "$OUT/data" --policies global all \
    --labels "bundled (shapes)" "photos" -o "$OUT/before-after.png" --paired 200 | tee "$OUT/paired.txt"
