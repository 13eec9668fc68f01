"""What a benchmark run measures, and the randomly initialised model and inputs it measures on.

Sizes S/B/L/XL use the paper's geometry (256-px images, 96-px crops on a 3x3 grid, 256 tokens)
with a randomly initialised SD-VAE of the real architecture; ``tiny`` uses the tests' small
geometry (64-px images in pixel space, 16 tokens) so that it runs in seconds. Nothing is downloaded.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from ..devices import auto_precision
from ..model.acceleration import check_precision
from ..model.autoencoders import SDVAE
from ..model.comit import COMiT
from ..model.config import MODEL_SIZES, AutoencoderConfig, ModelConfig
from .names import ATTENTION_MODES, SECTIONS

GEOMETRIES = ("auto", "paper", "small")


@dataclass
class BenchSettings:
    size: str = "tiny"
    device: str = "cpu"
    batch: int = 1
    repeats: int = 3
    warmup: int = 0
    precision: str = "fp32"
    compile: bool = False
    geometry: str = "auto"
    attention: tuple[str, ...] = ATTENTION_MODES
    sections: tuple[str, ...] = SECTIONS
    forward_batches: tuple[int, ...] = (1, 4)
    train_configs: tuple[str, ...] = ("tiny", "shapes-small")
    train_baseline: bool = True
    seed: int = 0

    def check(self) -> "BenchSettings":
        if self.size not in MODEL_SIZES:
            raise ValueError(f"--size must be one of {list(MODEL_SIZES)}, got {self.size!r}")
        if self.geometry not in GEOMETRIES:
            raise ValueError(f"--geometry must be one of {GEOMETRIES}, got {self.geometry!r}")
        if self.precision == "auto":  # recorded as what it resolved to on this machine
            self.precision = auto_precision(self.device)
        check_precision(self.precision)
        for name, value in (("batch", self.batch), ("repeats", self.repeats)):
            if value < 1:
                raise ValueError(f"--{name} must be >= 1, got {value}")
        if self.warmup < 0:
            raise ValueError(f"--warmup must be >= 0, got {self.warmup}")
        if any(b < 1 for b in self.forward_batches):
            raise ValueError(f"forward batch sizes must be >= 1, got {list(self.forward_batches)}")
        unknown = [m for m in self.attention if m not in ATTENTION_MODES]
        if unknown or not self.attention:
            raise ValueError(f"--attention takes {ATTENTION_MODES} (comma-separated), got {list(self.attention)}")
        if "train" in self.sections and not self.train_configs:
            raise ValueError("--train-configs is empty: name at least one training config (e.g. tiny)")
        unknown = [s for s in self.sections if s not in SECTIONS]
        if unknown or not self.sections:
            raise ValueError(f"--sections takes {SECTIONS} (comma-separated), got {list(self.sections)}")
        return self

    @property
    def resolved_geometry(self) -> str:
        if self.geometry != "auto":
            return self.geometry
        return "small" if self.size == "tiny" else "paper"

    def as_dict(self) -> dict:
        return {**asdict(self), "geometry": self.resolved_geometry}


def model_config(settings: BenchSettings) -> ModelConfig:
    tap = min(4, MODEL_SIZES[settings.size]["depth"] - 1)
    if settings.resolved_geometry == "small":
        small = dict(num_msg_tokens=16, patch_size=4, image_size=64, crop_size=24, grid_size=3,
                     autoencoder=AutoencoderConfig(kind="pixel"))
        return ModelConfig.sized(settings.size, representation_layer=tap, **small)
    # the posterior mean keeps re-encoded crops identical, so outputs can be compared
    return ModelConfig.sized(settings.size, representation_layer=tap,
                             autoencoder=AutoencoderConfig(kind="sd-vae", sample_posterior=False))


def build_model(settings: BenchSettings, device: torch.device) -> COMiT:
    """A COMiT of the requested size with random weights (predictor N(0, 0.02), so that no path
    is trivially zero as with DiT's zero initialisation; the SD-VAE with diffusers' default init)."""
    config = model_config(settings)
    autoencoder = SDVAE(sample_posterior=False) if config.autoencoder.kind == "sd-vae" else None
    model = COMiT(config, autoencoder=autoencoder)
    generator = torch.Generator().manual_seed(settings.seed)
    with torch.no_grad():
        for name, param in model.predictor.named_parameters():
            if name != "pos_embed":
                param.copy_(torch.randn(param.shape, generator=generator) * 0.02)
    return model.to(device).eval()


@dataclass
class Inputs:
    images: torch.Tensor  # [B, 3, S, S] in [-1, 1]
    noise: torch.Tensor  # [B, C, h, w]
    messages: torch.Tensor  # [B, M, D] random FSQ codes
    offsets: torch.Tensor  # [B, 2]


def make_inputs(model: COMiT, batch: int, seed: int) -> Inputs:
    generator = torch.Generator().manual_seed(seed)
    size = model.config.image_size
    images = torch.rand(batch, 3, size, size, generator=generator) * 2 - 1
    noise = torch.randn(model.latent_shape(batch), generator=generator)
    ids = torch.randint(0, model.codebook_size, (batch, model.config.num_msg_tokens), generator=generator)
    offsets = torch.rand(batch, 2, generator=generator) * 2 - 1
    device = model.device
    return Inputs(images.to(device), noise.to(device), model.quantizer.indices_to_codes(ids.to(device)),
                  offsets.to(device))
