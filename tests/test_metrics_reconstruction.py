"""PSNR / SSIM against scikit-image, and codebook usage on hand-made ids."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from torchmetrics.functional.image import structural_similarity_index_measure

from comit.metrics.reconstruction import PSNR, SSIM, CodebookUsage, PSNRGain, mean_psnr, psnr_per_image


def _pair(seed: int, batch: int = 3, size: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    """Random targets in [-1, 1] and noisy reconstructions that stay in range."""
    g = torch.Generator().manual_seed(seed)
    target = torch.rand(batch, 3, size, size, generator=g) * 2 - 1
    noise = torch.randn(batch, 3, size, size, generator=g) * 0.2
    return (target + noise).clamp(-1, 1), target


def _unit(x: torch.Tensor) -> np.ndarray:
    return ((x.double() + 1) / 2).numpy()


def test_psnr_matches_skimage_per_image_mean():
    metric = PSNR()
    expected = []
    for seed in range(2):  # two updates: the mean runs over images, not batches
        preds, target = _pair(seed)
        metric.update(preds, target)
        expected += [peak_signal_noise_ratio(_unit(t), _unit(p), data_range=1.0)
                     for p, t in zip(preds, target)]
    assert metric.compute() == pytest.approx(np.mean(expected), abs=1e-4)  # float32 vs 64


def test_psnr_constant_error_by_hand():
    # An error of 0.1 in [0, 1] units (0.2 in [-1, 1]) everywhere: 10 log10(1 / 0.01) = 20 dB.
    target = torch.zeros(2, 3, 8, 8)
    metric = PSNR()
    metric.update(target + 0.2, target)
    assert metric.compute() == pytest.approx(20.0, abs=1e-4)


def test_psnr_identical_is_inf_or_capped():
    images = torch.rand(2, 3, 8, 8) * 2 - 1
    uncapped = PSNR()
    uncapped.update(images, images)
    assert math.isinf(uncapped.compute())
    capped = PSNR(max_db=100.0)
    capped.update(images, images)
    assert capped.compute() == 100.0


def test_ssim_matches_skimage_with_gaussian_window():
    # skimage's defaults (7x7 uniform window, sample covariance) differ; these settings are
    # the Gaussian 11x11 / sigma 1.5 / population-covariance SSIM that SSIM() computes, and
    # both average only the windows lying fully inside the image.
    preds, target = _pair(3, size=32)
    metric = SSIM()
    metric.update(preds, target)
    expected = np.mean([
        structural_similarity(_unit(t), _unit(p), gaussian_weights=True, sigma=1.5,
                              use_sample_covariance=False, data_range=1.0, channel_axis=0)
        for p, t in zip(preds, target)])
    assert metric.compute() == pytest.approx(expected, abs=1e-5)


def test_ssim_without_border_crop_is_torchmetrics_default():
    preds, target = _pair(4, size=32)
    metric = SSIM(crop_border=False)
    metric.update(preds, target)
    expected = structural_similarity_index_measure((preds + 1) / 2, (target + 1) / 2,
                                                   data_range=1.0)
    assert metric.compute() == pytest.approx(float(expected), abs=1e-6)


def test_ssim_identical_is_one_and_small_images_rejected():
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    metric = SSIM()
    metric.update(images, images)
    assert metric.compute() == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValueError, match="at least 11x11"):
        metric.update(images[..., :8, :8], images[..., :8, :8])


def test_metrics_need_updates_and_reset():
    metric = PSNR()
    with pytest.raises(RuntimeError, match="before any update"):
        metric.compute()
    metric.update(torch.zeros(1, 3, 4, 4) + 0.2, torch.zeros(1, 3, 4, 4))
    metric.reset()
    with pytest.raises(RuntimeError):
        metric.compute()
    with pytest.raises(ValueError, match="shapes differ"):
        metric.update(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 5))


def test_codebook_usage_by_hand():
    usage = CodebookUsage(codebook_size=10)
    usage.update(torch.tensor([[0, 1], [0, 2]]))
    usage.update(torch.tensor([[0, 1]]))
    result = usage.compute()
    # ids: 0 x3, 1 x2, 2 x1 over 6 tokens.
    p = np.array([3, 2, 1]) / 6
    assert result["distinct"] == 3
    assert result["fraction"] == pytest.approx(0.3)
    assert result["perplexity"] == pytest.approx(math.exp(-(p * np.log(p)).sum()))
    # position 0 saw {0}, position 1 saw {1, 2}.
    assert result["per_position_distinct_mean"] == pytest.approx(1.5)
    assert result["tokens"] == 6


def test_codebook_perplexity_of_uniform_use_is_number_of_ids():
    usage = CodebookUsage(codebook_size=64)
    usage.update(torch.arange(16).repeat(5, 1))  # ids 0..15 equally often
    result = usage.compute()
    assert result["perplexity"] == pytest.approx(16.0)
    assert result["per_position_distinct_mean"] == 1.0


def test_codebook_usage_rejects_bad_ids():
    usage = CodebookUsage(codebook_size=4)
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        usage.update(torch.tensor([[0, 4]]))
    with pytest.raises(ValueError, match="integer token ids"):
        usage.update(torch.zeros(2, 3))
    with pytest.raises(RuntimeError):
        usage.compute()


def test_psnr_against_another_image_tells_whether_the_message_is_read():
    """Reconstructions equal to their own images gain over other images; the batch mean gains nothing."""
    from types import SimpleNamespace

    from comit.eval.run_recon import ReconMetrics

    torch.manual_seed(0)
    images = torch.rand(4, 3, 16, 16) * 2 - 1
    tokens = SimpleNamespace(ids=torch.zeros(4, 2, dtype=torch.long), num_crops=torch.ones(4))
    model = SimpleNamespace(config=SimpleNamespace(image_size=16), codebook_size=8)

    def scores(reconstructions):
        metrics = ReconMetrics(model, fid=None)
        metrics.update(images, reconstructions, tokens)
        return metrics.compute()[0]

    faithful = scores(images + 0.01)
    assert faithful["psnr_gain_over_other"] > 20
    blind = scores(images.mean(dim=0, keepdim=True).expand_as(images))
    assert abs(blind["psnr_gain_over_other"]) < 0.5
    assert blind["psnr_gain_over_other"] == pytest.approx(blind["psnr"] - blind["psnr_other_image"])


# ---------------------------------------------------------------------- the gain over another image
def test_the_gain_sees_a_message_that_is_read_and_not_one_that_is_ignored():
    images = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    read = PSNRGain()  # positive control: each reconstruction is its own image, a little off
    read.update(images + 0.05 * torch.randn(images.shape, generator=torch.Generator().manual_seed(1)), images)
    ignored = PSNRGain()  # negative control: one picture for every message, the batch's mean image
    ignored.update(images.mean(0, keepdim=True).expand_as(images).clone(), images)
    assert read.compute().gain > 10
    assert ignored.compute().gain == pytest.approx(0.0, abs=1e-9)  # the same targets, permuted


def test_the_gain_needs_two_images_and_resets():
    gain = PSNRGain()
    gain.update(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8) + 0.1)
    result = gain.compute()
    assert result.psnr_other is None and result.gain is None and result.psnr == pytest.approx(26.02, abs=0.01)
    gain.reset()
    with pytest.raises(RuntimeError, match="before any update"):
        gain.compute()


def test_psnr_per_image_caps_an_exact_match_only_when_asked():
    images = torch.zeros(2, 3, 8, 8)
    assert torch.isinf(psnr_per_image(images, images)).all()
    assert psnr_per_image(images, images, max_db=100.0).tolist() == [100.0, 100.0]
    assert mean_psnr(images + 0.2, images) == pytest.approx(20.0, abs=1e-4)
