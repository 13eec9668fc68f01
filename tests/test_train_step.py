"""The training step: crop sequences, losses, which update carries gradient, guidance dropout."""

import pytest
import torch

from comit import COMiT
from comit.model.crops import CropGrid, cut_boxes
from comit.model.transformer import velocity_from_data
from comit.train.config import StepConfig
from comit.train.losses import flow_matching_loss, negative_cosine, saturation_penalty
from comit.train.sequences import sample_sequences
from comit.train.step import TrainingStep
from comit.teachers import TeacherFeatures

from conftest import randomize, tiny_config


@pytest.fixture
def grid():
    return CropGrid(64, 24, 3)


def test_sequences_respect_counts_and_grid(grid):
    torch.manual_seed(0)
    crops = sample_sequences(256, grid, min_crops=2, max_crops=10, global_first_p=0.5)
    assert int(crops.count.min()) >= 2 and int(crops.count.max()) <= 10
    global_first = crops.size[0] == 64
    assert 0.35 < global_first.float().mean() < 0.65
    assert int(crops.count[~global_first].max()) <= 9, "no more locals than grid cells"
    for b in range(256):
        k = int(crops.count[b])
        start = int(global_first[b])
        cells = {(int(crops.top[j, b]), int(crops.left[j, b])) for j in range(start, k)}
        assert len(cells) == k - start, "a grid crop is never repeated"
        assert all(top % 20 == 0 and left % 20 == 0 for top, left in cells), "grid positions, stride 20"
        assert all(int(crops.size[j, b]) == 24 for j in range(start, k))


def test_random_positions_stay_inside(grid):
    torch.manual_seed(0)
    crops = sample_sequences(64, grid, 1, 9, 0.0, positions="random")
    used = torch.arange(crops.length)[:, None] < crops.count[None]
    assert int(crops.top[used].max()) <= 40 and int(crops.left[used].max()) <= 40
    assert len({int(t) for t in crops.top[used]}) > 9, "positions off the grid occur"


def test_locations_match_inference_geometry(grid):
    torch.manual_seed(0)
    crops = sample_sequences(32, grid, 1, 10, 0.5)
    column = torch.zeros(32, dtype=torch.long)
    expected = []
    for b in range(32):
        top, left, size = (int(crops.top[0, b]), int(crops.left[0, b]), int(crops.size[0, b]))
        from comit.model.crops import Box
        expected.append(grid.location(Box(top, left, size)))
    assert torch.allclose(crops.locations(column, 64), torch.tensor(expected))


def test_cut_equals_the_per_image_loop(grid):
    """The training cut gathers each image's window at once; the per-image slices are the reference."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(32, 3, 64, 64, generator=generator)
    top, left = torch.randint(0, 64 - 24 + 1, (2, 32), generator=generator)
    reference = torch.stack([image[:, t:t + 24, l:l + 24] for image, t, l in zip(images, top.tolist(), left.tolist())])
    assert torch.equal(cut_boxes(images, top, left, 24), reference)
    assert torch.equal(cut_boxes(images, torch.zeros(32, dtype=torch.long), torch.zeros(32, dtype=torch.long), 64), images)


def test_flow_matching_loss_is_zero_on_the_true_velocity():
    x1, noise = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8)
    assert float(flow_matching_loss(x1 - noise, x1, noise)) == 0.0
    assert float(flow_matching_loss(torch.zeros_like(x1), x1, noise)) == pytest.approx(float((x1 - noise).pow(2).mean()))


def test_data_prediction_scores_zero_on_the_clean_image_also_near_t_1():
    """prediction="data": the perfect guess x1, turned into a velocity as the model does (1 - t
    clamped at 0.05), scores 0 at every t. Against x1 - noise it would not for t > 0.95: at t = 0.97
    the guess's velocity is (1 - t) / 0.05 = 0.6 times x1 - noise, a loss of 0.16 E[(x1 - noise)²]."""
    torch.manual_seed(0)
    x1, noise = torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8)
    t = torch.tensor([0.5, 0.96, 0.97, 0.999])
    tt = t.view(-1, 1, 1, 1)
    perfect = velocity_from_data(x1, tt * x1 + (1 - tt) * noise, t)
    assert float(flow_matching_loss(perfect, x1, noise, t, "data")) == 0.0


