"""The public API on a non-default geometry: 64-px images, 24-px crops on a 3x3 grid, pixel space."""

import itertools

import pytest
import torch

from comit import COMiT, Tokens
from conftest import randomize, tiny_config

ORDERS = ["raster_scan", "random", "adaptive", [4, 1, 0], [[1, 2], [3, 0]]]


@pytest.mark.parametrize("global_crop,order,num_crops",
                         list(itertools.product([False, True], ORDERS, [1, 2, None])))
def test_every_order_global_crop_and_num_crops(tiny_model, tiny_images, global_crop, order, num_crops):
    if order == "adaptive" and num_crops is None:
        num_crops = tiny_model.crops.num_indices(global_crop)
    tokens = tiny_model.tokenize(tiny_images, global_crop=global_crop, order=order, num_crops=num_crops,
                                 generator=torch.Generator().manual_seed(0))
    expected_k = num_crops or (len(order[0]) if isinstance(order[0], list) else
                               len(order) if isinstance(order, list) else 9 + global_crop)
    assert tokens.messages.shape == (2, 16, 6)
    assert tokens.ids.shape == (2, 16) and tokens.ids.dtype == torch.int64
    assert tokens.crop_order.shape == (expected_k, 2)
    assert torch.equal(tokens.num_crops, torch.full((2,), expected_k))
    assert torch.equal(tokens.ids, tiny_model.quantizer.codes_to_indices(tokens.messages))
    last = tokens.crop_order[-1]
    expected_offsets = -tiny_model.crops.locations(last, global_crop)
    torch.testing.assert_close(tokens.offsets, expected_offsets)
    if isinstance(order, str) and global_crop:
        assert (tokens.crop_order[0] == 0).all()  # the global crop comes first
    for column in tokens.crop_order.T.tolist():
        assert len(set(column)) == len(column)  # no crop twice
    out = tiny_model.detokenize(tokens.messages, tokens.offsets, num_steps=1)
    assert out.shape == tiny_images.shape


def test_explicit_order_is_followed(tiny_model, tiny_images):
    tokens = tiny_model.tokenize(tiny_images, order=[[5, 0, 8], [2, 7, 1]], num_crops=None)
    assert tokens.crop_order.T.tolist() == [[5, 0, 8], [2, 7, 1]]


def test_message_is_the_chain_of_updates(tiny_model, tiny_images):
    """Tokenize equals m_k = FSQ(predictor(latent(c_k), t=1, m_{k-1}, loc_k - loc_{k-1})) by hand."""
    order = [3, 7]
    tokens = tiny_model.tokenize(tiny_images, order=order, num_crops=None)
    crops, message, previous = tiny_model.crops, tiny_model.empty_message(2), None
    for index in order:
        indices = torch.full((2,), index)
        location = crops.locations(indices, False)
        offset = torch.zeros(2, 2) if previous is None else location - previous
        with torch.no_grad():
            raw = tiny_model.predictor(crops.cut(tiny_images, indices, False), torch.ones(2), message, offset).message
        message, previous = tiny_model.quantizer(raw), location
    torch.testing.assert_close(tokens.messages, message)


def test_adaptive_picks_the_worst_window(tiny_model, tiny_images):
    """The second crop is the unvisited window with the largest one-step error."""
    noise = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    tokens = tiny_model.tokenize(tiny_images, order="adaptive", num_crops=2, noise=noise)
    assert (tokens.crop_order[0] == 4).all()  # the centre crop starts without the global crop
    first = tiny_model.tokenize(tiny_images, order=[4], num_crops=None)
    with torch.no_grad():
        recon = noise + tiny_model.velocity(noise, torch.zeros(2), first.messages, first.offsets)
    errors = tiny_model.crops.window_errors((recon - tiny_images).pow(2).sum(1, keepdim=True))
    errors[:, 4] = -float("inf")
    assert torch.equal(tokens.crop_order[1], errors.argmax(1))


def test_adaptive_keeps_one_visited_mask_per_image(tiny_model):
    """Released code shares one mask across the batch; here a crop chosen for one image stays
    available to the others (documented choice): identical images make identical choices."""
    images = torch.rand(1, 3, 64, 64).expand(3, -1, -1, -1) * 2 - 1
    noise = torch.randn(1, 3, 64, 64).expand(3, -1, -1, -1)
    tokens = tiny_model.tokenize(images, order="adaptive", num_crops=4, noise=noise)
    assert (tokens.crop_order == tokens.crop_order[:, :1]).all()


