"""The probe's controls: messages that certainly hold each probe's answer, and messages that certainly do not.

A probe score means something only next to what the same probe (architecture, data, schedule)
makes of a message whose content is known:

* the **positive control** (``scene``) writes the ground-truth scene as a message of the same
  length: one token per object holding its colour, shape, size class and cell (on the message's
  own grid, ``cells`` x ``cells``), in random slots, every other slot empty. Every probe task is
  answerable from it, so a probe that scores near chance on it cannot read, whatever the tokenizer;
* the **negative control** (``random``) draws every token at random, independent of the image:
  nothing is there to read, so a probe that scores above chance on it has learnt the test split's
  label frequencies or leaks, not the message.

Both come as FSQ-like codes (what ``--probe-input codes`` reads; one-hot fields in {-1, 1}) and as
token ids (what ``--probe-input ids`` reads). Only the shapes data has the object annotations.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch

from ..data.shapes import COLORS, SHAPES, SIZES

Control = Literal["scene", "random"]
CONTROLS: tuple[Control, ...] = ("scene", "random")
CONTROL_TEXT = {"scene": "positive control: the true scene written as tokens",
                "random": "negative control: random tokens"}
_FIELDS = len(COLORS) + len(SHAPES) + len(SIZES)


def object_slots(valid: torch.Tensor, length: int, generator: torch.Generator) -> torch.Tensor:
    """[N, K] a distinct random message slot in ``[0, length)`` for every object slot of every image."""
    if valid.shape[1] > length:
        raise ValueError(f"a message of {length} tokens cannot hold {valid.shape[1]} objects")
    return torch.rand(valid.shape[0], length, generator=generator).argsort(dim=1)[:, :valid.shape[1]]


def object_cells(center: torch.Tensor, cells: int) -> torch.Tensor:
    """[N, K, 2] the (column, row) cell of each object centre (``center`` in [-1, 1], x first) on a
    ``cells`` x ``cells`` grid."""
    return ((center + 1) / 2 * cells).floor().long().clamp(0, cells - 1)


def scene_codes(meta: Mapping[str, torch.Tensor], length: int, cells: int, seed: int) -> torch.Tensor:
    """[N, length, D] the true scene as codes: per object one-hot colour, shape, size, column and row,
    and an "object here" flag; empty slots all -1."""
    valid = meta["valid"]
    n = valid.shape[0]
    slot = object_slots(valid, length, torch.Generator().manual_seed(seed))
    cell = object_cells(meta["center"], cells)
    codes = torch.zeros(n, length, _FIELDS + 2 * cells + 1)
    image, k = valid.nonzero(as_tuple=True)
    where = (image, slot[image, k])
    offsets = (0, len(COLORS), len(COLORS) + len(SHAPES), _FIELDS, _FIELDS + cells)
    values = (meta["color"], meta["shape"], meta["size"], cell[..., 0], cell[..., 1])
    for offset, value in zip(offsets, values):
        codes[(*where, offset + value[image, k])] = 1.0
    codes[(*where, torch.full_like(image, codes.shape[2] - 1))] = 1.0
    return codes * 2 - 1


def scene_ids(meta: Mapping[str, torch.Tensor], length: int, cells: int, seed: int) -> torch.Tensor:
    """[N, length] the true scene as token ids: 0 for an empty slot, else 1 + (colour, shape, size,
    cell) numbered in that order; vocabulary ``scene_vocab_size(cells)``."""
    valid = meta["valid"]
    slot = object_slots(valid, length, torch.Generator().manual_seed(seed))
    cell = object_cells(meta["center"], cells)
    concept = (meta["color"] * len(SHAPES) + meta["shape"]) * len(SIZES) + meta["size"]
    token = 1 + concept * cells * cells + cell[..., 1] * cells + cell[..., 0]
    ids = torch.zeros(valid.shape[0], length, dtype=torch.long)
    image, k = valid.nonzero(as_tuple=True)
    ids[image, slot[image, k]] = token[image, k]
    return ids


def scene_vocab_size(cells: int) -> int:
    return 1 + len(COLORS) * len(SHAPES) * len(SIZES) * cells * cells


def random_codes(count: int, length: int, levels: tuple[int, ...], seed: int) -> torch.Tensor:
    """[count, length, len(levels)] codes drawn uniformly from the FSQ lattice (each channel's
    ``levels[c]`` values spread over [-1, 1]), independent of any image."""
    generator = torch.Generator().manual_seed(seed)
    top = torch.tensor(levels, dtype=torch.float32)
    return (torch.rand(count, length, len(levels), generator=generator) * top).floor() / (top - 1) * 2 - 1


def random_ids(count: int, length: int, vocab_size: int, seed: int) -> torch.Tensor:
    """[count, length] token ids drawn uniformly from ``[0, vocab_size)``, independent of any image."""
    return torch.randint(0, vocab_size, (count, length), generator=torch.Generator().manual_seed(seed))
