#!/usr/bin/env python
"""Reconstructions of the same val images by two models, one column per image, for the docs.

    .venv/bin/python scripts/before_after.py OLD_MODEL NEW_MODEL -o docs/figures/before-after.png

Rows: the val image, then for each policy OLD's and NEW's reconstruction (10 Euler steps, guidance
1, the same noise), each captioned with its PSNR. Policies (``--policies``): ``all``, the global
crop then all 9 local crops in raster order; ``adaptive3``, the adaptive policy with 3 local crops
and no global crop (the quality targets' two rows); ``global``, the global crop alone. ``--data``
(default the built-in shapes) takes the val images from any dataset ``comit`` reads, e.g. a folder
with ``train/`` and ``val/``.

A handful of images can point the other way than the mean: ``--paired N`` also prints, for each
policy, both models' mean PSNR over the first N val images (the same noise for both, batches of
32), the mean paired difference with its standard error, and the share of images NEW does better.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from comit import COMiT
from comit.data import build_dataset
from comit.metrics.reconstruction import mean_psnr
from comit.viz.figures import Panel, display_scale, panel_grid, upscale


POLICIES = {
    "all": dict(global_crop=True, order="raster_scan", num_crops=None),
    "adaptive3": dict(global_crop=False, order="adaptive", num_crops=3),
    "global": dict(global_crop=True, order="raster_scan", num_crops=1),
}


def reconstruct(model: COMiT, images: torch.Tensor, seed: int, policy: str) -> torch.Tensor:
    pictures = model.reconstruct(images, **POLICIES[policy], num_steps=10, cfg_weight=1.0,
                                 generator=torch.Generator().manual_seed(seed))
    return pictures.clamp(-1, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("-o", "--out", type=Path, required=True)
    parser.add_argument("--labels", nargs=2, default=["before", "after"])
    parser.add_argument("-n", "--num-images", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", default="shapes", help="where the val images come from (default: shapes)")
    parser.add_argument("--policies", nargs="+", choices=sorted(POLICIES), default=["all"])
    parser.add_argument("--paired", type=int, default=0, metavar="N",
                        help="also compare the models image by image on the first N val images")
    args = parser.parse_args()

    torch.set_flush_denormal(True)
    models = [COMiT.from_pretrained(name).eval() for name in (args.old, args.new)]
    size = models[1].config.image_size
    data = build_dataset(args.data, size, split="val")
    images = torch.stack([data[i]["image"] for i in range(args.num_images)])
    scale = display_scale(size, 128)
    rows = [[Panel(upscale(image, scale), ["val image", f"#{i}"]) for i, image in enumerate(images)]]
    with torch.no_grad():
        for policy in args.policies:
            for label, model in zip(args.labels, models):
                pictures = reconstruct(model, images, args.seed, policy)
                caption = label if len(args.policies) == 1 else f"{label}, {policy}"
                rows.append([Panel(upscale(picture, scale), [caption, f"{mean_psnr(picture[None], image[None]):.1f} dB"])
                             for picture, image in zip(pictures, images)])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    panel_grid([panel for row in rows for panel in row], columns=args.num_images).save(args.out)
    print(args.out)
    if args.paired:
        paired = torch.stack([data[i]["image"] for i in range(args.paired)])
        for policy in args.policies:
            print(paired_comparison(models, paired, args.seed, policy))


def paired_comparison(models: list[COMiT], images: torch.Tensor, seed: int, policy: str, batch: int = 32) -> str:
    """One line: OLD's and NEW's mean PSNR, NEW - OLD per image (mean, standard error), NEW's wins."""
    per_model = []
    with torch.no_grad():
        for model in models:
            pictures = torch.cat([reconstruct(model, images[start:start + batch], seed + start, policy)
                                  for start in range(0, len(images), batch)])
            per_model.append(torch.tensor([mean_psnr(picture[None], image[None]) for picture, image in zip(pictures, images)]))
    old, new = per_model
    difference = new - old
    error = difference.std() / len(difference) ** 0.5
    return (f"{policy} on {len(images)} images: old {old.mean():.2f} dB, new {new.mean():.2f} dB, new - old "
            f"{difference.mean():+.2f} +- {error:.2f} dB (standard error), new better on {(difference > 0).float().mean():.0%}")


if __name__ == "__main__":
    main()