def test_data_space_flow_loss_scores_the_clean_image_guess():
    """flow_loss="data": the error of x1_hat = x_t + (1 - t) v, whatever t; it equals the velocity
    error times (1 - t)² (1 - t clamped at 0.05 in both), and needs a data-predicting head."""
    torch.manual_seed(0)
    x1, noise, guess = torch.randn(3, 3, 8, 8), torch.randn(3, 3, 8, 8), torch.randn(3, 3, 8, 8)
    t = torch.tensor([0.1, 0.5, 0.9])
    tt = t.view(-1, 1, 1, 1)
    velocity = velocity_from_data(guess, tt * x1 + (1 - tt) * noise, t)
    expected = (guess - x1).pow(2).mean()
    assert float(flow_matching_loss(velocity, x1, noise, t, "data", space="data")) == pytest.approx(float(expected), rel=1e-5)
    per_sample = [float(flow_matching_loss(velocity[i:i + 1], x1[i:i + 1], noise[i:i + 1], t[i:i + 1], "data")) *
                  (1 - float(t[i])) ** 2 for i in range(3)]
    assert sum(per_sample) / 3 == pytest.approx(float(expected), rel=1e-4)
    with pytest.raises(ValueError, match="data-predicting head"):
        flow_matching_loss(velocity, x1, noise, t, "velocity", space="data")


def test_seen_pixels_are_the_union_of_each_images_own_crops(grid):
    torch.manual_seed(0)
    crops = sample_sequences(16, grid, 1, 10, 0.5)
    seen = crops.seen(64)
    for b in range(16):
        expected = torch.zeros(64, 64, dtype=torch.bool)
        for k in range(int(crops.count[b])):
            top, left, size = int(crops.top[k, b]), int(crops.left[k, b]), int(crops.size[k, b])
            expected[top:top + size, left:left + size] = True
        assert torch.equal(seen[b, 0], expected), b


def test_weighted_flow_loss_is_a_weighted_mean():
    torch.manual_seed(0)
    velocity, x1, noise = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    plain = flow_matching_loss(velocity, x1, noise)
    assert torch.allclose(flow_matching_loss(velocity, x1, noise, weights=torch.ones(2, 1, 8, 8)), plain)
    half = torch.zeros(2, 1, 8, 8)
    half[..., :4] = 1
    only_left = (velocity - (x1 - noise))[..., :4].pow(2).mean()
    assert torch.allclose(flow_matching_loss(velocity, x1, noise, weights=half), only_left)


def test_unseen_weight_scores_only_what_the_crops_showed(monkeypatch):
    """step.unseen_weight=0: the flow loss ignores latent cells no crop of the sequence showed
    (cells of guidance-dropout samples all count); 1 is the paper's loss."""
    torch.manual_seed(0)
    model = randomize(COMiT(tiny_config()))
    step = TrainingStep(model, StepConfig(unseen_weight=0.0, unconditional_p=0.0), teacher_dim=None)
    seen_mask = {}
    real = flow_matching_loss

    def spy(*args, weights=None, **kwargs):
        seen_mask["weights"] = weights
        return real(*args, weights=weights, **kwargs)

    monkeypatch.setattr("comit.train.step.flow_matching_loss", spy)
    step(torch.rand(8, 3, 64, 64) * 2 - 1)
    weights = seen_mask["weights"]
    assert weights.shape == (8, 1, 64, 64) and float(weights.min()) == 0.0 and float(weights.max()) == 1.0
    TrainingStep(model, StepConfig(), teacher_dim=None)(torch.rand(2, 3, 64, 64) * 2 - 1)
    assert seen_mask["weights"] is None


