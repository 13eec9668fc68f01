"""COMiT: communication-inspired image tokenization.

    from comit import COMiT
    model = COMiT.from_pretrained("cvg-unibe/comit-b")
    tokens = model.tokenize(images, order="adaptive", num_crops=3)
    images = model.detokenize(tokens.messages, tokens.offsets)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"
__all__ = ["COMiT", "Tokens", "ModelConfig", "Autoencoder", "PixelAutoencoder", "SDVAE", "CheckpointError"]

# The public names resolve on first use, so that `import comit` (and `comit --help`, `comit
# --version`) does not pay for importing torch; after that they are ordinary module attributes.
_HOMES = {"COMiT": "model.comit", "Tokens": "model.reading", "ModelConfig": "model.config",
          "Autoencoder": "model.autoencoders", "PixelAutoencoder": "model.autoencoders",
          "SDVAE": "model.autoencoders", "CheckpointError": "model.checkpoints"}

if TYPE_CHECKING:
    from .model.autoencoders import Autoencoder, PixelAutoencoder, SDVAE
    from .model.checkpoints import CheckpointError
    from .model.comit import COMiT
    from .model.config import ModelConfig
    from .model.reading import Tokens


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'comit' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
