"""`comit eval ...` end to end on a tiny random model, and the Python functions behind it."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from typer.testing import CliRunner

from comit.cli import app
from comit.data import sample_paths
from comit.eval.protocol import EvalSettings, load_dataset
from comit.eval.run_align import AlignSettings, evaluate_alignment
from comit.eval.run_crops import CurveSettings, evaluate_crop_curves
from comit.eval.run_recon import evaluate_reconstruction

runner = CliRunner()
FAST = ["--batch-size", "4", "--seed", "1"]
pytestmark = pytest.mark.usefixtures("one_thread")


def run_eval(*args):
    result = runner.invoke(app, ["eval", *map(str, args)])
    return result


def results(out) -> dict:
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # nothing half-written left
    assert (out / "results.md").read_text().startswith("# ")
    return json.loads((out / "results.json").read_text())


def _extractor() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())


# ---------------------------------------------------------------------- commands
def test_recon_command(tmp_path, tiny_model_dir):
    out = tmp_path / "recon"
    result = run_eval("recon", "-m", tiny_model_dir, "-n", 4, "--steps", 1, "--order", "raster_scan",
                      "--fid-features", "shapes-teacher", "-o", out, *FAST)
    assert result.exit_code == 0, result.output
    data = results(out)
    metrics = data["metrics"]
    assert metrics["num_images"] == 4 and metrics["mean_crops"] == 3
    assert 0 < metrics["psnr"] < 60 and -1 <= metrics["ssim"] <= 1 and metrics["codebook_distinct"] >= 1
    assert metrics["rfid"] > 0 and metrics["rfid_feature_dim"] == 64  # the bundled teacher's global feature
    assert any("rank-deficient" in note for note in data["notes"])
    assert data["settings"]["order"] == "raster_scan" and data["settings"]["fid_features"] == "shapes-teacher"
    assert data["run"]["command"].startswith("comit eval recon --out ")
    assert "--no-global-crop" in data["run"]["command"] and "--num-images 4" in data["run"]["command"]
    assert Image.open(out / "examples.png").format == "PNG"


def test_align_command_on_shapes_and_on_a_mask_folder(tmp_path, tiny_model_dir):
    out = tmp_path / "align"
    result = run_eval("align", "-m", tiny_model_dir, "-n", 3, "--q", "20,40", "--times", "0.5", "--heads", "max",
                      "-o", out, *FAST)
    assert result.exit_code == 0, result.output
    data = results(out)
    assert [row["q"] for row in data["per_q"]] == [20, 40]
    assert data["metrics"]["num_images"] == 3 and data["metrics"]["num_objects"] >= 3
    assert (out / "miou_vs_q.png").exists()
    samples = sample_paths()[0].parent
    out = tmp_path / "align-folder"
    result = run_eval("align", "-m", tiny_model_dir, "--data", samples, "--masks", samples / "masks", "-o", out)
    assert result.exit_code == 0, result.output
    assert results(out)["metrics"]["num_images"] == len(sample_paths())


def test_probe_command_on_shapes(tmp_path, tiny_model_dir):
    out = tmp_path / "probe"
    result = run_eval("probe", "-m", tiny_model_dir, "--tasks", "semantic,relational", "--num-train", 24, "-n", 12,
                      "--epochs", 2, "--probe-input", "codes", "-o", out, *FAST)
    assert result.exit_code == 0, result.output
    data = results(out)
    tasks = [("semantic", "test", "top1"), ("relational", "test", "top1")]
    assert [(r["messages"], r["task"], r["test"], r["primary"]) for r in data["rows"]] == [
        (messages, *task) for messages in ("model", "scene", "random") for task in tasks]  # the probe, its controls
    assert all(r["ci95_low"] <= r[r["primary"]] <= r["ci95_high"] for r in data["rows"])
    assert set(data["metrics"]) == {"semantic_top1", "relational_top1"}  # the model's rows alone
    assert "## Controls" in (out / "results.md").read_text()
    assert "probe (scene messages) relational: epoch 2/2" in result.output  # a log line per epoch
    assert data["settings"]["global_crop"] is True and data["settings"]["num_crops"] == 1  # the paper's policy
    assert data["settings"]["train_images"] == 24 and data["settings"]["test_images"] == 12
    assert (out / "probe_scores.png").exists() and (out / "probe_training.png").exists()


def test_probe_command_without_controls(tmp_path, tiny_model_dir):
    out = tmp_path / "probe"
    result = run_eval("probe", "-m", tiny_model_dir, "--tasks", "semantic", "--num-train", 24, "-n", 12,
                      "--epochs", 1, "--no-controls", "-o", out, *FAST)
    assert result.exit_code == 0, result.output
    assert [r["messages"] for r in results(out)["rows"]] == ["model"]
    assert "## Controls" not in (out / "results.md").read_text()


def _class_folder(root, colours=((200, 30, 30), (30, 30, 200)), per_class=6):
    for name, colour in zip(("red", "blue"), colours):
        for i in range(per_class):
            pixels = np.clip(np.array(colour) + np.random.default_rng(i).integers(-20, 20, 3), 0, 255)
            path = root / name / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((16, 16, 3), pixels, dtype=np.uint8)).save(path)
    return root


def test_probe_command_on_class_folders_and_a_labels_file(tmp_path, tiny_model_dir):
    folder = _class_folder(tmp_path / "pictures")
    out = tmp_path / "probe-folder"
    result = run_eval("probe", "-m", tiny_model_dir, "--data", folder, "--epochs", 2, "-o", out)
    assert result.exit_code == 0, result.output
    data = results(out)
    row = data["rows"][0]
    assert (row["task"], row["num_classes"]) == ("classes", 2)
    assert data["settings"]["train_images"] + data["settings"]["test_images"] == 12
    labels = tmp_path / "labels.csv"
    labels.write_text("image,label,split\n" + "".join(
        f"{c}/{i}.png,{c},{'train' if i < 4 else 'test'}\n" for c in ("red", "blue") for i in range(6)))
    out = tmp_path / "probe-labels"
    result = run_eval("probe", "-m", tiny_model_dir, "--data", folder, "--labels", labels, "--epochs", 2, "-o", out)
    assert result.exit_code == 0, result.output
    data = results(out)
    assert data["settings"]["train_images"] == 8 and data["rows"][0]["test_samples"] == 4


def test_crops_command(tmp_path, tiny_model_dir):
    out = tmp_path / "crops"
    result = run_eval("crops", "-m", tiny_model_dir, "-n", 4, "--num-train", 16, "--orders", "raster_scan,adaptive",
                      "--crop-counts", "1,2", "--steps", 1, "--epochs", 1, "--tasks", "semantic", "-o", out, *FAST)
    assert result.exit_code == 0, result.output
    data = results(out)
    points = [(r["policy"], r["num_crops"]) for r in data["rows"]]
    assert points == [(p, k) for p in ("raster_scan", "raster_scan+global", "adaptive", "adaptive+global")
                      for k in (1, 2)]
    assert {"psnr", "ssim", "miou_image", "miou_object", "semantic_top1"} <= set(data["metrics"])
    assert "rfid" not in data["metrics"]  # not measured: left out of the table
    assert "rFID not measured (--fid-features none)" in data["notes"]
    assert (out / "crops_psnr.png").exists() and (out / "crops_semantic_top1.png").exists()
    # With the global crop, one crop is the global crop whatever the order.
    first = {r["policy"]: r["psnr"] for r in data["rows"] if r["num_crops"] == 1}
    assert first["raster_scan+global"] == first["adaptive+global"]


def test_default_sizes_finish_in_minutes_and_zero_means_every_image(tmp_path, tiny_model_dir):
    import comit.cli.eval as commands

    help_text = runner.invoke(app, ["eval", "all", "--help"], env={"COLUMNS": "200"}).output
    for default in ("(0: all). [default: 100]", "(0: all). [default: 1000]", "(0: all). [default: 16]",
                    "[default: 1,3,9]", "about 6 minutes"):
        assert default in help_text
    assert (commands.DEFAULT_EVAL_IMAGES, commands.DEFAULT_PROBE_TRAIN) == (100, 1000)
    folder = tmp_path / "pictures"
    folder.mkdir()
    for i in range(5):
        Image.fromarray(np.full((64, 64, 3), 40 * i, dtype=np.uint8)).save(folder / f"{i}.png")
    out = tmp_path / "recon"
    result = run_eval("recon", "-m", tiny_model_dir, "--data", folder, "-n", 0, "--steps", 1,
                      "--fid-features", "none", "-o", out, *FAST)
    assert result.exit_code == 0, result.output
    assert results(out)["metrics"]["num_images"] == 5


def test_the_probe_commands_default_to_the_library_s_probe_schedule():
    import comit.cli.eval as commands
    from comit.eval.run_probe import ProbeSettings

    assert (commands.PROBE_EPOCHS, commands.PROBE_PATIENCE) == (ProbeSettings.epochs, ProbeSettings.patience)
    for command in ("probe", "crops", "all"):
        help_text = runner.invoke(app, ["eval", command, "--help"], env={"COLUMNS": "200"}).output
        assert f"[default: {ProbeSettings.epochs}]" in help_text


@pytest.mark.parametrize("args, message", [
    (["align", "--data", "FOLDER"], "alignment needs object masks"),
    (["align", "--q", "0"], r"q must lie in \(0, 100\]"),
    (["probe", "--tasks", "colour"], "unknown probe task 'colour'"),
    (["crops", "--global", "sometimes"], "--global must be both, on or off"),
    (["recon", "--fid-features", "magic"], "unknown --fid-features 'magic'"),
    (["recon", "--order", "spiral"], "unknown crop order 'spiral'"),
])
def test_bad_input_is_one_line(tmp_path, tiny_model_dir, args, message):
    args = [str(sample_paths()[0].parent) if a == "FOLDER" else a for a in args]
    result = run_eval(*args, "-m", tiny_model_dir, "-n", 2, "--num-train" if args[0] == "probe" else "-n", 4,
                      "-o", tmp_path / "out")
    assert result.exit_code == 1, result.output
    assert result.output.startswith("error: ") and len(result.output.strip().splitlines()) == 1
    import re

    assert re.search(message, result.output), result.output
    assert not (tmp_path / "out" / "results.json").exists()


# ---------------------------------------------------------------------- Python functions
def test_recon_with_a_custom_feature_extractor_and_without_inception(tiny_model, monkeypatch):
    dataset = load_dataset("shapes", 64, num_images=4)
    settings = EvalSettings(order="raster_scan", num_crops=2, steps=1, progress=False)
    custom = evaluate_reconstruction(tiny_model, dataset, settings, fid_features=_extractor())
    assert custom.metrics["rfid"] > 0 and custom.settings["fid_features"] == "custom Sequential"
    assert any("not comparable with published" in note for note in custom.notes)
    monkeypatch.setitem(sys.modules, "torch_fidelity", None)  # as on machines without it
    standard = evaluate_reconstruction(tiny_model, dataset, settings, fid_features="inception")
    assert standard.metrics["rfid"] is None
    assert "pip install 'comit[fid]'" in standard.notes[0]
    assert standard.metrics["psnr"] == custom.metrics["psnr"]  # the rest is still reported


def test_crop_curves_score_what_recon_scores(tiny_model):
    dataset = load_dataset("shapes", 64, num_images=3)
    settings = EvalSettings(order="random", num_crops=3, steps=1, cfg=1.0, progress=False, seed=3)
    recon = evaluate_reconstruction(tiny_model, dataset, settings, fid_features=None).metrics
    curves = evaluate_crop_curves(tiny_model, dataset, settings, CurveSettings(orders=["random"], global_crop=[False],
                                                                               crop_counts=[3], metrics=["recon"]))
    row = curves.rows[0]
    assert row["psnr"] == pytest.approx(recon["psnr"], abs=1e-9) and row["ssim"] == pytest.approx(recon["ssim"])


def test_alignment_rewards_maps_that_cover_the_objects(tiny_model, monkeypatch):
    dataset = load_dataset("shapes", 64, num_images=6)
    settings, align = EvalSettings(num_crops=1, progress=False), AlignSettings(qs=(5, 10))
    model_scores = evaluate_alignment(tiny_model, dataset, settings, align).metrics

    def oracle(images, tokens, **kwargs):
        """Token k looks at object k of each image (the ground truth, on the 16x16 patch grid)."""
        masks = torch.stack([dataset[int(i)]["masks"] for i in range(len(dataset))])
        maps = torch.zeros(len(images), tokens.ids.shape[1], 16, 16)
        chosen = torch.nn.functional.avg_pool2d(masks[oracle.offset:oracle.offset + len(images)].float(), 4)
        maps[:, :chosen.shape[1]] = chosen
        oracle.offset += len(images)
        return maps

    oracle.offset = 0
    monkeypatch.setattr(tiny_model, "attention_maps", oracle)
    perfect = evaluate_alignment(tiny_model, dataset, settings, align).metrics
    assert perfect["miou_object"] > perfect["random_miou_object"] + 0.2
    assert perfect["miou_object"] > model_scores["miou_object"]
    assert perfect["random_miou_object"] == model_scores["random_miou_object"]  # same seeded floor
    assert model_scores["num_objects"] == perfect["num_objects"] == sum(int(dataset[i]["valid"].sum()) for i in range(6))
    # The ceiling (the masks themselves as maps) bounds every map, and cut at each mask's area it is exactly 1;
    # the pooled oracle's blurred maps come close to it there, random maps stay far below.
    for scores in (model_scores, perfect):
        for kind in ("image", "object"):
            for cut in ("", "_matched"):
                ceiling = scores[f"oracle_miou_{kind}{cut}"] + 1e-9
                assert scores[f"miou_{kind}{cut}"] <= ceiling and scores[f"random_miou_{kind}{cut}"] <= ceiling
            assert scores[f"oracle_miou_{kind}_matched"] == pytest.approx(1.0)
    assert perfect["miou_object_matched"] > 0.6 > perfect["random_miou_object_matched"]
    assert perfect["oracle_miou_object"] < 1.0  # objects smaller than 5 % of the image cap the top-Q protocol


def test_the_whole_suite(tmp_path, tiny_model_dir):
    out = tmp_path / "suite"
    result = run_eval("all", "-m", tiny_model_dir, "-n", 3, "--num-train", 12, "--steps", 1, "--epochs", 1,
                      "--crop-counts", 1, "--crop-images", 2, "--fid-features", "none", "-o", out, *FAST)
    assert result.exit_code == 0, result.output
    summary = results(out)
    assert summary["settings"]["parts"] == ["recon", "align", "probe", "crops"]
    assert summary["parts"]["align"]["num_images"] == 3
    assert results(out / "crops")["settings"]["num_images"] == 2  # --crop-images
    for part in ("recon", "align", "probe", "crops"):
        assert results(out / part)["run"]["command"].startswith("comit eval all --out ")
    assert "[crops](crops/results.md)" in (out / "results.md").read_text()


def test_crop_counts_beyond_the_grid(tiny_model):
    dataset = load_dataset("shapes", 64, num_images=2)
    settings = EvalSettings(steps=1, progress=False)
    curves = evaluate_crop_curves(tiny_model, dataset, settings, CurveSettings(
        orders=["raster_scan"], crop_counts=[9, 10], metrics=["recon"]))
    # 10 crops exist only with the global crop (9 local + 1).
    assert [(r["policy"], r["num_crops"]) for r in curves.rows] == [
        ("raster_scan", 9), ("raster_scan+global", 9), ("raster_scan+global", 10)]
    with pytest.raises(ValueError, match="no crop count in \\[11\\] is possible"):
        evaluate_crop_curves(tiny_model, dataset, settings, CurveSettings(crop_counts=[11], metrics=["recon"]))
