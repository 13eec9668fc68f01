"""Analytic FLOP counts of one transformer call (multiply-add = 2 FLOPs).

Three kinds of work, counted separately because they scale differently:

* per-token weights — every Linear/conv that runs once per token: the blocks' qkv, proj, fc1 and
  fc2 (``(4 + 2 r) h²`` weights per token for MLP ratio r), the patch/message/offset embedders and
  the three heads (the velocity head on patches, the message head on queries, the offset head on
  the offset token). ``2 * tokens * weights``.
* attention — ``q k^T`` and ``softmax @ v``: ``4 L² h`` per block and sample over the whole
  sequence of L tokens. Fused attention computes every position, masked or not, so masked
  positions are counted too.
* per-sample — the adaLN modulation layers (two per block plus the final layer's) and the timestep
  MLP take one vector per sample, not per token.

``tests/test_bench.py`` checks the total against torch's own FlopCounterMode.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..model.transformer import TIMESTEP_DIM, Transformer


@dataclass(frozen=True)
class CallFlops:
    """FLOPs of one transformer call, split by kind (see the module docstring)."""

    tokens: int
    per_token_weights: int
    attention: int
    per_sample: int

    @property
    def total(self) -> int:
        return self.per_token_weights + self.attention + self.per_sample

    def as_dict(self) -> dict:
        return {**asdict(self), "total": self.total}


def sequence_length(model: Transformer, num_patches: int, with_queries: bool) -> int:
    """1 offset token + patches + message + queries (the queries are dropped only in hard mode)."""
    queries = model.num_msg_tokens if with_queries or model.attention == "released" else 0
    return 1 + num_patches + model.num_msg_tokens + queries


def transformer_call_flops(model: Transformer, batch: int, latent_size: int, with_queries: bool = True) -> CallFlops:
    """FLOPs of ``model(x, t, message, offset, with_queries)`` for ``batch`` square latents of side
    ``latent_size``."""
    h, p, c = model.hidden_size, model.patch_size, model.in_channels
    m, d = model.num_msg_tokens, model.msg_tokens_dim
    inner = int(h * model.mlp_ratio)
    num_patches = (latent_size // p) ** 2
    length = sequence_length(model, num_patches, with_queries)
    queries = length - 1 - num_patches - m

    block_weights = 3 * h * h + h * h + h * inner + inner * h
    embed_weights = num_patches * (c * p * p * h) + m * (d * h + h * h) + (2 * h + h * h)
    head_weights = num_patches * (h * p * p * c) + queries * (h * d) + h * 2
    per_token = 2 * (length * model.depth * block_weights + embed_weights + head_weights)
    attention = model.depth * 4 * length * length * h
    adaln = model.depth * 2 * (h * 6 * h) + h * 2 * h
    per_sample = 2 * (TIMESTEP_DIM * h + h * h + adaln)
    return CallFlops(tokens=batch * length, per_token_weights=batch * per_token, attention=batch * attention,
                     per_sample=batch * per_sample)
