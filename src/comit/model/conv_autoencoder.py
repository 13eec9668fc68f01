"""A small convolutional autoencoder of our own: the latent space of models we train ourselves.

The paper's COMiT works in the Stable Diffusion VAE's latent space: the transformer paints a
coarse latent and the VAE's convolutional decoder draws the fine detail (edges, texture). A
pixel-space model has to paint every pixel through a linear patch head, which small runs learn
slowly (docs/training.md, "A latent space of our own"). This autoencoder plays the SD-VAE's part
at small scale: it trains from scratch in minutes on a CPU (``comit train-autoencoder``), on the
built-in shapes or any image folder, and ships inside the bundled model.

Architecture: a plain (deterministic) autoencoder, ``downsample`` = 2^levels. Encoder: a 3x3
stem, then per level a residual block and a stride-2 convolution that doubles the width, then a
1x1 projection to ``latent_channels``. Decoder: the mirror image with nearest upsampling. It is
trained with Gaussian noise on the latents (``train/autoencoder.py``), so the decoder also draws
clean images from slightly wrong latents, which is what a flow decoder hands it.

Latents are normalised per channel with the mean and std measured on training images after
training (``latent_mean`` / ``latent_std``, stored in the config), so the flow model sees
zero-mean, unit-variance latents — the job of SD's 0.18215.
"""

from __future__ import annotations

from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from ..io import atomic_write, atomic_write_json, read_format_json

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT = "comit-autoencoder"
FORMAT_VERSION = 1
GROUPS = 8
# The autoencoder trained on the built-in shapes data, shipped in the package.
BUNDLED_AUTOENCODER_DIR = Path(__file__).resolve().parent.parent / "assets" / "autoencoder-shapes"
BUNDLED_NAME = "bundled"


class AutoencoderError(ValueError):
    """An autoencoder checkpoint or config that cannot be used, with a one-line reason."""


