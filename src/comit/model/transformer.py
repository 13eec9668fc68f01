"""The shared COMiT transformer: it writes the message from a crop and predicts flow velocity.

One sequence of four streams, in this order::

    [ offset token (1) | image patches (N) | message (M) | queries (Q = M or 0) ]

The queries write the new (raw, pre-FSQ) message; the patches give the velocity of the flow; the
offset token predicts the offset (a training signal, unused at inference). Parameter names follow
the released checkpoints exactly, so their state dicts load without renaming.

Attention modes (see docs/architecture.md):

* ``hard`` — the intended mask: offset, patches and message attend to each other; query i attends
  to them and to queries j <= i. Nothing attends to the queries, so when only the velocity is
  needed they are dropped from the sequence, which is exact.
* ``released`` — what the released code computes: the 0/1 mask is ADDED to the logits, so allowed
  positions get +1 and nothing is masked. Needed to reproduce the released checkpoints; the
  queries then influence every token and can never be dropped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

AttentionMode = Literal["hard", "released"]
ATTENTION_MODES = ("hard", "released")
LN_EPS = 1e-6
MESSAGE_EMBED_STD = 1.0  # init of the learned message / query vectors (the released code's)
TIMESTEP_DIM = 256


@dataclass
class PredictorOutput:
    """Everything one transformer call produces.

    velocity: [B, C, h, w] flow velocity for the input latent.
    message: [B, M, D] raw new message (before FSQ); None when the queries were dropped.
    offset: [B, 1, 2] offset prediction (tanh), a training signal.
    patch_states: [B, N, hidden] patch stream after block ``representation_layer`` (REPA tap).
    message_states: [B, M, hidden] message stream after the same block (SREPA tap).
    attentions: {block index: [B, heads, L, L]} softmax attention of the requested blocks.
    """

    velocity: torch.Tensor
    message: torch.Tensor | None
    offset: torch.Tensor
    patch_states: torch.Tensor | None
    message_states: torch.Tensor | None
    attentions: dict[int, torch.Tensor]


@dataclass
class Conditioning:
    """Everything a call computes from its time t alone: each block's adaLN outputs (patch stream,
    message stream; [R, 6 * hidden]) and the final layer's ([R, 2 * hidden]).

    R is the batch size, or 1 when every sample has the same time: the rows then broadcast, and
    LayerNorm and modulation fuse into one pass. Since t is known before a decoding loop starts,
    :class:`ConditioningTable` computes the rows of all its steps at once.
    """

    blocks: list[tuple[torch.Tensor, torch.Tensor]]
    final: torch.Tensor

    def rows(self, index: torch.Tensor) -> "Conditioning":
        return Conditioning([(x[index], r[index]) for x, r in self.blocks], self.final[index])


class ConditioningTable:
    """The conditioning of every time a decoding schedule evaluates, computed in one pass.

    On a CPU each adaLN linear is a memory-bound matrix-vector product (its weights, half of the
    predictor's, are read once per call for one or two rows); ten Euler steps read them ten times,
    one pass over the ten times reads them once. ``lookup`` finds a call's rows by the values of
    its times, which costs nothing on the CPU; on other devices reading t would make the host wait
    for the device, so there it returns None and each call computes its own conditioning.
    """

    def __init__(self, predictor: "Transformer", times: torch.Tensor):
        self.index = {value: row for row, value in enumerate(times.tolist())}
        self.conditioning = predictor.conditioning(times.to(predictor.pos_embed.device))

    def lookup(self, t: torch.Tensor) -> Conditioning | None:
        if t.device.type != "cpu":
            return None
        rows = [self.index.get(value) for value in t.tolist()]
        if None in rows:
            return None  # a time outside the schedule: computed as usual
        if len(set(rows)) == 1:
            rows = rows[:1]
        return self.conditioning.rows(torch.tensor(rows, device=self.conditioning.final.device))


def shared_time(t: torch.Tensor) -> torch.Tensor:
    """t[:1] when every sample has the same time and t lives on the CPU (reading it is free there),
    so that the conditioning is one row for the whole batch; t itself otherwise."""
    if t.device.type == "cpu" and t.numel() > 1 and len(set(t.tolist())) == 1:
        return t[:1]
    return t


# What the velocity head predicts (ModelConfig.prediction).
PREDICTIONS = ("velocity", "data")
# Which positions a crop's patches take (ModelConfig.crop_patch_positions).
CROP_PATCH_POSITIONS = ("top_left", "absolute")
# 1 - t is clamped here when a data prediction becomes a velocity (t = 1 is the writing time).
MIN_REMAINING_TIME = 0.05


def velocity_from_data(data: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """v = (x1_hat - x_t) / (1 - t) on the path x_t = t x1 + (1 - t) noise."""
    remaining = (1 - t).clamp(min=MIN_REMAINING_TIME).view(-1, *([1] * (x_t.dim() - 1)))
    return (data - x_t) / remaining.to(data.dtype)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x * (1 + scale) + shift in one pass (addcmul) over x [B, n, D]; shift, scale [B, 1, D]."""
    return torch.addcmul(shift, x, 1 + scale)


def layer_norm(x: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x, x.shape[-1:], eps=LN_EPS)


def timestep_features(t: torch.Tensor, dim: int = TIMESTEP_DIM, max_period: float = 10000.0) -> torch.Tensor:
    """[cos | sin] features of 1000 t, the DiT convention with time in [0, 1]."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = 1000.0 * t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def sincos_pos_embed_2d(hidden_size: int, grid_size: int) -> torch.Tensor:
    """[grid*grid, hidden] table: first half encodes the column, second half the row;
    each half is [sin | cos] of p * 10000^(-k / (hidden/4))."""
    pos = torch.arange(grid_size, dtype=torch.float64)
    rows, cols = torch.meshgrid(pos, pos, indexing="ij")
    return sincos_at(hidden_size, rows.reshape(-1), cols.reshape(-1)).float()


def sincos_at(hidden_size: int, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """The table's entries at any (also fractional) positions: rows, cols [...] -> [..., hidden]."""
    if hidden_size % 4:
        raise ValueError(f"hidden_size must be divisible by 4 for the 2-D sin-cos table, got {hidden_size}")
    quarter = hidden_size // 4
    freqs = 10000.0 ** (-torch.arange(quarter, dtype=torch.float64, device=rows.device) / quarter)

    def encode(p: torch.Tensor) -> torch.Tensor:
        angles = p.to(torch.float64)[..., None] * freqs
        return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)

    return torch.cat([encode(cols), encode(rows)], dim=-1)


