import json
import math

import pytest
import torch

from comit.model.config import ModelConfig
from comit.model.transformer import (Transformer, build_attention_mask, count_parameters, explicit_attention_weights,
                                     sincos_at, sincos_pos_embed_2d, timestep_features)

from golden import DATA


def b_predictor() -> Transformer:
    return Transformer(**ModelConfig.sized("B").predictor_kwargs())


def test_b_size_parameter_count_and_released_layout():
    predictor = b_predictor()
    assert count_parameters(predictor) == 173_844_504
    manifest = json.loads((DATA / "manifest-comit-b.json").read_text())
    expected = {k: v for k, v in manifest["keys"].items() if k.startswith("predictor.")}
    found = {f"predictor.{k}": list(v.shape) for k, v in predictor.state_dict().items()}
    assert found == expected


def small(attention="hard", **kw) -> Transformer:
    torch.manual_seed(0)
    model = Transformer(hidden_size=32, depth=2, num_heads=4, num_msg_tokens=5, msg_tokens_dim=6, patch_size=2,
                        max_input_size=8, in_channels=3, representation_layer=0, attention=attention, **kw)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name != "pos_embed":
                p.normal_(0, 0.2)
    return model.eval()


def inputs(latent=8, batch=2):
    g = torch.Generator().manual_seed(1)
    return (torch.randn(batch, 3, latent, latent, generator=g), torch.rand(batch, generator=g),
            torch.randn(batch, 5, 6, generator=g).clamp(-1, 1), torch.rand(batch, 2, generator=g) * 2 - 1)


def test_output_shapes_and_taps():
    out = small()(*inputs())
    assert out.velocity.shape == (2, 3, 8, 8)
    assert out.message.shape == (2, 5, 6)
    assert out.offset.shape == (2, 1, 2) and out.offset.abs().max() <= 1
    assert out.patch_states.shape == (2, 16, 32)
    assert out.message_states.shape == (2, 5, 32)


def test_crop_latents_use_the_top_left_of_the_position_table():
    model = small()
    out = model(*inputs(latent=4))
    assert out.velocity.shape == (2, 3, 4, 4)
    table = model.pos_embed.view(4, 4, -1)
    assert torch.equal(model.patch_positions(2, 2)[0], table[:2, :2].reshape(4, -1))
    with pytest.raises(ValueError, match="exceeds max_input_size"):
        model(*inputs(latent=10))


def test_hard_mask_layout():
    mask = build_attention_mask(num_context=3, num_queries=2, mode="hard")
    assert mask.tolist() == [
        [True, True, True, False, False],
        [True, True, True, False, False],
        [True, True, True, False, False],
        [True, True, True, True, False],
        [True, True, True, True, True],
    ]
    assert build_attention_mask(3, 0, "hard") is None
    released = build_attention_mask(3, 2, "released")
    assert released.dtype == torch.float32 and torch.equal(released, mask.float())


def test_hard_mode_dropping_queries_is_exact():
    """Exact in exact arithmetic (float64 agrees to 1e-10); in fp32 only round-off remains,
    1e-5 of the values' scale (the residual stream here reaches ~30)."""
    model = small("hard").double()
    args = [a.double() for a in inputs()]
    full = model(*args, with_queries=True)
    dropped = model(*args, with_queries=False)
    assert dropped.message is None
    torch.testing.assert_close(dropped.velocity, full.velocity, atol=1e-10, rtol=0)
    torch.testing.assert_close(dropped.patch_states, full.patch_states, atol=1e-10, rtol=0)
    model = model.float()
    args = [a.float() for a in args]
    full, dropped = model(*args), model(*args, with_queries=False)
    for name in ("velocity", "patch_states", "message_states"):
        a, b = getattr(full, name), getattr(dropped, name)
        assert (a - b).abs().max() <= 1e-5 * a.abs().max()


def test_released_mode_keeps_queries_because_they_matter():
    model = small("released")
    args = inputs()
    out = model(*args, with_queries=False)
    assert out.message is not None  # forced back on
    hard = small("hard")
    hard.load_state_dict(model.state_dict())
    assert not torch.allclose(hard(*args).velocity, out.velocity, atol=1e-4)


