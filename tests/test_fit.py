"""Saying so when the model is given images unlike its training data (a photograph to the shapes model)."""

import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from comit import COMiT
from comit.cli import app
from comit.data.images import load_images
from comit.metrics.reconstruction import psnr_per_image
from comit.model.fit import POOR_PSNR_DB, PoorFitWarning, poor_fit_message
import comit

SAMPLES = sorted((Path(comit.__file__).parent / "assets" / "samples").glob("shapes_*.png"))


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    """scikit-image's astronaut, 512 px, as a user would hand it over."""
    from skimage import data

    path = tmp_path_factory.mktemp("photos") / "astronaut.png"
    Image.fromarray(data.astronaut()).save(path)
    return path


def test_psnr_and_the_message():
    images = torch.zeros(3, 3, 8, 8)
    outputs = images.clone()
    outputs[1] += 0.2   # error 0.1 on a [0, 1] scale: 20 dB
    outputs[2] += 1.0   # 0.5: 6 dB
    psnr = psnr_per_image(outputs, images)
    assert psnr[1] == pytest.approx(20.0, abs=1e-4) and psnr[2] == pytest.approx(6.02, abs=0.01) and psnr[0] > 90
    message = poor_fit_message(psnr, ["a.png", "b.png", "c.png"], "the built-in shapes")
    assert message.startswith(f"1 of 3 reconstructions are poor (PSNR below {POOR_PSNR_DB:g} dB")
    assert "worst 6.0 dB, c.png" in message and "trained on the built-in shapes" in message
    assert poor_fit_message(psnr[:2]) is None
    assert "is this model trained on images like these?" in poor_fit_message(psnr)


def test_the_cli_warns_once_on_a_photo_and_not_on_shapes(tmp_path, photo):
    result = CliRunner().invoke(app, ["reconstruct", str(photo), "-o", str(tmp_path / "photo"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    warned = [line for line in result.output.splitlines() if line.startswith("warning:")]
    assert len(warned) == 1 and "astronaut.png" in warned[0] and "the built-in shapes" in warned[0], result.output
    result = CliRunner().invoke(app, ["reconstruct", *map(str, SAMPLES), "-o", str(tmp_path / "shapes"),
                                      "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "warning:" not in result.output


def test_the_api_warns_on_a_photo_and_not_on_shapes(photo):
    model = COMiT.from_pretrained("bundled")
    assert model.training_data.startswith("the built-in shapes")
    generator = torch.Generator().manual_seed(0)
    with pytest.warns(PoorFitWarning, match="trained on the built-in shapes"):
        model.reconstruct(load_images([photo], model.config.image_size), generator=generator)
    with warnings.catch_warnings():
        warnings.simplefilter("error", PoorFitWarning)
        model.reconstruct(load_images(SAMPLES, model.config.image_size), generator=generator)


def test_a_trained_model_knows_its_data(tmp_path):
    from comit.train.loop import train
    from comit.train.config import load_config

    config = load_config("tiny", {"loop.max_steps": 1, "loop.eval_every": 0, "optim.batch_size": 2,
                                  "data.dataset": "shapes:num_images=16"})
    model_dir = train(config, tmp_path / "run", progress=False)
    assert COMiT.from_pretrained(model_dir).training_data == "shapes:num_images=16"
    assert COMiT(COMiT.from_pretrained(model_dir).config).training_data is None
