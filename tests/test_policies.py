"""Crop policies (comit.model.policies) and COMiT.tokenize_steps."""

from dataclasses import dataclass

import pytest
import torch

from comit.model.crops import CropGrid
from comit.model.policies import (NAMED_POLICIES, Adaptive, CropPlan, CropPolicy, CropStep, ExplicitOrder, FixedOrder,
                                  PerImageRandomOrder, RandomOrder, RasterScan, fixed_order, parse_policy)

GRID = CropGrid(64, 24, 3)


def fields_equal(a, b) -> bool:
    return all(torch.equal(getattr(a, name), getattr(b, name))
               for name in ("messages", "offsets", "ids", "crop_order", "num_crops")) and a.global_crop == b.global_crop


def step(policy: CropPolicy, plan: CropPlan, seen: torch.Tensor, errors=None, global_crop=False, k=0) -> torch.Tensor:
    return policy.choose(CropStep(k, plan, GRID, global_crop, seen, errors))


# ---------------------------------------------------------------------- each policy
def test_raster_scan_visits_every_crop_in_index_order():
    plan = RasterScan().plan(GRID, 2, None, True)
    assert plan.steps == 10 and plan.order.T.tolist() == [list(range(10))] * 2
    assert RasterScan().plan(GRID, 1, 3, False).order[:, 0].tolist() == [0, 1, 2]


def test_random_order_draws_from_the_generator_like_crop_grid():
    plan = RandomOrder().plan(GRID, 3, 4, True, torch.Generator().manual_seed(5))
    assert torch.equal(plan.order, fixed_order(GRID, "random", 3, 4, True, torch.Generator().manual_seed(5)))
    assert (plan.order[0] == 0).all() and plan.steps == 4


def test_per_image_random_orders_do_not_depend_on_the_batch():
    together = PerImageRandomOrder((11, 12, 13)).plan(GRID, 3, None, False).order
    alone = PerImageRandomOrder((12,)).plan(GRID, 1, None, False).order
    assert torch.equal(together[:, 1], alone[:, 0])
    assert sorted(together[:, 0].tolist()) == list(range(9))
    with pytest.raises(ValueError, match="2 seeds for 3 images"):
        PerImageRandomOrder((1, 2)).plan(GRID, 3, None, False)


def test_explicit_orders_shared_or_per_image():
    assert ExplicitOrder([5, 6, 8]).plan(GRID, 2, 2, False).order.T.tolist() == [[5, 6], [5, 6]]
    assert ExplicitOrder([[1, 2], [3, 0]]).plan(GRID, 2, None, True).order.T.tolist() == [[1, 2], [3, 0]]
    assert ExplicitOrder(torch.tensor([2, 4])).plan(GRID, 1, None, False).order[:, 0].tolist() == [2, 4]
    ExplicitOrder([[1, 2], [3, 0]]).check(GRID, None, False)  # per-image lists fix their own batch
    with pytest.raises(ValueError, match="out of range"):
        ExplicitOrder([[1, 2], [3, 9]]).check(GRID, None, False)


def test_fixed_orders_choose_from_their_plan():
    plan = RasterScan().plan(GRID, 2, None, False)
    assert step(RasterScan(), plan, torch.zeros(2, 9, dtype=torch.bool), k=4).tolist() == [4, 4]


def test_adaptive_starts_at_the_centre_or_global_crop_then_follows_the_error():
    policy = Adaptive()
    plan = policy.plan(GRID, 2, 3, False)
    assert plan == CropPlan(steps=3) and policy.reads_errors
    seen = torch.zeros(2, 9, dtype=torch.bool)
    assert step(policy, plan, seen).tolist() == [4, 4]
    assert step(policy, plan, torch.zeros(2, 10, dtype=torch.bool), global_crop=True).tolist() == [0, 0]
    errors = torch.zeros(2, 9)
    errors[0, 7], errors[0, 2], errors[1, 3] = 5.0, 3.0, 1.0
    seen[0, 7] = True  # seen crops are never chosen again, however large their error
    assert step(policy, plan, seen, errors).tolist() == [2, 3]
    seen10 = torch.zeros(2, 10, dtype=torch.bool)
    assert step(policy, plan, seen10, errors, global_crop=True).tolist() == [8, 4]  # locals shift by one


def test_adaptive_checks_the_crops_left():
    with pytest.raises(ValueError, match=r"num_crops must be an integer in \[1, 2\]"):
        Adaptive().plan(GRID, 1, 3, False, available=2)
    with pytest.raises(ValueError, match="adaptive order is chosen while tokenizing"):
        fixed_order(GRID, "adaptive", 1, 3, False)


