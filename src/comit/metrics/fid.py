"""Fréchet distance between the feature statistics of real and generated images (FID / rFID).

Protocol
--------
rFID (reconstruction FID) compares reconstructions with the images they came from, so it is
only meaningful under a fixed protocol:

* The reference set is the real validation images themselves, at the same resolution as the
  reconstructions and passed through the same resize / centre-crop pipeline (for ImageNet
  256x256: shorter side resized to 256, centre crop 256x256). Never use precomputed reference
  statistics made with another preprocessing.
* The paper reports rFID on the 50,000 ImageNet validation images. FID is biased by the number
  of samples (fewer samples -> larger FID), so numbers measured on different sample counts
  must never be compared; always report the count next to the number.
* The standard number uses the Inception-v3 pool features of torch-fidelity (what
  ``FID()`` with no extractor uses). A custom ``feature_extractor`` gives a Fréchet distance
  in its own feature space: useful for tests and relative comparisons, not comparable with
  published FID.
"""

from __future__ import annotations

import importlib

import torch
from torch import nn

INSTALL_HINT = (
    "FID with the standard Inception network needs torch-fidelity and torchvision: "
    "pip install 'comit[fid]' (and install the torchvision build that matches your torch "
    "{torch}); the other metrics are still reported without it."
)


class FIDUnavailable(ImportError):
    """The standard Inception FID cannot run here (torch-fidelity / torchvision missing)."""


class _FeatureStats:
    """Running sum and sum of outer products of features, in float64 for accuracy."""

    def __init__(self) -> None:
        self.count = 0
        self.sum: torch.Tensor | None = None
        self.outer: torch.Tensor | None = None

    def add(self, features: torch.Tensor) -> None:
        f = features.detach().to("cpu", torch.float64)
        if self.sum is None:
            self.sum = f.sum(0)
            self.outer = f.T @ f
        else:
            self.sum += f.sum(0)
            self.outer += f.T @ f
        self.count += f.shape[0]

    def mean_and_cov(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample mean and unbiased covariance (n - 1), matching the usual FID code."""
        mean = self.sum / self.count
        cov = (self.outer - self.count * torch.outer(mean, mean)) / (self.count - 1)
        return mean, cov


def _sqrtm_psd(matrix: torch.Tensor) -> torch.Tensor:
    """Square root of a symmetric positive semi-definite matrix via its eigen-decomposition."""
    eigenvalues, eigenvectors = torch.linalg.eigh((matrix + matrix.T) / 2)
    # Round-off can make zero eigenvalues slightly negative; they are zero in exact arithmetic.
    root = eigenvalues.clamp(min=0).sqrt()
    return (eigenvectors * root) @ eigenvectors.T


def frechet_distance(mean1: torch.Tensor, cov1: torch.Tensor, mean2: torch.Tensor,
                     cov2: torch.Tensor) -> float:
    """``|m1 - m2|^2 + tr(C1) + tr(C2) - 2 tr((C1 C2)^{1/2})`` for two Gaussians.

    ``tr((C1 C2)^{1/2})`` equals the sum of square roots of the eigenvalues of the symmetric
    PSD matrix ``C1^{1/2} C2 C1^{1/2}`` (same spectrum as ``C1 C2``). Using that form keeps
    everything real and symmetric, so there is no complex part to discard, unlike
    ``scipy.linalg.sqrtm(C1 @ C2)``, which is unstable for near-singular covariances
    (fewer samples than feature dimensions).
    """
    root1 = _sqrtm_psd(cov1)
    middle = root1 @ cov2 @ root1
    trace_sqrt = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()
    diff = mean1 - mean2
    value = diff @ diff + torch.trace(cov1) + torch.trace(cov2) - 2 * trace_sqrt
    # Exactly equal statistics can give -1e-12 from round-off; a distance is never negative.
    return max(float(value), 0.0)


def _inception_fid(feature: int) -> nn.Module:
    """torchmetrics' standard FID, or FIDUnavailable with what to install."""
    hint = INSTALL_HINT.format(torch=torch.__version__)
    try:
        # A torchvision built for another torch fails at import with a RuntimeError.
        importlib.import_module("torch_fidelity")
        from torchmetrics.image.fid import FrechetInceptionDistance
    except (ImportError, RuntimeError) as error:
        raise FIDUnavailable(hint) from error
    try:
        return FrechetInceptionDistance(feature=feature, normalize=True)
    except ModuleNotFoundError as error:
        raise FIDUnavailable(hint) from error


class FID:
    """Fréchet distance between real and generated image features (see the module Protocol).

    Args:
        feature_extractor: module mapping images in [-1, 1] ``[B, 3, H, W]`` to features
            ``[B, D]``; ``None`` uses the standard Inception-v3 network through torchmetrics /
            torch-fidelity, and raises ``FIDUnavailable`` where they are not installed.
        feature: Inception feature layer for the standard network (2048 = the usual FID).
    """

    def __init__(self, feature_extractor: nn.Module | None = None, *, feature: int = 2048):
        self.feature_extractor = feature_extractor
        self._inception = _inception_fid(feature) if feature_extractor is None else None
        self._inception_dim = feature
        self.reset()

    def reset(self) -> None:
        self._real = _FeatureStats()
        self._fake = _FeatureStats()
        if self._inception is not None:
            self._inception.reset()

    @property
    def feature_dim(self) -> int | None:
        """Size D of the features (None for a custom extractor that has seen no image yet).
        Fewer images than D per side leave the covariance rank-deficient."""
        if self._inception is not None:
            return self._inception_dim
        return None if self._real.sum is None else int(self._real.sum.shape[0])

    def to(self, device: torch.device | str) -> FID:
        """Move the standard Inception network (a custom extractor is left where it is)."""
        if self._inception is not None:
            self._inception = self._inception.to(device)
        return self

    def update(self, images: torch.Tensor, real: bool) -> None:
        """Add a batch of images in [-1, 1] ``[B, 3, H, W]`` to the real or generated side."""
        if images.ndim != 4:
            raise ValueError(f"expected images [B, 3, H, W], got shape {tuple(images.shape)}")
        stats = self._real if real else self._fake
        if self._inception is not None:
            unit = ((images.float() + 1) / 2).clamp(0, 1)
            self._inception.update(unit.to(self._inception.device), real=real)
            stats.count += images.shape[0]
            return
        with torch.no_grad():
            features = self.feature_extractor(images.to(self._extractor_device(images.device)))
        if features.ndim != 2 or features.shape[0] != images.shape[0]:
            raise ValueError(f"feature_extractor must return [B, D] features, got shape "
                             f"{tuple(features.shape)}")
        stats.add(features)

    def _extractor_device(self, default: torch.device) -> torch.device:
        """Where the extractor's weights live (images are sent there), else ``default``."""
        parameter = next(self.feature_extractor.parameters(), None)
        return parameter.device if parameter is not None else default

    def compute(self) -> float:
        """The Fréchet distance between everything added as real and as generated."""
        for name, stats in (("real", self._real), ("generated", self._fake)):
            if stats.count < 2:
                raise ValueError(f"FID needs at least 2 {name} images to estimate a "
                                 f"covariance, got {stats.count}")
        if self._inception is not None:
            return float(self._inception.compute())
        return frechet_distance(*self._real.mean_and_cov(), *self._fake.mean_and_cov())
