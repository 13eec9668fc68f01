"""A Hugging Face ``datasets`` dataset saved on disk (``save_to_disk``) as a source: ``hf:/data/my-set``.

The image column (the first column of the ``Image`` feature type) is read undecoded and decoded here,
so its images pass the same checks and preprocessing as files (:func:`comit.data.images.load_image`);
a ``label`` column of integers (a ``ClassLabel``, for instance) becomes the label. A saved
``DatasetDict`` gives the split asked for.

Items are ``{"image": float32 [3, S, S] in [-1, 1], "label": int (-1 without labels), "index": int}``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch.utils.data import Dataset

from .images import decode_image_bytes, load_image
from .indexing import checked_index
from .splits import SplitWarning, split_names

HF_PREFIX = "hf:"
NO_LABEL = -1


def damaged_arrow_files(folder: Path) -> list[Path]:
    """The ``.arrow`` files under ``folder`` that pyarrow cannot read to their end."""
    import pyarrow as pa

    damaged = []
    for path in sorted(folder.rglob("*.arrow")):
        try:
            with pa.memory_map(str(path)) as source:
                pa.ipc.open_stream(source).read_all()
        except (OSError, pa.ArrowException):
            damaged.append(path)
    return damaged


class HFDiskDataset(Dataset):
    def __init__(self, path: str, image_size: int, split: str = "train", flip: bool = False):
        self.flip = flip
        try:
            import datasets
        except ImportError as error:
            raise ValueError("hf: datasets need Hugging Face datasets: pip install 'comit[streaming]'") from error
        self.path, self.image_size = Path(path), image_size
        if not self.path.is_dir():
            raise ValueError(f"{HF_PREFIX}{path}: no such folder; give a folder written by Dataset.save_to_disk")
        try:
            loaded = datasets.load_from_disk(str(self.path))
        except (FileNotFoundError, ValueError) as error:
            raise ValueError(f"{HF_PREFIX}{path} is not a saved datasets folder ({str(error).splitlines()[0]})") from None
        except OSError as error:  # pyarrow's own sentence names neither the dataset nor the file
            damaged = ", ".join(str(f.relative_to(self.path)) for f in damaged_arrow_files(self.path)) or "a data file"
            raise ValueError(f"{HF_PREFIX}{path}: {damaged} cannot be read ({str(error).splitlines()[0]}): it is "
                             "truncated or damaged; save the dataset again (save_to_disk)") from None
        if isinstance(loaded, datasets.DatasetDict):
            names = [name for name in split_names(split) if name in loaded]
            if not names:
                raise ValueError(f"{HF_PREFIX}{path} has the splits {sorted(loaded)}, not {split!r}; pick one of them")
            loaded = loaded[names[0]]
        elif split != "train":
            warnings.warn(f"{HF_PREFIX}{path} is one dataset without splits: all its rows are used for --split {split}",
                          SplitWarning, stacklevel=3)
        columns = [name for name, feature in loaded.features.items() if isinstance(feature, datasets.Image)]
        if not columns:
            raise ValueError(f"{HF_PREFIX}{path} has no column of images (features: {sorted(loaded.features)})")
        self.image_column = columns[0]
        self.has_label = "label" in loaded.features
        self.table = loaded.cast_column(self.image_column, datasets.Image(decode=False))

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, index: int) -> dict:
        index = checked_index(index, len(self), f"images in {HF_PREFIX}{self.path}")
        row = self.table[index]
        cell = row[self.image_column]
        name = f"{HF_PREFIX}{self.path}#{index}"
        if cell.get("bytes") is not None:
            image = decode_image_bytes(cell["bytes"], self.image_size, name)
        elif cell.get("path"):
            image = load_image(cell["path"], self.image_size)
        else:
            raise ValueError(f"{name}: the image cell is empty")
        if self.flip and torch.rand(()) < 0.5:
            image = image.flip(-1)
        label = row["label"] if self.has_label and isinstance(row["label"], int) else NO_LABEL
        return {"image": image, "label": label, "index": index}

    def __repr__(self) -> str:
        return f"HFDiskDataset({HF_PREFIX}{self.path}, images={len(self)}, column={self.image_column!r})"
