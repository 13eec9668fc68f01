"""The model as the modules that do its verbs see it: the parts they use, named without importing
``comit.py`` (which sits above them and wires them together)."""

from __future__ import annotations

from typing import Protocol

import torch

from .autoencoders import Autoencoder
from .config import ModelConfig
from .crops import CropGrid
from .fsq import FSQ
from .transformer import ConditioningTable, Transformer


class ModelParts(Protocol):
    """What reading and decoding need of the model (``COMiT``)."""

    config: ModelConfig
    crops: CropGrid
    quantizer: FSQ
    vae: Autoencoder
    predictor: Transformer

    @property
    def device(self) -> torch.device: ...

    def empty_message(self, batch_size: int) -> torch.Tensor: ...

    def latent_shape(self, batch_size: int) -> tuple[int, int, int, int]: ...

    def write_message(self, latents: torch.Tensor, messages: torch.Tensor, offset: torch.Tensor,
                      location: torch.Tensor | None = None, box: torch.Tensor | None = None) -> torch.Tensor: ...

    def velocity(self, x: torch.Tensor, t: torch.Tensor, messages: torch.Tensor, offsets: torch.Tensor,
                 table: ConditioningTable | None = None) -> torch.Tensor: ...
