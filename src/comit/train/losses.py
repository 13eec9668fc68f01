"""The training losses: flow matching on the full latent, REPA on patch states, SREPA on message
states, and an optional penalty that keeps FSQ's raw values out of saturation. Each takes plain
tensors, so it can be read and tested on its own."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..model.transformer import velocity_from_data


def flow_matching_loss(velocity: torch.Tensor, x1: torch.Tensor, noise: torch.Tensor, t: torch.Tensor | None = None,
                       prediction: str = "velocity") -> torch.Tensor:
    """Mean squared error to the straight path's velocity: x_t = t x1 + (1 - t) noise moves at x1 - noise.

    A data-predicting head turns its clean-image guess into a velocity with 1 - t clamped
    (``velocity_from_data``); the target is turned the same way, so that a perfect guess scores 0
    at every t (with x1 - noise as target, for t > 1 - MIN_REMAINING_TIME the optimum is not x1).
    """
    if prediction == "data":
        tt = t.view(-1, *([1] * (x1.dim() - 1)))
        target = velocity_from_data(x1, tt * x1 + (1 - tt) * noise, t)
    else:
        target = x1 - noise
    return F.mse_loss(velocity.float(), target.float())


def negative_cosine(student: torch.Tensor, teacher: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """-cos(student, teacher) over the last dimension, averaged (optionally weighted per sample)."""
    cosine = F.cosine_similarity(student.float(), teacher.float(), dim=-1)
    if cosine.dim() > 1:
        cosine = cosine.mean(dim=tuple(range(1, cosine.dim())))
    if weights is None:
        return -cosine.mean()
    return -(cosine * weights).sum() / weights.sum().clamp_min(1.0)


def projector(in_features: int, hidden: int, out_features: int) -> nn.Sequential:
    """REPA's 3-layer MLP with SiLU: the student's states only have to contain the teacher's
    features up to this map, not equal them."""
    return nn.Sequential(nn.Linear(in_features, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                         nn.Linear(hidden, out_features))


def saturation_penalty(raw: torch.Tensor, radius: float) -> torch.Tensor:
    """Mean of (|raw| - radius)^2 over the raw FSQ values beyond ``radius``: a restoring force
    towards the range where rounding can still change a code (zero inside it)."""
    return F.relu(raw.float().abs() - radius).pow(2).mean()
