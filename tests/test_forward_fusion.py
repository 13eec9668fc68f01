"""The fused forward (issue #17) gives the plain forward's outputs (fp32, to 1e-5 of the values' scale).

The plain forward is written out below exactly as the released block computes it: LayerNorm, then
x * (1 + scale) + shift per stream, concatenation, gate multiply, concatenation, residual add,
with every adaLN linear evaluated per call. The fused forward shares one conditioning row across a
batch at one time (LayerNorm's own affine), uses addcmul, and takes the adaLN outputs of a whole
decoding schedule from one pass (ConditioningTable).
"""

from functools import partial

import pytest
import torch
import torch.nn.functional as F

from comit import COMiT
from comit.model.guidance import guided_velocity
from comit.model.solvers import evaluation_times, integrate
from comit.model.transformer import LN_EPS, build_attention_mask

from conftest import randomize, tiny_config

MODES = ["hard", "released"]


def assert_same(fast: torch.Tensor, plain: torch.Tensor) -> None:
    scale = max(1.0, plain.abs().max().item())
    assert (fast - plain).abs().max().item() <= 1e-5 * scale


@pytest.fixture(scope="module", params=MODES)
def model(request) -> COMiT:
    return randomize(COMiT(tiny_config(attention=request.param)), seed=5)


def plain_forward(predictor, x, t, message, offset, with_queries):
    """The released block's arithmetic, op by op (velocity and raw message)."""
    ln = partial(F.layer_norm, normalized_shape=(predictor.hidden_size,), eps=LN_EPS)
    b, _, h, w = x.shape
    grid_h, grid_w = h // predictor.patch_size, w // predictor.patch_size
    n = grid_h * grid_w
    if predictor.attention == "released":
        with_queries = True
    cond = predictor.t_embedder(t)
    streams = [predictor.c_embedder(offset)[:, None] + predictor.c_pos_embed,
               predictor.x_embedder(x) + predictor.patch_positions(grid_h, grid_w),
               predictor.r_embedder(message) + predictor.r_pos_embed]
    if with_queries:
        streams.append((predictor.r_to_token + predictor.r_to_pos_embed).expand(b, -1, -1))
    seq = torch.cat(streams, dim=1)
    queries = predictor.num_msg_tokens if with_queries else 0
    mask = build_attention_mask(1 + n + predictor.num_msg_tokens, queries, predictor.attention)
    sizes = [1, n, seq.shape[1] - 1 - n]
    for block in predictor.blocks:
        xm = [c.unsqueeze(1) for c in block.x_adaLN_modulation(cond).chunk(6, dim=-1)]
        rm = [c.unsqueeze(1) for c in block.r_adaLN_modulation(cond).chunk(6, dim=-1)]

        def modulated(hidden, i):
            off, xs, rs = ln(hidden).split(sizes, dim=1)
            return torch.cat([off, xs * (1 + xm[i + 1]) + xm[i], rs * (1 + rm[i + 1]) + rm[i]], dim=1)

        def gated(hidden, i):
            off, xs, rs = hidden.split(sizes, dim=1)
            return torch.cat([off, xs * xm[i], rs * rm[i]], dim=1)

        seq = seq + gated(block.attn(modulated(seq, 0), mask)[0], 2)
        seq = seq + gated(block.mlp(modulated(seq, 3)), 5)
    shift, scale = (c.unsqueeze(1) for c in predictor.final_layer.adaLN_modulation(cond).chunk(2, dim=-1))
    out = predictor.final_layer.linear(ln(seq[:, 1:1 + n]) * (1 + scale) + shift)
    velocity = predictor.unpatchify(out, grid_h, grid_w)
    message_out = predictor.r_final_layer(seq[:, -predictor.num_msg_tokens:]) if with_queries else None
    return velocity, message_out


def call_args(batch: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, 3, 24, 24, generator=generator), torch.randn(batch, 16, 6, generator=generator),
            torch.randn(batch, 2, generator=generator))


