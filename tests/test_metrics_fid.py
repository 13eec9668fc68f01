"""Fréchet distance with a small random feature extractor; the Inception path's install hint."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from scipy import linalg
from torch import nn

from comit.metrics.fid import FID, FIDUnavailable, frechet_distance


def _extractor() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()


def _images(n: int = 64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 16, 16, generator=g) * 2 - 1


def _fid(extractor: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> float:
    metric = FID(extractor)
    for chunk in real.split(20):  # several updates: statistics must accumulate
        metric.update(chunk, real=True)
    metric.update(fake, real=False)
    return metric.compute()


def test_identical_sets_give_zero():
    extractor, images = _extractor(), _images()
    with torch.no_grad():
        scale = extractor(images).var(0).sum().item()  # tr(C): the size of the spread
    assert _fid(extractor, images, images) < 1e-3 * scale


def test_brightness_shift_is_detected_and_monotone():
    extractor, images = _extractor(), _images()
    with torch.no_grad():
        scale = extractor(images).var(0).sum().item()
    fids = [_fid(extractor, images, (images + shift).clamp(-1, 1)) for shift in (0.1, 0.25, 0.5)]
    assert fids[-1] > 0.5 * scale  # the same order as the features' own spread, not round-off
    assert fids[0] < fids[1] < fids[2]


def test_frechet_distance_matches_scipy_sqrtm_formula():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(50, 6)), rng.normal(size=(40, 6)) * 1.5 + 0.3
    m1, m2 = a.mean(0), b.mean(0)
    c1, c2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    expected = ((m1 - m2) ** 2).sum() + np.trace(c1 + c2) - 2 * np.trace(linalg.sqrtm(c1 @ c2).real)
    got = frechet_distance(*(torch.from_numpy(x) for x in (m1, c1, m2, c2)))
    assert got == pytest.approx(expected, rel=1e-8)


def test_too_few_samples_is_a_clear_error():
    metric = FID(_extractor())
    metric.update(_images(4), real=True)
    metric.update(_images(1), real=False)
    with pytest.raises(ValueError, match="at least 2 generated images"):
        metric.compute()


def test_without_torch_fidelity_the_error_says_what_to_install(monkeypatch):
    # A None entry makes `import torch_fidelity` fail even where it is installed.
    monkeypatch.setitem(sys.modules, "torch_fidelity", None)
    with pytest.raises(FIDUnavailable, match=r"pip install 'comit\[fid\]'") as info:
        FID()
    assert isinstance(info.value, ImportError)
    assert "torchvision" in str(info.value) and "other metrics" in str(info.value)
