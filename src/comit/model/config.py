"""The typed configuration of a COMiT model: transformer, quantiser, crops and autoencoder.

A checkpoint carries its own config, so a model is rebuilt from its directory alone.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .conv_autoencoder import ConvAutoencoderConfig, read_autoencoder_config, resolve_autoencoder
from .fsq import PAPER_LEVELS

# Transformer widths of the released sizes (B/L/XL) and two small ones of our own.
MODEL_SIZES: dict[str, dict[str, int]] = {
    "tiny": dict(hidden_size=64, depth=2, num_heads=4),
    "S": dict(hidden_size=384, depth=12, num_heads=6),
    "B": dict(hidden_size=768, depth=12, num_heads=12),
    "L": dict(hidden_size=1024, depth=24, num_heads=16),
    "XL": dict(hidden_size=1152, depth=28, num_heads=16),
}


class AutoencoderConfig(BaseModel):
    """Which autoencoder maps images to latents.

    kind: ``sd-vae`` (Stable Diffusion VAE via diffusers), ``pixel`` (identity), ``conv`` (our own
    convolutional autoencoder, ``conv_autoencoder.py``), or ``custom`` (supplied by the caller at
    load time; nothing is stored).
    path (``conv``): where its trained weights come from when a run starts: ``bundled`` (the
        shapes autoencoder in the package) or a folder written by ``comit train-autoencoder``. Its
        architecture is read from there into ``conv``; a saved COMiT model carries both the
        architecture and the weights (``vae.*``), so it needs the folder no more.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    kind: Literal["sd-vae", "pixel", "conv", "custom"] = "pixel"
    model_type: Literal["mse", "ema"] = "mse"
    hub_id: str | None = None
    sample_posterior: bool = True
    scaling_factor: float = 0.18215
    channels: int = 3
    downsample: int = 1
    path: str | None = None
    conv: ConvAutoencoderConfig | None = None

    @model_validator(mode="after")
    def _read_conv_architecture(self) -> "AutoencoderConfig":
        if self.kind != "conv":
            if self.conv is not None or self.path is not None:
                raise ValueError(f"path and conv belong to kind: conv, not kind: {self.kind}")
            return self
        if self.conv is None:
            if self.path is None:
                raise ValueError("kind: conv needs path: 'bundled' or a folder written by comit train-autoencoder")
            self.conv = read_autoencoder_config(resolve_autoencoder(self.path))
        return self

    @property
    def factor(self) -> int:
        if self.kind == "conv":
            return self.conv.downsample
        return 8 if self.kind == "sd-vae" else self.downsample

    @property
    def latent_channels(self) -> int:
        if self.kind == "conv":
            return self.conv.latent_channels
        return 4 if self.kind == "sd-vae" else self.channels


