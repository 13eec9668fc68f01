#!/usr/bin/env bash
# Every GPU code path of the project once, at tiny size, in about a minute:
#   scripts/gpu_smoke.sh [DEVICE] [OUT]          (DEVICE: cuda (default), cuda:1, or cpu to try the script)
# tokenize / detokenize / reconstruct in fp32 and bf16 autocast, a few training steps with bf16
# autocast (loop.precision auto = bf16 on CUDA), the held-out curve, one eval, and a bench row.
# Run it whenever a GPU is lent (the device tool), and put its last lines in benchmarks/README.md.
set -euo pipefail
DEVICE=${1:-cuda}
OUT=${2:-smoke-$DEVICE}
BIN=${BIN:-$(dirname "$0")/../.venv/bin}
# COMIT and PYTHON may be given (on a lent GPU without this .venv: COMIT='python3 -m comit' PYTHON=python3).
if [ -z "${COMIT:-}" ]; then COMIT="$BIN/comit"; [ -x "$COMIT" ] || COMIT=comit; fi
if [ -z "${PYTHON:-}" ]; then PYTHON="$BIN/python"; [ -x "$PYTHON" ] || PYTHON=python3; fi
read -r -a COMIT_CMD <<< "$COMIT"
export HF_HUB_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False
rm -rf "$OUT" && mkdir -p "$OUT"
"$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
      torch.cuda.get_device_name() if torch.cuda.is_available() else '')"

"${COMIT_CMD[@]}" train tiny --out "$OUT/run" loop.device="$DEVICE" max_steps=20 batch_size=8 log_every=5 \
    eval_every=10 eval_images=8 sample_every=10 checkpoint_every=10
"${COMIT_CMD[@]}" train --out "$OUT/run" --resume loop.device="$DEVICE" max_steps=30
MODEL="$OUT/run/model"
IMAGES=$("$PYTHON" -c "from comit.data import sample_paths; print(' '.join(map(str, sample_paths()[:4])))")
for precision in fp32 bf16; do
    "${COMIT_CMD[@]}" tokenize $IMAGES -o "$OUT/tokens-$precision.safetensors" --model "$MODEL" --device "$DEVICE" \
        --precision "$precision" --global-crop --order adaptive --num-crops 3
    "${COMIT_CMD[@]}" detokenize "$OUT/tokens-$precision.safetensors" -o "$OUT/decoded-$precision" --device "$DEVICE" \
        --precision "$precision" --steps 4
    "${COMIT_CMD[@]}" reconstruct $IMAGES -o "$OUT/recon-$precision" --model "$MODEL" --device "$DEVICE" \
        --precision "$precision" --order raster_scan --num-crops 9 --steps 4 --cfg 7.5
done
"${COMIT_CMD[@]}" tokenize --data shapes:num_images=64 --split val -o "$OUT/shards" --model "$MODEL" --device "$DEVICE" \
    --shard-size 32 --batch-size 32 --precision bf16
"${COMIT_CMD[@]}" eval recon --model "$MODEL" -n 32 --device "$DEVICE" --fid-features none --steps 4 --out "$OUT/eval"
"${COMIT_CMD[@]}" bench --size tiny --device "$DEVICE" --repeats 2 --out "$OUT/bench"
echo "smoke test passed on $DEVICE: $OUT"
