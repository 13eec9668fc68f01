"""Classifier-free guidance with adaptive projected guidance (APG).

The guidance direction d = v_cond - v_uncond is smoothed by a momentum buffer, clipped to an L2
norm of at most ``norm_threshold`` per sample, and stripped of its component parallel to v_cond
(computed in float64); only the orthogonal part is amplified:
``v = v_cond + (w - 1) * d_orth``. The unconditional branch reads the empty message m0 with the
same offset. At w = 1 the result is exactly v_cond and at w = 0 guidance is off, so in both cases
the unconditional pass is skipped; otherwise both branches run as one batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def check_guidance(cfg_weight: float, apg_momentum: float) -> None:
    """Refuse a guidance weight or momentum that would paint NaN or garbage images."""
    if not math.isfinite(cfg_weight):
        raise ValueError(f"cfg_weight (--cfg) must be a finite number (1: no guidance), got {cfg_weight}")
    if not (math.isfinite(apg_momentum) and -1 < apg_momentum < 1):
        raise ValueError(f"apg_momentum must lie in (-1, 1) (the paper's: -0.5), got {apg_momentum}")


def needs_unconditional(cfg_weight: float) -> bool:
    return cfg_weight not in (0.0, 1.0)


def project_orthogonal(direction: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Remove from ``direction`` its component along ``reference`` (per sample, float64)."""
    d, v = direction.double(), reference.double()
    dims = tuple(range(1, d.dim()))
    # clamp: a zero velocity (e.g. a freshly initialised model) has no direction to remove
    v_hat = v / torch.linalg.vector_norm(v, dim=dims, keepdim=True).clamp_min(1e-30)
    parallel = (d * v_hat).sum(dim=dims, keepdim=True) * v_hat
    return (d - parallel).to(direction.dtype)


def clip_norm(direction: torch.Tensor, threshold: float) -> torch.Tensor:
    dims = tuple(range(1, direction.dim()))
    norm = torch.linalg.vector_norm(direction, dim=dims, keepdim=True)
    return direction * torch.clamp(threshold / norm, max=1.0)


class APGuidance:
    """Combines conditional and unconditional velocities; keeps the momentum buffer of one
    detokenize call (create a new instance per call)."""

    def __init__(self, cfg_weight: float, momentum: float = -0.5, norm_threshold: float = 2.5):
        self.cfg_weight = float(cfg_weight)
        self.momentum = float(momentum)
        self.norm_threshold = float(norm_threshold)
        self.running: torch.Tensor | None = None

    def __call__(self, v_cond: torch.Tensor, v_uncond: torch.Tensor) -> torch.Tensor:
        diff = v_cond - v_uncond
        self.running = diff if self.running is None else diff + self.momentum * self.running
        direction = clip_norm(self.running, self.norm_threshold)
        return v_cond + (self.cfg_weight - 1.0) * project_orthogonal(direction, v_cond)


def guided_velocity(velocity_of: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
                    message: torch.Tensor, empty_message: torch.Tensor, offset: torch.Tensor,
                    cfg_weight: float, momentum: float = -0.5, norm_threshold: float = 2.5) -> VelocityFn:
    """A velocity function v(x, t) for the solvers, with guidance folded in.

    ``velocity_of(x, t, message, offset)`` is one transformer evaluation.
    """
    if not needs_unconditional(cfg_weight):
        return lambda x, t: velocity_of(x, t, message, offset)
    guidance = APGuidance(cfg_weight, momentum, norm_threshold)
    both_messages = torch.cat([message, empty_message])
    both_offsets = torch.cat([offset, offset])

    def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        v = velocity_of(torch.cat([x, x]), torch.cat([t, t]), both_messages, both_offsets)
        v_cond, v_uncond = v.chunk(2)
        return guidance(v_cond, v_uncond)

    return velocity
