"""Reconstruction metrics: PSNR, its gain over another image's message, SSIM and codebook usage.

Every metric follows the same small protocol: ``update(...)`` with one batch, ``compute()`` for
the dataset-level value, ``reset()`` to start again. Images are batches ``[B, C, H, W]`` in the
model's range [-1, 1]; they are mapped to [0, 1] (``data_range = 1``) before scoring, so the
numbers are comparable with papers that score 8-bit images divided by 255.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torchmetrics.functional.image import (
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)

from .spec import NUM_IMAGES, MetricSpec


# Every number an evaluation of reconstructions reports (``comit.eval.run_recon.ReconMetrics``), in its order.
RECON_METRICS = (
    MetricSpec("psnr", "PSNR (dB)", headline=True, compared=True, table_label="PSNR dB"),
    MetricSpec("psnr_other_image", "PSNR against another image (dB)", higher_is_better=None),
    MetricSpec("psnr_gain_over_other", "PSNR gain over another image (dB; 0: the message is ignored)", compared=True,
               table_label="PSNR gain over another image, dB (0: message ignored)"),
    MetricSpec("ssim", "SSIM", headline=True, compared=True),
    MetricSpec("rfid", "rFID", higher_is_better=False, headline=True, compared=True,
               table_label="rFID, {fid_features} features"),
    MetricSpec("codebook_distinct", "distinct token ids"),
    MetricSpec("codebook_fraction", "fraction of the codebook"),
    MetricSpec("codebook_perplexity", "codebook perplexity", headline=True, compared=True),
    MetricSpec("per_position_distinct_mean", "distinct ids per message position (mean)", compared=True,
               table_label="distinct ids per message position"),
    MetricSpec("mean_crops", "crops per image (mean)", higher_is_better=None),
    NUM_IMAGES,
    MetricSpec("rfid_feature_dim", "rFID feature dimensions", higher_is_better=None),
)


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """Map images from [-1, 1] to [0, 1], clamped.

    Clamping matters for decoder outputs that overshoot: a saved image cannot hold values
    outside the range, so the score must not see them either.
    """
    return ((images.float() + 1.0) / 2.0).clamp_(0.0, 1.0)


def _check_pair(preds: torch.Tensor, target: torch.Tensor) -> None:
    if preds.ndim != 4:
        raise ValueError(f"expected image batches [B, C, H, W], got shape {tuple(preds.shape)}")
    if preds.shape != target.shape:
        raise ValueError(f"preds and target shapes differ: {tuple(preds.shape)} vs "
                         f"{tuple(target.shape)}")


class _PerImageMean:
    """Running mean of a per-image score; sums in float64 so long runs do not drift."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._sum = 0.0
        self._count = 0

    def _add(self, per_image: torch.Tensor) -> None:
        self._sum += float(per_image.double().sum())
        self._count += per_image.numel()

    @property
    def count(self) -> int:
        """Images scored so far."""
        return self._count

    def compute(self) -> float:
        if self._count == 0:
            raise RuntimeError(f"{type(self).__name__}.compute() called before any update()")
        return self._sum / self._count


def psnr_per_image(preds: torch.Tensor, target: torch.Tensor, max_db: float | None = None) -> torch.Tensor:
    """[B] PSNR in dB of each image of ``preds`` against ``target``, both [B, C, H, W] in [-1, 1]
    (clamped, as saved 8-bit images are); ``max_db`` caps an exact match's ``inf``."""
    _check_pair(preds, target)
    per_image = peak_signal_noise_ratio(to_unit_range(preds), to_unit_range(target), data_range=1.0,
                                        reduction="none", dim=(1, 2, 3))
    return per_image if max_db is None else per_image.clamp(max=max_db)


def mean_psnr(preds: torch.Tensor, target: torch.Tensor) -> float:
    """The mean over images of their PSNR (dB): ``PSNR`` over one batch."""
    metric = PSNR()
    metric.update(preds, target)
    return metric.compute()


def other_images(images: torch.Tensor) -> torch.Tensor:
    """Each image's neighbour in the batch (rolled by one): a decoder that ignores its message scores
    as well against these as against the images themselves."""
    return images.roll(1, dims=0)


class PSNR(_PerImageMean):
    """Peak signal-to-noise ratio in dB, computed per image and averaged over the dataset.

    An image reconstructed exactly has infinite PSNR; by default that ``inf`` is kept (as
    scikit-image does), which makes the dataset mean ``inf`` too. Pass ``max_db`` to cap each
    image's PSNR instead (a finite cap such as 100 dB keeps the mean informative).
    """

    def __init__(self, max_db: float | None = None) -> None:
        super().__init__()
        self.max_db = max_db

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch of reconstructions ``preds`` and originals ``target``, both in [-1, 1]."""
        self._add(psnr_per_image(preds, target, self.max_db))


@dataclass(frozen=True)
class Gain:
    """PSNR against the images and against other images' (dB); None where every batch held one image."""

    psnr: float
    psnr_other: float | None

    @property
    def gain(self) -> float | None:
        """How much the message says: 0 dB when the decoder ignores it."""
        return None if self.psnr_other is None else self.psnr - self.psnr_other


