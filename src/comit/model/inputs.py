"""The checks every verb of ``COMiT`` runs on what it is given, each failing with one line that says
what was wrong and what to do."""

from __future__ import annotations

import math

import torch

from .parts import ModelParts
from .reading import Tokens

# Where the adaptive policy measures reconstruction error (see COMiT.tokenize).
ERROR_SIGNALS = ("pixels", "latent")
# Resampling (bicubic, Lanczos) overshoots [-1, 1] a little; pixels left in 0..255 overshoot by far.
IMAGE_RANGE_SLACK = 0.1


def check_images(model: ModelParts, images: torch.Tensor) -> torch.Tensor:
    size = model.config.image_size
    if not torch.is_tensor(images) or images.dim() != 4 or images.shape[1] != 3 or \
            images.shape[2:] != (size, size):
        shape = tuple(images.shape) if torch.is_tensor(images) else type(images).__name__
        raise ValueError(f"images must be a tensor [B, 3, {size}, {size}] in [-1, 1], got {shape}; "
                         "resize first (comit.data.load_image converts files)")
    if not images.is_floating_point():
        raise ValueError(f"images must be floating point in [-1, 1], got {images.dtype}")
    check_finite("images", images)
    low, high = float(images.min()), float(images.max())
    if low < -1 - IMAGE_RANGE_SLACK or high > 1 + IMAGE_RANGE_SLACK:
        raise ValueError(f"images must lie in [-1, 1], got values in [{low:.3g}, {high:.3g}]; "
                         "map 0..255 pixels with x / 127.5 - 1 (comit.data.load_image does it)")
    return images.to(model.device, torch.float32)


def check_noise(model: ModelParts, noise: torch.Tensor, batch: int) -> torch.Tensor:
    expected = model.latent_shape(batch)
    if tuple(noise.shape) != expected:
        raise ValueError(f"noise must have shape {list(expected)}, got {list(noise.shape)}")
    check_finite("noise", noise)
    return noise.to(model.device, torch.float32)


def check_messages(model: ModelParts, messages: torch.Tensor) -> torch.Tensor:
    m, d = model.config.num_msg_tokens, model.config.msg_tokens_dim
    if messages.dim() == 2 and not messages.is_floating_point():
        if messages.shape[1] != m:
            raise ValueError(f"token ids must be [B, {m}], got {list(messages.shape)}")
        return model.quantizer.indices_to_codes(messages.to(model.device))
    if messages.dim() != 3 or messages.shape[1:] != (m, d):
        raise ValueError(f"messages must be FSQ codes [B, {m}, {d}] or token ids [B, {m}], "
                         f"got {list(messages.shape)}")
    check_finite("messages", messages)
    messages = messages.to(model.device, torch.float32)
    model.quantizer.check_codes(messages)
    return messages


def check_offsets(model: ModelParts, offsets: torch.Tensor, batch: int) -> torch.Tensor:
    if tuple(offsets.shape) != (batch, 2):
        raise ValueError(f"offsets must be [{batch}, 2] (Tokens.offsets), got {list(offsets.shape)}")
    check_finite("offsets", offsets)
    return offsets.to(model.device, torch.float32)


def check_error_signal(error_signal: str, error_budget: float | None) -> None:
    if error_signal not in ERROR_SIGNALS:
        raise ValueError(f"error_signal must be one of {ERROR_SIGNALS}, got {error_signal!r}")
    if error_budget is not None and not (math.isfinite(error_budget) and error_budget >= 0):
        raise ValueError(f"error_budget must be a finite mean squared error >= 0, got {error_budget}")
    if error_signal == "latent" and error_budget is not None:
        raise ValueError("error_budget is in pixel units; use it with error_signal='pixels'")


def check_resume(model: ModelParts, resume: Tokens, batch: int) -> bool:
    if len(resume) != batch:
        raise ValueError(f"resume tokens hold {len(resume)} images but {batch} images were given")
    return resume.global_crop


def check_finite(name: str, values: torch.Tensor) -> None:
    if values.is_floating_point() and not bool(torch.isfinite(values).all()):
        raise ValueError(f"{name} hold NaN or Inf values; check what produced them")
