#!/usr/bin/env python
"""How well can ANY decoder do from k local crops alone, if it paints what the crops showed exactly?

    .venv/bin/python scripts/local_crop_bound.py [-n 128] [-k 3]

For each shapes val image and every set of k local crops of the model grid (64 px, 24-px crops,
3x3), the pixels inside the crops are kept exact and the rest is filled by a guess:
  * mean:        the val set's mean image (what a decoder that learned nothing about the rest paints);
  * background:  the image's own background colour, read from the crops' pixels (the median of
                 the crop pixels, as a decoder that knows "shapes lie on a dark background" might);
  * oracle-bg:   the image's true background (the pixels of the image with no objects: the upper
                 end of what guessing the unseen background can give; objects outside the crops are lost).
Reported: PSNR of the best set of k crops per image (an upper bound for any crop policy), and of
the raster-first k. This bounds what "k local crops, no global crop" can reach on this data.
"""

from __future__ import annotations

import argparse
import itertools
import math

import numpy as np
import torch

from comit.data import build_dataset
from comit.data.shapes import _draw_background  # the measurement redraws the val backgrounds
from comit.model.crops import CropGrid


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a - b) ** 2).mean())
    return 10 * math.log10(4.0 / max(mse, 1e-12))  # images in [-1, 1]: peak-to-peak 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--num-images", type=int, default=128)
    parser.add_argument("-k", "--crops", type=int, default=3)
    args = parser.parse_args()
    grid = CropGrid(64, 24, 3)
    data = build_dataset("shapes", 64, split="val")
    images = torch.stack([data[i]["image"] for i in range(args.num_images)])
    mean = torch.stack([data[i]["image"] for i in range(min(len(data), 1000))]).mean(0)
    masks = []
    for k in range(grid.num_local):
        box = grid.local_box(k)
        mask = torch.zeros(64, 64, dtype=torch.bool)
        mask[box.top:box.top + box.size, box.left:box.left + box.size] = True
        masks.append(mask)
    results = {"mean": [], "background": [], "oracle-bg": []}
    raster = {"mean": [], "background": [], "oracle-bg": []}
    for index, image in enumerate(images):
        backgrounds = {"mean": mean, "oracle-bg": true_background(data, index, image)}
        for name in results:
            best = -1.0
            for subset in itertools.combinations(range(grid.num_local), args.crops):
                seen = torch.stack([masks[k] for k in subset]).any(0)
                fill = backgrounds.get(name)
                if fill is None:  # the background colour as read from what the crops show
                    fill = image[:, seen].median(dim=1).values[:, None, None].expand_as(image)
                guess = torch.where(seen, image, fill)
                value = psnr(guess, image)
                best = max(best, value)
                if subset == tuple(range(args.crops)):
                    raster[name].append(value)
            results[name].append(best)
    print(f"{args.num_images} shapes val images, {args.crops} local crops of the 3x3 grid, the rest guessed:")
    for name in results:
        print(f"  fill={name:11s} best crops per image: {sum(results[name]) / len(results[name]):.2f} dB"
              f"   raster-first: {sum(raster[name]) / len(raster[name]):.2f} dB")


def true_background(data, index: int, image: torch.Tensor) -> torch.Tensor:
    """The image's own background without its objects, drawn as the dataset draws it (same seed)."""
    rng = np.random.default_rng([data.config.seed, index])
    background = _draw_background(rng, data.config)  # [S, S, 3] in [0, 1]
    return torch.from_numpy(np.ascontiguousarray(background)).permute(2, 0, 1).float() * 2 - 1


if __name__ == "__main__":
    main()
