"""Crop policies: which crop each image observes at each step of ``COMiT.tokenize``.

A policy is one class. Orders known before tokenizing subclass :class:`FixedOrder` and give every
crop of the order as ``[N, B]`` crop indices; policies that look at what the message already
knows subclass :class:`CropPolicy`, set ``reads_errors`` and choose each step from the one-step
reconstruction's error per crop window. :func:`parse_policy` turns what users write (a name, a
list of crop indices, one list per image) into a policy; ``tokenize`` accepts any of these.

Crop indices follow :mod:`comit.model.crops`: locals 0..g²-1 in raster order, or with the global
crop, 0 the global crop and 1..g² the locals.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch

from .policy_names import ADAPTIVE, RANDOM, RASTER_SCAN, check_policy_name

if TYPE_CHECKING:  # policies plan over a grid; the grid knows nothing of policies
    from .crops import CropGrid


@dataclass(frozen=True)
class CropPlan:
    """One tokenize call's schedule: ``steps`` crops per image; ``order`` [steps, B] when the
    crops are fixed before tokenizing (None: the policy chooses them step by step)."""

    steps: int
    order: torch.Tensor | None = None


@dataclass(frozen=True)
class CropStep:
    """What a policy may look at to choose the crops of step ``step`` (0-based, within this call).

    seen: [B, num_indices] crops each image has observed, resumed tokens included.
    errors: [B, g²] mean squared error of the one-step reconstruction inside each local crop's
        window, when the policy reads errors (or an error budget is set); None before any crop.
    """

    step: int
    plan: CropPlan
    crops: CropGrid
    global_crop: bool
    seen: torch.Tensor
    errors: torch.Tensor | None


class CropPolicy(ABC):
    """Chooses the crop each image observes next. ``plan`` runs once per tokenize call, before any
    crop is read (random draws happen there); ``choose`` runs before each crop."""

    # True: tokenize measures the one-step reconstruction's errors before every choice (costly).
    reads_errors: ClassVar[bool] = False

    @abstractmethod
    def plan(self, crops: CropGrid, batch_size: int, num_crops: int | None, global_crop: bool,
             generator: torch.Generator | None = None, available: int | None = None) -> CropPlan:
        """The schedule for ``num_crops`` crops (None: all); ``available`` counts the crops every
        image has left when resuming (None: all of them)."""

    @abstractmethod
    def choose(self, step: CropStep) -> torch.Tensor:
        """Crop indices [B] for this step."""

    def check(self, crops: CropGrid, num_crops: int | None, global_crop: bool) -> None:
        """Raise what tokenize would raise for these settings, before any image is loaded."""
        self.plan(crops, 1, num_crops, global_crop, torch.Generator())


class FixedOrder(CropPolicy):
    """An order known before tokenizing: subclasses give every crop of it."""

    @abstractmethod
    def order(self, crops: CropGrid, batch_size: int, global_crop: bool,
              generator: torch.Generator | None) -> torch.Tensor:
        """Every crop of the order, [N, B]."""

    def plan(self, crops: CropGrid, batch_size: int, num_crops: int | None, global_crop: bool,
             generator: torch.Generator | None = None, available: int | None = None) -> CropPlan:
        # A resumed fixed order counts its own crops; tokenize rejects any it has already seen.
        order = self.order(crops, batch_size, global_crop, generator)
        steps = crops.check_num_crops(num_crops, global_crop, available=order.shape[0])
        return CropPlan(steps=steps, order=order[:steps].clone())

    def choose(self, step: CropStep) -> torch.Tensor:
        return step.plan.order[step.step]


@dataclass(frozen=True)
class RasterScan(FixedOrder):
    """Every crop in index order: the global crop first when there is one, then row by row."""

    name: ClassVar[str] = RASTER_SCAN

    def order(self, crops: CropGrid, batch_size: int, global_crop: bool,
              generator: torch.Generator | None) -> torch.Tensor:
        return torch.arange(crops.num_indices(global_crop))[:, None].expand(-1, batch_size)


@dataclass(frozen=True)
class RandomOrder(FixedOrder):
    """A random permutation of the local crops per image, drawn from tokenize's generator (the
    global crop, when there is one, stays first)."""

    name: ClassVar[str] = RANDOM

    def order(self, crops: CropGrid, batch_size: int, global_crop: bool,
              generator: torch.Generator | None) -> torch.Tensor:
        return _permutations(crops, global_crop, [generator] * batch_size)


@dataclass(frozen=True)
class PerImageRandomOrder(FixedOrder):
    """A random order drawn from each image's own seed, so an image's order does not depend on
    its batch-mates or on tokenize's generator (evaluation seeds each image by its position)."""

    seeds: tuple[int, ...]

    def order(self, crops: CropGrid, batch_size: int, global_crop: bool,
              generator: torch.Generator | None) -> torch.Tensor:
        if batch_size != len(self.seeds):
            raise ValueError(f"per-image random orders: got {len(self.seeds)} seeds for {batch_size} images")
        generators = [torch.Generator().manual_seed(seed) for seed in self.seeds]
        return _permutations(crops, global_crop, generators)


