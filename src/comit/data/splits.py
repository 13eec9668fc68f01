"""Split names as the ecosystem spells them, one rule for every data source (``build_dataset``)."""

from __future__ import annotations

import warnings
from pathlib import Path

# The ecosystem spells the held-out split two ways: ImageNet's folders say val, datasets' say validation.
SPLIT_ALIASES = {"val": "validation", "validation": "val"}
SPLIT_FOLDERS = ("train", "val", "validation", "test")


class SplitWarning(UserWarning):
    """The split asked for is not one the data has, and all of it is used instead."""


def split_names(split: str) -> tuple[str, ...]:
    """The names a split may go by in a source, the one given first: val -> (val, validation)."""
    return (split, SPLIT_ALIASES[split]) if split in SPLIT_ALIASES else (split,)


def check_split_name(split: str) -> str:
    if not split or not all(c.isalnum() or c in "_-." for c in split):
        raise ValueError(f"--split must be a split name such as train, val, validation or test, got {split!r}")
    return split


def split_folder(root: Path, split: str) -> Path:
    """The split's sub-folder of ``root`` (the ImageNet and imagefolder layouts; val and validation
    stand for each other); a folder without split folders is used whole, and a split other than
    train then says so. A folder with split folders but none for ``split`` is refused."""
    root = Path(root)
    found = [root / name for name in split_names(split) if (root / name).is_dir()]
    if found:
        return found[0]
    present = [name for name in SPLIT_FOLDERS if (root / name).is_dir()]
    if present:
        raise ValueError(f"{root} has the split folders {present}, none for --split {split}; pick one of them")
    if split != "train":
        warnings.warn(f"{root} has no split folders ({', '.join(f'{n}/' for n in SPLIT_FOLDERS)}): all its images "
                      f"are used for --split {split}", SplitWarning, stacklevel=3)
    return root