def test_queries_are_causal_in_hard_mode():
    """Changing query j must not change the new message at positions < j."""
    model = small("hard")
    args = inputs()
    base = model(*args).message
    with torch.no_grad():
        model.r_to_pos_embed[0, 3] += torch.randn(32)  # not a constant: LayerNorm removes those
    changed = model(*args).message
    torch.testing.assert_close(changed[:, :3], base[:, :3], atol=1e-6, rtol=0)
    assert not torch.allclose(changed[:, 3:], base[:, 3:])


@pytest.mark.parametrize("mode", ["hard", "released"])
def test_explicit_attention_equals_fused_attention(mode):
    model = small(mode)
    args = inputs()
    fused = model(*args)
    explicit = model(*args, attention_layers=(0, 1))
    assert set(explicit.attentions) == {0, 1}
    weights = explicit.attentions[1]
    assert weights.shape == (2, 4, 1 + 16 + 5 + 5, 1 + 16 + 5 + 5)
    torch.testing.assert_close(weights.sum(-1), torch.ones_like(weights.sum(-1)))
    torch.testing.assert_close(explicit.velocity, fused.velocity, atol=1e-5, rtol=0)
    torch.testing.assert_close(explicit.message, fused.message, atol=1e-5, rtol=0)
    if mode == "hard":
        assert weights[:, :, :22, 22:].abs().max() == 0  # nothing attends to the queries


def test_explicit_weights_helper_matches_bias_semantics():
    q, k = torch.randn(1, 1, 3, 4), torch.randn(1, 1, 3, 4)
    bias = torch.tensor([[1.0, 0.0, 0.0]] * 3)
    weights = explicit_attention_weights(q, k, bias)
    logits = (q @ k.transpose(-1, -2)) / 2 + bias
    torch.testing.assert_close(weights, logits.softmax(-1))


def test_timestep_features_convention():
    t = torch.tensor([0.3])
    features = timestep_features(t)
    i = 5
    freq = 10000 ** (-i / 128)
    assert features[0, i].item() == pytest.approx(math.cos(300 * freq), abs=1e-4)
    assert features[0, 128 + i].item() == pytest.approx(math.sin(300 * freq), abs=1e-4)


def test_sincos_table_convention():
    table = sincos_pos_embed_2d(16, 4)  # quarter = 4 frequencies
    row, col = 2, 3
    position = row * 4 + col
    w1 = 10000 ** (-1 / 4)
    assert table[position, 1].item() == pytest.approx(math.sin(col * w1))  # x half, sin first
    assert table[position, 4 + 1].item() == pytest.approx(math.cos(col * w1))
    assert table[position, 8 + 1].item() == pytest.approx(math.sin(row * w1))  # y half


def test_dit_initialisation():
    model = Transformer(hidden_size=32, depth=2, num_heads=4, num_msg_tokens=5, max_input_size=8, in_channels=3,
                        representation_layer=1)
    assert model.final_layer.linear.weight.abs().max() == 0
    assert all(b.x_adaLN_modulation[-1].weight.abs().max() == 0 for b in model.blocks)
    torch.testing.assert_close(model.pos_embed[0], sincos_pos_embed_2d(32, 4))
    assert not model.pos_embed.requires_grad


def test_message_and_query_vectors_start_at_the_released_scale():
    """r_pos_embed, r_to_token and r_to_pos_embed start at std 1 (the released code's; at 0.02 the
    query positions barely differ); the offset's position vector keeps 0.02."""
    torch.manual_seed(0)
    model = Transformer(hidden_size=256, depth=1, num_heads=4, num_msg_tokens=16, max_input_size=8, in_channels=3,
                        representation_layer=0)
    for param in (model.r_pos_embed, model.r_to_token, model.r_to_pos_embed):
        assert 0.85 < float(param.detach().std()) < 1.15
    assert 0.015 < float(model.c_pos_embed.detach().std()) < 0.025


def test_unpatchify_order():
    """Output feature (a * p + b) * C + c is row a, column b inside the patch, channel c."""
    model = small()
    p, c = 2, 3
    features = torch.arange(p * p * c, dtype=torch.float32).view(1, 1, -1)
    image = model.unpatchify(features, 1, 1)
    for a in range(p):
        for b in range(p):
            for ch in range(c):
                assert image[0, ch, a, b] == (a * p + b) * c + ch


