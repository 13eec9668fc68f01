"""Images paired with ground-truth masks in a parallel folder (salient-object datasets and the like).

``images/a/b.jpg`` pairs with ``masks/a/b.<any image extension>``: same relative path, any
extension (ECSSD and DUTS ship JPEG images with PNG masks). Two kinds of mask file:

* binary masks (8-bit grey or RGB, the usual salient-object format): one object, the pixels at
  or above half intensity after resizing;
* instance masks (palette ``P`` or 16/32-bit ``I`` images, or grey images whose values all lie
  below 128): every distinct non-zero value is one object (the bundled samples' ``masks/``
  folder uses palette PNGs).

Images and masks get the same centred-square crop; binary masks are resized bilinearly and then
thresholded (smooth edges), instance masks with nearest neighbour (labels must not blend).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .folder import find_image_files
from .images import IMAGE_EXTENSIONS, center_square_resize, load_image, open_image
from .indexing import checked_index

INSTANCE_MODES = ("P", "I", "I;16")


class MaskFolderDataset(Dataset):
    """Items ``{"image": [3, S, S], "masks": bool [K, S, S], "valid": bool [K], "index": int}``;
    ``K`` is 1 for binary masks and the number of objects for instance masks.

    Args:
        images: folder of images (searched recursively; files under ``masks`` are skipped when
            the mask folder lies inside it).
        masks: folder of masks with the same relative paths.
        image_size: side ``S`` of the square output.
    """

    def __init__(self, images: str | os.PathLike, masks: str | os.PathLike, image_size: int):
        self.images_root, self.masks_root = Path(images), Path(masks)
        if not self.masks_root.is_dir():
            raise ValueError(f"mask folder {self.masks_root} does not exist; pass --masks with the "
                             "folder of ground-truth masks")
        self.image_size = image_size
        inside = _relative_inside(self.masks_root, self.images_root)
        relative = [path for path in find_image_files(self.images_root)
                    if inside is None or not _is_under(path, inside)]
        if not relative:
            raise ValueError(f"no images in {self.images_root} outside the mask folder")
        self.masks_by_stem = _index_masks(self.masks_root)
        missing = [path for path in relative if _stem(path) not in self.masks_by_stem]
        if missing:
            raise ValueError(f"{len(missing)} of {len(relative)} images have no mask in {self.masks_root} "
                             f"(e.g. {missing[0]}); masks must have the image's relative path and name")
        self.paths = [self.images_root / path for path in relative]
        self.mask_paths = [self.masks_by_stem[_stem(path)] for path in relative]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        index = checked_index(index, len(self), f"images in {self.images_root}")
        masks = load_masks(self.mask_paths[index], self.image_size)
        return {"image": load_image(self.paths[index], self.image_size), "masks": masks,
                "valid": torch.ones(masks.shape[0], dtype=torch.bool), "index": index}

    def __repr__(self) -> str:
        return (f"MaskFolderDataset(images={str(self.images_root)!r}, masks={str(self.masks_root)!r}, "
                f"items={len(self)}, image_size={self.image_size})")


def load_masks(path: str | os.PathLike, size: int) -> torch.Tensor:
    """One mask file as bool ``[K, size, size]`` (see the module docstring for the two kinds)."""
    with open_image(path) as image:
        image.load()
        if image.mode in INSTANCE_MODES or _is_label_map(image):
            labels = np.asarray(_nearest_square(image, size)).astype(np.int64)
            ids = [value for value in np.unique(labels) if value != 0]
            return torch.from_numpy(np.stack([labels == value for value in ids])) if ids else \
                torch.zeros(0, size, size, dtype=torch.bool)
        grey = center_square_resize(image.convert("L"), size)
    return torch.from_numpy(np.asarray(grey) >= 128)[None]


def _is_label_map(image: Image.Image) -> bool:
    """A grey image of small non-zero values is a label map saved as 8-bit grey, not a binary mask
    (thresholding at 128 would erase every object)."""
    if image.mode != "L":
        return False
    low, high = image.getextrema()
    return 0 < high < 128


def _nearest_square(image: Image.Image, size: int) -> Image.Image:
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    if image.mode == "P":  # the palette only colours the labels: keep the indices
        image = Image.fromarray(np.asarray(image))
    return image.resize((size, size), Image.Resampling.NEAREST, box=(left, top, left + side, top + side))


def _index_masks(root: Path) -> dict[str, Path]:
    masks = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith("."):
            masks.setdefault(_stem(path.relative_to(root)), path)
    return masks


def _stem(relative: Path) -> str:
    return relative.with_suffix("").as_posix()


def _relative_inside(inner: Path, outer: Path) -> Path | None:
    try:
        return inner.resolve().relative_to(outer.resolve())
    except ValueError:
        return None


def _is_under(path: Path, folder: Path) -> bool:
    return path.parts[:len(folder.parts)] == folder.parts
