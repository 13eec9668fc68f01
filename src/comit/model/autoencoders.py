"""Autoencoders: where images become latents and back.

Anything with ``encode(images) -> latents``, ``decode(latents) -> images`` (images in [-1, 1]) and
the attributes ``downsample`` (spatial factor) and ``latent_channels`` can serve. Two ship:

* :class:`SDVAE` — the Stable Diffusion VAE through diffusers ``AutoencoderKL`` (the paper's
  choice: factor 8, 4 channels, latents scaled by 0.18215).
* :class:`PixelAutoencoder` — the identity, so small images train and run with no weights at all.
"""

from __future__ import annotations

import inspect
from typing import Protocol, runtime_checkable

import torch
from torch import nn

SD_VAE_HUB_IDS = {"mse": "stabilityai/sd-vae-ft-mse", "ema": "stabilityai/sd-vae-ft-ema"}
SD_VAE_SCALING = 0.18215
# The Stable Diffusion VAE architecture (identical for the -mse and -ema fine-tunes).
SD_VAE_CONFIG = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, norm_num_groups=32,
    act_fn="silu", sample_size=256, block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
)


@runtime_checkable
class Autoencoder(Protocol):
    downsample: int
    latent_channels: int

    def encode(self, images: torch.Tensor) -> torch.Tensor: ...

    def decode(self, latents: torch.Tensor) -> torch.Tensor: ...


class PixelAutoencoder(nn.Module):
    """Identity: the latent is the image itself (for small images; no weights)."""

    downsample = 1

    def __init__(self, channels: int = 3):
        super().__init__()
        self.latent_channels = channels

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return images

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return latents


class SDVAE(nn.Module):
    """The Stable Diffusion VAE (diffusers ``AutoencoderKL``), scaled as in latent diffusion.

    ``sample_posterior=True`` draws from the encoder's Gaussian posterior as the released code
    does; False uses its mean (deterministic). Build with :meth:`from_hub` for pretrained weights
    or the constructor alone for a randomly initialised VAE of the same shape (weights are then
    usually loaded from a COMiT checkpoint, which stores them under ``vae.vae.*``).

    ``channels_last=True`` (the default) hands CPU inputs to the VAE in channels-last layout:
    oneDNN's convolutions ran a 256-px decode or encode about 10 % faster on our machine
    (benchmarks/README.md). Results agree with the default layout to float round-off; outputs
    come back in the default layout. GPUs get their inputs unchanged (not measured there).
    """

    downsample = 8
    latent_channels = 4

    def __init__(self, model_type: str = "mse", sample_posterior: bool = True,
                 scaling_factor: float = SD_VAE_SCALING, vae: nn.Module | None = None, channels_last: bool = True):
        super().__init__()
        if model_type not in SD_VAE_HUB_IDS:
            raise ValueError(f"SD-VAE model_type must be one of {sorted(SD_VAE_HUB_IDS)}, got {model_type!r}")
        self.model_type = model_type
        self.sample_posterior = sample_posterior
        self.scaling_factor = scaling_factor
        self.channels_last = channels_last
        self.vae = vae if vae is not None else _autoencoder_kl()

    @classmethod
    def from_hub(cls, model_type: str = "mse", hub_id: str | None = None, **kwargs) -> "SDVAE":
        from diffusers import AutoencoderKL

        hub_id = hub_id or SD_VAE_HUB_IDS[model_type]
        try:
            vae = AutoencoderKL.from_pretrained(hub_id)
        except (OSError, ValueError) as error:
            raise OSError(f"could not load the SD-VAE {hub_id!r} ({str(error).splitlines()[0]}); "
                          "download it once with network access, or pass autoencoder=...") from error
        return cls(model_type=model_type, vae=vae, **kwargs)

    def encode(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        posterior = self.vae.encode(self._layout(images.to(self.vae.dtype))).latent_dist
        latents = posterior.sample(generator=generator) if self.sample_posterior else posterior.mean
        return latents.float().contiguous() * self.scaling_factor

    def moments(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The scaled posterior's mean and standard deviation (std zero when the posterior is not sampled)."""
        posterior = self.vae.encode(self._layout(images.to(self.vae.dtype))).latent_dist
        mean = posterior.mean.float().contiguous() * self.scaling_factor
        std = posterior.std.float().contiguous() * self.scaling_factor if self.sample_posterior else torch.zeros_like(mean)
        return mean, std

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        latents = self._layout((latents / self.scaling_factor).to(self.vae.dtype))
        return self.vae.decode(latents).sample.float().contiguous()

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last and x.device.type == "cpu":
            return x.contiguous(memory_format=torch.channels_last)
        return x


def _autoencoder_kl() -> nn.Module:
    try:
        from diffusers import AutoencoderKL
    except ImportError as error:  # pragma: no cover - diffusers is a required dependency
        raise ImportError("the SD-VAE needs diffusers: pip install diffusers") from error
    return AutoencoderKL(**SD_VAE_CONFIG)


def encode(autoencoder: Autoencoder, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Encode, passing the generator to autoencoders whose encoding is random."""
    if generator is not None and _accepts_generator(autoencoder):
        return autoencoder.encode(images, generator=generator)
    return autoencoder.encode(images)


def is_deterministic(autoencoder: Autoencoder) -> bool:
    """Whether encoding the same pixels twice gives the same latents (no posterior sampling)."""
    return not getattr(autoencoder, "sample_posterior", False)


def encode_moments(autoencoder: Autoencoder, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The Gaussian an encoding is drawn from, as (mean, std): ``mean + std * noise`` is a fresh
    encoding. Deterministic autoencoders give std zero."""
    if hasattr(autoencoder, "moments"):
        return autoencoder.moments(images)
    mean = autoencoder.encode(images).float()
    return mean, torch.zeros_like(mean)


def _accepts_generator(autoencoder: Autoencoder) -> bool:
    try:
        return "generator" in inspect.signature(autoencoder.encode).parameters
    except (TypeError, ValueError):
        return False


def check_autoencoder(autoencoder: object) -> None:
    missing = [name for name in ("encode", "decode", "downsample", "latent_channels") if not hasattr(autoencoder, name)]
    if missing:
        raise TypeError(f"autoencoder {type(autoencoder).__name__} lacks {missing}; it needs encode(images), "
                        "decode(latents), downsample and latent_channels")
