"""The message update: one path (COMiT.write) for tokenizing and training, and the local write."""

import pytest
import torch

from comit import COMiT
from comit.model.crops import tokens_inside
from comit.train.config import StepConfig
from comit.train.step import TrainingStep

from conftest import randomize, tiny_config


def _cells(mask: torch.Tensor, side: int) -> set[tuple[int, int]]:
    return {(int(i) // side, int(i) % side) for i in mask.nonzero().flatten()}


def test_tokens_inside_a_crop_are_those_whose_cell_centre_it_holds():
    # 64 px, an 8 x 8 message grid (cell centres at 4, 12, ..., 60), the shapes model's 24-px crops.
    box = torch.tensor([[0, 0, 64], [0, 0, 24], [20, 40, 24]])
    inside = tokens_inside(box[:, 0], box[:, 1], box[:, 2], image_size=64, num_tokens=64)
    assert inside.shape == (3, 64)
    assert bool(inside[0].all()), "the global crop covers every token"
    assert _cells(inside[1], 8) == {(r, c) for r in range(3) for c in range(3)}
    # rows [20, 44): centres 20, 28, 36; columns [40, 64): centres 44, 52, 60
    assert _cells(inside[2], 8) == {(r, c) for r in (2, 3, 4) for c in (5, 6, 7)}


def test_a_local_write_keeps_the_tokens_outside_its_crop():
    torch.manual_seed(0)
    model = randomize(COMiT(tiny_config(message_write="local")))
    images = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        first = model.tokenize(images, global_crop=True, order=[0], num_crops=1)
        after = model.tokenize(images, global_crop=True, order=[1], num_crops=1, resume=first)  # local crop 0
    inside = tokens_inside(*torch.tensor([[0], [0], [24]]), image_size=64, num_tokens=16)[0]
    assert _cells(inside, 4) == {(0, 0)}
    assert torch.equal(after.messages[:, ~inside], first.messages[:, ~inside])
    assert not torch.equal(after.messages[:, inside], first.messages[:, inside]), "the crop's own tokens are rewritten"


def test_the_paper_write_replaces_every_token():
    torch.manual_seed(0)
    model = randomize(COMiT(tiny_config()))
    images = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        first = model.tokenize(images, global_crop=True, order=[0], num_crops=1)
        after = model.tokenize(images, global_crop=True, order=[1], num_crops=1, resume=first)
    changed = (after.messages != first.messages).any(dim=2)
    assert bool(changed.float().mean() > 0.5), "a replace write rewrites tokens far outside the crop"


def test_training_writes_through_the_same_local_write(monkeypatch):
    """Each training write keeps, for every image, the tokens outside that image's own crop."""
    torch.manual_seed(0)
    model = randomize(COMiT(tiny_config(message_write="local")))
    step = TrainingStep(model, StepConfig(min_crops=3, max_crops=3, global_first_p=0.0)).train()
    writes = []
    original = model.write

    def spy(latents, messages, offset, location=None, box=None):
        write = original(latents, messages, offset, location, box)
        writes.append((messages.detach(), write.codes.detach(), box))
        return write

    monkeypatch.setattr(model, "write", spy)
    step(torch.rand(4, 3, 64, 64) * 2 - 1).loss.backward()
    assert len(writes) == 3
    for before, after, box in writes:
        inside = tokens_inside(*box, image_size=64, num_tokens=16)
        assert torch.equal(after[~inside], before[~inside])
        assert bool((inside.sum(dim=1) < 16).all()), "local crops only"


def test_a_local_write_needs_the_crop_box():
    model = randomize(COMiT(tiny_config(message_write="local")))
    latents = torch.zeros(1, 3, 24, 24)
    with pytest.raises(ValueError, match="pass the crop's box"):
        model.write_message(latents, model.empty_message(1), torch.zeros(1, 2))


def test_a_local_write_needs_a_square_message_grid():
    with pytest.raises(ValueError, match="not a square"):
        tiny_config(message_write="local", num_msg_tokens=12)


def test_a_fill_write_into_the_empty_message_rewrites_every_token_then_writes_locally():
    torch.manual_seed(0)
    fill = randomize(COMiT(tiny_config(message_write="local_fill")))
    local = COMiT(tiny_config(message_write="local"))
    local.load_state_dict(fill.state_dict())
    images = torch.rand(2, 3, 64, 64) * 2 - 1
    outside = ~tokens_inside(*torch.tensor([[0], [0], [24]]), image_size=64, num_tokens=16)[0]
    empty = fill.empty_message(2)
    with torch.no_grad():
        first = fill.tokenize(images, global_crop=False, order=[0], num_crops=1)
        first_local = local.tokenize(images, global_crop=False, order=[0], num_crops=1)
        second = fill.tokenize(images, global_crop=False, order=[8], num_crops=1, resume=first)
    assert torch.equal(first_local.messages[:, outside], empty[:, outside]), "local: outside stays m0"
    assert bool((first.messages[:, outside] != empty[:, outside]).any(dim=2).float().mean() > 0.5), \
        "fill: the first write guesses the tokens outside its crop too"
    inside_first = ~outside
    assert torch.equal(first.messages[:, inside_first], first_local.messages[:, inside_first])
    last = tokens_inside(*torch.tensor([[40], [40], [24]]), image_size=64, num_tokens=16)[0]
    assert torch.equal(second.messages[:, ~last], first.messages[:, ~last]), "later writes are local"


def test_training_fills_on_the_first_write_only(monkeypatch):
    torch.manual_seed(0)
    model = randomize(COMiT(tiny_config(message_write="local_fill")))
    step = TrainingStep(model, StepConfig(min_crops=3, max_crops=3, global_first_p=0.0)).train()
    writes = []
    original = model.write

    def spy(latents, messages, offset, location=None, box=None):
        write = original(latents, messages, offset, location, box)
        writes.append((messages.detach(), write.codes.detach(), box))
        return write

    monkeypatch.setattr(model, "write", spy)
    step(torch.rand(4, 3, 64, 64) * 2 - 1).loss.backward()
    assert len(writes) == 3
    first_before, first_after, first_box = writes[0]
    assert torch.equal(first_before, model.empty_message(4))
    outside = ~tokens_inside(*first_box, image_size=64, num_tokens=16)
    assert bool((first_after[outside] != first_before[outside]).any(dim=1).float().mean() > 0.5)
    for before, after, box in writes[1:]:
        inside = tokens_inside(*box, image_size=64, num_tokens=16)
        assert torch.equal(after[~inside], before[~inside])


def test_write_rules_other_than_replace_need_a_square_message():
    with pytest.raises(ValueError, match="'local_fill' lays the message on a square grid"):
        tiny_config(message_write="local_fill", num_msg_tokens=12)
