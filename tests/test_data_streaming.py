"""WebDataset tar shards and Hugging Face datasets folders as sources for training, eval and tokenize."""

import io

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from comit.cli import app
from comit.data import build_dataset, load_image
from comit.token_shards import TokenShards
from comit.train.config import load_config
from comit.train.loop import train

webdataset = pytest.importorskip("webdataset")
datasets = pytest.importorskip("datasets")
runner = CliRunner()
COLORS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30), (30, 200, 200), (200, 30, 200)]


def png_bytes(color, size=(80, 64)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color=color).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def tar_shards(tmp_path):
    """Two WebDataset shards of three samples each: an image and its class."""
    for shard in range(2):
        with webdataset.TarWriter(str(tmp_path / f"train-{shard:04d}.tar")) as sink:
            for i in range(3):
                n = shard * 3 + i
                sink.write({"__key__": f"sample{n:03d}", "png": png_bytes(COLORS[n]), "cls": str(n % 2).encode()})
    return f"wds:{tmp_path}/train-{{0000..0001}}.tar"


@pytest.fixture
def hf_folder(tmp_path):
    table = datasets.Dataset.from_dict({"image": [{"bytes": png_bytes(c), "path": None} for c in COLORS],
                                        "label": [0, 1, 0, 1, 0, 1]},
                                       features=datasets.Features({"image": datasets.Image(),
                                                                   "label": datasets.ClassLabel(names=["a", "b"])}))
    datasets.DatasetDict({"train": table, "val": table.select(range(2))}).save_to_disk(str(tmp_path / "hf"))
    return f"hf:{tmp_path / 'hf'}"


def test_tar_shards_read_in_order_with_labels_and_the_same_pixels_as_files(tmp_path, tar_shards):
    dataset = build_dataset(tar_shards, 64)
    assert len(dataset) == 6
    assert [dataset[i]["label"] for i in range(6)] == [0, 1, 0, 1, 0, 1]
    Image.new("RGB", (80, 64), color=COLORS[4]).save(tmp_path / "same.png")
    assert torch.equal(dataset[4]["image"], load_image(tmp_path / "same.png", 64))


def test_a_hf_folder_gives_its_split_and_labels(tmp_path, hf_folder):
    train_split, val_split = build_dataset(hf_folder, 64, "train"), build_dataset(hf_folder, 64, "val")
    assert (len(train_split), len(val_split)) == (6, 2)
    assert [train_split[i]["label"] for i in range(6)] == [0, 1, 0, 1, 0, 1]
    Image.new("RGB", (80, 64), color=COLORS[1]).save(tmp_path / "same.png")
    assert torch.equal(val_split[1]["image"], load_image(tmp_path / "same.png", 64))


@pytest.mark.parametrize("source", ["tar_shards", "hf_folder"])
def test_both_sources_feed_training_and_tokenize(tmp_path, tiny_model_dir, source, request):
    spec = request.getfixturevalue(source)
    model_dir = train(load_config("tiny", [f"data.dataset={spec}", "max_steps=2", "batch_size=2",
                                           "checkpoint_every=100", "data.flip=true"]), tmp_path / "run", progress=False)
    assert (model_dir / "model.safetensors").is_file()
    result = runner.invoke(app, ["tokenize", "--data", spec, "-o", str(tmp_path / "tokens"), "-m", str(tiny_model_dir),
                                 "--shard-size", "4"])
    assert result.exit_code == 0, result.output
    assert len(TokenShards(tmp_path / "tokens")) == 6


def test_bad_sources_are_one_clear_error(tmp_path):
    with pytest.raises(ValueError, match="2 of 2 shards are not files"):
        build_dataset(f"wds:{tmp_path}/missing-{{0..1}}.tar", 64)
    (tmp_path / "broken.tar").write_bytes(b"not a tar")
    with pytest.raises(ValueError, match="is not a readable tar shard"):
        build_dataset(f"wds:{tmp_path}/broken.tar", 64)
    with pytest.raises(ValueError, match="no such folder"):
        build_dataset(f"hf:{tmp_path}/nothing", 64)
    with pytest.raises(ValueError, match="take no options"):
        build_dataset(f"hf:{tmp_path}", 64, class_folders=True)


