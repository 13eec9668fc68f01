"""Every split users have can be reached, by the ecosystem's names, and a fallback to all the data is said."""

import warnings

import datasets
import pytest
import webdataset
from PIL import Image
from typer.testing import CliRunner

from comit.cli import app
from comit.data import SplitWarning, build_dataset
from comit.token_shards import TokenShards

runner = CliRunner()


def _png(path, color):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 64), color=color).save(path)


@pytest.fixture
def imagefolder(tmp_path):
    """The `imagefolder` layout: train/ and validation/, class sub-folders."""
    root = tmp_path / "photos"
    for split, count in (("train", 5), ("validation", 2)):
        for i in range(count):
            _png(root / split / f"class{i % 2}" / f"{i}.png", (40 * i, 100, 200))
    return root


@pytest.fixture
def validation_dict(tmp_path):
    """A DatasetDict saved by datasets with the usual `validation` split."""
    def rows(n):
        return datasets.Dataset.from_dict({"image": [Image.new("RGB", (64, 64), (10 * i, 0, 0)) for i in range(n)]},
                                          features=datasets.Features({"image": datasets.Image()}))
    datasets.DatasetDict({"train": rows(4), "validation": rows(3)}).save_to_disk(str(tmp_path / "hf"))
    return f"hf:{tmp_path / 'hf'}"


@pytest.mark.parametrize("split", ["val", "validation"])
def test_val_and_validation_reach_the_same_split(imagefolder, validation_dict, split):
    assert len(build_dataset(str(imagefolder), 64, split)) == 2, "never the train images too"
    assert len(build_dataset(validation_dict, 64, split)) == 3


def test_shapes_takes_validation_for_val_and_refuses_test():
    import torch

    validation, val, train = (build_dataset("shapes", 64, split)[0]["image"] for split in ("validation", "val", "train"))
    assert torch.equal(validation, val) and not torch.equal(val, train)
    with pytest.raises(ValueError, match="shapes has the splits train and val"):
        build_dataset("shapes", 64, "test")


def test_a_split_the_data_lacks_is_refused_by_name(imagefolder, validation_dict):
    with pytest.raises(ValueError, match=r"has the split folders \['train', 'validation'\], none for --split test"):
        build_dataset(str(imagefolder), 64, "test")
    with pytest.raises(ValueError, match=r"has the splits \['train', 'validation'\], not 'test'"):
        build_dataset(validation_dict, 64, "test")
    with pytest.raises(ValueError, match="--split must be a split name"):
        build_dataset("shapes", 64, "../train")


def test_all_of_a_folder_without_splits_is_used_and_said(tmp_path):
    for i in range(3):
        _png(tmp_path / "plain" / f"{i}.png", (0, 80 * i, 0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(build_dataset(str(tmp_path / "plain"), 64, "train")) == 3  # train: the folder, silently
    with pytest.warns(SplitWarning, match="no split folders .* all its images are used for --split val"):
        assert len(build_dataset(str(tmp_path / "plain"), 64, "val")) == 3


def test_tar_shards_say_that_a_split_selects_nothing(tmp_path):
    with webdataset.TarWriter(str(tmp_path / "a.tar")) as sink:
        sink.write({"__key__": "k0", "png": _bytes(tmp_path)})
    with pytest.warns(SplitWarning, match="--split val selects nothing"):
        build_dataset(f"wds:{tmp_path / 'a.tar'}", 64, "val")


def _bytes(tmp_path):
    _png(tmp_path / "one.png", (1, 2, 3))
    return (tmp_path / "one.png").read_bytes()


def test_the_cli_tokenizes_a_validation_split_and_warns_in_one_line(tmp_path, tiny_model_dir, imagefolder,
                                                                       validation_dict):
    result = runner.invoke(app, ["tokenize", "--data", validation_dict, "--split", "validation", "-o",
                                 str(tmp_path / "hf-tokens"), "-m", str(tiny_model_dir)])
    assert result.exit_code == 0, result.output
    assert len(TokenShards(tmp_path / "hf-tokens")) == 3
    plain = imagefolder / "train" / "class0"
    result = runner.invoke(app, ["tokenize", "--data", str(plain), "--split", "val", "-o", str(tmp_path / "t"),
                                 "-m", str(tiny_model_dir)])
    assert result.exit_code == 0, result.output
    assert [line for line in result.output.splitlines() if line.startswith("warning:")] == [
        f"warning: {plain} has no split folders (train/, val/, validation/, test/): all its images are used for "
        "--split val"]
