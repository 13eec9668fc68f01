"""Token–object alignment on hand-made maps and masks."""

from __future__ import annotations

import pytest
import torch

from comit.metrics.alignment import AlignmentIoU, best_at_mask_area, best_token_iou, mask_iou, topq_binarize
from comit.metrics.alignment import _pixel_ranks


def _rect(top: int, left: int, bottom: int, right: int, size: int = 10) -> torch.Tensor:
    mask = torch.zeros(size, size, dtype=torch.bool)
    mask[top:bottom, left:right] = True
    return mask


def test_topq_keeps_exact_counts_even_with_ties():
    torch.manual_seed(0)
    maps = torch.stack([torch.rand(10, 10), torch.zeros(10, 10)])  # second map: all ties
    for q, count in ((10, 10), (30, 30), (12.5, 13), (0.5, 1), (100, 100)):
        assert topq_binarize(maps, q).sum((1, 2)).tolist() == [count, count]
    # Ties are broken towards earlier pixels in row-major order, so the result is fixed.
    assert topq_binarize(maps[1:], 20)[0].equal(_rect(0, 0, 2, 10))


def test_topq_keeps_the_largest_values():
    values = torch.arange(16.0).view(1, 4, 4)
    kept = topq_binarize(values, 25)[0]
    assert kept.flatten().nonzero().flatten().tolist() == [12, 13, 14, 15]
    with pytest.raises(ValueError, match=r"\(0, 100\]"):
        topq_binarize(values, 0)


def test_mask_iou_of_known_rectangles():
    a, b = _rect(0, 0, 4, 4), _rect(2, 2, 6, 6)  # 16 + 16 pixels, overlap 2x2 = 4
    assert mask_iou(a, b).item() == pytest.approx(4 / 28)
    assert mask_iou(a, a).item() == 1.0
    assert mask_iou(a, _rect(6, 6, 8, 8)).item() == 0.0
    empty = torch.zeros(10, 10, dtype=torch.bool)
    assert mask_iou(empty, empty).item() == 0.0  # convention
    assert mask_iou(torch.stack([a, b]), a).tolist() == pytest.approx([1.0, 4 / 28])


def test_best_token_is_the_matching_one():
    torch.manual_seed(0)
    target = _rect(0, 0, 5, 2)  # 10 pixels = top 10 % of a 10x10 map
    maps = torch.rand(3, 10, 10) * 0.1
    maps[1] += target.float()  # token 1 lights up exactly on the object
    maps[2] += _rect(5, 5, 10, 7).float()  # token 2 on somewhere else
    mean, per_q, chosen = best_token_iou(maps, target, qs=(10, 20))
    assert chosen.tolist() == [1, 1]
    assert per_q.tolist() == pytest.approx([1.0, 0.5])  # at 20 % it keeps 20 pixels
    assert mean == pytest.approx(0.75)


def test_per_object_and_per_image_on_two_objects():
    # Two 10-pixel objects in opposite corners; token 0 covers object A, token 1 object B.
    obj_a, obj_b = _rect(0, 0, 2, 5), _rect(8, 5, 10, 10)
    maps = torch.stack([obj_a.float(), obj_b.float()])[None]  # [1, T=2, 10, 10]
    masks = torch.stack([obj_a, obj_b, torch.zeros_like(obj_a)])[None]  # third slot: padding
    valid = torch.tensor([[True, True, False]])
    metric = AlignmentIoU(qs=(10,))
    metric.update(maps, masks, valid)
    result = metric.compute()
    # Each object has a perfect token; the 20-pixel union is only half covered by either.
    assert result["miou_object"] == pytest.approx(1.0)
    assert result["miou_image"] == pytest.approx(10 / 20)
    assert result["miou_object_q10"] == pytest.approx(1.0)
    assert (result["num_images"], result["num_objects"]) == (1, 2)


def test_maps_are_upsampled_to_the_mask_size():
    mask = _rect(0, 0, 4, 4, size=8)  # top-left quarter of an 8x8 image
    maps = torch.zeros(1, 2, 2, 2)
    maps[0, 0, 0, 0] = 1.0  # low-resolution token 0 points at the top-left quarter
    maps[0, 1, 1, 1] = 1.0
    metric = AlignmentIoU(qs=(25,))
    metric.update(maps, mask[None, None], torch.tensor([[True]]))
    assert metric.compute()["miou_image"] == pytest.approx(1.0)


def test_images_without_valid_objects_are_skipped():
    metric = AlignmentIoU()
    metric.update(torch.rand(1, 2, 4, 4), torch.zeros(1, 1, 4, 4, dtype=torch.bool),
                  torch.tensor([[True]]))  # valid but empty: not scored
    with pytest.raises(RuntimeError, match="no image"):
        metric.compute()


def test_maps_cut_at_the_mask_area_score_a_perfect_map_one_on_any_object_size():
    small, large = _rect(0, 0, 2, 2), _rect(4, 0, 10, 10)  # 4 and 60 of 100 pixels
    maps = torch.stack([small.float(), large.float(), _rect(1, 1, 3, 3).float()])
    best = best_at_mask_area(_pixel_ranks(maps), torch.stack([small, large]))
    assert best.tolist() == pytest.approx([1.0, 1.0])
    # Alone, the shifted map keeps 4 pixels, 1 of them on the small object: IoU 1 / 7.
    assert best_at_mask_area(_pixel_ranks(maps[2:]), small[None]).tolist() == pytest.approx([1 / 7])
    # The top-Q protocol cannot give the small object's own mask more than its area over Q.
    metric = AlignmentIoU(qs=(10, 20))
    metric.update(maps[None, :1], small[None, None], torch.tensor([[True]]))
    result = metric.compute()
    assert result["miou_object"] == pytest.approx((4 / 10 + 4 / 20) / 2)
    assert result["miou_object_matched"] == pytest.approx(1.0) and result["miou_image_matched"] == pytest.approx(1.0)