class ConvAutoencoderConfig(BaseModel):
    """Architecture and latent normalisation of :class:`ConvAutoencoder`.

    downsample: spatial factor, a power of two (64-px images with factor 4 give 16x16 latents).
    width: channels of the full-resolution stage; each level doubles them.
    latent_mean, latent_std: per-channel statistics of raw latents on training images; the
        encoder's output is normalised with them (empty: not measured yet, identity).
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    image_channels: int = Field(3, gt=0)
    latent_channels: int = Field(4, gt=0)
    downsample: int = Field(4, gt=1)
    width: int = Field(32, gt=0)
    latent_mean: list[float] = Field(default_factory=list)
    latent_std: list[float] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> "ConvAutoencoderConfig":
        if self.downsample & (self.downsample - 1):
            raise ValueError(f"downsample must be a power of two, got {self.downsample}")
        if self.width % GROUPS:
            raise ValueError(f"width must be a multiple of {GROUPS} (GroupNorm groups), got {self.width}")
        for name in ("latent_mean", "latent_std"):
            values = getattr(self, name)
            if values and len(values) != self.latent_channels:
                raise ValueError(f"{name} has {len(values)} entries for {self.latent_channels} latent channels")
        if any(value <= 0 for value in self.latent_std):
            raise ValueError("latent_std entries must be positive")
        return self

    @property
    def levels(self) -> int:
        return self.downsample.bit_length() - 1


class ResBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.body = nn.Sequential(nn.GroupNorm(GROUPS, width), nn.SiLU(), nn.Conv2d(width, width, 3, padding=1),
                                  nn.GroupNorm(GROUPS, width), nn.SiLU(), nn.Conv2d(width, width, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ConvAutoencoder(nn.Module):
    """Images [B, 3, S, S] in [-1, 1] <-> normalised latents [B, C, S/f, S/f].

    Follows the autoencoder protocol of ``autoencoders.py`` (``encode``, ``decode``,
    ``downsample``, ``latent_channels``).
    """

    def __init__(self, config: ConvAutoencoderConfig | None = None):
        super().__init__()
        self.config = config = config or ConvAutoencoderConfig()
        self.downsample, self.latent_channels = config.downsample, config.latent_channels
        widths = [config.width * 2 ** level for level in range(config.levels + 1)]
        encoder: list[nn.Module] = [nn.Conv2d(config.image_channels, widths[0], 3, padding=1)]
        for level in range(config.levels):
            encoder += [ResBlock(widths[level]), nn.Conv2d(widths[level], widths[level + 1], 4, stride=2, padding=1)]
        encoder += [ResBlock(widths[-1]), nn.GroupNorm(GROUPS, widths[-1]), nn.SiLU(),
                    nn.Conv2d(widths[-1], config.latent_channels, 1)]
        self.encoder = nn.Sequential(*encoder)
        decoder: list[nn.Module] = [nn.Conv2d(config.latent_channels, widths[-1], 3, padding=1), ResBlock(widths[-1])]
        for level in reversed(range(config.levels)):
            decoder += [nn.Upsample(scale_factor=2, mode="nearest"),
                        nn.Conv2d(widths[level + 1], widths[level], 3, padding=1), ResBlock(widths[level])]
        decoder += [nn.GroupNorm(GROUPS, widths[0]), nn.SiLU(), nn.Conv2d(widths[0], config.image_channels, 3, padding=1)]
        self.decoder = nn.Sequential(*decoder)
        mean = torch.tensor(config.latent_mean or [0.0] * config.latent_channels)
        std = torch.tensor(config.latent_std or [1.0] * config.latent_channels)
        # Buffers outside the state dict: the config is their one source of truth.
        self.register_buffer("latent_mean", mean.view(1, -1, 1, 1), persistent=False)
        self.register_buffer("latent_std", std.view(1, -1, 1, 1), persistent=False)

    # ------------------------------------------------------------------ the protocol
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return (self.encode_raw(images) - self.latent_mean) / self.latent_std

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.decode_raw(latents * self.latent_std + self.latent_mean)

    def encode_raw(self, images: torch.Tensor) -> torch.Tensor:
        """Latents before normalisation (what training shapes and the statistics describe)."""
        size = images.shape[-1]
        if images.shape[-2] % self.downsample or size % self.downsample:
            raise ValueError(f"image sides must be multiples of the autoencoder's factor {self.downsample}, "
                             f"got {tuple(images.shape[-2:])}")
        return self.encoder(images.to(self.encoder[0].weight.dtype)).float()

    def decode_raw(self, latents: torch.Tensor) -> torch.Tensor:
        return self.decoder(latents.to(self.decoder[0].weight.dtype)).float()

    @torch.no_grad()
    def set_latent_statistics(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Store per-channel statistics of raw latents; ``encode`` then returns unit-variance latents."""
        self.config = self.config.model_copy(update={"latent_mean": [float(v) for v in mean],
                                                     "latent_std": [float(v) for v in std]})
        self.latent_mean.copy_(mean.view(1, -1, 1, 1))
        self.latent_std.copy_(std.view(1, -1, 1, 1))

    # ------------------------------------------------------------------ checkpoints
    def save_pretrained(self, directory: str | Path, metadata: dict | None = None) -> Path:
        """Write ``config.json`` (architecture, statistics, free-form ``metadata``) and
        ``model.safetensors``, each atomically."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        config = {"format": FORMAT, "format_version": FORMAT_VERSION, "autoencoder": self.config.model_dump(),
                  "metadata": metadata or {}}
        atomic_write(directory / WEIGHTS_NAME, lambda tmp: save_file(tensors, tmp, metadata={"format": FORMAT}))
        atomic_write_json(directory / CONFIG_NAME, config)
        return directory

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path) -> "ConvAutoencoder":
        """Load ``"bundled"`` (the shapes autoencoder in the package) or a directory written by
        :meth:`save_pretrained`."""
        directory = resolve_autoencoder(name_or_path)
        model = cls(read_autoencoder_config(directory))
        weights = directory / WEIGHTS_NAME
        try:
            with safe_open(str(weights), framework="pt") as handle:
                state = {key: handle.get_tensor(key) for key in handle.keys()}
        except (FileNotFoundError, SafetensorError, OSError, RuntimeError) as error:
            raise AutoencoderError(f"cannot read {weights}: {error}") from error
        load_autoencoder_weights(model, state, str(weights))
        return model.eval()


def load_autoencoder_weights(model: ConvAutoencoder, state: dict[str, torch.Tensor], source: str) -> None:
    """Load a state dict, naming what does not fit instead of a size-mismatch traceback."""
    expected = model.state_dict()
    wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected or wrong:
        raise AutoencoderError(f"{source} does not match its config: missing {missing[:3]}, "
                               f"unexpected {unexpected[:3]}, wrong shapes {wrong[:3]}")
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})


def resolve_autoencoder(name_or_path: str | Path) -> Path:
    if str(name_or_path) == BUNDLED_NAME:
        return BUNDLED_AUTOENCODER_DIR
    path = Path(name_or_path).expanduser()
    if not path.is_dir():
        raise AutoencoderError(f"no autoencoder directory {str(path)!r}; give a folder written by "
                               "comit train-autoencoder, or 'bundled'")
    return path


def read_autoencoder_config(directory: Path) -> ConvAutoencoderConfig:
    raw = read_format_json(directory, CONFIG_NAME, FORMAT, FORMAT_VERSION, AutoencoderError, "an autoencoder")
    try:
        return ConvAutoencoderConfig(**raw.get("autoencoder", {}))
    except (ValidationError, TypeError) as error:
        raise AutoencoderError(f"bad autoencoder config in {directory / CONFIG_NAME}: "
                               f"{str(error).splitlines()[0]}") from error
