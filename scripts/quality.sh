#!/usr/bin/env bash
# The bundled model's quality targets, measured through the public CLI in one command:
#   scripts/quality.sh [MODEL] [OUT] [N]        (make quality: bundled, eval/quality, 128)
# 10 Euler steps, guidance 1, fixed seeds, N shapes val images:
#   all-crops/   the global crop then all 9 local crops (raster order): PSNR, SSIM, gain over another image
#   adaptive-3/  the adaptive policy, 3 local crops, no global crop
#   align/       token-object mIoU of the all-crops messages (random maps beside it)
# Writes OUT/quality.md with the table. About a minute on 2 CPU cores for N = 128 (66 s, 2026-12-07).
set -euo pipefail
MODEL=${1:-bundled}
OUT=${2:-eval/quality}
N=${3:-128}
BIN=${BIN:-$(dirname "$0")/../.venv/bin}
COMIT="$BIN/comit"
[ -x "$COMIT" ] || COMIT=comit

common=(--model "$MODEL" -n "$N" --seed 0 --batch-size 32)
"$COMIT" eval recon "${common[@]}" --order raster_scan --global-crop --num-crops 10 --steps 10 --cfg 1 \
    --fid-features none --out "$OUT/all-crops"
"$COMIT" eval recon "${common[@]}" --order adaptive --no-global-crop --num-crops 3 --steps 10 --cfg 1 \
    --fid-features none --out "$OUT/adaptive-3"
"$COMIT" eval align "${common[@]}" --order raster_scan --global-crop --num-crops 10 --out "$OUT/align"

"$BIN/python" - "$OUT" "$MODEL" "$N" <<'EOF'
import json, sys
from pathlib import Path

out, model, n = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
read = lambda part: json.loads((out / part / "results.json").read_text())["metrics"]
full, adaptive, align = read("all-crops"), read("adaptive-3"), read("align")
rows = [
    ("global + all 9 local crops", full, ">= 24 dB, >= 8 dB over another image"),
    ("adaptive, 3 local crops", adaptive, ">= 20 dB"),
]
lines = [f"# Quality of `{model}` on {n} shapes val images (10 Euler steps, guidance 1, seed 0)", "",
         "| tokens from | PSNR (dB) | against another image (dB) | gain (dB) | SSIM | target |",
         "|---|---|---|---|---|---|"]
for name, m, target in rows:
    lines.append(f"| {name} | {m['psnr']:.2f} | {m['psnr_other_image']:.2f} | {m['psnr_gain_over_other']:.2f} "
                 f"| {m['ssim']:.3f} | {target} |")
lines += ["", f"Token-object alignment (all crops): mIoU {align['miou_image']:.3f} per image, "
              f"{align['miou_object']:.3f} per object (random maps: {align['random_miou_image']:.3f}, "
              f"{align['random_miou_object']:.3f})."]
text = "\n".join(lines) + "\n"
(out / "quality.md").write_text(text)
print(text)
EOF
