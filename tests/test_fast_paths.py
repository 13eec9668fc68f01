"""Every inference fast path gives the plain path's outputs (fp32, to 1e-5 of the values' scale).

The plain path is comit.bench.baseline: the released code's call pattern re-enacted with our
components (re-tokenize each prefix, reconstruct after the last crop, unconditional pass at
w = 1, queries kept, guidance passes as separate calls), with flags that switch one fast path
back on at a time. Call counts show that the fast paths really do less work.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from comit import COMiT
from comit.bench import baseline
from comit.bench.counting import count_calls
from comit.model.acceleration import autocast
from comit.model.config import AutoencoderConfig

from conftest import randomize, tiny_config

MODES = ["hard", "released"]


def assert_same(fast: torch.Tensor, plain: torch.Tensor) -> None:
    """1e-5 of the values' scale (at least 1): fused kernels reorder float sums."""
    scale = max(1.0, plain.abs().max().item())
    assert (fast - plain).abs().max().item() <= 1e-5 * scale


@pytest.fixture(scope="module", params=MODES)
def model(request) -> COMiT:
    return randomize(COMiT(tiny_config(attention=request.param)), seed=3)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(11)) * 2 - 1


@pytest.fixture(scope="module")
def noise() -> torch.Tensor:
    return torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(12))


@pytest.fixture(scope="module")
def tokens(model, images, noise):
    return model.tokenize(images, order="adaptive", num_crops=3, noise=noise)


# ---------------------------------------------------------------------- transformer
@pytest.mark.parametrize("with_queries", [True, False])
def test_fused_attention_equals_explicit_softmax(model, with_queries):
    """SDPA with the bool mask (hard) or the +1 bias (released) vs softmax(q k^T / sqrt(d) + A) @ v."""
    x, message = torch.randn(2, 3, 24, 24), model.empty_message(2)
    args = (x, torch.ones(2), message, torch.randn(2, 2))
    with torch.no_grad():
        fused = model.predictor(*args, with_queries=with_queries)
        explicit = model.predictor(*args, with_queries=with_queries, attention_layers=(0, 1))
    assert_same(fused.velocity, explicit.velocity)
    if fused.message is not None:
        assert_same(fused.message, explicit.message)


# ---------------------------------------------------------------------- detokenize
@pytest.mark.parametrize("weight", [0.0, 1.0, 7.5])
def test_detokenize_equals_the_released_call_pattern(model, tokens, noise, weight):
    fast = model.detokenize(tokens.messages, tokens.offsets, num_steps=3, cfg_weight=weight, noise=noise)
    plain = baseline.detokenize(model, tokens.messages, tokens.offsets, noise, num_steps=3, cfg_weight=weight)
    assert_same(fast, plain)


def test_dropping_queries_in_hard_mode_decoding(model, tokens, noise):
    """Only the queries differ: the fast path has 1 + N + M tokens per call, the plain 1 + N + 2M."""
    plain_flags = dict(batch_passes=True, skip_unconditional_at_1=True)
    with count_calls(model) as plain_calls:
        plain = baseline.detokenize(model, tokens.messages, tokens.offsets, noise, num_steps=2, keep_queries=True,
                                    **plain_flags)
    with count_calls(model) as fast_calls:
        fast = model.detokenize(tokens.messages, tokens.offsets, num_steps=2, noise=noise)
    assert_same(fast, plain)
    dropped = model.config.attention == "hard"
    assert [q for _, _, q in fast_calls.transformer] == [not dropped] * 2
    assert [q for _, _, q in plain_calls.transformer] == [True] * 2


@pytest.mark.parametrize("weight", [0.0, 1.0])
def test_no_unconditional_pass_at_weight_0_or_1(model, tokens, noise, weight):
    """The plain path runs the unconditional pass at w = 1 and applies APG; the result is v_cond."""
    with count_calls(model) as plain_calls:
        plain = baseline.detokenize(model, tokens.messages, tokens.offsets, noise, num_steps=2, cfg_weight=weight,
                                    keep_queries=False, batch_passes=True, skip_unconditional_at_1=False)
    with count_calls(model) as fast_calls:
        fast = model.detokenize(tokens.messages, tokens.offsets, num_steps=2, cfg_weight=weight, noise=noise)
    assert_same(fast, plain)
    assert [b for b, _, _ in fast_calls.transformer] == [3, 3]  # conditional only
    if weight == 1.0:
        assert [b for b, _, _ in plain_calls.transformer] == [6, 6]


