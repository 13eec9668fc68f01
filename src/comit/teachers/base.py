"""The contract every REPA/SREPA teacher fulfils: a frozen network from images to features.

REPA aligns COMiT's patch states with the teacher's patch features; SREPA aligns its message
states with the teacher's global feature. The training step relies only on this file's types.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn


class TeacherError(ValueError):
    """A teacher that cannot be built or used, with a one-line reason."""


@dataclass
class TeacherFeatures:
    """What a teacher says about a batch of images.

    patches: [B, N_t, D] patch features on a square grid in raster order (N_t = g_t * g_t).
    global_: [B, D] one global (CLS-like) feature per image.
    """

    patches: Tensor
    global_: Tensor

    @property
    def grid(self) -> int:
        """Side g_t of the square patch grid."""
        return grid_side(self.patches.shape[1])

    def to(self, *args, **kwargs) -> TeacherFeatures:
        """Both tensors moved/cast like ``Tensor.to``."""
        return TeacherFeatures(self.patches.to(*args, **kwargs), self.global_.to(*args, **kwargs))


class Teacher(nn.Module):
    """A frozen feature extractor: always in eval mode, no parameter trains, no autograd graph.

    Subclasses set ``feature_dim`` and implement :meth:`extract`; :meth:`forward` checks the
    input and runs ``extract`` without gradient. Images are [B, 3, S, S] in [-1, 1].
    """

    feature_dim: int

    def forward(self, images: Tensor) -> TeacherFeatures:
        check_images(images)
        # no_grad rather than inference_mode: the features are later used next to tensors that
        # need gradient (cosine losses), which inference tensors would refuse.
        with torch.no_grad():
            features = self.extract(images)
        return features

    def extract(self, images: Tensor) -> TeacherFeatures:
        raise NotImplementedError

    def train(self, mode: bool = True) -> Teacher:
        # A teacher lives next to a model in training; `model.train()` must not wake it up.
        return super().train(False)

    def freeze(self) -> Teacher:
        """Eval mode and no trainable parameters; subclasses call this at the end of __init__."""
        self.requires_grad_(False)
        return self.train(False)

    @property
    def device(self) -> torch.device:
        tensor = next(self.parameters(), None)
        if tensor is None:
            tensor = next(self.buffers(), torch.empty(0))
        return tensor.device


def check_images(images: Tensor) -> None:
    """Raise a one-line error unless ``images`` is a float [B, 3, S, S] batch."""
    if images.ndim != 4 or images.shape[1] != 3 or images.shape[2] != images.shape[3]:
        raise TeacherError(f"teachers take square RGB batches [B, 3, S, S] in [-1, 1], "
                           f"got shape {tuple(images.shape)}")
    if not images.is_floating_point():
        raise TeacherError(f"teachers take float images in [-1, 1], got dtype {images.dtype}")


def grid_side(count: int) -> int:
    """Side g of a square grid of ``count`` = g * g cells; a one-line error otherwise."""
    side = round(count ** 0.5)
    if side * side != count:
        raise TeacherError(f"{count} patches do not form a square grid")
    return side
