"""Token–object alignment: do individual message tokens attend to whole objects?

Each token has an attention map over the image. A map is binarised by keeping its top q % of
pixels; its IoU with an object mask measures how well that token covers the object, and the
best token (max over tokens) is the object's score. Scores are averaged over several q so no
single threshold decides the result.

That protocol's ceiling is under 1 for any object that does not cover exactly q % of the image: a
map keeping c pixels scores at most min(c, a) / max(c, a) against a mask of a pixels (averaged over
Q = 10–50 %, at most about 0.67, for objects of about 30 % of the image), and on small objects it is
low (the shapes data's: 0.21 per object, docs/evaluation.md). Hence two controls beside every score:
random maps (the floor) and the object masks themselves as maps (``oracle_*``: the best any map can
score), and a second binarisation whose ceiling is 1 on any data: each map cut at the mask's own
area (``*_matched``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .spec import NUM_IMAGES, MetricSpec

# Every number ``evaluate_alignment`` reports, in its order; random maps give the floor to beat,
# the object masks as maps the ceiling.
ALIGN_METRICS = (
    MetricSpec("miou_image", "token–object mIoU per image", floor="random_miou_image",
               ceiling="oracle_miou_image", headline=True, compared=True),
    MetricSpec("miou_object", "token–object mIoU per object", floor="random_miou_object",
               ceiling="oracle_miou_object", headline=True, compared=True),
    MetricSpec("random_miou_image", "mIoU per image of random maps", higher_is_better=None, headline=True),
    MetricSpec("random_miou_object", "mIoU per object of random maps", higher_is_better=None, headline=True),
    MetricSpec("oracle_miou_image", "mIoU per image of the masks as maps", higher_is_better=None, headline=True),
    MetricSpec("oracle_miou_object", "mIoU per object of the masks as maps", higher_is_better=None, headline=True),
    MetricSpec("miou_image_matched", "token–object IoU per image, maps cut at the mask's area",
               floor="random_miou_image_matched", ceiling="oracle_miou_image_matched", compared=True),
    MetricSpec("miou_object_matched", "token–object IoU per object, maps cut at the mask's area",
               floor="random_miou_object_matched", ceiling="oracle_miou_object_matched", compared=True),
    MetricSpec("random_miou_image_matched", "IoU per image of random maps cut at the mask's area",
               higher_is_better=None),
    MetricSpec("random_miou_object_matched", "IoU per object of random maps cut at the mask's area",
               higher_is_better=None),
    MetricSpec("oracle_miou_image_matched", "IoU per image of the masks as maps cut at their area",
               higher_is_better=None),
    MetricSpec("oracle_miou_object_matched", "IoU per object of the masks as maps cut at their area",
               higher_is_better=None),
    NUM_IMAGES,
    MetricSpec("num_objects", "objects", higher_is_better=None),
)


def _topq_count(q: float, num_pixels: int) -> int:
    """Number of pixels in the top q %: ``ceil(q / 100 * num_pixels)``."""
    if not 0.0 < q <= 100.0:
        raise ValueError(f"q must lie in (0, 100], got {q}")
    # Multiply before dividing and round off float noise, so e.g. q=30 of 100 pixels gives
    # exactly 30 (0.3 * 100 is 30.000000000000004, whose ceil is 31).
    return max(1, math.ceil(round(q * num_pixels / 100.0, 9)))


def _pixel_ranks(maps: torch.Tensor) -> torch.Tensor:
    """Rank of every pixel within its map, 0 = largest value: ``[T, H, W]`` -> ``[T, H*W]``.

    A stable sort makes ties deterministic: among equal values the earlier pixel (row-major)
    ranks first. ``torch.topk`` does not promise any order among ties.
    """
    if maps.ndim != 3:
        raise ValueError(f"expected maps [T, H, W], got shape {tuple(maps.shape)}")
    if not torch.isfinite(maps).all():
        raise ValueError("attention maps contain NaN or inf")
    flat = maps.flatten(1)
    order = torch.sort(flat, dim=1, descending=True, stable=True).indices
    positions = torch.arange(flat.shape[1], device=flat.device).expand_as(order)
    return torch.empty_like(order).scatter_(1, order, positions)


def topq_binarize(maps: torch.Tensor, q: float) -> torch.Tensor:
    """Keep the top ``q`` percent of each map's pixels: ``[T, H, W]`` float -> bool.

    Exactly ``ceil(q / 100 * H * W)`` pixels are kept per map; ties are broken towards the
    earlier pixel in row-major order.
    """
    count = _topq_count(q, maps.shape[-1] * maps.shape[-2])
    return (_pixel_ranks(maps) < count).view(maps.shape)


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Intersection over union of boolean masks ``[..., H, W]`` (broadcast) -> float ``[...]``.

    Two empty masks have IoU 0 by convention (not 1): an empty prediction never counts as a
    match, and the callers skip empty ground-truth masks anyway.
    """
    if a.dtype != torch.bool or b.dtype != torch.bool:
        raise ValueError(f"mask_iou expects bool masks, got {a.dtype} and {b.dtype}")
    intersection = (a & b).sum((-2, -1)).float()
    union = (a | b).sum((-2, -1)).float()
    return torch.where(union > 0, intersection / union.clamp(min=1), torch.zeros_like(union))