def test_crop_count_is_uniform_for_each_kind_of_sequence(grid):
    """K in 1..10 on a 3x3 grid: without the global crop K is uniform over 1..9 (P = 1/9 = 0.111
    each, ± 0.02 over ~10,000 sequences; clamping a draw of 1..10 gave P(K = 9) = 0.2), with it
    uniform over 1..10 (P = 0.1 each)."""
    torch.manual_seed(0)
    crops = sample_sequences(20_000, grid, min_crops=1, max_crops=10, global_first_p=0.5)
    global_first = crops.size[0] == 64
    for kind, highest in ((~global_first, 9), (global_first, 10)):
        counts = crops.count[kind]
        frequencies = torch.bincount(counts, minlength=highest + 1)[1:].float() / counts.numel()
        assert int(counts.max()) == highest
        assert torch.allclose(frequencies, torch.full_like(frequencies, 1 / highest), atol=0.02), frequencies


def test_negative_cosine_bounds_and_weights():
    a = torch.randn(4, 5, 8)
    assert float(negative_cosine(a, a)) == pytest.approx(-1.0)
    assert float(negative_cosine(a, -a)) == pytest.approx(1.0)
    student, teacher = torch.randn(3, 8), torch.randn(3, 8)
    teacher[0] = student[0]
    weights = torch.tensor([1.0, 0.0, 0.0])
    assert float(negative_cosine(student, teacher, weights)) == pytest.approx(-1.0)


def _step(config: StepConfig, teacher_dim=None) -> TrainingStep:
    torch.manual_seed(0)
    model = randomize(COMiT(tiny_config()))  # DiT's zero init would hide every gradient but the heads'
    return TrainingStep(model, config, teacher_dim=teacher_dim).train()


def test_saturation_penalty_is_zero_inside_the_radius_and_quadratic_beyond():
    raw = torch.tensor([[0.5, -1.9, 3.0, -4.0]])
    assert float(saturation_penalty(raw, 2.0)) == pytest.approx((1.0 + 4.0) / 4)
    assert float(saturation_penalty(raw.clamp(-2, 2), 2.0)) == 0.0


def test_saturation_term_and_identity_straight_through_in_the_step():
    step = _step(StepConfig(saturation_weight=0.3, fsq_straight_through="identity"))
    assert step.model.quantizer.straight_through == "identity"
    result = step(torch.rand(2, 3, 64, 64) * 2 - 1)
    assert set(result.terms) == {"fm", "saturation"}
    assert torch.allclose(result.loss, result.terms["fm"] + 0.3 * result.terms["saturation"])


def test_only_the_last_update_carries_gradient(monkeypatch):
    step = _step(StepConfig(min_crops=3, max_crops=3, global_first_p=0.0, unconditional_p=0.0))
    model = step.model
    grad_modes = []
    original = model.write

    def spy(*args, **kwargs):
        grad_modes.append(torch.is_grad_enabled())
        return original(*args, **kwargs)

    monkeypatch.setattr(model, "write", spy)
    result = step(torch.rand(4, 3, 64, 64) * 2 - 1)
    assert grad_modes == [False, False, True]
    result.loss.backward()
    assert model.predictor.r_final_layer.linear.weight.grad is not None, "the message head learns"
    assert model.predictor.r_final_layer.linear.weight.grad.abs().sum() > 0
    assert model.predictor.c_final_layer.linear.weight.grad is None, "the offset head has no target"


def test_backprop_updates_all_trains_every_write(monkeypatch):
    """The first write's output receives gradient from the loss only when the whole sequence is unrolled."""
    grads = {}
    for mode in ("last", "all"):
        step = _step(StepConfig(min_crops=3, max_crops=3, global_first_p=0.0, unconditional_p=0.0,
                                backprop_updates=mode))
        model, first = step.model, []
        original = model.write

        def spy(*args, **kwargs):
            write = original(*args, **kwargs)
            if not first:
                first.append(write.raw)
                if write.raw.requires_grad:
                    write.raw.retain_grad()
            return write

        monkeypatch.setattr(model, "write", spy)
        step(torch.rand(4, 3, 64, 64) * 2 - 1).loss.backward()
        grads[mode] = first[0].grad
    assert grads["last"] is None
    assert grads["all"] is not None and grads["all"].abs().sum() > 0


