"""Data: image IO, the procedural shapes dataset, image folders, and the bundled samples.

:func:`build_dataset` turns a command-line string into a dataset:

* ``"shapes"`` — :class:`ShapesDataset` with default options;
* ``"shapes:key=value,key=value"`` — with :class:`ShapesConfig` overrides, e.g.
  ``"shapes:max_objects=2,seed=3,background=plain"``;
* a path to an existing folder — :class:`ImageFolderDataset`; when the folder has a sub-folder
  named after the split (``root/train``, ``root/val``, the ImageNet layout) that one is used;
* ``"wds:/data/train-{0000..0127}.tar"`` — WebDataset tar shards (:class:`TarShardDataset`, random
  access; the pattern is taken as given, whatever the split);
* ``"hf:/data/my-set"`` — a Hugging Face ``datasets`` folder from ``save_to_disk``
  (:class:`HFDiskDataset`; a ``DatasetDict`` gives the split).

The word ``shapes`` wins over a folder of that name; write ``./shapes`` for the folder.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

from torch.utils.data import Dataset

from comit.data.folder import ImageFolderDataset
from comit.data.hf_datasets import HF_PREFIX, HFDiskDataset
from comit.data.images import (IMAGE_EXTENSIONS, ImageLoadError, load_image, load_images,
                               save_image, to_pil)
from comit.data.samples import sample_annotations, sample_masks, sample_paths
from comit.data.splits import SplitWarning, check_split_name, split_folder
from comit.data.tar_shards import WDS_PREFIX, TarShardDataset
from comit.data.shapes import (COLOR_RGB, COLORS, RELATIONS, SHAPES, SIZES, ShapesConfig,
                               ShapesDataset, ShapesLayoutError, config_field_names, describe)

__all__ = [
    "SplitWarning",
    "COLORS", "COLOR_RGB", "IMAGE_EXTENSIONS", "RELATIONS", "SHAPES", "SIZES", "SPLITS",
    "VAL_SEED_OFFSET", "HFDiskDataset", "ImageFolderDataset", "TarShardDataset", "ImageLoadError", "ShapesConfig", "ShapesDataset",
    "ShapesLayoutError", "build_dataset", "describe", "load_image", "load_images",
    "parse_shapes_spec", "sample_annotations", "sample_masks", "sample_paths", "save_image",
    "to_pil",
]

SPLITS = ("train", "val")  # the shapes dataset's; other sources take the splits they have
# The val split of "shapes" uses seed + VAL_SEED_OFFSET. Items are keyed by (seed, index), so any
# offset keeps train and val disjoint; a large prime also keeps "seed=1" val away from "seed=2".
VAL_SEED_OFFSET = 1_000_003

_SHAPES_NAME = "shapes"


def build_dataset(name_or_path: str, image_size: int, split: str = "train", **kwargs) -> Dataset:
    """Build a dataset from ``"shapes"``, ``"shapes:key=value,..."`` or an image folder path.

    Args:
        name_or_path: see the module docstring for the accepted forms.
        image_size: side of the square images the dataset returns.
        split: a split name. Shapes has "train" and "val" (also "validation"; val uses
            ``seed + VAL_SEED_OFFSET``); a folder takes the sub-folder of that name (val and
            validation stand for each other), a saved ``DatasetDict`` the split of that name.
        **kwargs: further options: ShapesConfig fields for shapes (``flip=False`` is accepted
            and ignored, so callers can pass it for any dataset), ImageFolderDataset options
            (``flip``, ``class_folders``) for folders.
    """
    check_split_name(split)
    spec = str(name_or_path).strip()
    if spec == _SHAPES_NAME or spec.startswith(_SHAPES_NAME + ":"):
        return _build_shapes(spec, image_size, split, kwargs)
    if spec.startswith((WDS_PREFIX, HF_PREFIX)):
        flip = bool(kwargs.pop("flip", False))
        if kwargs:
            raise ValueError(f"{spec.split(':')[0]}: datasets take no options {sorted(kwargs)}")
        if spec.startswith(WDS_PREFIX):
            if split != "train":
                warnings.warn(f"{spec}: the shards are taken as given, --split {split} selects nothing among them",
                              SplitWarning, stacklevel=2)
            return TarShardDataset(spec[len(WDS_PREFIX):], image_size, flip=flip)
        return HFDiskDataset(spec[len(HF_PREFIX):], image_size, split, flip=flip)
    if Path(spec).is_dir():
        return _build_folder(Path(spec), image_size, split, kwargs)
    raise ValueError(
        f"unknown dataset {spec!r}: use 'shapes', 'shapes:key=value,...' "
        f"(keys: {', '.join(config_field_names())}), the path of an existing image folder, "
        "'wds:SHARDS.tar' or 'hf:SAVED_DATASET'")


def parse_shapes_spec(spec: str) -> dict[str, int | float | str]:
    """``"shapes:max_objects=2,seed=3"`` -> ``{"max_objects": 2, "seed": 3}`` (typed)."""
    name, _, options = spec.partition(":")
    if name.strip() != _SHAPES_NAME:
        raise ValueError(f"not a shapes dataset spec: {spec!r}; it must start with 'shapes'")
    types = {field.name: type(field.default) for field in dataclasses.fields(ShapesConfig)}
    overrides: dict[str, int | float | str] = {}
    for option in filter(None, (part.strip() for part in options.split(","))):
        key, equals, value = (text.strip() for text in option.partition("="))
        if not equals or key not in types:
            raise ValueError(
                f"bad shapes option {option!r} in {spec!r}; write key=value with key one of "
                f"{', '.join(config_field_names())}")
        try:
            overrides[key] = types[key](value)
        except ValueError:
            raise ValueError(f"shapes option {key} must be of type {types[key].__name__}, "
                             f"got {value!r} in {spec!r}") from None
    return overrides


def _build_shapes(spec: str, image_size: int, split: str, kwargs: dict) -> ShapesDataset:
    if kwargs.pop("flip", False):
        raise ValueError("flip=True is not allowed for shapes: mirroring would break the "
                         "left/right relations; drop the flip option")
    overrides = {**parse_shapes_spec(spec), **kwargs}
    if overrides.get("image_size", image_size) != image_size:
        raise ValueError(f"conflicting image sizes: {overrides['image_size']} in {spec!r} and "
                         f"image_size={image_size}; give it once")
    overrides["image_size"] = image_size
    if split not in ("train", "val", "validation"):
        raise ValueError(f"shapes has the splits train and val (also called validation), not {split!r}")
    if split != "train":
        overrides["seed"] = overrides.get("seed", ShapesConfig.seed) + VAL_SEED_OFFSET
    return ShapesDataset(**overrides)


def _build_folder(root: Path, image_size: int, split: str, kwargs: dict) -> ImageFolderDataset:
    return ImageFolderDataset(split_folder(root, split), image_size, **kwargs)