def test_guidance_passes_batched_equal_separate_calls(model, tokens, noise):
    with count_calls(model) as plain_calls:
        plain = baseline.detokenize(model, tokens.messages, tokens.offsets, noise, num_steps=3, cfg_weight=7.5,
                                    keep_queries=False, batch_passes=False, skip_unconditional_at_1=True)
    with count_calls(model) as fast_calls:
        fast = model.detokenize(tokens.messages, tokens.offsets, num_steps=3, cfg_weight=7.5, noise=noise)
    assert_same(fast, plain)
    assert [b for b, _, _ in fast_calls.transformer] == [6] * 3
    assert [b for b, _, _ in plain_calls.transformer] == [3] * 6


def test_inference_mode_changes_nothing_but_bookkeeping(model, tokens, noise):
    fast = model.detokenize(tokens.messages, tokens.offsets, num_steps=2, noise=noise, decode=False)
    assert fast.is_inference()
    plain_detokenize = COMiT.detokenize.__wrapped__  # the same code without the inference_mode decorator
    with torch.enable_grad():
        plain = plain_detokenize(model, tokens.messages, tokens.offsets, num_steps=2, noise=noise, decode=False)
    assert plain.requires_grad and not plain.is_inference()
    assert torch.equal(fast, plain.detach())


# ---------------------------------------------------------------------- adaptive tokenize
@pytest.mark.parametrize("global_crop", [False, True])
def test_adaptive_tokenize_equals_the_released_call_pattern(model, images, noise, global_crop):
    """Same crop orders and tokens with 5 transformer calls, 3 encodes and 2 decodes instead of
    15, 9 and 3 (one batched reconstruction per step, crops encoded once, nothing after the last
    crop, no unconditional pass at w = 1)."""
    with count_calls(model) as fast_calls:
        fast = model.tokenize(images, global_crop=global_crop, order="adaptive", num_crops=3, noise=noise)
    with count_calls(model) as plain_calls:
        plain = baseline.tokenize_adaptive(model, images, noise, num_crops=3, global_crop=global_crop)
    assert torch.equal(fast.crop_order, plain.crop_order)
    assert torch.equal(fast.ids, plain.ids)
    torch.testing.assert_close(fast.offsets, plain.offsets, atol=0, rtol=0)
    assert len(set(fast.crop_order[1].tolist())) > 1  # the images really chose differently
    assert (len(fast_calls.transformer), len(fast_calls.vae_encode), len(fast_calls.vae_decode)) == (5, 3, 2)
    assert (len(plain_calls.transformer), len(plain_calls.vae_encode), len(plain_calls.vae_decode)) == (15, 9, 3)
    assert all(batch == 3 for batch, _, _ in fast_calls.transformer)  # every image in every call


# ---------------------------------------------------------------------- latent error signal
class PoolAutoencoder(nn.Module):
    """A factor-2 autoencoder: average pool plus a fixed 3 -> 4 channel map, and its pseudo-inverse."""

    downsample = 2
    latent_channels = 4

    def __init__(self):
        super().__init__()
        self.register_buffer("weight", torch.randn(4, 3, generator=torch.Generator().manual_seed(5)))

    def encode(self, images):
        return torch.einsum("oc,bchw->bohw", self.weight, F.avg_pool2d(images, 2))

    def decode(self, latents):
        pixels = torch.einsum("co,bohw->bchw", torch.linalg.pinv(self.weight), latents)
        return F.interpolate(pixels, scale_factor=2, mode="nearest")


def pooled_model() -> COMiT:
    config = tiny_config(autoencoder=AutoencoderConfig(kind="custom", channels=4, downsample=2), patch_size=2)
    return randomize(COMiT(config, autoencoder=PoolAutoencoder()), seed=4)


def test_latent_error_signal_equals_pixels_for_the_identity_autoencoder(images, noise):
    model = randomize(COMiT(tiny_config()), seed=3)
    pixels = model.tokenize(images, order="adaptive", num_crops=4, noise=noise)
    latent = model.tokenize(images, order="adaptive", num_crops=4, noise=noise, error_signal="latent")
    assert torch.equal(pixels.crop_order, latent.crop_order) and torch.equal(pixels.ids, latent.ids)


def test_latent_error_signal_picks_the_worst_latent_window(images):
    """Second crop = the unvisited window whose mean latent error (image latent vs the one-step
    reconstruction) is largest; no VAE decode, one whole-image encode."""
    model = pooled_model()
    noise = torch.randn(3, 4, 32, 32, generator=torch.Generator().manual_seed(6))
    with count_calls(model) as calls:
        tokens = model.tokenize(images, order="adaptive", num_crops=2, noise=noise, error_signal="latent")
    assert len(calls.vae_decode) == 0 and calls.vae_encode == [(3, 3, 64, 64), (3, 3, 24, 24), (3, 3, 24, 24)]
    first = model.tokenize(images, order=[4], num_crops=None)
    with torch.no_grad():
        recon = noise + model.velocity(noise, torch.zeros(3), first.messages, first.offsets)
    cell_errors = (recon - model.vae.encode(images)).pow(2).sum(1)  # [B, 32, 32]
    windows = torch.stack([cell_errors[:, r * 10:r * 10 + 12, c * 10:c * 10 + 12].mean(dim=(1, 2))
                           for r in range(3) for c in range(3)], dim=1)
    windows[:, 4] = -float("inf")
    assert torch.equal(tokens.crop_order[1], windows.argmax(1))


