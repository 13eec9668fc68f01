"""Folders for evaluation on real data: images + masks, and images + a labels file."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from comit.data import sample_masks, sample_paths
from comit.data.labels_file import LabelsFileDataset
from comit.data.mask_folder import MaskFolderDataset, load_masks


def _save(path, array, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode).save(path)
    return path


def test_binary_masks_are_cropped_like_the_image_and_thresholded(tmp_path):
    # A 40x20 (w x h) picture: the centred square is columns 10..29; the object fills columns 10..19.
    mask = np.zeros((20, 40), dtype=np.uint8)
    mask[:, 10:20] = 255
    _save(tmp_path / "images" / "a.jpg", np.full((20, 40, 3), 90, dtype=np.uint8))
    _save(tmp_path / "masks" / "a.png", mask)
    item = MaskFolderDataset(tmp_path / "images", tmp_path / "masks", 10)[0]
    assert item["image"].shape == (3, 10, 10) and item["masks"].shape == (1, 10, 10)
    assert item["masks"][0, :, :5].all() and not item["masks"][0, :, 5:].any()
    assert item["valid"].tolist() == [True]


def test_instance_masks_of_the_bundled_samples():
    path = sample_paths()[0]
    masks = load_masks(path.parent / "masks" / path.name, 64)
    assert torch.equal(masks, sample_masks(path))
    dataset = MaskFolderDataset(path.parent, path.parent / "masks", 64)  # masks/ inside: not an image
    assert len(dataset) == len(sample_paths())


def test_grey_label_maps_count_as_instances(tmp_path):
    labels = np.zeros((8, 8), dtype=np.uint8)
    labels[:4], labels[6:] = 1, 2
    masks = load_masks(_save(tmp_path / "l.png", labels), 8)
    assert masks.shape == (2, 8, 8) and masks[0, :4].all() and masks[1, 6:].all()


def test_missing_masks_are_a_clear_error(tmp_path):
    _save(tmp_path / "images" / "a.png", np.zeros((8, 8, 3), dtype=np.uint8))
    _save(tmp_path / "images" / "b.png", np.zeros((8, 8, 3), dtype=np.uint8))
    _save(tmp_path / "masks" / "a.png", np.zeros((8, 8), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"1 of 2 images have no mask .*b\.png"):
        MaskFolderDataset(tmp_path / "images", tmp_path / "masks", 8)
    with pytest.raises(ValueError, match="mask folder .* does not exist"):
        MaskFolderDataset(tmp_path / "images", tmp_path / "nowhere", 8)


def _labelled(tmp_path, text: str):
    for name in ("x.png", "y.png", "z.png"):
        _save(tmp_path / "pics" / name, np.zeros((8, 8, 3), dtype=np.uint8))
    path = tmp_path / "labels.csv"
    path.write_text(text)
    return path


def test_labels_file_with_several_labels_and_splits(tmp_path):
    path = _labelled(tmp_path, "image,label,split\npics/x.png,dog,train\npics/y.png,cat|dog,test\n"
                               "pics/z.png,bird,val\n")
    every = LabelsFileDataset(path, 8)
    assert every.classes == ["bird", "cat", "dog"] and every.has_splits
    assert every[1]["labels"].tolist() == [1, 2] and every[0]["labels"].tolist() == [2, -1]
    test = LabelsFileDataset(path, 8, split="test")
    assert [p.name for p in test.paths] == ["y.png", "z.png"]  # val counts as test


@pytest.mark.parametrize("text, message", [
    ("path,class\npics/x.png,dog\n", "header row"),
    ("image,label\npics/x.png,\n", "at least one label"),
    ("image,label\npics/missing.png,dog\n", "do not exist"),
    ("image,label,split\npics/x.png,dog,holdout\n", "split must be"),
])
def test_labels_file_errors(tmp_path, text, message):
    with pytest.raises(ValueError, match=message):
        LabelsFileDataset(_labelled(tmp_path, text), 8)
