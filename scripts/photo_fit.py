"""The numbers behind the photo warning (comit/model/fit.py): PSNR of the bundled model's
reconstructions of its shapes samples and of scikit-image's photographs, at `comit reconstruct`'s
defaults (adaptive policy, its default crops, 10 Euler steps, guidance 7.5, seed 0).

    .venv/bin/python scripts/photo_fit.py docs/results/photo-fit-DATE
"""

from __future__ import annotations

import datetime
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from comit import COMiT
from comit.cli.support import parse_order, resolved_num_crops
from comit.data.images import load_images
from comit.devices import describe_device
from comit.metrics.reconstruction import psnr_per_image
from comit.model.fit import POOR_PSNR_DB

PHOTOS = ("astronaut", "camera", "cat", "chelsea", "coffee", "hubble_deep_field", "immunohistochemistry", "rocket")
SAMPLES = sorted((Path(__file__).resolve().parents[1] / "src/comit/assets/samples").glob("shapes_*.png"))


def photographs(folder: Path) -> list[Path]:
    from skimage import data

    paths = []
    for name in PHOTOS:
        pixels = getattr(data, name)()
        pixels = np.stack([pixels] * 3, axis=-1) if pixels.ndim == 2 else pixels[..., :3]
        paths.append(folder / f"{name}.png")
        Image.fromarray(pixels).save(paths[-1])
    return paths


def scores(model: COMiT, paths: list[Path]) -> dict[str, float]:
    order = parse_order("adaptive")
    pixels = load_images(paths, model.config.image_size)
    generator = torch.Generator().manual_seed(0)
    tokens = model.tokenize(pixels, order=order, num_crops=resolved_num_crops(order, None), generator=generator)
    pictures = model.detokenize(tokens.messages, tokens.offsets, num_steps=10, cfg_weight=7.5, generator=generator)
    return {path.name: round(float(value), 2) for path, value in zip(paths, psnr_per_image(pictures, pixels))}


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    model = COMiT.from_pretrained("bundled")
    with tempfile.TemporaryDirectory() as folder:
        results = {"samples": scores(model, SAMPLES), "photographs": scores(model, photographs(Path(folder))),
                   "threshold_db": POOR_PSNR_DB, "machine": describe_device("cpu"), "torch": torch.__version__,
                   "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = ["# The bundled model on shapes and on photographs", "",
             f"`python scripts/photo_fit.py {out}` on {results['machine']}, torch {torch.__version__}, "
             f"{results['date']}: PSNR (dB) of "
             "each reconstruction against its input at `comit reconstruct`'s defaults (adaptive, 10 Euler "
             f"steps, guidance 7.5, seed 0). The warning fires below {POOR_PSNR_DB:g} dB.", "",
             "| image | kind | PSNR |", "|---|---|---|"]
    lines += [f"| {name} | {kind} | {value:.2f} |" for kind in ("samples", "photographs")
              for name, value in results[kind].items()]
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
