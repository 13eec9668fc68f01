"""Crop geometry (which crops exist, where they are); the orders that visit them are in policies.py.

An image of size S is covered by a g x g grid of square crops of size c with stride
``(S - c) // (g - 1)`` (paper: S=256, c=96, g=3, stride 80), optionally preceded by the global
crop (the whole image). Crop indices: locals 0..g²-1 in raster order; with the global crop it is
index 0 and the locals are 1..g². A crop's location is its centre normalised to [-1, 1], x first;
the image centre is (0, 0). The message update after crop k receives the offset
``loc_k - loc_{k-1}`` (zero for the first crop) and decoding receives ``-loc_K``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Box:
    top: int
    left: int
    size: int


class CropGrid:
    """The crops of one image size, and the orders in which they can be visited."""

    def __init__(self, image_size: int, crop_size: int, grid_size: int):
        if not 0 < crop_size <= image_size:
            raise ValueError(f"crop_size must lie in (0, image_size={image_size}], got {crop_size}")
        if grid_size < 1:
            raise ValueError(f"grid_size must be >= 1, got {grid_size}")
        if grid_size == 1 and crop_size != image_size:
            raise ValueError("a 1x1 grid needs crop_size == image_size")
        self.image_size, self.crop_size, self.grid_size = image_size, crop_size, grid_size
        self.stride = (image_size - crop_size) // (grid_size - 1) if grid_size > 1 else 0
        self.num_local = grid_size * grid_size

    def __repr__(self) -> str:
        return (f"CropGrid(image_size={self.image_size}, crop_size={self.crop_size}, "
                f"grid_size={self.grid_size}, stride={self.stride})")

    # ------------------------------------------------------------------ geometry
    def num_indices(self, global_crop: bool) -> int:
        return self.num_local + int(global_crop)

    def local_box(self, k: int) -> Box:
        return Box(top=(k // self.grid_size) * self.stride, left=(k % self.grid_size) * self.stride,
                   size=self.crop_size)

    def box(self, index: int, global_crop: bool) -> Box:
        """The box of a crop index in the index space with or without the global crop."""
        if global_crop:
            return Box(0, 0, self.image_size) if index == 0 else self.local_box(index - 1)
        return self.local_box(index)

    def location(self, box: Box) -> tuple[float, float]:
        x, y = box_locations(torch.tensor([box.top]), torch.tensor([box.left]), torch.tensor([box.size]),
                             self.image_size)[0].tolist()
        return (x, y)

    def box_table(self, global_crop: bool) -> torch.Tensor:
        """[num_indices, 3] (top, left, size) of every crop index."""
        boxes = [self.box(i, global_crop) for i in range(self.num_indices(global_crop))]
        return torch.tensor([[box.top, box.left, box.size] for box in boxes], dtype=torch.long)

    def locations(self, indices: torch.Tensor, global_crop: bool) -> torch.Tensor:
        """Crop indices [B] -> locations [B, 2] (x, y)."""
        top, left, size = self.box_table(global_crop)[indices.cpu()].unbind(dim=1)
        return box_locations(top, left, size, self.image_size).to(indices.device)

    def is_global(self, indices: torch.Tensor, global_crop: bool) -> torch.Tensor:
        if not global_crop:
            return torch.zeros_like(indices, dtype=torch.bool)
        return indices == 0

    def cut(self, images: torch.Tensor, indices: torch.Tensor, global_crop: bool) -> torch.Tensor:
        """Pixel crops [B, C, c, c] of crop indices [B] (one per image, all of one size)."""
        top, left, size = self.box_table(global_crop).to(indices.device)[indices].unbind(dim=1)
        sizes = size.unique().tolist()
        if len(sizes) != 1:
            raise ValueError(f"crops of one call must share a size (the global crop and local crops differ), "
                             f"got sizes {sizes}")
        return cut_boxes(images, top, left, sizes[0])

    def window_errors(self, error_map: torch.Tensor) -> torch.Tensor:
        """Mean of a per-pixel error map [B, 1, S, S] over each local crop's window -> [B, g²]."""
        pooled = F.avg_pool2d(error_map, kernel_size=self.crop_size, stride=max(self.stride, 1))
        return pooled[:, 0, :self.grid_size, :self.grid_size].reshape(error_map.shape[0], -1)

    def centre_index(self) -> int:
        return (self.grid_size // 2) * self.grid_size + self.grid_size // 2

    def check_num_crops(self, num_crops: int | None, global_crop: bool, available: int | None = None) -> int:
        available = self.num_indices(global_crop) if available is None else available
        if num_crops is None:
            return available
        if isinstance(num_crops, bool) or not isinstance(num_crops, int) or not 1 <= num_crops <= available:
            raise ValueError(f"num_crops must be an integer in [1, {available}] for this order "
                             f"(grid {self.grid_size}x{self.grid_size}, global_crop={global_crop}), got {num_crops!r}")
        return num_crops


def cut_boxes(images: torch.Tensor, top: torch.Tensor, left: torch.Tensor, size: int) -> torch.Tensor:
    """Pixel crops [B, C, size, size] at per-image (top, left) [B], in one gather.

    ``unfold`` views every size x size window without copying; indexing it copies only the chosen
    one per image. Contiguous like the per-image stack it replaces, whatever the input's layout.
    """
    windows = images.unfold(2, size, 1).unfold(3, size, 1)  # [B, C, H - size + 1, W - size + 1, size, size]
    rows = torch.arange(images.shape[0], device=images.device)
    return windows[rows, :, top.to(images.device), left.to(images.device)].contiguous()


def box_locations(top: torch.Tensor, left: torch.Tensor, size: torch.Tensor, image_size: int) -> torch.Tensor:
    """Boxes (top, left, size [B], pixels) -> their centres [B, 2] (x, y), normalised to [-1, 1]."""
    half = image_size / 2
    size = size.float()
    return torch.stack([(left + size / 2) / half - 1, (top + size / 2) / half - 1], dim=1).float()


def tokens_inside(top: torch.Tensor, left: torch.Tensor, size: torch.Tensor, image_size: int,
                  num_tokens: int) -> torch.Tensor:
    """[B, M] bool: which message tokens a crop (top, left, size [B], pixels) covers, with the
    tokens laid on a square grid over the image in raster order; a token is covered when its
    cell's centre lies inside the crop."""
    side = math.isqrt(num_tokens)
    centres = (torch.arange(side, device=top.device) + 0.5) * (image_size / side)

    def within(start: torch.Tensor) -> torch.Tensor:  # [B, side]
        return (centres >= start[:, None]) & (centres < (start + size)[:, None])

    return (within(top)[:, :, None] & within(left)[:, None, :]).flatten(1)


def step_offsets(locations: torch.Tensor, previous: torch.Tensor | None) -> torch.Tensor:
    """Offset for the next message update: loc_k - loc_{k-1}, or zero for the first crop."""
    return torch.zeros_like(locations) if previous is None else locations - previous


def crop_size_groups(sizes: torch.Tensor, select: torch.Tensor) -> Iterator[torch.Tensor]:
    """[B] masks of the selected crops of each size, the largest (the global crop) first: crops of
    one size go through the autoencoder and the transformer as one batch, since their latents
    differ in size. ``sizes`` [B] crop sizes in pixels, ``select`` [B] bool."""
    for size in sizes[select].unique().flip(0).tolist():
        yield select & (sizes == size)