# ---------------------------------------------------------------------- the parser
def test_parse_policy():
    assert parse_policy("raster_scan") == RasterScan() and parse_policy("random") == RandomOrder()
    assert parse_policy("adaptive") == Adaptive()
    assert parse_policy([4, 1]) == ExplicitOrder([4, 1])
    policy = PerImageRandomOrder((1,))
    assert parse_policy(policy) is policy
    with pytest.raises(ValueError, match="unknown crop order 'spiral'"):
        parse_policy("spiral")


def test_the_names_without_torch_are_the_policies_names():
    from comit.model.policy_names import POLICY_NAMES  # what `comit --help` lists

    assert POLICY_NAMES == tuple(NAMED_POLICIES)


# ---------------------------------------------------------------------- tokenize_steps
@pytest.mark.parametrize("order, global_crop, extra", [
    ("adaptive", False, {}),
    ("adaptive", True, {"error_signal": "latent"}),
    ("random", True, {}),
    ([[4, 1, 0], [2, 8, 6]], False, {}),
    ("raster_scan", False, {"error_budget": 0.3}),
])
def test_tokenize_steps_equal_tokenize_at_every_count(tiny_model, tiny_images, order, global_crop, extra):
    steps = list(tiny_model.tokenize_steps(tiny_images, global_crop=global_crop, order=order, num_crops=3,
                                           generator=torch.Generator().manual_seed(3), **extra))
    assert len(steps) == 3
    for k, tokens in enumerate(steps, start=1):
        fresh = tiny_model.tokenize(tiny_images, global_crop=global_crop, order=order, num_crops=k,
                                    generator=torch.Generator().manual_seed(3), **extra)
        assert fields_equal(tokens, fresh), k


def test_tokenize_steps_returns_the_resumed_tokens_when_a_budget_stops_at_once(tiny_model, tiny_images):
    start = tiny_model.tokenize(tiny_images, order="raster_scan", num_crops=2)
    steps = tiny_model.tokenize_steps(tiny_images, order="adaptive", num_crops=2, resume=start, error_budget=1e9)
    with pytest.raises(StopIteration) as stop:
        next(steps)
    assert fields_equal(stop.value.value.to("cpu"), start)  # ExceptionInfo -> StopIteration -> value
    assert fields_equal(tiny_model.tokenize(tiny_images, order="adaptive", num_crops=2, resume=start,
                                            error_budget=1e9), start)


# ---------------------------------------------------------------------- a policy of one's own
@dataclass(frozen=True)
class ReverseRaster(FixedOrder):
    """The last crop first."""

    def order(self, crops, batch_size, global_crop, generator):
        return torch.arange(crops.num_indices(global_crop)).flip(0)[:, None].expand(-1, batch_size)


class LeastErrorFirst(CropPolicy):
    """Reads errors like the adaptive policy, but picks the best-reconstructed unseen crop."""

    reads_errors = True

    def plan(self, crops, batch_size, num_crops, global_crop, generator=None, available=None):
        return CropPlan(steps=crops.check_num_crops(num_crops, global_crop, available=available))

    def choose(self, step):
        if step.errors is None:
            return torch.zeros(step.seen.shape[0], dtype=torch.long, device=step.seen.device)
        return step.errors.masked_fill(step.seen, float("inf")).argmin(dim=1)


def test_a_custom_fixed_order_works_through_tokenize(tiny_model, tiny_images):
    tokens = tiny_model.tokenize(tiny_images, order=ReverseRaster(), num_crops=3)
    assert fields_equal(tokens, tiny_model.tokenize(tiny_images, order=[8, 7, 6], num_crops=None))


def test_a_custom_error_reading_policy_works_through_tokenize(tiny_model, tiny_images):
    noise = torch.randn(tiny_model.latent_shape(2), generator=torch.Generator().manual_seed(0))
    tokens = tiny_model.tokenize(tiny_images, order=LeastErrorFirst(), num_crops=4, noise=noise)
    assert tokens.crop_order[0].tolist() == [0, 0]
    assert all(len(set(column)) == 4 for column in tokens.crop_order.T.tolist())
    replay = tiny_model.tokenize(tiny_images, order=tokens.crop_order.T.tolist(), num_crops=None)
    assert fields_equal(tokens, replay)  # the choices, replayed as a fixed order, give the same tokens
