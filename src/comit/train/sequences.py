"""Crop sequences for training: K crops per image, optionally the whole image first.

At inference crops come from the grid in a chosen order; in training each image draws its own
number of crops K (so the model never knows whether more will follow) and its own crops. A crop
is a box (top, left, size) in pixels; its location is the box centre normalised to [-1, 1], x
first, exactly as in ``model/crops.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..model.crops import CropGrid, box_locations
from ..teachers import TeacherFeatures


@dataclass
class CropSequences:
    """Boxes [K_max, B] (top, left, size) in pixels and the number of crops of each image [B].

    Entries past an image's own count are padding and never read.
    """

    top: torch.Tensor
    left: torch.Tensor
    size: torch.Tensor
    count: torch.Tensor

    @property
    def length(self) -> int:
        return self.top.shape[0]

    def boxes(self, column: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(top, left, size), each [B], of each image's crop number ``column[b]``."""
        rows = torch.arange(column.shape[0])
        return self.top[column, rows], self.left[column, rows], self.size[column, rows]

    def locations(self, column: torch.Tensor, image_size: int) -> torch.Tensor:
        """[B, 2] centres (x, y) in [-1, 1] of each image's crop number ``column[b]``."""
        return box_locations(*self.boxes(column), image_size)

    def last(self) -> torch.Tensor:
        """Index [B] of each image's last crop."""
        return self.count - 1

    def seen(self, image_size: int) -> torch.Tensor:
        """[B, 1, S, S] bool: the pixels some crop of each image's sequence has shown."""
        pixels = torch.arange(image_size)
        used = torch.arange(self.length)[:, None] < self.count[None]                        # [K, B]
        rows = (pixels >= self.top[..., None]) & (pixels < (self.top + self.size)[..., None])  # [K, B, S]
        cols = (pixels >= self.left[..., None]) & (pixels < (self.left + self.size)[..., None])
        inside = rows[..., :, None] & cols[..., None, :] & used[..., None, None]            # [K, B, S, S]
        return inside.any(dim=0)[:, None]


@dataclass
class PendingWrite:
    """What one step's gradient-carrying message write needs, per image: the image and its latent,
    its crop sequence up to and including the crop written now (``crops.last()``), the message
    before that write, and the teacher's features (None without a teacher)."""

    images: torch.Tensor
    latents: torch.Tensor
    crops: CropSequences
    messages: torch.Tensor
    teacher: TeacherFeatures | None


def crops_available(num_local: int, global_first_p: float) -> int:
    """Most crops one image can take: every local crop, plus the global one when it can come first."""
    return num_local + (1 if global_first_p > 0 else 0)


def sample_sequences(batch: int, grid: CropGrid, min_crops: int, max_crops: int, global_first_p: float,
                     positions: str = "grid", longest: bool = False) -> CropSequences:
    """Draw K ~ uniform{min..max} per image and K crops without repetition (grid) or anywhere (random).

    With probability ``global_first_p`` an image's first crop is the whole image; the remaining
    K - 1 are local. ``max_crops`` counts the global crop, so a grid of g x g allows up to g²
    local crops (plus the global one). ``longest``: every image takes the most crops its kind of
    sequence allows (``min_crops`` is unused), as the conveyor does, which trains every prefix.
    """
    global_first = torch.rand(batch) < global_first_p
    # Without a global crop there are at most g² local crops to draw from: K is uniform over the
    # range each kind of sequence allows (clamping one shared draw would pile the excess on K = g²).
    local_max = min(max_crops, grid.num_local)
    highest = torch.where(global_first, max_crops, local_max)
    if longest:
        count = highest
    else:
        if min_crops > local_max and not bool(global_first.all()):
            raise ValueError(f"min_crops {min_crops} exceeds the {grid.num_local} local crops of a sequence "
                             "without the global crop")
        count = min_crops + (torch.rand(batch) * (highest - min_crops + 1)).long().clamp(max=highest - min_crops)
    length = int(count.max())
    # Each image's sequence reads its rows from [global box, local boxes...]: images that start with
    # the global crop read from row 0, the others from row 1. Rows past an image's count are padding.
    locals_drawn = min(length, grid.num_local)
    candidates = torch.cat([_global_boxes(grid, batch), _local_boxes(grid, batch, locals_drawn, positions)])
    row = (torch.arange(length)[:, None] + 1 - global_first.long()[None]).clamp(max=locals_drawn)
    top, left, size = candidates.gather(0, row[..., None].expand(-1, -1, 3)).unbind(dim=2)
    return CropSequences(top=top, left=left, size=size, count=count)


def _global_boxes(grid: CropGrid, batch: int) -> torch.Tensor:
    """[1, B, 3] (top, left, size) of the whole image."""
    return torch.tensor([0, 0, grid.image_size]).expand(1, batch, 3)


def _local_boxes(grid: CropGrid, batch: int, count: int, positions: str) -> torch.Tensor:
    """[count, B, 3] (top, left, size) of local crops: distinct grid cells per image, or uniform pixel positions."""
    if positions == "grid":
        # argsort of uniform noise is a random permutation per row: distinct cells for each image.
        cells = torch.rand(batch, grid.num_local).argsort(dim=1)[:, :count].T
        top, left = (cells // grid.grid_size) * grid.stride, (cells % grid.grid_size) * grid.stride
    elif positions == "random":
        top, left = torch.randint(0, grid.image_size - grid.crop_size + 1, (2, count, batch)).unbind(dim=0)
    else:
        raise ValueError(f"crop positions must be 'grid' or 'random', got {positions!r}")
    return torch.stack([top, left, torch.full_like(top, grid.crop_size)], dim=2)
