"""Evaluation plumbing: per-image randomness, crop-by-crop tokens equal fresh tokenizations."""

from __future__ import annotations

import pytest
import torch

from comit.eval.protocol import (EvalSettings, collate, crop_plan, crop_steps, load_dataset, parse_numbers,
                               tokenize_batch)


def _same(a, b) -> bool:
    return torch.equal(a.ids, b.ids) and torch.equal(a.offsets, b.offsets) and torch.equal(a.crop_order, b.crop_order)


@pytest.mark.parametrize("order", ["adaptive", "random"])
def test_tokens_do_not_depend_on_the_batch(tiny_model, tiny_images, order):
    settings = EvalSettings(order=order, num_crops=3, global_crop=False, seed=4)
    positions = torch.tensor([7, 3])
    together = tokenize_batch(tiny_model, tiny_images, positions, settings)
    alone = tokenize_batch(tiny_model, tiny_images[1:], positions[1:], settings)
    assert torch.equal(together.ids[1:], alone.ids) and torch.equal(together.crop_order[:, 1:], alone.crop_order)
    other_seed = tokenize_batch(tiny_model, tiny_images, positions, EvalSettings(order=order, seed=5))
    if order == "random":  # the orders themselves change with the seed
        assert not torch.equal(other_seed.crop_order, together.crop_order)


@pytest.mark.parametrize("order", ["raster_scan", "random", "adaptive"])
@pytest.mark.parametrize("global_crop", [False, True])
def test_crop_steps_equal_fresh_tokenizations(tiny_model, tiny_images, order, global_crop):
    positions = torch.tensor([0, 1])
    steps = list(crop_steps(tiny_model, tiny_images, positions, order, global_crop, seed=2, max_crops=4))
    assert len(steps) == 4
    for k in (1, 4):
        fresh = tokenize_batch(tiny_model, tiny_images, positions,
                               EvalSettings(order=order, num_crops=k, global_crop=global_crop, seed=2))
        assert _same(steps[k - 1], fresh), (order, global_crop, k)
    if global_crop:
        assert (steps[-1].crop_order[0] == 0).all()


def test_random_plans_are_permutations_with_the_global_crop_first(tiny_model):
    plans = crop_plan(tiny_model, "random", True, torch.arange(5), seed=0)
    assert all(p[0] == 0 and sorted(p) == list(range(10)) for p in plans)
    assert len({tuple(p) for p in plans}) > 1


def test_settings_are_checked(tiny_model):
    with pytest.raises(ValueError, match="unknown crop order"):
        EvalSettings(order="spiral").check(tiny_model)
    with pytest.raises(ValueError, match="num_crops"):
        EvalSettings(num_crops=10).check(tiny_model)  # 9 local crops
    with pytest.raises(ValueError, match="out of range"):
        EvalSettings(order=[0, 12], num_crops=None).check(tiny_model)


def test_collate_pads_objects():
    items = [{"image": torch.zeros(3, 4, 4), "masks": torch.ones(n, 4, 4, dtype=torch.bool),
              "valid": torch.ones(n, dtype=torch.bool)} for n in (1, 3)]
    batch = collate(items)
    assert batch["masks"].shape == (2, 3, 4, 4)
    assert batch["valid"].tolist() == [[True, False, False], [True, True, True]]
    assert not batch["masks"][0, 1:].any()


def test_dataset_limits_and_lists():
    assert len(load_dataset("shapes", 32, num_images=5)) == 5
    with pytest.raises(ValueError, match="--num-images"):
        load_dataset("shapes", 32, num_images=0)
    assert parse_numbers("10, 20,30") == [10.0, 20.0, 30.0]
    with pytest.raises(ValueError, match="--q must be"):
        parse_numbers("10,x", float, "--q")