def test_training_writes_give_the_crop_locations(monkeypatch):
    """Training passes each crop's location with its write, as tokenize does (an absolute-position
    model refuses a write without one)."""
    torch.manual_seed(0)
    model = randomize(COMiT(tiny_config(crop_patch_positions="absolute")))
    step = TrainingStep(model, StepConfig(min_crops=2, max_crops=2, global_first_p=1.0)).train()
    locations = []
    original = model.write

    def spy(latents, messages, offset, location=None, box=None):
        locations.append(location)
        return original(latents, messages, offset, location, box)

    monkeypatch.setattr(model, "write", spy)
    step(torch.rand(3, 3, 64, 64) * 2 - 1).loss.backward()
    assert torch.equal(locations[0], torch.zeros(3, 2))  # the global crop: the image's centre
    assert bool((locations[1].abs().amax(dim=1) > 0.5).all())  # local crops: none at the centre


def test_unconditional_messages_are_m0(monkeypatch):
    step = _step(StepConfig(unconditional_p=1.0, min_crops=1, max_crops=2))
    seen = {}
    original = step.model.predictor.forward

    def spy(x, t, message, offset, **kwargs):
        if not kwargs.get("with_queries", True):
            seen["message"] = message
        return original(x, t, message, offset, **kwargs)

    monkeypatch.setattr(step.model.predictor, "forward", spy)
    step(torch.rand(3, 3, 64, 64) * 2 - 1)
    assert torch.equal(seen["message"], step.model.empty_message(3))


def test_alignment_terms_with_a_teacher():
    step = _step(StepConfig(), teacher_dim=12)
    teacher = TeacherFeatures(patches=torch.randn(2, 64, 12), global_=torch.randn(2, 12))
    result = step(torch.rand(2, 3, 64, 64) * 2 - 1, teacher)
    assert set(result.terms) == {"fm", "repa", "srepa"}
    for value in result.terms.values():
        assert torch.isfinite(value)
    expected = result.terms["fm"] + 0.5 * result.terms["repa"] + 0.5 * result.terms["srepa"]
    assert torch.allclose(result.loss, expected)
    result.loss.backward()
    assert step.repa[0].weight.grad.abs().sum() > 0 and step.srepa[0].weight.grad.abs().sum() > 0


def test_srepa_on_codes_reaches_only_the_written_message(monkeypatch):
    """With srepa_source=codes the projector reads the FSQ codes of the last update (all tokens),
    not the decoder's states, and guidance dropout does not hide them."""
    step = _step(StepConfig(srepa_source="codes", unconditional_p=1.0), teacher_dim=12)
    model = step.model
    assert step.srepa[0].in_features == model.config.num_msg_tokens * model.quantizer.dim
    written, seen = [], []
    observe, project = step.observe, step.srepa.forward

    def spy_observe(*args, **kwargs):
        messages, raw = observe(*args, **kwargs)
        written.append(messages)
        return messages, raw

    def spy_project(student):
        seen.append(student)
        return project(student)

    monkeypatch.setattr(step, "observe", spy_observe)
    monkeypatch.setattr(step.srepa, "forward", spy_project)
    teacher = TeacherFeatures(patches=torch.randn(2, 64, 12), global_=torch.randn(2, 12))
    result = step(torch.rand(2, 3, 64, 64) * 2 - 1, teacher)
    assert torch.equal(seen[0], written[-1].flatten(1))
    assert not torch.equal(seen[0], model.empty_message(2).flatten(1))
    assert float(result.terms["srepa"].detach()) != 0.0


def test_without_teacher_only_flow_matching():
    result = _step(StepConfig())(torch.rand(2, 3, 64, 64) * 2 - 1)
    assert set(result.terms) == {"fm"}