def test_tokenize_is_reproducible_with_a_generator(tiny_model, tiny_images):
    runs = [tiny_model.tokenize(tiny_images, order="random", num_crops=4, generator=torch.Generator().manual_seed(7))
            for _ in range(2)]
    assert torch.equal(runs[0].crop_order, runs[1].crop_order) and torch.equal(runs[0].ids, runs[1].ids)
    a = tiny_model.detokenize(runs[0].messages, runs[0].offsets, num_steps=2, generator=torch.Generator().manual_seed(1))
    b = tiny_model.detokenize(runs[0].messages, runs[0].offsets, num_steps=2, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


@pytest.mark.parametrize("order", ["adaptive", "raster_scan"])
def test_resume_continues_exactly(tiny_model, tiny_images, order):
    """Two crops, then one more with resume=, equals three crops in one call."""
    noise = torch.randn(2, 3, 64, 64)
    whole = tiny_model.tokenize(tiny_images, order=order, num_crops=3, noise=noise)
    head = tiny_model.tokenize(tiny_images, order=order, num_crops=2, noise=noise)
    if order == "adaptive":
        more = tiny_model.tokenize(tiny_images, order="adaptive", num_crops=1, noise=noise, resume=head)
    else:
        more = tiny_model.tokenize(tiny_images, order=[2], num_crops=None, resume=head)
    assert torch.equal(more.crop_order, whole.crop_order)
    assert torch.equal(more.ids, whole.ids)
    torch.testing.assert_close(more.offsets, whole.offsets)
    assert torch.equal(more.num_crops, torch.full((2,), 3))


def test_resume_never_reencodes_the_prefix(tiny_model, tiny_images):
    head = tiny_model.tokenize(tiny_images, order="raster_scan", num_crops=2)
    calls = []
    original = tiny_model.vae.encode
    tiny_model.vae.encode = lambda images: calls.append(images.shape) or original(images)
    tiny_model.tokenize(tiny_images, order="adaptive", num_crops=2, resume=head)
    assert calls == [(2, 3, 24, 24)] * 2  # one crop per image per new step, nothing for the prefix


def test_resume_rejects_revisits_and_mismatches(tiny_model, tiny_images):
    head = tiny_model.tokenize(tiny_images, order="raster_scan", num_crops=2)
    with pytest.raises(ValueError, match="revisits crops"):
        tiny_model.tokenize(tiny_images, order=[1, 5], num_crops=None, resume=head)
    with pytest.raises(ValueError, match="resume tokens hold 2 images but 1"):
        tiny_model.tokenize(tiny_images[:1], order="adaptive", num_crops=1, resume=head)
    with pytest.raises(ValueError, match=r"num_crops must be an integer in \[1, 7\]"):
        tiny_model.tokenize(tiny_images, order="adaptive", num_crops=8, resume=head)


def test_error_budget_stops_images_separately(tiny_model, tiny_images):
    noise = torch.randn(2, 3, 64, 64)
    full = tiny_model.tokenize(tiny_images, order="adaptive", num_crops=5, noise=noise)
    # a budget above every error stops after the first crop; zero budget never stops
    stopped = tiny_model.tokenize(tiny_images, order="adaptive", num_crops=5, noise=noise, error_budget=1e9)
    assert stopped.num_crops.tolist() == [1, 1]
    assert (stopped.crop_order[1:] == -1).all()
    never = tiny_model.tokenize(tiny_images, order="adaptive", num_crops=5, noise=noise, error_budget=0.0)
    assert torch.equal(never.ids, full.ids) and never.num_crops.tolist() == [5, 5]
    # a budget between the two images' errors stops only the better one
    first = tiny_model.tokenize(tiny_images, order="adaptive", num_crops=1, noise=noise)
    with torch.no_grad():
        recon = noise + tiny_model.velocity(noise, torch.zeros(2), first.messages, first.offsets)
    mse = (recon - tiny_images).pow(2).mean(dim=(1, 2, 3))
    budget = mse.mean().item()
    mixed = tiny_model.tokenize(tiny_images, order="adaptive", num_crops=5, noise=noise, error_budget=budget)
    assert sorted(mixed.num_crops.tolist()) == [1, 5]
    late = int(mixed.num_crops.argmax())
    assert torch.equal(mixed.ids[late], full.ids[late])
    torch.testing.assert_close(mixed.offsets[1 - late], first.offsets[1 - late])


def test_attention_maps(tiny_model, tiny_images):
    tokens = tiny_model.tokenize(tiny_images, order="raster_scan", num_crops=2)
    maps = tiny_model.attention_maps(tiny_images, tokens, layer=-1, generator=torch.Generator().manual_seed(0))
    assert maps.shape == (2, 16, 16, 16)
    torch.testing.assert_close(maps.sum(dim=(-1, -2)), torch.ones(2, 16))
    transposed = tiny_model.attention_maps(tiny_images, tokens, direction="patch_to_token", heads=0)
    assert transposed.shape == (2, 16, 16, 16)
    with pytest.raises(ValueError, match="layer"):
        tiny_model.attention_maps(tiny_images, tokens, layer=5)
    with pytest.raises(ValueError, match="heads"):
        tiny_model.attention_maps(tiny_images, tokens, heads="median")


def test_reconstruct_equals_tokenize_then_detokenize(tiny_model, tiny_images):
    noise = torch.randn(2, 3, 64, 64)
    rec = tiny_model.reconstruct(tiny_images, order="raster_scan", num_crops=2, num_steps=3, noise=noise)
    tokens = tiny_model.tokenize(tiny_images, order="raster_scan", num_crops=2)
    assert torch.equal(rec, tiny_model.detokenize(tokens.messages, tokens.offsets, num_steps=3, noise=noise))


def test_decode_false_returns_latents_and_solvers_run(tiny_model, tiny_images):
    tokens = tiny_model.tokenize(tiny_images, order="raster_scan", num_crops=1)
    for solver in ("euler", "heun", "midpoint"):
        out = tiny_model.detokenize(tokens.messages, tokens.offsets, num_steps=2, solver=solver, decode=False)
        assert out.shape == (2, 3, 64, 64) and torch.isfinite(out).all()


@pytest.mark.parametrize("images,message", [
    (torch.zeros(1, 3, 32, 32), r"\[B, 3, 64, 64\]"),
    (torch.zeros(3, 64, 64), r"\[B, 3, 64, 64\]"),
    (torch.zeros(1, 1, 64, 64), r"\[B, 3, 64, 64\]"),
    (torch.zeros(1, 3, 64, 64, dtype=torch.uint8), "floating point"),
])
def test_bad_images(tiny_model, images, message):
    with pytest.raises(ValueError, match=message):
        tiny_model.tokenize(images)


def test_bad_detokenize_inputs(tiny_model, tiny_images):
    tokens = tiny_model.tokenize(tiny_images, order="raster_scan", num_crops=1)
    with pytest.raises(ValueError, match="messages must be FSQ codes"):
        tiny_model.detokenize(tokens.messages[:, :5], tokens.offsets)
    with pytest.raises(ValueError, match="offsets must be"):
        tiny_model.detokenize(tokens.messages, tokens.offsets[:1])
    with pytest.raises(ValueError, match="noise must have shape"):
        tiny_model.detokenize(tokens.messages, tokens.offsets, noise=torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValueError, match="token ids must lie"):
        tiny_model.detokenize(torch.full((2, 16), 70000), tokens.offsets)
    with pytest.raises(ValueError, match="unknown solver"):
        tiny_model.detokenize(tokens.messages, tokens.offsets, solver="rk45")


def test_bad_tokenize_arguments(tiny_model, tiny_images):
    with pytest.raises(ValueError, match="num_crops"):
        tiny_model.tokenize(tiny_images, order="adaptive", num_crops=10)
    with pytest.raises(ValueError, match="out of range"):
        tiny_model.tokenize(tiny_images, order=[0, 9])
    with pytest.raises(ValueError, match="twice"):
        tiny_model.tokenize(tiny_images, order=[1, 1])
    with pytest.raises(ValueError, match="unknown crop order"):
        tiny_model.tokenize(tiny_images, order="spiral")


def test_tokens_move_between_devices(tiny_model, tiny_images):
    tokens = tiny_model.tokenize(tiny_images, order="raster_scan", num_crops=1)
    moved = tokens.to("cpu")
    assert isinstance(moved, Tokens) and len(moved) == 2 and moved.global_crop is False


def test_plain_object_autoencoder(tiny_images):
    """Anything with encode/decode/downsample/latent_channels works, nn.Module or not."""
    from conftest import randomize, tiny_config

    class Halves:
        downsample, latent_channels = 1, 3

        def encode(self, images):
            return images / 2

        def decode(self, latents):
            return latents * 2

    model = randomize(COMiT(tiny_config(), autoencoder=Halves()))
    assert "vae" not in dict(model.named_children())
    assert model.reconstruct(tiny_images, num_crops=1, num_steps=1).shape == tiny_images.shape


def test_absolute_crop_positions_write_each_crop_at_its_place(tmp_path):
    """The same pixels seen as crop 0 and as crop 8 write the same message when only the offset
    (zero for a first crop) says where they came from (the paper's design), and different ones
    when the crop's patches take their positions in the image; the field survives a save."""
    images = torch.rand(1, 3, 64, 64) * 2 - 1
    images[..., 40:, 40:] = images[..., :24, :24]  # crop 8 (bottom right) shows what crop 0 shows
    written = {}
    for positions in ("top_left", "absolute"):
        model = randomize(COMiT(tiny_config(crop_patch_positions=positions)))
        first, last = (model.tokenize(images, order=[k], num_crops=1, global_crop=False).messages for k in (0, 8))
        written[positions] = (first, last)
        model.save_pretrained(tmp_path / positions)
        assert COMiT.from_pretrained(tmp_path / positions).config.crop_patch_positions == positions
    assert torch.equal(*written["top_left"])
    assert not torch.equal(*written["absolute"])
