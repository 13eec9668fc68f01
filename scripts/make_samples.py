"""Write the bundled sample images, their instance masks and annotations into comit/assets/samples.

Run from the repository root after changing the shapes dataset:

    .venv/bin/python scripts/make_samples.py

The output is deterministic (val split of "shapes" with 2-3 objects), so re-running it only
changes files when the generator itself changed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from comit.data import build_dataset, describe, save_image
from comit.data.samples import ANNOTATIONS_FILE, MASKS_FOLDER, SAMPLES_DIR
from comit.data.shapes import COLORS, SHAPES, SIZES

NUM_SAMPLES = 6
IMAGE_SIZE = 64
DATASET = "shapes:min_objects=2,max_objects=3"

# Palette for the mask PNGs: index 0 black background, then one bright colour per object slot.
_MASK_PALETTE = [0, 0, 0, 255, 80, 80, 80, 255, 80, 80, 120, 255, 255, 220, 60, 255, 80, 255]


def main() -> None:
    dataset = build_dataset(DATASET, IMAGE_SIZE, split="val")
    _remove_previous_outputs(SAMPLES_DIR)
    annotations = {}
    for index in range(NUM_SAMPLES):
        item = dataset[index]
        name = f"shapes_{index}.png"
        save_image(item["image"], SAMPLES_DIR / name)
        _save_label_map(item["masks"][item["valid"]].numpy(), SAMPLES_DIR / MASKS_FOLDER / name)
        annotations[name] = {"dataset": DATASET, "split": "val", "index": index,
                             "objects": _objects(item)}
    (SAMPLES_DIR / ANNOTATIONS_FILE).write_text(json.dumps(annotations, indent=1) + "\n")
    print(f"wrote {NUM_SAMPLES} samples to {SAMPLES_DIR}")


def _remove_previous_outputs(folder: Path) -> None:
    """Delete only files this script writes, so a smaller NUM_SAMPLES leaves no stale samples."""
    for stale in [*folder.glob("shapes_*.png"), *(folder / MASKS_FOLDER).glob("shapes_*.png")]:
        stale.unlink()


def _save_label_map(masks: np.ndarray, path: Path) -> None:
    labels = np.zeros(masks.shape[1:], dtype=np.uint8)
    for k, mask in enumerate(masks):
        labels[mask] = k + 1  # visible masks are disjoint, so the label map loses nothing
    image = Image.fromarray(labels)
    image = image.convert("P")  # palette keeps the index values, makes the file viewable
    image.putpalette(_MASK_PALETTE)
    save_image(image, path)


def _objects(item: dict) -> list[dict]:
    lines = describe(item)
    objects = []
    for k in range(int(item["num_objects"])):
        x, y = (round(float(value), 4) for value in item["center"][k])
        objects.append({
            "shape": SHAPES[int(item["shape"][k])],
            "color": COLORS[int(item["color"][k])],
            "size": SIZES[int(item["size"][k])],
            "center": [x, y],
            "description": lines[k],
        })
    return objects


if __name__ == "__main__":
    main()