def mlp_embedder(in_features: int, hidden_size: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_features, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size))


def ada_ln(hidden_size: int, chunks: int) -> nn.Sequential:
    return nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, chunks * hidden_size))


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, in_channels: int, hidden_size: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, hidden_size, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class TimestepEmbedder(nn.Module):
    def __init__(self, hidden_size: int):
        super().__init__()
        self.mlp = mlp_embedder(TIMESTEP_DIM, hidden_size)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        features = timestep_features(t)
        return self.mlp(features.to(self.mlp[0].weight.dtype))


class Attention(nn.Module):
    def __init__(self, hidden_size: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size)
        self.proj = nn.Linear(hidden_size, hidden_size)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, return_weights: bool = False):
        b, length, width = x.shape
        q, k, v = self.qkv(x).view(b, length, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        if mask is not None and mask.dtype != torch.bool:
            mask = mask.to(q.dtype)
        weights = None
        if return_weights:
            weights = explicit_attention_weights(q, k, mask)
            out = weights @ v
        else:
            out = fused_attention(q, k, v, mask)
        return self.proj(out.transpose(1, 2).reshape(b, length, width)), weights


def fused_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """SDPA; on the CPU in bf16 it runs in fp32 and returns bf16, because torch's CPU flash kernel
    was slower in bf16 than in fp32 on a CPU with bf16 units (AMD EPYC, avx512_bf16, 2026-12-07:
    a training step's attention backward 65 vs 24 ms a call, its forward 18 vs 12 ms)."""
    if q.device.type != "cpu" or q.dtype != torch.bfloat16:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    if mask is not None and mask.dtype != torch.bool:
        mask = mask.float()
    with torch.autocast("cpu", enabled=False):
        out = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask)
    return out.to(q.dtype)


