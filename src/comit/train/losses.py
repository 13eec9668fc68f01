"""The training losses: flow matching on the full latent, REPA on patch states, SREPA on message
states, and an optional penalty that keeps FSQ's raw values out of saturation. Each takes plain
tensors, so it can be read and tested on its own."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..model.solvers import path_point
from ..model.transformer import MIN_REMAINING_TIME, velocity_from_data


def flow_matching_loss(velocity: torch.Tensor, x1: torch.Tensor, noise: torch.Tensor, t: torch.Tensor | None = None,
                       prediction: str = "velocity", space: str = "velocity",
                       weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error to the straight path's velocity: x_t = t x1 + (1 - t) noise moves at x1 - noise.

    A data-predicting head turns its clean-image guess into a velocity with 1 - t clamped
    (``velocity_from_data``); the target is turned the same way, so that a perfect guess scores 0
    at every t (with x1 - noise as target, for t > 1 - MIN_REMAINING_TIME the optimum is not x1).

    ``space="data"`` (data-predicting heads only) scores the clean-image guess itself,
    ||x1_hat - x1||², which is the velocity error times (1 - t)²: every t counts alike, where the
    velocity loss weights the nearly clean end (where the message hardly matters) by up to 400x.

    ``weights`` (broadcast over the latent, e.g. [B, 1, h, w]) make it a weighted mean: the mean
    of ``weights`` x squared error over the mean of ``weights``, so all-ones weights change nothing.
    """
    tt = t.view(-1, *([1] * (x1.dim() - 1))) if t is not None else None
    if space == "data":
        if prediction != "data":
            raise ValueError("a data-space flow loss needs a data-predicting head (model.prediction: data)")
        xt = path_point(x1, noise, t)
        remaining = (1 - tt).clamp(min=MIN_REMAINING_TIME)
        guess, target = xt + remaining * velocity.float(), x1
    elif prediction == "data":
        guess, target = velocity, velocity_from_data(x1, path_point(x1, noise, t), t)
    else:
        guess, target = velocity, x1 - noise
    squared = (guess.float() - target.float()) ** 2
    if weights is None:
        return squared.mean()
    weights = weights.float().expand_as(squared)
    return (weights * squared).mean() / weights.mean().clamp_min(1e-12)


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
