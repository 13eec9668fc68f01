"""A folder of image files as a dataset, with optional class sub-folders (the ImageNet layout)."""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset

from .images import IMAGE_EXTENSIONS, load_image
from .indexing import checked_index

NO_LABEL = -1


class ImageFolderDataset(Dataset):
    """Every image file under ``root`` (recursively), preprocessed exactly like :func:`load_image`.

    Items are ``{"image": float32 [3, S, S] in [-1, 1], "label": int, "index": int}``.

    Args:
        root: folder to scan. Files are found recursively and sorted by relative path, so the
            index of a file is the same on every machine. Hidden files and folders are skipped.
        image_size: side ``S`` of the square output.
        flip: mirror each image left-right with probability 1/2. Uses torch's global RNG, which
            the DataLoader seeds differently in each worker.
        class_folders: ``True``: the first-level sub-folder of each image is its class
            (``root/<class>/.../*.jpg``); ``False``: no classes, every label is -1; ``None``
            (default): classes exactly when every image lies inside a first-level sub-folder.

    Attributes:
        paths: the image files, in index order.
        classes: sorted class names (empty without classes); ``label`` indexes this list.
        labels: the label of each file, in index order.
    """

    def __init__(self, root: str | os.PathLike, image_size: int, flip: bool = False,
                 class_folders: bool | None = None):
        self.root = Path(root)
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
            raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
        self.image_size = image_size
        self.flip = flip
        relative_paths = find_image_files(self.root)
        self.paths = [self.root / relative for relative in relative_paths]
        self.classes, self.labels = _assign_classes(self.root, relative_paths, class_folders)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        index = checked_index(index, len(self), f"images in {self.root}")
        image = load_image(self.paths[index], self.image_size)
        if self.flip and torch.rand(()) < 0.5:
            image = image.flip(-1)
        return {"image": image, "label": self.labels[index], "index": index}

    def __repr__(self) -> str:
        return (f"ImageFolderDataset(root={str(self.root)!r}, images={len(self)}, "
                f"classes={len(self.classes)}, image_size={self.image_size}, flip={self.flip})")


def find_image_files(root: Path) -> list[Path]:
    """Image files under ``root`` as sorted paths relative to it; raises if there are none."""
    if not root.exists():
        raise ValueError(f"image folder {root} does not exist; pass a folder that contains images")
    if not root.is_dir():
        raise ValueError(f"{root} is not a folder; pass a folder that contains images")
    found = []
    visited = set()
    # os.walk with followlinks handles class folders that are symlinks (common for ImageNet);
    # remembering real paths stops symlink loops.
    for folder, subfolders, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in visited:
            subfolders.clear()
            continue
        visited.add(real)
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        relative_folder = Path(folder).relative_to(root)
        found.extend(relative_folder / name for name in files
                     if not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS))
    if not found:
        raise ValueError(
            f"image folder {root} contains no image files ({', '.join(IMAGE_EXTENSIONS)}); "
            "check the path")
    return sorted(found, key=lambda relative: relative.as_posix())


GLOB_CHARACTERS = set("*?[")


def expand_image_arguments(arguments: Sequence[str | os.PathLike]) -> list[Path]:
    """Command-line image arguments as files: a folder gives its images (recursively, sorted), a
    quoted glob (``'photos/**/*.jpg'``) its matches, a file itself (read later, errors and all)."""
    files: list[Path] = []
    for argument in arguments:
        path = Path(argument)
        if path.is_dir():
            files.extend(path / relative for relative in find_image_files(path))
        elif not path.exists() and GLOB_CHARACTERS & set(str(argument)):
            matches = [Path(match) for match in sorted(glob.glob(str(argument), recursive=True))
                       if Path(match).is_file() and match.lower().endswith(IMAGE_EXTENSIONS)]
            if not matches:
                raise ValueError(f"{argument} matches no image files ({', '.join(IMAGE_EXTENSIONS)}); check the pattern")
            files.extend(matches)
        else:
            files.append(path)
    if not files:
        raise ValueError("no images given; pass image files, folders or quoted globs")
    return files


def _assign_classes(root: Path, relative_paths: list[Path],
                    class_folders: bool | None) -> tuple[list[str], list[int]]:
    at_top_level = [path for path in relative_paths if len(path.parts) == 1]
    if class_folders is None:
        class_folders = not at_top_level
    if not class_folders:
        return [], [NO_LABEL] * len(relative_paths)
    if at_top_level:
        raise ValueError(
            f"class_folders=True but {len(at_top_level)} images lie directly in {root} "
            f"(e.g. {at_top_level[0]}); move them into class sub-folders "
            "or pass class_folders=False")
    classes = sorted({path.parts[0] for path in relative_paths})
    label_of = {name: label for label, name in enumerate(classes)}
    return classes, [label_of[path.parts[0]] for path in relative_paths]