@pytest.mark.parametrize("kwargs,message", [
    (dict(attention="soft"), "attention"),
    (dict(hidden_size=30, num_heads=4), "divisible"),
    (dict(representation_layer=5), "representation_layer"),
    (dict(prediction="noise"), "prediction"),
])
def test_bad_constructor_arguments(kwargs, message):
    base = dict(hidden_size=32, depth=2, num_heads=4, num_msg_tokens=5, max_input_size=8, in_channels=3,
                representation_layer=0)
    with pytest.raises(ValueError, match=message):
        Transformer(**{**base, **kwargs})


def test_data_prediction_is_turned_into_the_velocity_of_the_path():
    """A data-predicting head x1_hat gives v = (x1_hat - x_t) / (1 - t): one Euler step to t = 1
    lands on x1_hat; the same weights read as a velocity head output x1_hat directly."""
    x, t, message, offset = inputs()
    as_data = small(prediction="data")(x, t, message, offset).velocity
    head = small(prediction="velocity")(x, t, message, offset).velocity  # same weights: the raw head
    assert torch.allclose(x + (1 - t).view(-1, 1, 1, 1) * as_data, head, atol=1e-5)
    near_one = torch.tensor([1.0, 0.99])
    clamped = small(prediction="data")(x, near_one, message, offset).velocity
    raw = small(prediction="velocity")(x, near_one, message, offset).velocity
    assert torch.allclose(clamped, (raw - x) / 0.05, atol=1e-4), "1 - t is clamped at 0.05"


# ---------------------------------------------------------------------- crop patch positions
def _crop_transformer(positions: str) -> Transformer:
    # 64-px pixel space with patches of 4: a 16x16 table; 24-px crops (6x6 patches) with stride 20 px = 5 patches
    torch.manual_seed(0)
    return Transformer(hidden_size=32, depth=1, num_heads=2, num_msg_tokens=4, patch_size=4, max_input_size=64,
                       in_channels=3, representation_layer=0, crop_patch_positions=positions)


def test_absolute_crop_positions_take_the_crops_place_in_the_table():
    model = _crop_transformer("absolute")
    table = model.pos_embed.view(16, 16, -1)
    x = (20 + 24 / 2) / 32 - 1  # centre of the crop at left = 20 px, top = 40 px
    y = (40 + 24 / 2) / 32 - 1
    positions = model.patch_positions(6, 6, torch.tensor([[x, y], [-0.625, -0.625]]))
    assert torch.allclose(positions[0], table[10:16, 5:11].reshape(36, -1), atol=1e-6)
    assert torch.allclose(positions[1], table[:6, :6].reshape(36, -1), atol=1e-6)  # the top-left crop
    assert torch.equal(model.patch_positions(16, 16, None), model.pos_embed)  # the whole image: the table
    # between two patches (a stride of 2.5 patches): the sin-cos entries at the fractional position
    half = model.patch_positions(6, 6, torch.tensor([[x - 2.5 / 8, y]]))
    assert torch.allclose(half[0, 0], sincos_at(32, torch.tensor(10.0), torch.tensor(2.5)).float(), atol=1e-6)
    with pytest.raises(ValueError, match="pass the crop's location"):
        model.patch_positions(6, 6, None)


def test_top_left_crop_positions_ignore_the_location():
    model = _crop_transformer("top_left")
    table = model.pos_embed.view(16, 16, -1)
    assert torch.equal(model.patch_positions(6, 6, torch.tensor([[0.3, 0.4]])), table[:6, :6].reshape(1, 36, -1))
    with pytest.raises(ValueError, match="crop_patch_positions must be one of"):
        _crop_transformer("sideways")


def test_cpu_bf16_attention_runs_in_fp32_and_returns_bf16():
    """On the CPU, bf16 attention is computed in fp32 (faster there); the result is fp32's, rounded."""
    import torch.nn.functional as F
    from comit.model.transformer import fused_attention

    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 20, 16, generator=generator) for _ in range(3))
    mask = torch.rand(20, 20, generator=generator) > 0.2
    mask[:, 0] = True
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert torch.equal(fused_attention(q, k, v, mask), expected), "fp32 is the plain call"
    low = [x.bfloat16().requires_grad_() for x in (q, k, v)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fused_attention(*low, mask)
    reference = F.scaled_dot_product_attention(*(x.float() for x in low), attn_mask=mask)
    assert out.dtype == torch.bfloat16 and torch.equal(out, reference.bfloat16())
    out.float().sum().backward()
    assert all(x.grad is not None and x.grad.dtype == torch.bfloat16 for x in low)
