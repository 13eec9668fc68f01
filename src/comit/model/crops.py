"""Crop geometry and crop orders.

An image of size S is covered by a g x g grid of square crops of size c with stride
``(S - c) // (g - 1)`` (paper: S=256, c=96, g=3, stride 80), optionally preceded by the global
crop (the whole image). Crop indices: locals 0..g²-1 in raster order; with the global crop it is
index 0 and the locals are 1..g². A crop's location is its centre normalised to [-1, 1], x first;
the image centre is (0, 0). The message update after crop k receives the offset
``loc_k - loc_{k-1}`` (zero for the first crop) and decoding receives ``-loc_K``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

NAMED_ORDERS = ("raster_scan", "random", "adaptive")


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
        half = self.image_size / 2
        return ((box.left + box.size / 2) / half - 1.0, (box.top + box.size / 2) / half - 1.0)

    def box_table(self, global_crop: bool) -> torch.Tensor:
        """[num_indices, 3] (top, left, size) of every crop index."""
        boxes = [self.box(i, global_crop) for i in range(self.num_indices(global_crop))]
        return torch.tensor([[box.top, box.left, box.size] for box in boxes], dtype=torch.long)

    def locations(self, indices: torch.Tensor, global_crop: bool) -> torch.Tensor:
        """Crop indices [B] -> locations [B, 2] (x, y)."""
        table = torch.tensor([self.location(self.box(i, global_crop)) for i in range(self.num_indices(global_crop))],
                             dtype=torch.float32)
        return table[indices.cpu()].to(indices.device)

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

    # ------------------------------------------------------------------ orders
    def order(self, order: str | Sequence, batch_size: int, num_crops: int | None, global_crop: bool,
              generator: torch.Generator | None = None) -> torch.Tensor:
        """A fixed order as crop indices [num_crops, B] (adaptive orders are chosen on the fly)."""
        if isinstance(order, str):
            if order == "raster_scan":
                plan = torch.arange(self.num_indices(global_crop))[:, None].expand(-1, batch_size)
            elif order == "random":
                plan = self._random_order(batch_size, global_crop, generator)
            elif order == "adaptive":
                raise ValueError("the adaptive order is chosen while tokenizing; CropGrid.order cannot plan it")
            else:
                raise ValueError(f"unknown crop order {order!r}: use one of {NAMED_ORDERS}, a list of crop "
                                 "indices, or one list per image")
        else:
            plan = self._explicit_order(order, batch_size, global_crop)
        return plan[:self.check_num_crops(num_crops, global_crop, available=plan.shape[0])].clone()

    def check_num_crops(self, num_crops: int | None, global_crop: bool, available: int | None = None) -> int:
        available = self.num_indices(global_crop) if available is None else available
        if num_crops is None:
            return available
        if isinstance(num_crops, bool) or not isinstance(num_crops, int) or not 1 <= num_crops <= available:
            raise ValueError(f"num_crops must be an integer in [1, {available}] for this order "
                             f"(grid {self.grid_size}x{self.grid_size}, global_crop={global_crop}), got {num_crops!r}")
        return num_crops

    def _random_order(self, batch_size: int, global_crop: bool, generator: torch.Generator | None) -> torch.Tensor:
        first = int(global_crop)
        columns = [torch.randperm(self.num_local, generator=generator) + first for _ in range(batch_size)]
        plan = torch.stack(columns, dim=1)
        if global_crop:
            plan = torch.cat([torch.zeros(1, batch_size, dtype=torch.long), plan])
        return plan

    def _explicit_order(self, order: Sequence, batch_size: int, global_crop: bool) -> torch.Tensor:
        if torch.is_tensor(order):
            order = order.tolist()
        order = list(order)
        if not order:
            raise ValueError("crop order is empty: give at least one crop index")
        per_image = all(isinstance(item, (list, tuple)) for item in order)
        if per_image:
            if len(order) != batch_size:
                raise ValueError(f"per-image crop orders: got {len(order)} lists for {batch_size} images")
            lengths = {len(item) for item in order}
            if len(lengths) != 1:
                raise ValueError(f"per-image crop orders must all have the same length, got lengths {sorted(lengths)}")
            columns = [self._check_indices(item, global_crop) for item in order]
        else:
            columns = [self._check_indices(order, global_crop)] * batch_size
        return torch.tensor(columns, dtype=torch.long).T.contiguous()

    def _check_indices(self, indices: Sequence, global_crop: bool) -> list[int]:
        n = self.num_indices(global_crop)
        if not indices:
            raise ValueError("crop order is empty: give at least one crop index")
        if not all(isinstance(i, int) and not isinstance(i, bool) for i in indices):
            raise ValueError(f"crop indices must be integers, got {list(indices)}")
        bad = [i for i in indices if not 0 <= i < n]
        if bad:
            span = "0 is the global crop, 1.." + str(n - 1) + " the local crops" if global_crop else \
                f"local crops 0..{n - 1} in raster order"
            raise ValueError(f"crop indices {bad} out of range [0, {n}) ({span})")
        if len(set(indices)) != len(indices):
            raise ValueError(f"crop order {list(indices)} visits a crop twice; each crop may appear once")
        return list(indices)


def cut_boxes(images: torch.Tensor, top: torch.Tensor, left: torch.Tensor, size: int) -> torch.Tensor:
    """Pixel crops [B, C, size, size] at per-image (top, left) [B], in one gather.

    ``unfold`` views every size x size window without copying; indexing it copies only the chosen
    one per image. Contiguous like the per-image stack it replaces, whatever the input's layout.
    """
    windows = images.unfold(2, size, 1).unfold(3, size, 1)  # [B, C, H - size + 1, W - size + 1, size, size]
    rows = torch.arange(images.shape[0], device=images.device)
    return windows[rows, :, top.to(images.device), left.to(images.device)].contiguous()


def step_offsets(locations: torch.Tensor, previous: torch.Tensor | None) -> torch.Tensor:
    """Offset for the next message update: loc_k - loc_{k-1}, or zero for the first crop."""
    return torch.zeros_like(locations) if previous is None else locations - previous
