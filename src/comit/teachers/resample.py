"""Bring teacher patch features onto the student's patch grid.

DINOv2 at 224 px gives a 16x16 grid, the bundled shapes teacher 8x8, COMiT's patch stream
whatever its latent and patch size give; REPA compares them cell by cell, so one side is resampled.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from .base import TeacherError, grid_side


def resample_patches(patches: Tensor, grid: int) -> Tensor:
    """Bilinearly resample [B, N, D] features on a square grid to [B, grid * grid, D].

    Cells are treated as pixels with ``align_corners=False`` (grid centres map to grid centres).
    Shrinking uses antialiasing, so every source cell contributes instead of a sparse subset.
    Matching grids return ``patches`` itself.
    """
    if patches.ndim != 3:
        raise TeacherError(f"resample_patches takes [B, N, D] features, got shape {tuple(patches.shape)}")
    if grid < 1:
        raise TeacherError(f"resample_patches needs a grid of at least 1, got {grid}")
    source = grid_side(patches.shape[1])
    if source == grid:
        return patches
    batch, _, dim = patches.shape
    as_image = patches.transpose(1, 2).reshape(batch, dim, source, source)
    # Bilinear interpolation is not implemented for half precision on every device; compute in
    # float32 and cast back.
    resized = F.interpolate(as_image.float(), size=(grid, grid), mode="bilinear",
                            align_corners=False, antialias=grid < source)
    return resized.reshape(batch, dim, grid * grid).transpose(1, 2).to(patches.dtype)