def test_step_is_reproducible_from_the_seed():
    images = torch.rand(3, 3, 64, 64) * 2 - 1
    losses = []
    for _ in range(2):
        step = _step(StepConfig())
        torch.manual_seed(5)
        losses.append(step(images).loss)
    assert torch.equal(losses[0], losses[1])


def test_srepa_target_is_centred_over_the_batch(monkeypatch):
    """A constant student output scores nothing against centred targets, whatever the common part."""
    import comit.train.step as step_module

    captured = {}
    original = step_module.negative_cosine

    def spy(student, teacher, weights=None):
        captured.setdefault("targets", []).append(teacher)
        return original(student, teacher, weights)

    monkeypatch.setattr(step_module, "negative_cosine", spy)
    step = _step(StepConfig(srepa_center=True), teacher_dim=4)
    common = torch.tensor([10.0, 0, 0, 0])
    teacher = TeacherFeatures(patches=torch.randn(3, 64, 4), global_=common + torch.randn(3, 4))
    step(torch.rand(3, 3, 64, 64) * 2 - 1, teacher)
    srepa_target = captured["targets"][-1]
    assert torch.allclose(srepa_target.mean(dim=0), torch.zeros(4), atol=1e-5)
    assert torch.allclose(srepa_target, teacher.global_ - teacher.global_.mean(dim=0))


def test_readout_asks_the_codes_for_the_latent():
    """step.readout_weight adds an MLP from the written codes (and the decoding offset) to the full
    latent; its MSE reaches the encoder, and it is off (no module, no term) by default."""
    assert _step(StepConfig()).readout is None
    step = _step(StepConfig(readout_weight=1.0))
    images = torch.rand(4, 3, 64, 64) * 2 - 1
    torch.manual_seed(1)
    result = step(images)
    assert "readout" in result.terms and float(result.terms["readout"].detach()) > 0
    result.terms["readout"].backward()
    encoder_grad = step.model.predictor.r_final_layer.linear.weight.grad
    assert encoder_grad is not None and float(encoder_grad.abs().sum()) > 0, "the readout trains the encoder"
    assert step.model.predictor.final_layer.linear.weight.grad is None, "and not the velocity head"


def test_conveyor_trains_every_prefix_once_with_gradient(monkeypatch):
    """With ``step.conveyor`` each step admits ``batch`` new images; every image on the belt writes
    its next crop with gradient and keeps the message for the next step; an image leaves after its
    whole sequence, so each prefix length 1..L is trained exactly once per image."""
    from comit.train.conveyor import EMPTY

    torch.manual_seed(0)
    model = randomize(COMiT(tiny_config()))
    step = TrainingStep(model, StepConfig(global_first_p=1.0, unconditional_p=0.0, conveyor=True), batch=2).train()
    length, belt = step.max_crops, step.conveyor
    assert length == 10 and belt.column.shape == (2 * length,)
    writes = []
    original = step.observe

    def spy(*args, **kwargs):
        messages, raw = original(*args, **kwargs)
        writes.append(((belt.column != EMPTY).nonzero().flatten(), messages, raw))
        return messages, raw

    monkeypatch.setattr(step, "observe", spy)
    for number in range(length + 2):
        writes.clear()
        step(torch.rand(2, 3, 64, 64) * 2 - 1).loss.backward()
        (slots, messages, raw), = writes  # one write per image and step, no prefix
        assert raw.requires_grad and raw.shape[0] == 2 * min(number + 1, length)
        assert torch.equal(belt.messages[slots], messages.detach()), "the written message is kept"
        on_belt = belt.column[belt.column != EMPTY].sort().values
        assert on_belt.tolist() == sorted(list(range(1, min(number + 1, length - 1) + 1)) * 2)