def _iou_matrix(binary: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """IoU of every binarised map ``[T, P]`` with every mask ``[O, P]`` -> ``[T, O]``.

    A matrix product counts the intersections at once; float32 counts are exact up to 2^24
    pixels, far beyond any image here.
    """
    binary_f, masks_f = binary.float(), masks.float()
    intersection = binary_f @ masks_f.T
    union = binary_f.sum(1, keepdim=True) + masks_f.sum(1) - intersection
    return torch.where(union > 0, intersection / union.clamp(min=1), torch.zeros_like(union))


def _best_per_mask(maps: torch.Tensor, masks: torch.Tensor, qs: Sequence[float], ranks: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Best IoU and best token per q and mask: maps ``[T, H, W]``, masks ``[O, H, W]`` ->
    two ``[Q, O]`` tensors (ties between tokens go to the lowest token index)."""
    ranks = _pixel_ranks(maps) if ranks is None else ranks
    flat_masks = masks.flatten(1)
    best, chosen = [], []
    for q in qs:
        ious = _iou_matrix(ranks < _topq_count(q, ranks.shape[1]), flat_masks)
        values, tokens = ious.max(0)
        best.append(values)
        chosen.append(tokens)
    return torch.stack(best), torch.stack(chosen)


def best_at_mask_area(ranks: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Best IoU per mask when every map keeps as many pixels as the mask holds: pixel ranks
    ``[T, P]`` (``_pixel_ranks``), masks ``[O, H, W]`` -> ``[O]``. A map equal to the mask scores 1."""
    flat = masks.flatten(1)
    areas = flat.sum(1)
    kept = ranks[:, None, :] < areas[None, :, None]  # [T, O, P], exactly areas[o] pixels per map
    intersection = (kept & flat[None]).sum(-1).float()
    union = 2 * areas[None].float() - intersection
    return (intersection / union.clamp(min=1)).max(0).values


def best_token_iou(maps: torch.Tensor, mask: torch.Tensor, qs: Sequence[float]
                   ) -> tuple[float, torch.Tensor, torch.Tensor]:
    """How well the best token covers one mask.

    Args:
        maps: attention maps ``[T, H, W]``, one per token.
        mask: boolean object mask ``[H, W]``.
        qs: percentages of pixels kept when binarising the maps.

    Returns:
        ``(mean over qs of the max-over-tokens IoU, per-q IoU [Q], chosen token per q [Q])``.
    """
    if mask.shape != maps.shape[-2:]:
        raise ValueError(f"mask shape {tuple(mask.shape)} differs from map size "
                         f"{tuple(maps.shape[-2:])}")
    best, chosen = _best_per_mask(maps, mask[None], qs)
    per_q = best[:, 0]
    return float(per_q.mean()), per_q, chosen[:, 0]


class AlignmentIoU:
    """Mean best-token IoU between attention maps and object masks.

    ``compute()`` returns a dict with
        ``miou_image``: per image, the union of its valid objects is one foreground mask (the
            paper's single-object protocol); mean over images of the best-token IoU averaged
            over qs,
        ``miou_object``: per object, the best-token IoU of each valid object on its own,
            averaged over objects (fair on multi-object images, where one token cannot cover
            scattered objects),
        ``miou_image_q{q}`` / ``miou_object_q{q}``: the same at each single q,
        ``miou_image_matched`` / ``miou_object_matched``: the same with each map cut at the
            mask's own area instead of at the qs (ceiling 1 whatever the objects' sizes),
        ``num_images`` / ``num_objects``: how many were scored.
    Objects whose mask is empty (e.g. cropped away) count as not valid; images with no valid
    object are skipped.
    """

    def __init__(self, qs: Sequence[float] = (10, 20, 30, 40, 50)) -> None:
        if not qs:
            raise ValueError("qs must list at least one percentage")
        for q in qs:
            _topq_count(q, 1)  # validates the range early
        self.qs = tuple(qs)
        self.reset()

    def reset(self) -> None:
        self._image_sum = torch.zeros(len(self.qs), dtype=torch.float64)
        self._object_sum = torch.zeros(len(self.qs), dtype=torch.float64)
        self._image_matched_sum = 0.0
        self._object_matched_sum = 0.0
        self._num_images = 0
        self._num_objects = 0

    def update(self, maps: torch.Tensor, masks: torch.Tensor, valid: torch.Tensor) -> None:
        """Add a batch.

        Args:
            maps: attention maps ``[B, T, h, w]`` at any resolution; upsampled bilinearly to
                the mask size.
            masks: boolean object masks ``[B, O, H, W]``.
            valid: ``[B, O]`` bool, which of the O mask slots hold a real object.
        """
        if maps.ndim != 4 or masks.ndim != 4 or valid.shape != masks.shape[:2]:
            raise ValueError(f"expected maps [B, T, h, w], masks [B, O, H, W], valid [B, O]; "
                             f"got {tuple(maps.shape)}, {tuple(masks.shape)}, "
                             f"{tuple(valid.shape)}")
        if maps.shape[0] != masks.shape[0]:
            raise ValueError(f"batch sizes differ: maps {maps.shape[0]}, masks {masks.shape[0]}")
        masks = masks.to(maps.device, torch.bool)
        valid = valid.to(maps.device, torch.bool) & masks.flatten(2).any(2)
        maps = self._resize(maps.float(), masks.shape[-2:])
        for image_maps, image_masks, image_valid in zip(maps, masks, valid):
            self._add_image(image_maps, image_masks[image_valid])

    @staticmethod
    def _resize(maps: torch.Tensor, size: torch.Size) -> torch.Tensor:
        if maps.shape[-2:] == size:
            return maps
        return F.interpolate(maps, size=tuple(size), mode="bilinear", align_corners=False)

    def _add_image(self, maps: torch.Tensor, objects: torch.Tensor) -> None:
        """Score one image: maps ``[T, H, W]``, its valid non-empty objects ``[O', H, W]``."""
        if objects.shape[0] == 0:
            return
        masks = torch.cat([objects.any(0, keepdim=True), objects])  # the foreground, then each object
        ranks = _pixel_ranks(maps)
        best, _ = _best_per_mask(maps, masks, self.qs, ranks)
        self._image_sum += best[:, 0].double().cpu()
        self._object_sum += best[:, 1:].double().sum(1).cpu()
        matched = best_at_mask_area(ranks, masks).double().cpu()
        self._image_matched_sum += float(matched[0])
        self._object_matched_sum += float(matched[1:].sum())
        self._num_images += 1
        self._num_objects += objects.shape[0]

    def compute(self) -> dict[str, float]:
        if self._num_images == 0:
            raise RuntimeError("AlignmentIoU has no image with a valid, non-empty object mask")
        image = self._image_sum / self._num_images
        objects = self._object_sum / self._num_objects
        result = {"miou_image": float(image.mean()), "miou_object": float(objects.mean()),
                  "miou_image_matched": self._image_matched_sum / self._num_images,
                  "miou_object_matched": self._object_matched_sum / self._num_objects}
        for q, image_q, object_q in zip(self.qs, image, objects):
            result[f"miou_image_q{q:g}"] = float(image_q)
            result[f"miou_object_q{q:g}"] = float(object_q)
        result["num_images"] = self._num_images
        result["num_objects"] = self._num_objects
        return result
