import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from comit import COMiT, ModelConfig  # noqa: E402
from comit.model.config import AutoencoderConfig  # noqa: E402

torch.set_flush_denormal(True)
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)  # two workers on two cores


def tiny_config(**overrides) -> ModelConfig:
    """A 64-px pixel-space model: 24-px crops on a 3x3 grid (the paper's geometry at 1/4 scale)."""
    fields = dict(num_msg_tokens=16, patch_size=4, image_size=64, crop_size=24, grid_size=3,
                  representation_layer=1, autoencoder=AutoencoderConfig(kind="pixel"))
    return ModelConfig.sized("tiny", **{**fields, **overrides})


def randomize(model: COMiT, seed: int = 0) -> COMiT:
    """DiT init zeroes the adaLN and velocity heads; fill every weight so tests see real signal."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.predictor.named_parameters():
            if name != "pos_embed":
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
    return model.eval()


@pytest.fixture
def tiny_model() -> COMiT:
    return randomize(COMiT(tiny_config()))


@pytest.fixture
def tiny_images() -> torch.Tensor:
    return torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1


@pytest.fixture
def tiny_model_dir(tmp_path, tiny_model):
    return tiny_model.save_pretrained(tmp_path / "tiny-model")


@pytest.fixture
def one_thread():
    """Tiny models gain nothing from threads; on a busy 2-core machine (pytest -n 2, a training run
    beside) OpenMP threads spin against each other and run many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
