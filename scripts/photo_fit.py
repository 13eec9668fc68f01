"""The numbers behind the photo warning (comit/model/fit.py): PSNR of the bundled model's
reconstructions of its shapes samples and of scikit-image's photographs, at `comit reconstruct`'s
defaults (adaptive policy, its default crops, 10 Euler steps, guidance 7.5, seed 0).

    .venv/bin/python scripts/photo_fit.py docs/results/photo-fit-DATE [--val 512]

``--val N`` is the warning's false-alarm control: the first N shapes val images, how many fall below
the threshold. Beside each set, the round trip through the model's autoencoder alone (encode,
decode): how far the images are from what the autoencoder learnt, without the flow's noise.
"""

from __future__ import annotations

import argparse
import datetime
import json
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from comit import COMiT
from comit.cli.support import parse_order, resolved_num_crops
from comit.data import build_dataset
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


def reconstruction_psnr(model: COMiT, pixels: torch.Tensor, batch: int = 64) -> torch.Tensor:
    """PSNR of each image's reconstruction at the CLI's defaults, batch by batch with seed 0."""
    order = parse_order("adaptive")
    values = []
    for start in range(0, len(pixels), batch):
        images = pixels[start:start + batch]
        generator = torch.Generator().manual_seed(0)
        tokens = model.tokenize(images, order=order, num_crops=resolved_num_crops(order, None), generator=generator)
        pictures = model.detokenize(tokens.messages, tokens.offsets, num_steps=10, cfg_weight=7.5, generator=generator)
        values.append(psnr_per_image(pictures, images))
    return torch.cat(values)


def round_trip_psnr(model: COMiT, pixels: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return psnr_per_image(model.vae.decode(model.vae.encode(pixels)).clamp(-1, 1), pixels)


def by_name(paths: list[Path], values: torch.Tensor) -> dict[str, float]:
    return {path.name: round(float(value), 2) for path, value in zip(paths, values)}


def summary(values: torch.Tensor) -> dict:
    return {"images": len(values), "below_threshold": int((values < POOR_PSNR_DB).sum()),
            "min": round(float(values.min()), 2), "mean": round(float(values.mean()), 2),
            "lowest": [round(value, 2) for value in sorted(values.tolist())[:5]]}


def measure(model: COMiT, folder: Path, val_images: int) -> dict:
    files = {"samples": SAMPLES, "photographs": photographs(folder)}
    pixels = {kind: load_images(paths, model.config.image_size) for kind, paths in files.items()}
    results = {kind: by_name(files[kind], reconstruction_psnr(model, pixels[kind])) for kind in files}
    results["round_trip"] = {kind: by_name(files[kind], round_trip_psnr(model, pixels[kind])) for kind in files}
    if val_images:
        data = build_dataset("shapes", model.config.image_size, split="val")
        val = torch.stack([data[i]["image"] for i in range(val_images)])
        results["val"] = summary(reconstruction_psnr(model, val))
        results["round_trip"]["val"] = summary(round_trip_psnr(model, val))
    return results


def report(out: Path, results: dict) -> str:
    lines = ["# The bundled model on shapes and on photographs", "",
             f"`python scripts/photo_fit.py {out}{' --val ' + str(results['val']['images']) if 'val' in results else ''}` "
             f"on {results['machine']}, torch {results['torch']}, {results['date']}: PSNR (dB) of "
             "each reconstruction against its input at `comit reconstruct`'s defaults (adaptive, 10 Euler "
             f"steps, guidance 7.5, seed 0), and of the autoencoder's round trip alone. The warning fires "
             f"below {POOR_PSNR_DB:g} dB of the reconstruction.", "",
             "| image | kind | reconstruction PSNR | autoencoder round trip |", "|---|---|---|---|"]
    lines += [f"| {name} | {kind} | {value:.2f} | {results['round_trip'][kind][name]:.2f} |"
              for kind in ("samples", "photographs") for name, value in results[kind].items()]
    if "val" in results:
        val, trip = results["val"], results["round_trip"]["val"]
        lines += ["", f"**False alarms on shapes**: of the first {val['images']} shapes val images, "
                  f"{val['below_threshold']} reconstruct below {POOR_PSNR_DB:g} dB (mean {val['mean']:.2f}, "
                  f"lowest {', '.join(f'{v:.2f}' for v in val['lowest'])}); their autoencoder round trips: "
                  f"mean {trip['mean']:.2f}, lowest {', '.join(f'{v:.2f}' for v in trip['lowest'])}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--val", type=int, default=0, metavar="N", help="also score the first N shapes val images")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    model = COMiT.from_pretrained("bundled")
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the warnings this script measures, and photos shrunk to 64 px
        results = measure(model, Path(folder), args.val)
    results.update(threshold_db=POOR_PSNR_DB, machine=describe_device("cpu"), torch=torch.__version__,
                   date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    text = report(args.out, results)
    (args.out / "results.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
