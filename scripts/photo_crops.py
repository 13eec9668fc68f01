"""An image folder of real photographs that anyone can rebuild: square crops of scikit-image's sample
photographs, 64 px, ``train/`` from 13 of them and ``val/`` from 2 others never seen in training.

    python scripts/photo_crops.py OUT [--train 4000] [--val 200] [--size 64] [--seed 0]

Each crop's side is 20-100 % of its photograph's short side, at a uniformly drawn place, resized
with a box filter (each output pixel the mean of the pixels it covers). Grey photographs become
three equal channels. The same arguments give the same files on every machine (numpy's generator).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import skimage.data
from PIL import Image

# Shipped with scikit-image (no download). Natural photographs and micrographs; no drawings.
TRAIN_PHOTOS = ("astronaut", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field", "retina", "camera",
                "brick", "grass", "gravel", "moon", "coins", "clock")
VAL_PHOTOS = ("chelsea", "stereo_motorcycle")


def photograph(name: str) -> np.ndarray:
    """[H, W, 3] uint8."""
    picture = getattr(skimage.data, name)()
    if isinstance(picture, tuple):  # stereo_motorcycle: (left, right, disparity)
        picture = picture[0]
    if picture.ndim == 2:
        picture = np.repeat(picture[:, :, None], 3, axis=2)
    return np.ascontiguousarray(picture[:, :, :3])


def random_crop(picture: np.ndarray, size: int, rng: np.random.Generator) -> Image.Image:
    height, width, _ = picture.shape
    side = int(min(height, width) * rng.uniform(0.2, 1.0))
    top, left = int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))
    return Image.fromarray(picture[top:top + side, left:left + side]).resize((size, size), Image.Resampling.BOX)


def write_split(folder: Path, names: tuple[str, ...], count: int, size: int, rng: np.random.Generator) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    pictures = {name: photograph(name) for name in names}
    for index in range(count):
        name = names[index % len(names)]
        random_crop(pictures[name], size, rng).save(folder / f"{index:05d}-{name}.png")  # photographs alternate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--train", type=int, default=4000)
    parser.add_argument("--val", type=int, default=200)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if (args.out / "train").exists() or (args.out / "val").exists():
        raise SystemExit(f"{args.out} already holds train/ or val/: give a new folder")
    rng = np.random.default_rng(args.seed)
    write_split(args.out / "train", TRAIN_PHOTOS, args.train, args.size, rng)
    write_split(args.out / "val", VAL_PHOTOS, args.val, args.size, rng)
    print(f"wrote {args.train} training crops of {len(TRAIN_PHOTOS)} photographs and {args.val} held-out crops "
          f"of {len(VAL_PHOTOS)} others to {args.out}")


if __name__ == "__main__":
    main()