@pytest.mark.parametrize("with_queries", [True, False])
@pytest.mark.parametrize("times", [[0.3, 0.3, 0.3], [0.1, 0.5, 0.9]], ids=["shared-time", "mixed-times"])
def test_fused_forward_equals_the_plain_block_arithmetic(model, with_queries, times):
    """Shared time: one conditioning row, LayerNorm's affine; mixed: LayerNorm then addcmul."""
    x, message, offset = call_args(3)
    t = torch.tensor(times)
    with torch.no_grad():
        fused = model.predictor(x, t, message, offset, with_queries=with_queries)
        velocity, message_out = plain_forward(model.predictor, x, t, message, offset, with_queries)
    assert_same(fused.velocity, velocity)
    if message_out is not None:
        assert_same(fused.message, message_out)


def test_a_shared_time_gives_one_conditioning_row(model):
    x, message, offset = call_args(3)
    shared = model.predictor.conditioning(torch.full((1,), 0.3))
    per_sample = model.predictor.conditioning(torch.full((3,), 0.3))
    assert shared.final.shape[0] == 1 and per_sample.final.shape[0] == 3
    with torch.no_grad():
        one_row = model.predictor(x, torch.full((3,), 0.3), message, offset, conditioning=shared)
        three_rows = model.predictor(x, torch.full((3,), 0.3), message, offset, conditioning=per_sample)
    assert_same(one_row.velocity, three_rows.velocity)


def test_fused_forward_trains_like_the_plain_one(model):
    """The fused paths carry gradients too (training uses the same blocks)."""
    x, message, offset = call_args(2)
    t = torch.tensor([0.2, 0.7])
    model.predictor.zero_grad(set_to_none=True)
    model.predictor(x, t, message, offset).velocity.square().sum().backward()
    fused = {n: p.grad.clone() for n, p in model.predictor.named_parameters() if p.grad is not None}
    model.predictor.zero_grad(set_to_none=True)
    plain_forward(model.predictor, x, t, message, offset, True)[0].square().sum().backward()
    for name, param in model.predictor.named_parameters():
        if param.grad is not None:
            assert_same(fused[name], param.grad)
    model.predictor.zero_grad(set_to_none=True)


# ---------------------------------------------------------------------- the decoding schedule's table
@pytest.mark.parametrize("solver", ["euler", "heun", "midpoint"])
def test_evaluation_times_are_the_times_the_solver_passes(solver):
    seen = []
    integrate(lambda x, t: seen.append(t[0].item()) or torch.zeros_like(x), torch.zeros(2, 3), 4, solver)
    assert evaluation_times(4, solver).tolist() == sorted(set(seen))


@pytest.mark.parametrize("solver", ["euler", "heun"])
@pytest.mark.parametrize("weight", [1.0, 7.5])
def test_decoding_with_the_table_equals_decoding_without(model, solver, weight):
    messages, offsets = call_args(2, seed=1)[1].clamp(-1, 1), call_args(2, seed=1)[2]
    noise = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    empty = model.empty_message(2)
    table = model.predictor.conditioning_table(evaluation_times(3, solver))
    with torch.no_grad():
        with_table = integrate(guided_velocity(partial(model.velocity, table=table), messages, empty, offsets, weight),
                               noise, 3, solver)
        without = integrate(guided_velocity(model.velocity, messages, empty, offsets, weight), noise, 3, solver)
    assert_same(with_table, without)


def test_detokenize_runs_each_adaln_linear_once_per_call(model):
    """The whole schedule's adaLN outputs come from one pass, not one per step."""
    linear = model.predictor.blocks[0].x_adaLN_modulation[-1]
    calls = []
    handle = linear.register_forward_hook(lambda module, inputs, output: calls.append(inputs[0].shape[0]))
    try:
        model.detokenize(model.empty_message(2), torch.zeros(2, 2), num_steps=4, cfg_weight=7.5, decode=False,
                         generator=torch.Generator().manual_seed(0))
    finally:
        handle.remove()
    assert calls == [4]  # one pass over the 4 Euler times


def test_a_time_outside_the_table_is_computed_as_usual(model):
    table = model.predictor.conditioning_table(torch.tensor([0.0, 0.5]))
    assert table.lookup(torch.tensor([0.5, 0.5])).final.shape[0] == 1
    assert table.lookup(torch.tensor([0.0, 0.5])).final.shape[0] == 2
    assert table.lookup(torch.tensor([0.25, 0.5])) is None
