"""Images with labels listed in a CSV file, for probes on any data.

The file has a header row with the columns ``image`` and ``label`` and optionally ``split``:

    image,label,split
    photos/0001.jpg,dog,train
    photos/0002.jpg,cat|dog,test

``image`` is a path relative to ``root`` (default: the CSV file's folder); ``label`` one class
name, or several separated by ``|``; ``split`` is ``train`` or ``test`` (``val`` counts as
test). Class names are sorted, and a label is its index in that list.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import torch
from torch.utils.data import Dataset

from .images import load_image
from .indexing import checked_index

SPLIT_NAMES = {"train": "train", "test": "test", "val": "test"}


class LabelsFileDataset(Dataset):
    """Items ``{"image": [3, S, S], "labels": int64 [L] (padded with -1), "index": int}``.

    Args:
        path: the CSV file.
        image_size: side ``S`` of the square output.
        root: folder the image paths are relative to (default: the CSV's folder).
        split: keep only rows of this split ("train" or "test"); None keeps all.
    """

    def __init__(self, path: str | os.PathLike, image_size: int, root: str | os.PathLike | None = None,
                 split: str | None = None):
        self.path = Path(path)
        self.root = Path(root) if root is not None else self.path.parent
        self.image_size = image_size
        rows = read_labels_file(self.path)
        self.classes = sorted({name for row in rows for name in row["labels"]})
        self.has_splits = all(row["split"] is not None for row in rows)
        if split is not None:
            if not self.has_splits:
                raise ValueError(f"{self.path} has no 'split' column for every row; cannot select split {split!r}")
            rows = [row for row in rows if row["split"] == SPLIT_NAMES.get(split, split)]
            if not rows:
                raise ValueError(f"{self.path} has no rows of split {split!r}")
        self.paths = [self.root / row["image"] for row in rows]
        missing = [p for p in self.paths if not p.is_file()]
        if missing:
            raise ValueError(f"{len(missing)} images listed in {self.path} do not exist (e.g. {missing[0]}); "
                             f"paths are relative to {self.root}")
        index = {name: i for i, name in enumerate(self.classes)}
        width = max(len(row["labels"]) for row in rows)
        self.labels = torch.full((len(rows), width), -1, dtype=torch.long)
        for r, row in enumerate(rows):
            self.labels[r, :len(row["labels"])] = torch.tensor([index[n] for n in row["labels"]])

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        index = checked_index(index, len(self), f"images in {self.path}")
        return {"image": load_image(self.paths[index], self.image_size), "labels": self.labels[index],
                "index": index}


def read_labels_file(path: Path) -> list[dict]:
    """Rows as ``{"image": str, "labels": [str, ...], "split": "train" | "test" | None}``."""
    if not path.is_file():
        raise ValueError(f"labels file {path} does not exist")
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or not {"image", "label"} <= set(reader.fieldnames):
            raise ValueError(f"{path} must start with a header row naming the columns image,label[,split]; "
                             f"got {reader.fieldnames}")
        rows = []
        for line, row in enumerate(reader, start=2):
            labels = [name.strip() for name in (row["label"] or "").split("|") if name.strip()]
            split = (row.get("split") or "").strip().lower() or None
            if not row["image"] or not labels:
                raise ValueError(f"{path}:{line}: every row needs an image path and at least one label")
            if split is not None and split not in SPLIT_NAMES:
                raise ValueError(f"{path}:{line}: split must be train, val or test, got {split!r}")
            rows.append({"image": row["image"].strip(), "labels": labels,
                         "split": SPLIT_NAMES[split] if split else None})
    if not rows:
        raise ValueError(f"{path} lists no images")
    return rows