def test_conveyor_warmup_writes_the_global_crop_alone(monkeypatch):
    torch.manual_seed(0)
    model = randomize(COMiT(tiny_config()))
    step = TrainingStep(model, StepConfig(unconditional_p=0.0, conveyor=True), batch=3).train()
    sizes = []
    original = step.observe

    def spy(images, crops, column, messages, **options):
        sizes.append(crops.size[column, torch.arange(column.shape[0])])
        return original(images, crops, column, messages, **options)

    monkeypatch.setattr(step, "observe", spy)
    for _ in range(3):
        step(torch.rand(3, 3, 64, 64) * 2 - 1, global_only=True)
    assert [s.tolist() for s in sizes] == [[64] * 3] * 3, "three global crops a step, each image for one step"
    assert bool((step.conveyor.column == -1).all())


def test_conveyor_needs_its_batch_and_refuses_unrolling():
    from comit.train.config import ConfigError, load_config

    with pytest.raises(ValueError, match="pass batch="):
        TrainingStep(COMiT(tiny_config()), StepConfig(conveyor=True))
    with pytest.raises(ConfigError, match="conveyor.*backprop_updates=all"):
        load_config("tiny", ["step.conveyor=true", "step.backprop_updates=all"])


def test_every_loss_term_is_declared_and_weighted():
    """LOSS_TERMS is the one list of terms (experiment reports read it): every term a step can
    produce is in it, and each has its weight."""
    from comit.train.step import LOSS_TERMS

    step = _step(StepConfig(saturation_weight=0.3, readout_weight=1.0), teacher_dim=12)
    assert tuple(step.term_weights()) == LOSS_TERMS
    teacher = TeacherFeatures(patches=torch.randn(2, 64, 12), global_=torch.randn(2, 12))
    assert set(step(torch.rand(2, 3, 64, 64) * 2 - 1, teacher).terms) == set(LOSS_TERMS)



@pytest.mark.parametrize("global_first_p, max_crops", [(1.0, 1), (0.5, None)])
def test_the_global_crop_reuses_the_flow_targets_latent(monkeypatch, global_first_p, max_crops):
    """With a deterministic autoencoder the global crop's latent is the flow target already encoded:
    every write sees bit for bit the latents it saw when the crop was encoded again, and the step's
    loss is the same, with one full-size encode fewer. In the second case only some images start
    with the global crop, so the rows taken must be theirs."""
    import comit.train.step as step_module

    images = torch.rand(6, 3, 64, 64, generator=torch.Generator().manual_seed(3)) * 2 - 1
    config = StepConfig(global_first_p=global_first_p, max_crops=max_crops)
    losses, written, full_encodes = [], [], []
    for reuse in (True, False):
        step = _step(config)
        calls, seen, encode, write = [], [], step.model.vae.encode, step.model.write
        monkeypatch.setattr(step.model.vae, "encode", lambda pixels, encode=encode, calls=calls:
                            calls.append(pixels.shape[-1]) or encode(pixels * 1.0))
        monkeypatch.setattr(step.model, "write", lambda latents, *rest, write=write, seen=seen:
                            seen.append(latents.clone()) or write(latents, *rest))
        monkeypatch.setattr(step_module, "is_deterministic", lambda autoencoder, reuse=reuse: reuse)
        torch.manual_seed(5)
        losses.append(step(images).loss)
        written.append(seen)
        full_encodes.append(calls.count(64))
    assert torch.equal(losses[0], losses[1])
    assert len(written[0]) == len(written[1]) and all(torch.equal(a, b) for a, b in zip(*written))
    assert full_encodes[0] == 1 and full_encodes[1] == 2


def test_only_sampling_autoencoders_count_as_random():
    from comit.model.autoencoders import PixelAutoencoder, SDVAE, is_deterministic
    from comit.model.conv_autoencoder import ConvAutoencoder, ConvAutoencoderConfig

    assert is_deterministic(PixelAutoencoder()) and is_deterministic(ConvAutoencoder(ConvAutoencoderConfig(width=8)))
    sampled, mean_only = SDVAE.__new__(SDVAE), SDVAE.__new__(SDVAE)  # the flag alone, no 80 MB VAE
    sampled.__dict__["sample_posterior"], mean_only.__dict__["sample_posterior"] = True, False
    assert not is_deterministic(sampled) and is_deterministic(mean_only)
