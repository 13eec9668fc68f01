"""The crop-by-crop trace behind every picture: probes, crops, final message, attention."""

import math

import pytest
import torch

from comit.viz.trace import VizSettings, psnr, top_tokens, trace_images


def test_one_probe_per_crop_in_a_fixed_order(tiny_model, tiny_images):
    traces = trace_images(tiny_model, tiny_images, VizSettings(order=[4, 0, 8], steps=2))
    assert len(traces) == 2
    for trace in traces:
        assert trace.crop_indices == [4, 0, 8]
        assert [(b.top, b.left) for b in trace.boxes] == [(20, 20), (0, 0), (40, 40)]
        assert len(trace.one_step) == 3 and all(p.shape == (3, 64, 64) for p in trace.one_step)
        assert trace.reconstruction.shape == (3, 64, 64)
        assert trace.ids.shape == (16,) and trace.attention.shape == (16, 16, 16)


def test_crop_by_crop_gives_the_message_of_one_pass(tiny_model, tiny_images):
    """Resuming one crop at a time must write the same message as tokenizing all crops at once."""
    settings = VizSettings(order="raster_scan", num_crops=4, global_crop=True)
    traces = trace_images(tiny_model, tiny_images, settings)
    whole = tiny_model.tokenize(tiny_images, global_crop=True, order="raster_scan", num_crops=4)
    assert torch.equal(torch.stack([t.ids for t in traces]), whole.ids)
    assert traces[0].boxes[0].size == 64  # the global crop is the whole image


def test_adaptive_trace_follows_the_adaptive_policy(tiny_model, tiny_images):
    settings = VizSettings(order="adaptive", num_crops=5, seed=3)
    traces = trace_images(tiny_model, tiny_images, settings)
    noise = torch.randn(tiny_model.latent_shape(2), generator=torch.Generator().manual_seed(3))
    whole = tiny_model.tokenize(tiny_images, order="adaptive", num_crops=5, noise=noise)
    for b, trace in enumerate(traces):
        assert trace.crop_indices == whole.crop_order[:, b].tolist()
        assert trace.crop_indices[0] == 4  # the centre crop starts without a global crop
        assert len(set(trace.crop_indices)) == 5


def test_probes_are_one_step_reconstructions_from_the_shared_noise(tiny_model, tiny_images):
    traces = trace_images(tiny_model, tiny_images, VizSettings(order=[1, 2], seed=5))
    noise = torch.randn(tiny_model.latent_shape(2), generator=torch.Generator().manual_seed(5))
    tokens = tiny_model.tokenize(tiny_images, order=[1, 2], num_crops=None)
    expected = tiny_model.detokenize(tokens.messages, tokens.offsets, num_steps=1, cfg_weight=1.0, noise=noise)
    assert torch.allclose(torch.stack([t.one_step[-1] for t in traces]), expected, atol=1e-5)
    assert not torch.allclose(traces[0].one_step[0], traces[0].one_step[1])


def test_attention_maps_are_distributions(tiny_model, tiny_images):
    trace = trace_images(tiny_model, tiny_images[:1], VizSettings(order=[4]))[0]
    sums = trace.attention.flatten(1).sum(1)
    assert torch.allclose(sums, torch.ones_like(sums), atol=1e-5)


def test_same_seed_same_trace(tiny_model, tiny_images):
    first, second = (trace_images(tiny_model, tiny_images[:1], VizSettings(num_crops=3, seed=7))[0] for _ in range(2))
    assert torch.equal(first.reconstruction, second.reconstruction) and torch.equal(first.ids, second.ids)


@pytest.mark.parametrize("settings, message", [
    (VizSettings(steps=0), "steps"),
    (VizSettings(cfg=-1), "guidance"),
    (VizSettings(top_tokens=0), "top tokens"),
    (VizSettings(num_crops=10), "num_crops"),
    (VizSettings(order=[3, 12]), "out of range"),
    (VizSettings(order="spiral"), "unknown crop order"),
])
def test_bad_settings_fail_before_any_work(tiny_model, tiny_images, settings, message):
    with pytest.raises(ValueError, match=message):
        trace_images(tiny_model, tiny_images, settings)


def test_top_tokens_ranks_focused_maps_first():
    attention = torch.full((3, 4, 4), 1 / 16)
    attention[1] = 0
    attention[1, 2, 2] = 1.0  # one patch
    attention[2] = 0
    attention[2, :2, :2] = 0.25  # four patches
    assert top_tokens(attention, 2) == [1, 2]
    assert top_tokens(attention, 10) == [1, 2, 0]


def test_psnr_in_unit_range():
    image = torch.zeros(3, 8, 8)
    assert math.isinf(psnr(image, image))
    # an error of 0.2 in [-1, 1] units is 0.1 in [0, 1] units: 20 dB
    assert psnr(image + 0.2, image) == pytest.approx(20.0, abs=1e-4)
    assert psnr(image + 5, image) == pytest.approx(psnr(image + 1, image))  # clamped like a saved image
