"""Dataset-scale tokenize: shards, an index, resume without rewriting, refusal of another run, torchrun."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from comit.cli import app
from comit.token_shards import INDEX_NAME, TokenShards, shard_name
from comit.tokens_file import load_tokens

runner = CliRunner()
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos"
    for i in range(40):
        path = folder / f"class{i % 3}" / f"{i:02d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (64, 64), color=(6 * i, 255 - 6 * i, (37 * i) % 256)).save(path)
    return folder


def tokenize(*args):
    result = runner.invoke(app, ["tokenize", *map(str, args)])
    assert result.exit_code == 0, result.output
    return result.output


def test_a_folder_becomes_shards_that_read_back_in_order(tmp_path, tiny_model_dir, photos):
    out = tmp_path / "tokens"
    said = tokenize(photos, "-o", out, "-m", tiny_model_dir, "--shard-size", 16, "--order", "random", "--seed", 5)
    assert "wrote 3 shards (40 images" in said and "0 already done" in said
    assert sorted(p.name for p in out.iterdir()) == [INDEX_NAME, shard_name(0), shard_name(1), shard_name(2)]
    index = json.loads((out / INDEX_NAME).read_text())
    assert index["num_images"] == 40 and index["shard_size"] == 16
    assert index["settings"] == {"order": "random", "num_crops": 3, "global_crop": False, "seed": 5}
    shards = TokenShards(out)
    assert len(shards) == 40
    files = sorted(str(p) for p in photos.rglob("*.png"))
    assert [shards[i]["source"] for i in range(40)] == files
    item = shards[17]
    assert item["ids"].shape == (16,) and item["crop_order"].shape == (3,) and int(item["num_crops"]) == 3
    assert [load_tokens(out / shard_name(k)).tokens.ids.shape[0] for k in range(3)] == [16, 16, 8]


def test_a_rerun_resumes_without_rewriting_and_redoes_a_lost_shard_identically(tmp_path, tiny_model_dir, photos):
    out = tmp_path / "tokens"
    args = (photos, "-o", out, "-m", tiny_model_dir, "--shard-size", 16, "--order", "random")
    tokenize(*args)
    before = {k: (out / shard_name(k)).stat().st_mtime_ns for k in range(3)}
    lost = load_tokens(out / shard_name(1)).tokens
    assert "wrote 0 shards (0 images" in tokenize(*args) and "3 already done" in tokenize(*args)
    assert {k: (out / shard_name(k)).stat().st_mtime_ns for k in range(3)} == before
    (out / shard_name(1)).unlink()
    with pytest.raises(ValueError, match="unfinished: 1 of 3 shards missing"):
        TokenShards(out)
    assert "wrote 1 shards (16 images" in tokenize(*args)
    again = load_tokens(out / shard_name(1)).tokens
    assert torch.equal(again.ids, lost.ids) and torch.equal(again.crop_order, lost.crop_order)
    assert (out / shard_name(0)).stat().st_mtime_ns == before[0]


def test_another_run_into_the_same_folder_is_refused(tmp_path, tiny_model_dir, photos):
    out = tmp_path / "tokens"
    tokenize(photos, "-o", out, "-m", tiny_model_dir, "--shard-size", 16)
    result = runner.invoke(app, ["tokenize", str(photos), "-o", str(out), "-m", str(tiny_model_dir),
                                 "--shard-size", "16", "--num-crops", "4"])
    assert result.exit_code == 1
    assert "holds the shards of another tokenize run (settings: num_crops differ)" in result.output
    assert result.output.count("\n") == 1 and "Traceback" not in result.output


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")} if folder.exists() else set()


def test_a_broken_image_on_a_fresh_run_leaves_nothing_and_the_fixed_input_runs(tmp_path, tiny_model_dir, photos):
    broken = photos / "class0" / "00.png"
    broken.write_bytes(b"")  # the first image: no shard can finish
    out = tmp_path / "tokens"
    result = runner.invoke(app, ["tokenize", str(photos), "-o", str(out), "-m", str(tiny_model_dir),
                                 "--shard-size", "16"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.startswith("error: ") and "00.png" in result.output and result.output.count("\n") == 1
    assert not out.exists(), "no folder, no index, no shard, no temporary file"
    broken.unlink()
    said = tokenize(photos, "-o", out, "-m", tiny_model_dir, "--shard-size", 16)
    assert "wrote 3 shards (39 images" in said and len(TokenShards(out)) == 39


def test_a_broken_image_after_finished_shards_keeps_them_for_the_fixed_input(tmp_path, tiny_model_dir, photos):
    broken = photos / "class2" / "38.png"  # the last image in order: shards 0 and 1 finish first
    broken.write_bytes(b"not a png")
    out = tmp_path / "tokens"
    result = runner.invoke(app, ["tokenize", str(photos), "-o", str(out), "-m", str(tiny_model_dir),
                                 "--shard-size", "16"])
    assert result.exit_code == 1 and "38.png" in result.output and "Traceback" not in result.output
    assert _files(out) == {INDEX_NAME, shard_name(0), shard_name(1)}
    kept = {name: (out / name).stat().st_mtime_ns for name in (shard_name(0), shard_name(1))}
    broken.unlink()
    said = tokenize(photos, "-o", out, "-m", tiny_model_dir, "--shard-size", 16)
    assert "the inputs changed since" in said and "(40 -> 39 images)" in said
    assert {name: (out / name).stat().st_mtime_ns for name in kept} == kept, "unchanged shards are kept"
    fresh = tmp_path / "fresh"
    tokenize(photos, "-o", fresh, "-m", tiny_model_dir, "--shard-size", 16)
    for shard in range(3):
        a, b = load_tokens(out / shard_name(shard)), load_tokens(fresh / shard_name(shard))
        assert a.sources == b.sources and torch.equal(a.tokens.ids, b.tokens.ids)


def test_a_finished_folder_over_other_inputs_is_never_adopted(tmp_path, tiny_model_dir, photos):
    out = tmp_path / "tokens"
    tokenize(photos, "-o", out, "-m", tiny_model_dir, "--shard-size", 16)
    (photos / "class0" / "00.png").unlink()
    result = runner.invoke(app, ["tokenize", str(photos), "-o", str(out), "-m", str(tiny_model_dir),
                                 "--shard-size", "16"])
    assert result.exit_code == 1 and "a finished run over other inputs" in result.output
    assert len(TokenShards(out)) == 40


def test_a_damaged_shard_is_redone_and_a_killed_runs_temporary_file_removed(tmp_path, tiny_model_dir, photos):
    out = tmp_path / "tokens"
    tokenize(photos, "-o", out, "-m", tiny_model_dir, "--shard-size", 16)
    before = load_tokens(out / shard_name(1))
    path = out / shard_name(1)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # truncated
    (out / ".shard-00002.safetensors.abc123.tmp").write_bytes(b"half")
    said = tokenize(photos, "-o", out, "-m", tiny_model_dir, "--shard-size", 16)
    assert f"{shard_name(1)} redone: " in said and "truncated" in said
    assert "wrote 1 shards (16 images" in said and "2 already done" in said
    assert torch.equal(load_tokens(path).tokens.ids, before.tokens.ids)
    assert _files(out) == {INDEX_NAME, shard_name(0), shard_name(1), shard_name(2)}


def test_a_dataset_spec_is_tokenized_by_name(tmp_path, tiny_model_dir):
    out = tmp_path / "shapes"
    said = tokenize("--data", "shapes:num_images=12", "--split", "val", "-o", out, "-m", tiny_model_dir,
                    "--shard-size", 5, "--global-crop")
    assert "3 shards of 12 images" in said
    shards = TokenShards(out)
    assert shards[11]["source"] == "shapes:num_images=12#11"
    assert shards.plan.data == "shapes:num_images=12 (val)"
    assert int(shards[0]["crop_order"][0]) == 0  # the global crop first


def test_files_or_data_not_both(tmp_path, tiny_model_dir, photos):
    result = runner.invoke(app, ["tokenize", str(photos), "--data", "shapes", "-o", str(tmp_path / "x"),
                                 "-m", str(tiny_model_dir)])
    assert result.exit_code == 1 and "not both" in result.output


def test_torchrun_two_processes_cover_every_image_once(tmp_path, tiny_model_dir, photos):
    out = tmp_path / "tokens"
    torchrun = Path(sys.executable).parent / "torchrun"
    command = [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "comit.cli", "tokenize", str(photos),
               "-o", str(out), "-m", str(tiny_model_dir), "--shard-size", 7, "--device", "cpu"]
    result = subprocess.run([str(c) for c in command], env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "process 0 of 2: wrote 3 shards" in result.stdout and "process 1 of 2: wrote 3 shards" in result.stdout
    shards = TokenShards(out)
    sources = [shards[i]["source"] for i in range(len(shards))]
    assert sources == sorted(str(p) for p in photos.rglob("*.png"))
    single = tmp_path / "single"
    tokenize(photos, "-o", single, "-m", tiny_model_dir, "--shard-size", 7, "--device", "cpu")
    for k in range(6):
        assert torch.equal(load_tokens(out / shard_name(k)).tokens.ids, load_tokens(single / shard_name(k)).tokens.ids)