def explicit_attention_weights(q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The softmax that SDPA computes, materialised (for attention maps)."""
    logits = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
    if mask is not None:
        logits = logits.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else logits + mask
    return logits.softmax(dim=-1)


class Mlp(nn.Module):
    def __init__(self, hidden_size: int, mlp_ratio: float):
        super().__init__()
        inner = int(hidden_size * mlp_ratio)
        self.fc1 = nn.Linear(hidden_size, inner)
        self.fc2 = nn.Linear(inner, hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class Block(nn.Module):
    """adaLN-Zero block over the four streams. Patches take one modulation, message and queries
    share a second; the offset token is normalised but neither modulated nor gated."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.attn = Attention(hidden_size, num_heads)
        self.mlp = Mlp(hidden_size, mlp_ratio)
        self.x_adaLN_modulation = ada_ln(hidden_size, 6)
        self.r_adaLN_modulation = ada_ln(hidden_size, 6)

    def modulation(self, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The adaLN outputs [B, 6 * hidden] of the patch and the message stream; they depend on
        the time alone, so a decoding schedule can compute them ahead (``Conditioning``)."""
        return self.x_adaLN_modulation(cond), self.r_adaLN_modulation(cond)

    def forward(self, seq: torch.Tensor, modulation: tuple[torch.Tensor, torch.Tensor], num_patches: int,
                mask: torch.Tensor | None, return_weights: bool = False):
        x_mod, r_mod = (stream_chunks(mod) for mod in modulation)
        sizes = [1, num_patches, seq.shape[1] - 1 - num_patches]

        def modulated(h: torch.Tensor, first: int) -> torch.Tensor:
            off, x, r = h.split(sizes, dim=1)
            x = modulated_layer_norm(x, x_mod[first], x_mod[first + 1])
            r = modulated_layer_norm(r, r_mod[first], r_mod[first + 1])
            return torch.cat([layer_norm(off), x, r], dim=1)

        def gated_residual(residual: torch.Tensor, h: torch.Tensor, gate: int) -> torch.Tensor:
            # residual + gate * h in one pass per stream (addcmul), instead of a multiply, a
            # concatenation of the gated streams and an add over the whole sequence
            res_off, res_x, res_r = residual.split(sizes, dim=1)
            off, x, r = h.split(sizes, dim=1)
            return torch.cat([res_off + off, torch.addcmul(res_x, x, x_mod[gate]),
                              torch.addcmul(res_r, r, r_mod[gate])], dim=1)

        attn_out, weights = self.attn(modulated(seq, 0), mask, return_weights)
        seq = gated_residual(seq, attn_out, 2)
        seq = gated_residual(seq, self.mlp(modulated(seq, 3)), 5)
        return seq, weights


def stream_chunks(mod: torch.Tensor) -> list[torch.Tensor]:
    """One stream's adaLN output [B or 1, 6 * hidden] as six [B or 1, 1, hidden] broadcasts over its
    tokens: shift, scale, gate (attention), shift, scale, gate (MLP)."""
    return [chunk.unsqueeze(1) for chunk in mod.chunk(6, dim=-1)]


def modulated_layer_norm(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """modulate(layer_norm(x), shift, scale). When the whole batch shares one modulation (one row:
    every sample at the same time, as in decoding) it is LayerNorm's own affine, one pass over x
    instead of two; otherwise a LayerNorm and one addcmul."""
    if shift.shape[0] == 1:
        # in x's dtype: under a bf16 autocast the CPU kernel refuses mixed dtypes
        weight, bias = (1 + scale.view(-1)).to(x.dtype), shift.view(-1).to(x.dtype)
        return F.layer_norm(x, x.shape[-1:], weight=weight, bias=bias, eps=LN_EPS)
    return modulate(layer_norm(x), shift, scale)


class FinalLayer(nn.Module):
    def __init__(self, hidden_size: int, out_features: int):
        super().__init__()
        self.adaLN_modulation = ada_ln(hidden_size, 2)
        self.linear = nn.Linear(hidden_size, out_features)

    def forward(self, x: torch.Tensor, modulation: torch.Tensor) -> torch.Tensor:
        """``modulation``: this layer's adaLN output [B or 1, 2 * hidden] (``Conditioning.final``)."""
        shift, scale = (chunk.unsqueeze(1) for chunk in modulation.chunk(2, dim=-1))
        return self.linear(modulated_layer_norm(x, shift, scale))


class TokenHead(nn.Module):
    """LayerNorm (no affine) then Linear: reads the new message or the offset."""

    def __init__(self, hidden_size: int, out_features: int):
        super().__init__()
        self.linear = nn.Linear(hidden_size, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(layer_norm(x))


class Transformer(nn.Module):
    """The COMiT predictor (the released ``RuledDiT``), callable on its own.

    ``forward(x, t, message, offset)`` takes a latent [B, C, h, w] (a crop latent when writing the
    message, a noisy full latent when decoding), time t [B] in [0, 1], the current message codes
    [B, M, D] and the offset [B, 2], and returns a :class:`PredictorOutput`.
    """

    def __init__(self, hidden_size: int = 768, depth: int = 12, num_heads: int = 12,
                 num_msg_tokens: int = 256, msg_tokens_dim: int = 6, patch_size: int = 2,
                 max_input_size: int = 32, in_channels: int = 4, out_channels: int | None = None,
                 representation_layer: int = 4, mlp_ratio: float = 4.0,
                 attention: AttentionMode = "hard", prediction: str = "velocity",
                 crop_patch_positions: str = "top_left"):
        super().__init__()
        if attention not in ATTENTION_MODES:
            raise ValueError(f"attention must be one of {ATTENTION_MODES}, got {attention!r}")
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
        if crop_patch_positions not in CROP_PATCH_POSITIONS:
            raise ValueError(f"crop_patch_positions must be one of {CROP_PATCH_POSITIONS}, got {crop_patch_positions!r}")
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size {hidden_size} is not divisible by num_heads {num_heads}")
        if max_input_size % patch_size:
            raise ValueError(f"max_input_size {max_input_size} is not divisible by patch_size {patch_size}")
        if not 0 <= representation_layer < depth:
            raise ValueError(f"representation_layer must lie in [0, {depth}), got {representation_layer}")
        out_channels = in_channels if out_channels is None else out_channels
        if out_channels != in_channels:
            raise ValueError("out_channels must equal in_channels: the velocity lives in the input latent space")
        self.hidden_size, self.depth, self.num_heads = hidden_size, depth, num_heads
        self.num_msg_tokens, self.msg_tokens_dim = num_msg_tokens, msg_tokens_dim
        self.patch_size, self.max_input_size = patch_size, max_input_size
        self.in_channels, self.out_channels = in_channels, out_channels
        self.representation_layer, self.mlp_ratio = representation_layer, mlp_ratio
        self.attention, self.prediction = attention, prediction
        self.crop_patch_positions = crop_patch_positions
        grid = max_input_size // patch_size
        self.grid_size = grid

        self.x_embedder = PatchEmbed(patch_size, in_channels, hidden_size)
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.r_embedder = mlp_embedder(msg_tokens_dim, hidden_size)
        self.c_embedder = mlp_embedder(2, hidden_size)
        # A fixed table, stored in the state dict (loaded, never rebuilt for a loaded model).
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid, hidden_size), requires_grad=False)
        self.r_pos_embed = nn.Parameter(torch.zeros(1, num_msg_tokens, hidden_size))
        self.c_pos_embed = nn.Parameter(torch.zeros(1, 1, hidden_size))
        self.r_to_token = nn.Parameter(torch.zeros(1, 1, hidden_size))
        self.r_to_pos_embed = nn.Parameter(torch.zeros(1, num_msg_tokens, hidden_size))
        # Present in the released layout but used nowhere; kept so checkpoints load strictly.
        self.y_pos_offset = nn.Parameter(torch.zeros(1, 1, hidden_size), requires_grad=False)
        self.blocks = nn.ModuleList(Block(hidden_size, num_heads, mlp_ratio) for _ in range(depth))
        self.final_layer = FinalLayer(hidden_size, patch_size * patch_size * out_channels)
        self.r_final_layer = TokenHead(hidden_size, msg_tokens_dim)
        self.c_final_layer = TokenHead(hidden_size, 2)
        self._mask_cache: dict[tuple, torch.Tensor | None] = {}
        self.initialize_weights()

    # ------------------------------------------------------------------ set-up
    def initialize_weights(self) -> None:
        """DiT initialisation: xavier linears, zero adaLN outputs and zero velocity head."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        conv = self.x_embedder.proj
        nn.init.xavier_uniform_(conv.weight.view(conv.weight.shape[0], -1))
        nn.init.zeros_(conv.bias)
        for mlp in (self.t_embedder.mlp,):
            nn.init.normal_(mlp[0].weight, std=0.02)
            nn.init.normal_(mlp[2].weight, std=0.02)
        nn.init.normal_(self.c_pos_embed, std=0.02)
        # The released code starts the message and query vectors at std 1: at 0.02 the query
        # positions barely differ, so at first every query writes nearly the same code.
        for param in (self.r_pos_embed, self.r_to_token, self.r_to_pos_embed):
            nn.init.normal_(param, std=MESSAGE_EMBED_STD)
        with torch.no_grad():
            self.pos_embed.copy_(sincos_pos_embed_2d(self.hidden_size, self.grid_size)[None])
        for block in self.blocks:
            for ada in (block.x_adaLN_modulation, block.r_adaLN_modulation):
                nn.init.zeros_(ada[-1].weight)
                nn.init.zeros_(ada[-1].bias)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].weight)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)

    def config(self) -> dict:
        """Constructor arguments (the released `predictor` config entries plus `attention`,
        `prediction` and `crop_patch_positions`)."""
        return dict(hidden_size=self.hidden_size, depth=self.depth, num_heads=self.num_heads,
                    num_msg_tokens=self.num_msg_tokens, msg_tokens_dim=self.msg_tokens_dim,
                    patch_size=self.patch_size, max_input_size=self.max_input_size,
                    in_channels=self.in_channels, out_channels=self.out_channels,
                    representation_layer=self.representation_layer, mlp_ratio=self.mlp_ratio,
                    attention=self.attention, prediction=self.prediction,
                    crop_patch_positions=self.crop_patch_positions)

    # ------------------------------------------------------------------ pieces
    def conditioning(self, t: torch.Tensor) -> Conditioning:
        """The timestep MLP and every adaLN linear for times t [R]: one row per time."""
        cond = self.t_embedder(t)
        return Conditioning([block.modulation(cond) for block in self.blocks],
                            self.final_layer.adaLN_modulation(cond))

    def conditioning_table(self, times: torch.Tensor) -> ConditioningTable:
        """The conditioning of every time in ``times`` [K] (on the CPU), for a decoding loop."""
        return ConditioningTable(self, times)

    def attention_mask(self, num_patches: int, num_queries: int, device: torch.device) -> torch.Tensor | None:
        """Bool mask (hard) or additive 0/1 bias (released) for one sequence layout; cached."""
        key = (num_patches, num_queries, self.attention, str(device))
        if key not in self._mask_cache:
            # a normal tensor even when first built under inference_mode, so that a later
            # training step (autograd saves the released bias for backward) can use it too
            with torch.inference_mode(False):
                self._mask_cache[key] = build_attention_mask(1 + num_patches + self.num_msg_tokens, num_queries,
                                                             self.attention, device)
        return self._mask_cache[key]

    def patch_positions(self, grid_h: int, grid_w: int, location: torch.Tensor | None = None) -> torch.Tensor:
        """[1 or B, h*w, hidden]. With ``top_left`` (the released design) a crop smaller than the
        full latent takes the top-left part of the table: where it came from enters only through
        the offset. With ``absolute``, each crop's patches take their positions in the whole image,
        from the crop's ``location`` [B, 2] (its centre in [-1, 1], x first)."""
        if grid_h > self.grid_size or grid_w > self.grid_size:
            raise ValueError(f"latent of {grid_h * self.patch_size}x{grid_w * self.patch_size} exceeds "
                             f"max_input_size {self.max_input_size}")
        if self.crop_patch_positions == "absolute" and (grid_h, grid_w) != (self.grid_size, self.grid_size):
            if location is None:
                raise ValueError("this model places crop patches at their positions in the image "
                                 "(crop_patch_positions: absolute): pass the crop's location")
            # the crop's top-left patch, in patches of the full grid: centre -> corner
            top = (location[:, 1:] + 1) / 2 * self.grid_size - grid_h / 2
            left = (location[:, :1] + 1) / 2 * self.grid_size - grid_w / 2
            rows = top + torch.arange(grid_h, device=location.device).repeat_interleave(grid_w)
            cols = left + torch.arange(grid_w, device=location.device).repeat(grid_h)
            return sincos_at(self.hidden_size, rows, cols).to(self.pos_embed.dtype)
        table = self.pos_embed.view(self.grid_size, self.grid_size, -1)
        return table[:grid_h, :grid_w].reshape(1, grid_h * grid_w, -1)

    def unpatchify(self, x: torch.Tensor, grid_h: int, grid_w: int) -> torch.Tensor:
        p, c = self.patch_size, self.out_channels
        x = x.view(x.shape[0], grid_h, grid_w, p, p, c)
        return x.permute(0, 5, 1, 3, 2, 4).reshape(x.shape[0], c, grid_h * p, grid_w * p)

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor, t: torch.Tensor | float, message: torch.Tensor,
                offset: torch.Tensor, with_queries: bool = True,
                attention_layers: tuple[int, ...] = (), location: torch.Tensor | None = None,
                conditioning: Conditioning | None = None) -> PredictorOutput:
        """``conditioning``: this call's rows of a :class:`ConditioningTable` (computed from t when None)."""
        b, _, h, w = x.shape
        p = self.patch_size
        if h % p or w % p:
            raise ValueError(f"latent size {h}x{w} is not divisible by patch_size {p}")
        if message.shape[1:] != (self.num_msg_tokens, self.msg_tokens_dim):
            raise ValueError(f"message must be [B, {self.num_msg_tokens}, {self.msg_tokens_dim}], "
                             f"got {tuple(message.shape)}")
        if self.attention == "released":
            with_queries = True  # the queries influence every token in this mode
        t = torch.as_tensor(t, dtype=torch.float32, device=x.device)
        if t.dim() == 0:
            t = t.expand(b)
        grid_h, grid_w = h // p, w // p
        num_patches = grid_h * grid_w
        if conditioning is None:
            conditioning = self.conditioning(shared_time(t))
        dtype = conditioning.final.dtype

        streams = [
            self.c_embedder(offset.to(dtype))[:, None] + self.c_pos_embed,
            self.x_embedder(x) + self.patch_positions(grid_h, grid_w, location),
            self.r_embedder(message.to(dtype)) + self.r_pos_embed,
        ]
        num_queries = self.num_msg_tokens if with_queries else 0
        if with_queries:
            streams.append((self.r_to_token + self.r_to_pos_embed).expand(b, -1, -1))
        seq = torch.cat(streams, dim=1)
        mask = self.attention_mask(num_patches, num_queries, x.device)

        patch_states = message_states = None
        attentions: dict[int, torch.Tensor] = {}
        for index, (block, modulation) in enumerate(zip(self.blocks, conditioning.blocks)):
            seq, weights = block(seq, modulation, num_patches, mask, return_weights=index in attention_layers)
            if weights is not None:
                attentions[index] = weights
            if index == self.representation_layer:
                patch_states = seq[:, 1:1 + num_patches]
                message_states = seq[:, 1 + num_patches:1 + num_patches + self.num_msg_tokens]

        patches = seq[:, 1:1 + num_patches]
        velocity = self.unpatchify(self.final_layer(patches, conditioning.final), grid_h, grid_w)
        if self.prediction == "data":
            velocity = velocity_from_data(velocity, x, t)
        new_message = self.r_final_layer(seq[:, -self.num_msg_tokens:]) if with_queries else None
        offset_pred = torch.tanh(self.c_final_layer(seq[:, :1]))
        return PredictorOutput(velocity, new_message, offset_pred, patch_states, message_states, attentions)


def build_attention_mask(num_context: int, num_queries: int, mode: AttentionMode,
                         device: torch.device | str = "cpu") -> torch.Tensor | None:
    """Context (offset, patches, message) attends to context; query i to context and queries <= i.

    Returns None when nothing needs masking (hard mode without queries), a bool mask in hard
    mode, and the released additive bias (1.0 where allowed, 0.0 elsewhere) in released mode.
    """
    if mode == "hard" and num_queries == 0:
        return None
    length = num_context + num_queries
    allowed = torch.zeros(length, length, dtype=torch.bool, device=device)
    allowed[:, :num_context] = True
    allowed[num_context:, num_context:] = torch.ones(num_queries, num_queries, dtype=torch.bool,
                                                     device=device).tril()
    return allowed if mode == "hard" else allowed.float()


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