def test_a_compressed_shard_is_named_with_what_to_do(tmp_path, tiny_model_dir):
    with webdataset.TarWriter(str(tmp_path / "z-0000.tar.gz"), compress=True) as sink:
        sink.write({"__key__": "k0", "png": png_bytes(COLORS[0])})
    with pytest.raises(ValueError, match=r"z-0000.tar.gz is a gzip-compressed tar; .* decompress it \(gunzip\)"):
        build_dataset(f"wds:{tmp_path / 'z-0000.tar.gz'}", 64)
    result = runner.invoke(app, ["tokenize", "--data", f"wds:{tmp_path / 'z-0000.tar.gz'}", "-o", str(tmp_path / "t"),
                                 "-m", str(tiny_model_dir)])
    assert result.exit_code == 1 and result.output.startswith("error: ") and result.output.count("\n") == 1
    assert not (tmp_path / "t").exists()


def test_a_truncated_arrow_file_is_named(tmp_path):
    table = datasets.Dataset.from_dict({"image": [{"bytes": png_bytes(c), "path": None} for c in COLORS]},
                                       features=datasets.Features({"image": datasets.Image()}))
    table.save_to_disk(str(tmp_path / "hf"))
    (arrow,) = (tmp_path / "hf").glob("*.arrow")
    arrow.write_bytes(arrow.read_bytes()[: arrow.stat().st_size // 2])
    with pytest.raises(ValueError, match=rf"hf:{tmp_path / 'hf'}: {arrow.name} cannot be read .* truncated or damaged"):
        build_dataset(f"hf:{tmp_path / 'hf'}", 64)


def test_a_corrupt_member_met_in_training_leaves_no_run_folder(tmp_path):
    with webdataset.TarWriter(str(tmp_path / "bad-0000.tar")) as sink:
        for i in range(4):
            sink.write({"__key__": f"s{i}", "png": png_bytes(COLORS[i]) if i != 2 else b"\x89PNG broken"})
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", "tiny", "--out", str(out), f"data.dataset=wds:{tmp_path / 'bad-0000.tar'}",
                                 "batch_size=4", "max_steps=2", "checkpoint_every=100", "eval_every=0"])
    assert result.exit_code == 1 and "s2" in result.output and "Traceback" not in result.output, result.output
    assert not out.exists(), "no config.yaml, no metrics.jsonl: the fixed re-run starts afresh"


def _bad_tar_member(tmp_path):
    with webdataset.TarWriter(str(tmp_path / "bad-0000.tar")) as sink:
        sink.write({"__key__": "s0", "png": b"\x89PNG broken"})
        sink.write({"__key__": "s1", "png": png_bytes(COLORS[1])})
    return f"wds:{tmp_path / 'bad-0000.tar'}", "s0"


def _bad_label(tmp_path):
    with webdataset.TarWriter(str(tmp_path / "label-0000.tar")) as sink:
        sink.write({"__key__": "s0", "png": png_bytes(COLORS[0]), "cls": b"cat"})
    return f"wds:{tmp_path / 'label-0000.tar'}", "s0.cls must hold an integer class"


def _bad_cell(tmp_path):
    table = datasets.Dataset.from_dict({"image": [{"bytes": b"not an image", "path": None},
                                                  {"bytes": png_bytes(COLORS[1]), "path": None}]},
                                       features=datasets.Features({"image": datasets.Image()}))
    table.save_to_disk(str(tmp_path / "hf"))
    return f"hf:{tmp_path / 'hf'}", "#0"


@pytest.mark.parametrize("make", [_bad_tar_member, _bad_label, _bad_cell])
def test_broken_data_from_the_ecosystems_writers_fails_in_one_line_and_leaves_nothing(tmp_path, tiny_model_dir, make):
    spec, named = make(tmp_path)
    out = tmp_path / "tokens"
    result = runner.invoke(app, ["tokenize", "--data", spec, "-o", str(out), "-m", str(tiny_model_dir)])
    assert result.exit_code == 1 and result.output.startswith("error: ") and result.output.count("\n") == 1
    assert named in result.output and "Traceback" not in result.output, result.output
    assert not out.exists()
