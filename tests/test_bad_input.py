"""Bad input never gets through: non-finite values, inconsistent files, hostile configs, half-written
outputs. Each case checks the message, exit code 1, one line (no traceback) and what is left on disk."""

import json
import os
import re
import stat
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from typer.testing import CliRunner

from comit import COMiT
from comit.io import atomic_write
from comit.cli import app
from comit.data import load_image
from comit.data.images import ImageLoadError
from comit.model.checkpoints import CheckpointError
from comit.tokens_file import load_tokens, save_tokens

runner = CliRunner()


def refused(args, fragment):
    """The CLI refuses ``args``: exit 1, one line holding ``fragment``."""
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 1, result.output
    assert fragment in result.output, result.output
    assert result.output.strip().count("\n") == 0, f"one line, no traceback: {result.output}"
    assert "Traceback" not in result.output
    return result


@pytest.fixture
def picture(tmp_path):
    path = tmp_path / "picture.png"
    Image.new("RGB", (64, 64), color=(40, 100, 200)).save(path)
    return path


# ---------------------------------------------------------------------- 1. non-finite and out-of-range values
@pytest.mark.parametrize("fill, fragment", [
    (float("nan"), "images hold NaN or Inf values"),
    (float("inf"), "images hold NaN or Inf values"),
    (255.0, "images must lie in [-1, 1], got values in [0, 255]"),
])
def test_images_with_bad_values_are_refused(tiny_model, fill, fragment):
    images = torch.zeros(2, 3, 64, 64)
    images[1, 0, 5, 5] = fill
    with pytest.raises(ValueError, match="^" + re.escape(fragment)):
        tiny_model.tokenize(images, order="raster_scan", num_crops=1)


def test_resampling_overshoot_is_accepted(tiny_model):
    images = torch.full((1, 3, 64, 64), 1.05)  # bicubic resizing overshoots [-1, 1] a little
    tiny_model.tokenize(images, order="raster_scan", num_crops=1)


def test_messages_with_nan_or_off_the_code_grid_are_refused(tiny_model, tiny_images):
    tokens = tiny_model.tokenize(tiny_images, order="raster_scan", num_crops=1)
    broken = tokens.messages.clone()
    broken[0, 3, 1] = float("nan")
    with pytest.raises(ValueError, match="messages hold NaN or Inf"):
        tiny_model.detokenize(broken, tokens.offsets, num_steps=1)
    off_grid = tokens.messages.clone()
    off_grid[1, 2, 0] = 0.37
    with pytest.raises(ValueError, match=r"messages must be FSQ codes on the code grid .* got 0.37 at \[1, 2, 0\]"):
        tiny_model.detokenize(off_grid, tokens.offsets, num_steps=1)
    offsets = tokens.offsets.clone()
    offsets[0, 0] = float("inf")
    with pytest.raises(ValueError, match="offsets hold NaN or Inf"):
        tiny_model.detokenize(tokens.messages, offsets, num_steps=1)
    tiny_model.detokenize(tokens.messages, tokens.offsets, num_steps=1)  # the good ones still decode


