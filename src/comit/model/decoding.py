"""The decoder side: painting latents back from messages by flow matching with guidance, and where
the message tokens look while it paints. The solvers (``solvers.py``) and the guidance
(``guidance.py``) are parts this wires; the model comes in as an argument (``ModelParts``)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch

from ..progress import progress as progress_bar
from .guidance import guided_velocity
from .parts import ModelParts
from .reading import Tokens
from .solvers import evaluation_times, integrate, path_point


def paint(model: ModelParts, messages: torch.Tensor, offsets: torch.Tensor, noise: torch.Tensor, num_steps: int,
          solver: str, cfg_weight: float, apg_momentum: float, progress: bool = False) -> torch.Tensor:
    """Latents integrated from ``noise`` at t = 0 to t = 1 along the guided velocity (checked inputs)."""
    # On the CPU the schedule's adaLN outputs are computed once for every step (see ConditioningTable).
    table = model.predictor.conditioning_table(evaluation_times(num_steps, solver)) \
        if model.device.type == "cpu" else None
    velocity = guided_velocity(partial(model.velocity, table=table), messages, model.empty_message(messages.shape[0]),
                               offsets, cfg_weight, apg_momentum)
    bar = progress_bar(total=num_steps, desc="detokenize", unit="step", leave=False) if progress else None
    latents = integrate(velocity, noise, num_steps, solver, progress=bar.update if bar else None)
    if bar:
        bar.close()
    return latents


def message_attention(model: ModelParts, x1: torch.Tensor, noise: torch.Tensor, tokens: Tokens, layer: int,
                      times: Sequence[float], heads: str | int, direction: str) -> torch.Tensor:
    """[B, M, h, w]: the softmax attention between message tokens and image patches at block
    ``layer`` while the decoder denoises ``x_t`` (x1 the images' latents), heads aggregated, each
    map renormalised to sum to 1, averaged over ``times`` (see ``COMiT.attention_maps``)."""
    batch, config = x1.shape[0], model.config
    grid = config.latent_size // config.patch_size
    patches = slice(1, 1 + grid * grid)
    message = slice(1 + grid * grid, 1 + grid * grid + config.num_msg_tokens)
    total = torch.zeros(batch, config.num_msg_tokens, grid * grid, device=model.device)
    for t in times:
        out = model.predictor(path_point(x1, noise, float(t)), torch.full((batch,), float(t), device=model.device),
                              tokens.messages.to(model.device), tokens.offsets.to(model.device), with_queries=False,
                              attention_layers=(layer,))
        weights = out.attentions[layer]
        weights = weights[:, :, message, patches] if direction == "token_to_patch" else \
            weights[:, :, patches, message].transpose(-1, -2)
        weights = aggregate_heads(weights, heads)
        total += weights / weights.sum(dim=-1, keepdim=True).clamp_min(1e-12)
    return (total / len(times)).view(batch, -1, grid, grid)


def aggregate_heads(weights: torch.Tensor, heads: str | int) -> torch.Tensor:
    """[B, H, Q, K] attention -> [B, Q, K]: the heads' mean, their max, or one head."""
    if heads == "mean":
        return weights.mean(dim=1)
    if heads == "max":
        return weights.amax(dim=1)
    if isinstance(heads, int) and 0 <= heads < weights.shape[1]:
        return weights[:, heads]
    raise ValueError(f"heads must be 'mean', 'max' or a head index in [0, {weights.shape[1]}), got {heads!r}")
