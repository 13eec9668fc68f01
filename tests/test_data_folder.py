"""ImageFolderDataset: deterministic scan, class detection, flips, and clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from comit.data import ImageFolderDataset, build_dataset, load_image


def _write(path: Path, color=(255, 0, 0), size=(12, 8)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def _flat_folder(root: Path) -> Path:
    _write(root / "b.png", (0, 255, 0))
    _write(root / "a.jpg", (255, 0, 0))
    _write(root / "sub" / "c.PNG", (0, 0, 255))
    (root / "notes.txt").write_text("not an image")
    _write(root / ".hidden.png")
    _write(root / ".cache" / "d.png")
    return root


def _class_folder(root: Path) -> Path:
    _write(root / "dog" / "x" / "deep.png", (0, 0, 255))
    _write(root / "dog" / "b.jpg", (0, 255, 0))
    _write(root / "cat" / "a.png", (255, 0, 0))
    return root


def test_flat_folder_without_classes(tmp_path):
    dataset = ImageFolderDataset(_flat_folder(tmp_path), 8)
    names = [path.relative_to(tmp_path).as_posix() for path in dataset.paths]
    assert names == ["a.jpg", "b.png", "sub/c.PNG"]  # sorted, recursive, hidden skipped
    assert dataset.classes == []
    item = dataset[1]
    assert item["image"].shape == (3, 8, 8) and item["image"].dtype == torch.float32
    assert item["label"] == -1 and item["index"] == 1
    assert torch.equal(item["image"], load_image(tmp_path / "b.png", 8))


def test_class_folders_are_detected(tmp_path):
    dataset = ImageFolderDataset(_class_folder(tmp_path), 8)
    assert dataset.classes == ["cat", "dog"]
    names = [path.relative_to(tmp_path).as_posix() for path in dataset.paths]
    assert names == ["cat/a.png", "dog/b.jpg", "dog/x/deep.png"]
    assert [dataset[i]["label"] for i in range(3)] == [0, 1, 1]


def test_class_folders_can_be_switched_off(tmp_path):
    dataset = ImageFolderDataset(_class_folder(tmp_path), 8, class_folders=False)
    assert dataset.classes == [] and dataset.labels == [-1, -1, -1]


def test_mixed_layout_has_no_classes_unless_forced(tmp_path):
    _class_folder(tmp_path)
    _write(tmp_path / "loose.png")
    assert ImageFolderDataset(tmp_path, 8).classes == []
    with pytest.raises(ValueError, match="loose.png"):
        ImageFolderDataset(tmp_path, 8, class_folders=True)


def test_scan_is_deterministic(tmp_path):
    _class_folder(tmp_path)
    first = ImageFolderDataset(tmp_path, 8)
    second = ImageFolderDataset(tmp_path, 8)
    assert first.paths == second.paths and first.labels == second.labels


def test_flip_uses_torch_global_rng(tmp_path):
    pixels = np.zeros((8, 8, 3), dtype=np.uint8)
    pixels[:, :4] = 255  # white left half: a flip is visible
    Image.fromarray(pixels).save(tmp_path / "half.png")
    dataset = ImageFolderDataset(tmp_path, 8, flip=True)
    torch.manual_seed(0)
    first = [bool(dataset[0]["image"][0, 0, 0] < 0) for _ in range(32)]
    torch.manual_seed(0)
    second = [bool(dataset[0]["image"][0, 0, 0] < 0) for _ in range(32)]
    assert first == second and 0 < sum(first) < 32
    unflipped = ImageFolderDataset(tmp_path, 8)
    assert all(unflipped[0]["image"][0, 0, 0] == 1.0 for _ in range(8))


def test_default_collate_batches_items(tmp_path):
    dataset = ImageFolderDataset(_class_folder(tmp_path), 8)
    batch = next(iter(DataLoader(dataset, batch_size=3)))
    assert batch["image"].shape == (3, 3, 8, 8)
    assert batch["label"].tolist() == [0, 1, 1] and batch["index"].tolist() == [0, 1, 2]


def test_index_out_of_range(tmp_path):
    dataset = ImageFolderDataset(_class_folder(tmp_path), 8)
    assert dataset[-1]["index"] == 2
    with pytest.raises(IndexError, match="out of range"):
        dataset[3]


def test_empty_folder_is_an_error(tmp_path):
    (tmp_path / "only.txt").write_text("no images here")
    with pytest.raises(ValueError, match="contains no image files"):
        ImageFolderDataset(tmp_path, 8)


def test_missing_folder_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        ImageFolderDataset(tmp_path / "absent", 8)


def test_file_instead_of_folder_is_an_error(tmp_path):
    path = _write(tmp_path / "a.png")
    with pytest.raises(ValueError, match="not a folder"):
        ImageFolderDataset(path, 8)


def test_build_dataset_uses_split_subfolder(tmp_path):
    _write(tmp_path / "train" / "cat" / "a.png")
    _write(tmp_path / "train" / "dog" / "b.png")
    _write(tmp_path / "val" / "cat" / "c.png")
    train = build_dataset(str(tmp_path), 8)
    val = build_dataset(str(tmp_path), 8, split="val")
    assert isinstance(train, ImageFolderDataset) and len(train) == 2 and len(val) == 1
    assert train.classes == ["cat", "dog"] and val.classes == ["cat"]


def test_build_dataset_passes_folder_options(tmp_path):
    _class_folder(tmp_path)
    dataset = build_dataset(str(tmp_path), 16, flip=True, class_folders=False)
    assert dataset.flip and dataset.classes == [] and dataset[0]["image"].shape == (3, 16, 16)


def test_build_dataset_rejects_unknown_names(tmp_path):
    with pytest.raises(ValueError, match="shapes.*existing image folder"):
        build_dataset(str(tmp_path / "nope"), 8)
    with pytest.raises(ValueError, match="--split must be a split name"):
        build_dataset(str(tmp_path), 8, split="../test")


def test_every_source_checks_positions_alike():
    from comit.data.indexing import checked_index

    assert [checked_index(i, 3, "images in x/") for i in (0, 2, -1, -3)] == [0, 2, 2, 0]
    for bad in (3, -4):
        with pytest.raises(IndexError, match=r"index .* is out of range for 3 images in x/"):
            checked_index(bad, 3, "images in x/")