@dataclass(frozen=True)
class ExplicitOrder(FixedOrder):
    """Crop indices given by the caller: one list shared by every image, or one list per image."""

    indices: Sequence

    def order(self, crops: CropGrid, batch_size: int, global_crop: bool,
              generator: torch.Generator | None) -> torch.Tensor:
        indices = self.indices.tolist() if torch.is_tensor(self.indices) else self.indices
        indices = list(indices)
        if not indices:
            raise ValueError("crop order is empty: give at least one crop index")
        if all(isinstance(item, (list, tuple)) for item in indices):
            columns = _per_image_columns(crops, indices, batch_size, global_crop)
        else:
            columns = [_check_indices(crops, indices, global_crop)] * batch_size
        return torch.tensor(columns, dtype=torch.long).T.contiguous()

    def check(self, crops: CropGrid, num_crops: int | None, global_crop: bool) -> None:
        # Per-image lists fix the batch size; a shared list fits any batch.
        indices = self.indices.tolist() if torch.is_tensor(self.indices) else list(self.indices)
        per_image = bool(indices) and all(isinstance(item, (list, tuple)) for item in indices)
        self.plan(crops, len(indices) if per_image else 1, num_crops, global_crop)


@dataclass(frozen=True)
class Adaptive(CropPolicy):
    """The paper's policy: first the global crop (or the centre crop without it), then the unseen
    local crop where the one-step reconstruction from the current message is worst (ties: the
    lower index), per image."""

    name: ClassVar[str] = ADAPTIVE
    reads_errors: ClassVar[bool] = True

    def plan(self, crops: CropGrid, batch_size: int, num_crops: int | None, global_crop: bool,
             generator: torch.Generator | None = None, available: int | None = None) -> CropPlan:
        return CropPlan(steps=crops.check_num_crops(num_crops, global_crop, available=available))

    def choose(self, step: CropStep) -> torch.Tensor:
        first = int(step.global_crop)
        if step.errors is None:  # nothing read yet: no error to follow
            start = 0 if step.global_crop else step.crops.centre_index()
            return torch.full((step.seen.shape[0],), start, dtype=torch.long, device=step.seen.device)
        local_seen = step.seen[:, first:]
        return step.errors.masked_fill(local_seen, float("-inf")).argmax(dim=1) + first


NAMED_POLICIES: dict[str, type[CropPolicy]] = {cls.name: cls for cls in (RasterScan, RandomOrder, Adaptive)}


def parse_policy(order: str | Sequence | CropPolicy) -> CropPolicy:
    """A policy from its name, a list of crop indices, one list per image, or a policy (kept)."""
    if isinstance(order, CropPolicy):
        return order
    if isinstance(order, str):
        return NAMED_POLICIES[check_policy_name(order)]()
    return ExplicitOrder(order)


def fixed_order(crops: CropGrid, order: str | Sequence | CropPolicy, batch_size: int, num_crops: int | None,
                global_crop: bool, generator: torch.Generator | None = None) -> torch.Tensor:
    """A fixed order's crop indices [num_crops, B] (an adaptive order is chosen while tokenizing)."""
    policy = parse_policy(order)
    if not isinstance(policy, FixedOrder):
        name = getattr(policy, "name", type(policy).__name__)
        raise ValueError(f"the {name} order is chosen while tokenizing; it cannot be planned ahead")
    return policy.plan(crops, batch_size, num_crops, global_crop, generator).order


def _permutations(crops: CropGrid, global_crop: bool, generators: Sequence[torch.Generator | None]) -> torch.Tensor:
    """One random permutation of the local crops per generator, as [N, B] (global crop first)."""
    first = int(global_crop)
    columns = [torch.randperm(crops.num_local, generator=generator) + first for generator in generators]
    order = torch.stack(columns, dim=1)
    if global_crop:
        order = torch.cat([torch.zeros(1, len(generators), dtype=torch.long), order])
    return order


def _per_image_columns(crops: CropGrid, indices: list, batch_size: int, global_crop: bool) -> list[list[int]]:
    if len(indices) != batch_size:
        raise ValueError(f"per-image crop orders: got {len(indices)} lists for {batch_size} images")
    lengths = {len(item) for item in indices}
    if len(lengths) != 1:
        raise ValueError(f"per-image crop orders must all have the same length, got lengths {sorted(lengths)}")
    return [_check_indices(crops, item, global_crop) for item in indices]


def _check_indices(crops: CropGrid, indices: Sequence, global_crop: bool) -> list[int]:
    n = crops.num_indices(global_crop)
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
