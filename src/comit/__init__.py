"""COMiT: communication-inspired image tokenization.

    from comit import COMiT
    model = COMiT.from_pretrained("cvg-unibe/comit-b")
    tokens = model.tokenize(images, order="adaptive", num_crops=3)
    images = model.detokenize(tokens.messages, tokens.offsets)
"""

from .model.autoencoders import Autoencoder, PixelAutoencoder, SDVAE
from .model.checkpoints import CheckpointError
from .model.comit import COMiT, Tokens
from .model.config import ModelConfig

__version__ = "0.1.0"
__all__ = ["COMiT", "Tokens", "ModelConfig", "Autoencoder", "PixelAutoencoder", "SDVAE", "CheckpointError"]