def test_error_signal_arguments_are_checked(images):
    model = randomize(COMiT(tiny_config()))
    with pytest.raises(ValueError, match="error_signal must be one of"):
        model.tokenize(images, error_signal="dct")
    with pytest.raises(ValueError, match="error_budget is in pixel units"):
        model.tokenize(images, error_signal="latent", error_budget=0.1)


# ---------------------------------------------------------------------- host syncs
class SyncCounter(TorchDispatchMode):
    """Counts the ops that make the host wait for the device (scalar reads, data-dependent shapes)."""

    SYNCING = {"_local_scalar_dense", "nonzero", "item"}

    def __init__(self):
        super().__init__()
        self.syncs = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.__name__.split(".")[0] in self.SYNCING:
            self.syncs += 1
        return func(*args, **(kwargs or {}))


def test_detokenize_steps_never_wait_for_the_device(model, tokens, noise):
    """Host syncs happen only while setting up (checking the empty message's ids), never per step."""
    for weight in (1.0, 7.5):
        counts = []
        for steps in (2, 5):
            with SyncCounter() as counter:
                model.detokenize(tokens.messages, tokens.offsets, num_steps=steps, cfg_weight=weight, noise=noise)
            counts.append(counter.syncs)
        assert counts[0] == counts[1] <= 2


def test_tokenize_syncs_a_few_times_per_crop_not_per_call(model, images, noise):
    counts = []
    for num_crops in (2, 4):
        with SyncCounter() as counter:
            model.tokenize(images, order="adaptive", num_crops=num_crops, noise=noise)
        counts.append(counter.syncs)
    assert (counts[1] - counts[0]) / 2 <= 8  # per extra crop: picking groups and marking visited crops


# ---------------------------------------------------------------------- bf16 (opt-in, not exact)
def test_bf16_autocast_runs_and_keeps_float32_state(model, images, noise):
    with autocast("cpu", "bf16"):
        tokens = model.tokenize(images, order="adaptive", num_crops=2, noise=noise)
        images_bf16 = model.detokenize(tokens.messages, tokens.offsets, num_steps=2, noise=noise)
    assert tokens.messages.dtype == torch.float32 and images_bf16.dtype == torch.float32
    images_fp32 = model.detokenize(tokens.messages, tokens.offsets, num_steps=2, noise=noise)
    scale = images_fp32.abs().max().item()
    assert (images_bf16 - images_fp32).abs().max().item() <= 0.05 * scale  # bf16 has 8 significant bits


def test_masks_cached_during_inference_serve_training_too(model, images):
    """The attention mask is cached on first use; built under inference_mode it must still be a
    normal tensor, or a later training step (the released bias is saved for backward) fails."""
    model.predictor._mask_cache.clear()
    model.tokenize(images, order=[4], num_crops=None)  # fills the cache under inference_mode
    latents = model.crops.cut(images, torch.full((3,), 4), False)
    out = model.predictor(latents, torch.ones(3), model.empty_message(3), torch.zeros(3, 2))
    out.message.sum().backward()
    assert model.predictor.blocks[0].attn.qkv.weight.grad is not None
    model.predictor.zero_grad(set_to_none=True)


# ---------------------------------------------------------------------- SD-VAE memory layout
def test_sd_vae_channels_last_inputs_change_nothing():
    from diffusers import AutoencoderKL

    from comit.model.autoencoders import SDVAE

    torch.manual_seed(0)
    small = AutoencoderKL(block_out_channels=(32, 64), down_block_types=("DownEncoderBlock2D",) * 2,
                          up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=32,
                          layers_per_block=1).eval()
    fast = SDVAE(vae=small, sample_posterior=False)  # channels-last inputs by default
    plain = SDVAE(vae=small, sample_posterior=False, channels_last=False)
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        latents = fast.encode(images)
        assert_same(latents, plain.encode(images))
        decoded = fast.decode(latents)
        assert_same(decoded, plain.decode(latents))
    assert latents.is_contiguous() and decoded.is_contiguous()  # callers get the default layout back
    sampled = [SDVAE(vae=small, channels_last=flag).encode(images, generator=torch.Generator().manual_seed(2))
               for flag in (True, False)]
    assert_same(*sampled)  # the same posterior draws
