"""The sample images bundled with the package, for the demo and for quick checks.

``scripts/make_samples.py`` writes them from the shapes dataset (val split) into
``comit/assets/samples/``:

* ``shapes_<i>.png`` — the 64x64 images;
* ``masks/shapes_<i>.png`` — palette PNGs whose pixel value is 0 for background and ``k + 1``
  for object ``k`` (visible instance masks; the palette only makes them viewable);
* ``samples.json`` — the objects of each image (shape, colour, size, centre, description).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

SAMPLES_DIR = Path(__file__).resolve().parent.parent / "assets" / "samples"
MASKS_FOLDER = "masks"
ANNOTATIONS_FILE = "samples.json"


def sample_paths() -> list[Path]:
    """Paths of the bundled sample images, sorted by name."""
    paths = sorted(SAMPLES_DIR.glob("*.png"))
    if not paths:
        raise FileNotFoundError(
            f"no bundled sample images in {SAMPLES_DIR}; run scripts/make_samples.py "
            "or reinstall the package")
    return paths


def sample_masks(image_path: str | os.PathLike) -> torch.Tensor:
    """Visible instance masks of a bundled sample, bool ``[num_objects, H, W]``."""
    image_path = Path(image_path)
    mask_path = image_path.parent / MASKS_FOLDER / image_path.name
    if not mask_path.is_file():
        raise FileNotFoundError(f"no mask file {mask_path} for sample {image_path}; "
                                "pass a path returned by sample_paths()")
    with Image.open(mask_path) as mask_image:
        labels = np.asarray(mask_image)
    count = len(sample_annotations(image_path))
    return torch.from_numpy(labels[None] == np.arange(1, count + 1)[:, None, None])


def sample_annotations(image_path: str | os.PathLike) -> list[dict]:
    """The objects of a bundled sample: dicts with shape, color, size, center and description."""
    image_path = Path(image_path)
    annotations_path = image_path.parent / ANNOTATIONS_FILE
    annotations = json.loads(annotations_path.read_text())
    if image_path.name not in annotations:
        raise ValueError(f"{image_path.name} is not listed in {annotations_path}; "
                       "pass a path returned by sample_paths()")
    return annotations[image_path.name]["objects"]