@pytest.mark.parametrize("weight", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_guidance_is_refused(tiny_model, tiny_images, weight):
    tokens = tiny_model.tokenize(tiny_images, order="raster_scan", num_crops=1)
    with pytest.raises(ValueError, match="cfg_weight .* must be a finite number"):
        tiny_model.detokenize(tokens.messages, tokens.offsets, num_steps=1, cfg_weight=weight)
    with pytest.raises(ValueError, match="apg_momentum must lie in"):
        tiny_model.detokenize(tokens.messages, tokens.offsets, num_steps=1, apg_momentum=weight)


def test_non_finite_error_budget_is_refused(tiny_model, tiny_images):
    with pytest.raises(ValueError, match="error_budget must be a finite"):
        tiny_model.tokenize(tiny_images, order="adaptive", num_crops=2, error_budget=float("nan"))


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_cli_refuses_non_finite_numbers_before_any_work(tmp_path, tiny_model_dir, picture, value):
    out = tmp_path / "out"
    refused(["reconstruct", picture, "-o", out, "-m", tiny_model_dir, "--cfg", value, "--steps", 1],
            f"--cfg must be a finite number, got {float(value)}")
    assert not out.exists()


@pytest.mark.parametrize("override", ["optim.lr=inf", "optim.lr=nan", "step.t_mean=nan"])
def test_train_config_refuses_non_finite_values(tmp_path, override):
    out = tmp_path / "run"
    refused(["train", "tiny", "max_steps=1", override, "--out", out], override.split("=")[0])
    assert not out.exists()


def test_diverging_training_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    out = tmp_path / "run"
    args = ["train", "tiny", "max_steps=6", "batch_size=4", "log_every=1", "checkpoint_every=1", "keep_last=10",
            "data.dataset=shapes:num_images=8", "optim.lr=1e30", "optim.grad_clip=null", "optim.warmup_steps=0", "--out", out]
    result = refused(args, "training diverged at step")
    assert "the weights were not updated and the last good checkpoint is" in result.output
    from safetensors.torch import load_file

    from comit.train.checkpoint import latest_checkpoint

    last = latest_checkpoint(out / "checkpoints")
    assert last is not None and str(last) in result.output
    weights = load_file(str(last / "training.safetensors"))
    assert all(bool(torch.isfinite(value).all()) for value in weights.values() if value.is_floating_point())
    assert not (out / "model").exists(), "no final model from a run that diverged"


# ---------------------------------------------------------------------- 2. tokens files are checked
@pytest.fixture
def tokens_file(tmp_path, tiny_model, tiny_images, tiny_model_dir):
    tokens = tiny_model.tokenize(tiny_images, order="raster_scan", num_crops=2)
    path = save_tokens(tmp_path / "tokens.safetensors", tokens, str(tiny_model_dir),
                       list(tiny_model.config.fsq_levels), {"order": "raster_scan"}, ["a.png", "b.png"])
    return path, tokens


def rewrite(path, tokens, **changes):
    """Rewrite the tokens file with some tensors or metadata entries replaced."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        meta = dict(handle.metadata())
    tensors = {name: getattr(tokens, name).contiguous() for name in
               ("ids", "messages", "offsets", "crop_order", "num_crops")}
    for key, value in changes.items():
        if key in tensors:
            tensors[key] = value.contiguous()
        else:
            meta[key] = value
    save_file(tensors, str(path), metadata=meta)


@pytest.mark.parametrize("change, fragment", [
    (lambda t: {"ids": t.ids.clone().fill_(10 ** 7)}, "ids must lie in [0, 64000)"),
    (lambda t: {"ids": (t.ids + 1) % 64000}, "ids and messages disagree"),
    (lambda t: {"offsets": t.offsets[:1]}, "offsets must be float [2, 2]"),
    (lambda t: {"crop_order": t.crop_order[:, :1]}, "crop_order must be integer [K, 2]"),
    (lambda t: {"num_crops": t.num_crops + 5}, "num_crops must lie in [0, 2]"),
    (lambda t: {"messages": t.messages * 0.9}, "messages must be FSQ codes on the code grid"),
    (lambda t: {"sources": json.dumps(["only-one.png"])}, "metadata 'sources' must list one name per message (2)"),
    (lambda t: {"sources": "not json"}, "metadata 'sources' is not JSON"),
    (lambda t: {"fsq_levels": json.dumps([1, 2])}, "metadata 'fsq_levels' must be a list of integers >= 2"),
])
def test_inconsistent_tokens_files_are_refused(tmp_path, tokens_file, change, fragment):
    path, tokens = tokens_file
    rewrite(path, tokens, **change(tokens))
    with pytest.raises(ValueError, match="^" + re.escape(str(path))):
        load_tokens(path)
    out = tmp_path / "decoded"
    refused(["detokenize", path, "-o", out, "--steps", 1], fragment)
    assert not out.exists() or not list(out.iterdir())


def test_crop_indices_beyond_the_model_are_refused(tmp_path, tokens_file):
    path, tokens = tokens_file
    rewrite(path, tokens, crop_order=tokens.crop_order.clone().fill_(12))
    refused(["detokenize", path, "-o", tmp_path / "decoded", "--steps", 1], "crop_order holds crop 12")


# ---------------------------------------------------------------------- 3. options refused, not crashed on
@pytest.mark.parametrize("args, fragment", [
    (["reconstruct", "{picture}", "-o", "{out}", "--batch-size", 0], "--batch-size must be >= 1, got 0"),
    (["reconstruct", "{picture}", "-o", "{out}", "--steps", 0], "--steps must be >= 1, got 0"),
    (["eval", "recon", "-o", "{out}", "-n", -1], "--num-images must be >= 0, got -1"),
    (["serve", "--max-upload-mb", "inf"], "--max-upload-mb must be a finite number, got inf"),
    (["serve", "--max-upload-mb", "nan"], "--max-upload-mb must be a finite number, got nan"),
    (["serve", "--max-upload-mb", 0], "--max-upload-mb must be > 0, got 0.0"),
])
def test_numeric_options_are_range_checked(tmp_path, picture, args, fragment):
    out = tmp_path / "out"
    refused([str(a).format(picture=picture, out=out) for a in args], fragment)
    assert not out.exists()


def test_an_unforeseen_failure_is_one_line_naming_the_options(tmp_path, monkeypatch, picture):
    import comit.cli.tokens as commands

    def explode(*args, **kwargs):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(commands, "load_model", explode)
    result = refused(["reconstruct", picture, "-o", tmp_path / "out", "--steps", 3],
                     "unexpected ZeroDivisionError: division by zero")
    assert "--steps=3" in result.output and "please report it" in result.output


# ---------------------------------------------------------------------- 4. hostile checkpoint configs
def test_a_hostile_config_is_refused_before_allocating(tmp_path, tiny_model_dir):
    config_path = Path(tiny_model_dir) / "config.json"
    raw = json.loads(config_path.read_text())
    raw["model"]["hidden_size"] = 2 ** 20  # ~ 4 TB for the MLPs; must never be allocated
    raw["model"]["num_heads"] = 2 ** 10
    config_path.write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match="checkpoint weights do not match its config: wrong shapes"):
        COMiT.from_pretrained(tiny_model_dir)


# ---------------------------------------------------------------------- 5. nothing half-written
def test_training_on_missing_data_leaves_no_run_folder(tmp_path):
    out = tmp_path / "run"
    refused(["train", "tiny", "max_steps=1", f"data.dataset={tmp_path / 'no-such-folder'}", "--out", out],
            "no-such-folder")
    assert not out.exists()


# ---------------------------------------------------------------------- 6. decompression bombs
def test_images_beyond_the_pixel_limit_are_one_line_refusals(tmp_path, monkeypatch, picture):
    monkeypatch.setenv("COMIT_MAX_IMAGE_PIXELS", "1000")
    with pytest.raises(ImageLoadError, match=r"64 x 64 = 4,096 pixels is more than the limit of 1,000 .* set "
                                             "COMIT_MAX_IMAGE_PIXELS"):
        load_image(picture, 64)
    refused(["reconstruct", picture, "-o", tmp_path / "out"], "is more than the limit of 1,000")
    monkeypatch.setenv("COMIT_MAX_IMAGE_PIXELS", "5000")
    assert load_image(picture, 64).shape == (3, 64, 64)
    monkeypatch.setenv("COMIT_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(ValueError, match="COMIT_MAX_IMAGE_PIXELS must be a whole number"):
        load_image(picture, 64)


def test_pillows_two_line_bomb_warning_is_not_printed(tmp_path, monkeypatch, recwarn):
    path = tmp_path / "wide.png"
    Image.new("RGB", (300, 10)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)  # Pillow would warn (3,000 > 2,000)
    load_image(path, 8)
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]
    assert Image.MAX_IMAGE_PIXELS == 2000, "Pillow's setting is restored"


# ---------------------------------------------------------------------- 7. hardening
def test_python_feature_extractors_need_an_explicit_opt_in(monkeypatch):
    from comit.metrics.fid_features import feature_extractor

    monkeypatch.delenv("COMIT_ALLOW_PYTHON_FEATURES", raising=False)
    with pytest.raises(ValueError, match="would import and run torch.nn:Identity; set COMIT_ALLOW_PYTHON_FEATURES=1"):
        feature_extractor("python:torch.nn:Identity")
    monkeypatch.setenv("COMIT_ALLOW_PYTHON_FEATURES", "1")
    assert isinstance(feature_extractor("python:torch.nn:Identity"), torch.nn.Identity)


def test_atomic_writes_respect_the_umask_and_are_flushed(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda handle: (synced.append(handle), real_fsync(handle)))
    old = os.umask(0o027)
    try:
        atomic_write(tmp_path / "a.txt", lambda tmp: Path(tmp).write_text("x"))
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o640
    assert len(synced) == 2, "the file, then its folder"


def test_checkpoint_files_are_flushed_before_the_rename(tmp_path, monkeypatch):
    from comit.train import checkpoint

    order = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda handle: (order.append("fsync"), real_fsync(handle)))
    monkeypatch.setattr(os, "replace", lambda a, b: (order.append("replace"), real_replace(a, b)))
    old = os.umask(0o022)
    try:
        target = checkpoint.save_checkpoint(tmp_path, 3, {"w": torch.ones(2)}, {"w": torch.ones(2)},
                                            {"state": {}, "param_groups": []}, {}, keep_last=2)
    finally:
        os.umask(old)
    assert order.index("replace") >= 3, f"two files and their folder flushed first: {order}"
    assert stat.S_IMODE(target.stat().st_mode) == 0o755, "the folder gets the umask's mode, not mkdtemp's 0700"
    assert stat.S_IMODE((target / "state.json").stat().st_mode) == 0o644