class PSNRGain:
    """PSNR of reconstructions against their images and against ``other_images`` of the same batch."""

    def __init__(self) -> None:
        self.own, self.other = PSNR(), PSNR()

    def reset(self) -> None:
        self.own.reset()
        self.other.reset()

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        self.own.update(preds, target)
        if target.shape[0] > 1:
            self.other.update(preds, other_images(target))

    def compute(self) -> Gain:
        return Gain(self.own.compute(), self.other.compute() if self.other.count else None)


class SSIM(_PerImageMean):
    """Structural similarity, computed per image and averaged over the dataset.

    An 11x11 Gaussian window with sigma 1.5, K1 = 0.01, K2 = 0.03 and population (not sample)
    covariance, averaged over channels. With ``crop_border=True`` (default) the SSIM map is
    averaged only where the window lies fully inside the image, as in Wang et al.'s reference
    code and scikit-image, which then agrees to float precision given
    ``gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1``
    (its default uniform 7x7 window with sample covariance gives other numbers).
    ``crop_border=False`` reproduces torchmetrics' own default, which also averages the
    border windows computed over reflect-padded pixels (a difference of ~1e-4 at 256x256,
    ~1e-3 at 32x32).
    """

    def __init__(self, sigma: float = 1.5, crop_border: bool = True) -> None:
        super().__init__()
        if sigma <= 0:
            raise ValueError(f"SSIM sigma must be > 0, got {sigma}")
        self.sigma = sigma
        self.crop_border = crop_border
        # torchmetrics sizes the Gaussian window from sigma (its kernel_size is then ignored):
        # radius int(3.5 sigma + 0.5), the same truncation scikit-image uses; 11x11 at 1.5.
        self.radius = int(3.5 * sigma + 0.5)

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch of reconstructions ``preds`` and originals ``target``, both in [-1, 1]."""
        _check_pair(preds, target)
        window = 2 * self.radius + 1
        if min(preds.shape[-2:]) < window:
            raise ValueError(f"SSIM needs images of at least {window}x{window} pixels, got "
                             f"{tuple(preds.shape[-2:])}")
        _, ssim_map = structural_similarity_index_measure(
            to_unit_range(preds), to_unit_range(target), gaussian_kernel=True,
            sigma=self.sigma, data_range=1.0, reduction="none", return_full_image=True)
        if self.crop_border:
            r = self.radius
            ssim_map = ssim_map[..., r:-r, r:-r]
        self._add(ssim_map.flatten(1).mean(1))


class CodebookUsage:
    """How much of the codebook the messages use.

    ``compute()`` returns a dict with
        ``distinct``: number of distinct ids seen anywhere,
        ``fraction``: ``distinct / codebook_size``,
        ``perplexity``: exp of the entropy (nats) of the empirical id distribution — the
            "effective number of ids"; it equals ``distinct`` when they are used uniformly,
        ``per_position_distinct_mean``: number of distinct ids seen at each message position,
            averaged over positions (low values flag positions that carry little),
        ``tokens``: number of tokens counted.
    """

    def __init__(self, codebook_size: int) -> None:
        if codebook_size < 1:
            raise ValueError(f"codebook_size must be >= 1, got {codebook_size}")
        self.codebook_size = int(codebook_size)
        self.reset()

    def reset(self) -> None:
        self._counts = torch.zeros(self.codebook_size, dtype=torch.int64)
        # [M, codebook_size] bools, allocated at the first update when M is known.
        self._seen_at: torch.Tensor | None = None

    def update(self, ids: torch.Tensor) -> None:
        """Add a batch of token ids ``[B, M]`` (integers in [0, codebook_size))."""
        if ids.ndim != 2 or ids.dtype.is_floating_point or ids.dtype == torch.bool:
            raise ValueError(f"expected integer token ids [B, M], got {ids.dtype} "
                             f"{tuple(ids.shape)}")
        ids = ids.detach().to("cpu", torch.int64)
        if ids.numel() and (ids.min() < 0 or ids.max() >= self.codebook_size):
            raise ValueError(f"token ids must lie in [0, {self.codebook_size}), got range "
                             f"[{int(ids.min())}, {int(ids.max())}]")
        num_positions = ids.shape[1]
        if self._seen_at is None:
            self._seen_at = torch.zeros(num_positions, self.codebook_size, dtype=torch.bool)
        elif self._seen_at.shape[0] != num_positions:
            raise ValueError(f"message length changed from {self._seen_at.shape[0]} to "
                             f"{num_positions}")
        self._counts += torch.bincount(ids.flatten(), minlength=self.codebook_size)
        positions = torch.arange(num_positions).expand_as(ids)
        self._seen_at[positions.flatten(), ids.flatten()] = True

    def compute(self) -> dict[str, float]:
        total = int(self._counts.sum())
        if total == 0 or self._seen_at is None:
            raise RuntimeError("CodebookUsage.compute() called before any update()")
        p = self._counts[self._counts > 0].double() / total
        entropy = float(-(p * p.log()).sum())
        distinct = int(p.numel())
        return {
            "distinct": distinct,
            "fraction": distinct / self.codebook_size,
            "perplexity": math.exp(entropy),
            "per_position_distinct_mean": float(self._seen_at.sum(1).double().mean()),
            "tokens": total,
        }