class ModelConfig(BaseModel):
    """Everything needed to build a COMiT model.

    ``prediction``: what the velocity head outputs. ``velocity`` (the paper and the released
    checkpoints) or ``data``: the clean latent, turned into a velocity inside the transformer
    (:func:`~comit.model.transformer.velocity_from_data`), so every caller still gets velocities.
    Predicting the data is far easier when a patch holds more numbers than the width can copy
    through (pixel-space models with large patches; Li & He 2025, "Back to Basics: Let Denoising
    Generative Models Denoise").

    ``crop_patch_positions``: which rows of the fixed sin-cos position table a crop's patches take
    when the message is written. ``top_left`` (the paper and the released code): every crop takes
    the table's top-left part, so where the crop lies enters only through the offset token, and
    the encoder must learn to move the message's content by each offset. ``absolute`` (ours, not
    in the paper): a crop's patches take the positions they have in the whole image (fractional
    where the crop stride is not a whole number of patches), so a local crop is written the way
    the global crop is, at its place; the offsets are still given (docs/training.md).

    ``message_write``: what a message update rewrites. ``replace`` (the paper and the released
    checkpoints): every token, whatever the crop showed. ``local`` (ours, not in the paper): only
    the tokens whose cell on the message grid (``sqrt(num_msg_tokens)`` cells a side over the
    image) has its centre inside the crop; the others keep their value, so a local crop cannot
    undo what the global crop wrote elsewhere (docs/training.md, "A local write"). ``local_fill``
    (ours): ``local``, except that a write into the empty message m0 (the first crop) rewrites
    every token, so a tokenizer that sees only local crops has a guess for the whole image from
    its first crop on instead of the decoder's prior where no crop lies ("A first write that fills").

    Geometry follows the image: the latent grid is ``image_size / autoencoder factor``; crops are
    a ``grid_size`` x ``grid_size`` grid of ``crop_size`` pixels with stride
    ``(image_size - crop_size) // (grid_size - 1)``.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    hidden_size: int = Field(768, gt=0)
    depth: int = Field(12, gt=0)
    num_heads: int = Field(12, gt=0)
    num_msg_tokens: int = Field(256, gt=0)
    patch_size: int = Field(2, gt=0)
    mlp_ratio: float = Field(4.0, gt=0)
    representation_layer: int = Field(4, ge=0)
    fsq_levels: list[int] = Field(default_factory=lambda: list(PAPER_LEVELS))
    attention: Literal["hard", "released"] = "hard"
    prediction: Literal["velocity", "data"] = "velocity"
    crop_patch_positions: Literal["top_left", "absolute"] = "top_left"
    message_write: Literal["replace", "local", "local_fill"] = "replace"
    image_size: int = Field(256, gt=0)
    crop_size: int = Field(96, gt=0)
    grid_size: int = Field(3, gt=0)
    autoencoder: AutoencoderConfig = Field(default_factory=lambda: AutoencoderConfig(kind="sd-vae"))

    @model_validator(mode="after")
    def _check_geometry(self) -> "ModelConfig":
        factor = self.autoencoder.factor
        unit = factor * self.patch_size
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if self.representation_layer >= self.depth:
            raise ValueError(f"representation_layer {self.representation_layer} must be < depth {self.depth}")
        for name in ("image_size", "crop_size"):
            if getattr(self, name) % unit:
                raise ValueError(f"{name} {getattr(self, name)} must be a multiple of autoencoder factor x "
                                 f"patch size = {unit}")
        if self.message_write != "replace" and math.isqrt(self.num_msg_tokens) ** 2 != self.num_msg_tokens:
            raise ValueError(f"message_write '{self.message_write}' lays the message on a square grid: num_msg_tokens "
                             f"{self.num_msg_tokens} is not a square")
        if self.crop_size > self.image_size:
            raise ValueError(f"crop_size {self.crop_size} exceeds image_size {self.image_size}")
        if self.grid_size > 1 and (self.image_size - self.crop_size) % (self.grid_size - 1):
            raise ValueError(f"crops of {self.crop_size}px on a {self.grid_size}x{self.grid_size} grid do not tile "
                             f"{self.image_size}px evenly: (image_size - crop_size) must divide by grid_size - 1")
        if self.grid_size > 1 and self.crop_size * self.grid_size < self.image_size:
            raise ValueError(f"crops of {self.crop_size}px on a {self.grid_size}x{self.grid_size} grid leave gaps in a "
                             f"{self.image_size}px image; use larger crops or a finer grid")
        return self

    @property
    def msg_tokens_dim(self) -> int:
        return len(self.fsq_levels)

    @property
    def max_input_size(self) -> int:
        return self.image_size // self.autoencoder.factor

    @property
    def latent_size(self) -> int:
        return self.max_input_size

    @property
    def in_channels(self) -> int:
        return self.autoencoder.latent_channels

    def predictor_kwargs(self) -> dict:
        return dict(hidden_size=self.hidden_size, depth=self.depth, num_heads=self.num_heads,
                    num_msg_tokens=self.num_msg_tokens, msg_tokens_dim=self.msg_tokens_dim,
                    patch_size=self.patch_size, max_input_size=self.max_input_size,
                    in_channels=self.in_channels, representation_layer=self.representation_layer,
                    mlp_ratio=self.mlp_ratio, attention=self.attention, prediction=self.prediction,
                    crop_patch_positions=self.crop_patch_positions)

    @classmethod
    def sized(cls, size: str, **overrides) -> "ModelConfig":
        """A config of a named width (tiny, S, B, L, XL) with other fields overridden."""
        if size not in MODEL_SIZES:
            raise ValueError(f"unknown model size {size!r}: use one of {list(MODEL_SIZES)}")
        return cls(**{**MODEL_SIZES[size], **overrides})
