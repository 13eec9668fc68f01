"""Finite scalar quantisation (FSQ): each message dimension is bounded and rounded to a few levels.

A message token is a vector of ``len(levels)`` codes in [-1, 1]; its id is the mixed-radix number
whose digits are the per-dimension level indices, the FIRST dimension being the least significant
digit (basis = exclusive cumulative product of ``levels``). With the paper's levels
``[8, 8, 8, 5, 5, 5]`` there are 64,000 ids.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

PAPER_LEVELS = (8, 8, 8, 5, 5, 5)
STRAIGHT_THROUGH = ("bounded", "identity")


class FSQ(nn.Module):
    """Bound, round (straight-through) and normalise each dimension.

    Args:
        levels: number of levels per dimension.
        drop_quantization_p: training only — probability per sample of skipping the rounding
            (the bounded continuous value passes through), which eases early optimisation.
        corrupt_p: training only — fraction of tokens replaced by uniformly random codes, which
            makes the decoder robust to token errors.
        straight_through: the gradient that the rounding passes back. ``bounded`` (the usual FSQ
            one) is the derivative of the tanh bound, which vanishes once a raw value is far out;
            ``identity`` passes the gradient of the bound's slope at 0 everywhere, so a saturated
            code can still be pulled back (pair it with a penalty on |raw|, ``StepConfig``).
            The forward value is the same either way.
    """

    def __init__(self, levels: Sequence[int] = PAPER_LEVELS, drop_quantization_p: float = 0.0,
                 corrupt_p: float = 0.0, straight_through: str = "bounded"):
        super().__init__()
        levels = [int(level) for level in levels]
        if not levels or min(levels) < 2:
            raise ValueError(f"FSQ levels must be a non-empty list of integers >= 2, got {levels}")
        self.levels = tuple(levels)
        self.set_training_options(drop_quantization_p, corrupt_p, straight_through)
        lv = torch.tensor(levels, dtype=torch.float64)
        basis = torch.cumprod(torch.tensor([1] + levels[:-1], dtype=torch.int64), dim=0)
        half_width = (lv - 1) * (1 + 1e-3) / 2
        offset = torch.where(lv % 2 == 0, 0.5, 0.0)
        # Tensors that are fully derived from `levels` stay out of the state dict (the released
        # checkpoints have none).
        self.register_buffer("_levels", lv.float(), persistent=False)
        self.register_buffer("_basis", basis, persistent=False)
        self.register_buffer("_half_levels", torch.div(lv, 2, rounding_mode="floor").float(),
                             persistent=False)
        self.register_buffer("_half_width", half_width.float(), persistent=False)
        self.register_buffer("_offset", offset.float(), persistent=False)
        self.register_buffer("_shift", torch.atanh(offset / half_width).float(), persistent=False)

    def set_training_options(self, drop_quantization_p: float = 0.0, corrupt_p: float = 0.0,
                             straight_through: str = "bounded") -> None:
        """The training-only behaviour (see the class docstring); a trainer sets it on a built model."""
        for name, p in (("drop_quantization_p", drop_quantization_p), ("corrupt_p", corrupt_p)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"FSQ {name} must lie in [0, 1], got {p}")
        if straight_through not in STRAIGHT_THROUGH:
            raise ValueError(f"FSQ straight_through must be one of {STRAIGHT_THROUGH}, got {straight_through!r}")
        self.drop_quantization_p = float(drop_quantization_p)
        self.corrupt_p = float(corrupt_p)
        self.straight_through = straight_through

    @property
    def dim(self) -> int:
        return len(self.levels)

    @property
    def codebook_size(self) -> int:
        return math.prod(self.levels)

    def bound(self, z: torch.Tensor) -> torch.Tensor:
        """Squash to (-L/2, L/2) so that rounding yields exactly L integer levels."""
        return torch.tanh(z + self._shift) * self._half_width - self._offset

    def _linear_bound(self, z: torch.Tensor) -> torch.Tensor:
        """A straight line of the bound's slope near z = 0: the identity straight-through's carrier."""
        return z * self._half_width

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Quantise raw message vectors [..., D] to codes in [-1, 1] (straight-through gradient)."""
        if z.shape[-1] != self.dim:
            raise ValueError(f"FSQ expects the last dimension to be {self.dim}, got shape {tuple(z.shape)}")
        dtype = z.dtype
        z = z.float()
        bounded = self.bound(z)
        carrier = bounded if self.straight_through == "bounded" else self._linear_bound(z)
        rounded = carrier + (torch.round(bounded) - carrier).detach()
        if self.training and self.drop_quantization_p > 0:
            keep_continuous = torch.rand(z.shape[0], *([1] * (z.dim() - 1)), device=z.device)
            rounded = torch.where(keep_continuous < self.drop_quantization_p, bounded, rounded)
        codes = rounded / self._half_levels
        if self.training and self.corrupt_p > 0:
            codes = self._corrupt(codes)
        return codes.to(dtype)

    def _corrupt(self, codes: torch.Tensor) -> torch.Tensor:
        replace = torch.rand(codes.shape[:-1], device=codes.device) < self.corrupt_p
        random_ids = torch.randint(0, self.codebook_size, codes.shape[:-1], device=codes.device)
        return torch.where(replace[..., None], self.indices_to_codes(random_ids), codes)

    def check_codes(self, codes: torch.Tensor, tolerance: float = 1e-4) -> None:
        """Refuse codes [..., D] off the code grid: decoding them would read values FSQ never writes."""
        digits = codes.float() * self._half_levels + self._half_levels
        off = (digits - torch.round(digits)).abs() > tolerance
        off |= (digits < -tolerance) | (digits > self._levels - 1 + tolerance)
        if bool(off.any()):
            where = off.nonzero()[0].tolist()
            raise ValueError(f"messages must be FSQ codes on the code grid (Tokens.messages or token ids), got "
                             f"{float(codes[tuple(where)]):.4g} at {where}")

    def codes_to_indices(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes [..., D] in [-1, 1] -> int64 ids [...]."""
        digits = torch.round(codes.float() * self._half_levels + self._half_levels).long()
        return (digits * self._basis).sum(dim=-1)

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """int64 ids [...] -> codes [..., D] in [-1, 1]."""
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.codebook_size):
            raise ValueError(f"token ids must lie in [0, {self.codebook_size}), got range "
                             f"[{int(indices.min())}, {int(indices.max())}]")
        digits = torch.div(indices[..., None].long(), self._basis, rounding_mode="floor") % self._levels.long()
        return (digits.float() - self._half_levels) / self._half_levels

    def empty_message(self, batch_size: int, num_tokens: int, device=None) -> torch.Tensor:
        """m0: every token holds the code of id ``codebook_size // 2`` (the released convention)."""
        ids = torch.full((batch_size, num_tokens), self.codebook_size // 2, dtype=torch.long,
                         device=device if device is not None else self._basis.device)
        return self.indices_to_codes(ids)

    def extra_repr(self) -> str:
        return f"levels={list(self.levels)}, codebook_size={self.codebook_size}"
