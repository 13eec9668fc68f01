"""Supervision for the shapes teacher, rasterised from ShapesDataset annotations.

Dense targets are soft: a cell on an object's edge is, say, 40% background and 60% circle, which
is exactly what the cell shows. Class 0 of every dense target is the background.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

DENSE_ATTRIBUTES = ("shape", "color", "size")


def cell_targets(batch: dict[str, Tensor], grid: int, num_classes: dict[str, int]) -> dict[str, Tensor]:
    """Per attribute, the fraction of each of ``grid x grid`` cells covered by each class.

    Args:
        batch: collated ShapesDataset items (``masks`` [B, K, S, S], ``shape``/``color``/``size``
            [B, K] with -1 padding).
        num_classes: classes per attribute, background excluded.
    Returns: {attribute: [B, 1 + C, grid, grid]}, each cell summing to one.
    """
    masks = batch["masks"].float()  # disjoint visible masks, so coverages add up
    size = masks.shape[-1]
    if size % grid:
        raise ValueError(f"image size {size} is not a multiple of the teacher grid {grid}")
    # Coverage of each object per cell, [B, K, g, g]; averaging pixels = area fraction.
    coverage = F.avg_pool2d(masks, kernel_size=size // grid)
    targets = {}
    for name in DENSE_ATTRIBUTES:
        values = batch[name].clamp(min=0)  # padded objects have empty masks: zero coverage
        one_hot = F.one_hot(values, num_classes[name]).float()  # [B, K, C]
        objects = torch.einsum("bkhw,bkc->bchw", coverage, one_hot)
        background = (1.0 - objects.sum(dim=1, keepdim=True)).clamp(min=0.0)
        targets[name] = torch.cat([background, objects], dim=1)
    return targets


def pair_targets(batch: dict[str, Tensor], num_colors: int, num_pairs: int) -> Tensor:
    """Multi-hot [B, P] of the (shape, colour) pairs present, pair = shape * num_colors + colour."""
    valid = batch["valid"]
    pairs = batch["shape"].clamp(min=0) * num_colors + batch["color"].clamp(min=0)
    target = torch.zeros(valid.shape[0], num_pairs)
    target.scatter_add_(1, pairs, valid.float())
    return (target > 0).float()


def soft_cross_entropy(logits: Tensor, target: Tensor) -> Tensor:
    """Cross-entropy against class fractions, over dim 1, averaged over batch and cells."""
    return -(target * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def teacher_loss(logits: dict[str, Tensor], cells: dict[str, Tensor], pairs: Tensor) -> Tensor:
    """Sum of the three dense losses and the global multi-label loss."""
    dense = sum(soft_cross_entropy(logits[name], cells[name]) for name in DENSE_ATTRIBUTES)
    return dense + F.binary_cross_entropy_with_logits(logits["pairs"], pairs)


class TeacherAccuracy:
    """Running held-out accuracies.

    cell_<attr>: argmax per cell vs the majority class, over all cells;
    object_cell_<attr>: the same over cells that are mostly object (where the task is hard);
    pair_set: images whose predicted (shape, colour) set is exactly right (threshold 0.5).
    """

    def __init__(self):
        self.hits: dict[str, float] = {}
        self.counts: dict[str, float] = {}

    def update(self, logits: dict[str, Tensor], cells: dict[str, Tensor], pairs: Tensor) -> None:
        for name in DENSE_ATTRIBUTES:
            right = logits[name].argmax(dim=1) == cells[name].argmax(dim=1)
            on_object = cells[name][:, 0] < 0.5
            self._add(f"cell_{name}", right.sum(), right.numel())
            self._add(f"object_cell_{name}", (right & on_object).sum(), on_object.sum())
        exact = ((logits["pairs"] > 0).float() == pairs).all(dim=1)
        self._add("pair_set", exact.sum(), exact.numel())

    def _add(self, key: str, hits, count) -> None:
        self.hits[key] = self.hits.get(key, 0.0) + float(hits)
        self.counts[key] = self.counts.get(key, 0.0) + float(count)

    def result(self) -> dict[str, float]:
        return {key: self.hits[key] / max(self.counts[key], 1.0) for key in self.hits}
