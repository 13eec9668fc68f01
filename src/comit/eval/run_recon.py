"""``comit eval recon``: how well messages reconstruct images, and how much of the codebook they use.

Each image is tokenized under the crop policy and decoded with the decoding settings; PSNR and
SSIM compare each reconstruction with its original, rFID compares the two sets (protocol:
``comit.metrics.fid`` and docs/evaluation.md), codebook usage counts the ids of all messages.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from ..model.comit import COMiT, Tokens
from ..metrics.fid import FID
from ..metrics.fid_features import build_fid, describe_features
from ..metrics.reconstruction import RECON_METRICS, SSIM, CodebookUsage, PSNRGain
from .protocol import EvalSettings, batches, decode_batch, tokenize_batch
from .results import EvalResult

_LABELS = {spec.key: spec.label for spec in RECON_METRICS}


@dataclass(kw_only=True)
class ReconResult(EvalResult):
    """``eval recon``'s numbers: ``metrics`` maps each ``RECON_METRICS`` key to its value (None
    where it could not be measured; ``rfid_feature_dim`` only where rFID was)."""

    BODY = ("metrics",)
    metrics: dict[str, float | int | None]


class ReconMetrics:
    """PSNR, SSIM, rFID and codebook usage accumulated over batches (shared with ``eval crops``)."""

    def __init__(self, model: COMiT, fid: FID | None):
        self.psnr = PSNRGain()
        self.ssim = SSIM() if model.config.image_size >= 11 else None
        self.usage = CodebookUsage(model.codebook_size)
        self.fid = fid
        self.crops_used = 0.0
        self.count = 0

    def update(self, images: torch.Tensor, reconstructions: torch.Tensor, tokens: Tokens) -> None:
        images = images.to(reconstructions.device)
        self.psnr.update(reconstructions, images)
        if self.ssim is not None:
            self.ssim.update(reconstructions, images)
        self.usage.update(tokens.ids)
        if self.fid is not None:
            self.fid.update(images, real=True)
            self.fid.update(reconstructions, real=False)
        self.crops_used += float(tokens.num_crops.float().sum())
        self.count += images.shape[0]

    def compute(self) -> tuple[dict, list[str]]:
        """Flat metrics and notes on what could not be measured."""
        notes = []
        usage, psnr = self.usage.compute(), self.psnr.compute()
        metrics = {"psnr": psnr.psnr, "psnr_other_image": psnr.psnr_other, "psnr_gain_over_other": psnr.gain,
                   "ssim": self.ssim.compute() if self.ssim else None,
                   "rfid": None, "codebook_distinct": usage["distinct"], "codebook_fraction": usage["fraction"],
                   "codebook_perplexity": usage["perplexity"],
                   "per_position_distinct_mean": usage["per_position_distinct_mean"],
                   "mean_crops": self.crops_used / self.count, "num_images": self.count}
        if psnr.psnr_other is None:
            notes.append("PSNR against other images not measured: batches of one image")
        if self.ssim is None:
            notes.append("SSIM not measured: images are smaller than its 11x11 window")
        if self.fid is not None:
            try:
                metrics["rfid"] = self.fid.compute()
                metrics["rfid_feature_dim"] = self.fid.feature_dim
            except ValueError as error:
                notes.append(f"rFID not measured: {error}")
        return metrics, notes


def evaluate_reconstruction(model: COMiT, dataset: Dataset, settings: EvalSettings | None = None,
                            fid_features: str | nn.Module | None = "inception") -> ReconResult:
    """PSNR, SSIM, rFID and codebook usage of ``model`` over ``dataset`` (items with ``image``).

    ``metrics["rfid"]`` is None (with a note) where the feature network is unavailable or there
    are too few images.
    """
    settings = settings or EvalSettings()
    settings.check(model)
    fid, fid_note = build_fid(fid_features, model.device)
    metrics = ReconMetrics(model, fid)
    for batch in batches(dataset, settings.batch_size, "recon", settings.progress):
        tokens = tokenize_batch(model, batch["image"], batch["position"], settings)
        metrics.update(batch["image"], decode_batch(model, tokens, batch["position"], settings), tokens)
    values, notes = metrics.compute()
    notes = ([fid_note] if fid_note else []) + notes + fid_sample_notes(fid_features, values)
    return ReconResult(metrics=values, notes=notes,
                       settings={**settings.describe(), "fid_features": describe_features(fid_features)})


def fid_sample_notes(fid_features, metrics: dict) -> list[str]:
    if metrics.get("rfid") is None:
        return []
    notes = [f"rFID over {metrics['num_images']} images: FID grows as the sample count shrinks, so compare "
             "only numbers measured on the same images and count"]
    dim = metrics.get("rfid_feature_dim") or 0
    if metrics["num_images"] <= dim:
        notes.append(f"no more images than the {dim} feature dimensions: the covariance is rank-deficient and rFID "
                     "is far above its value on many images (the paper uses 50,000)")
    if fid_features != "inception":
        notes.append(f"rFID in {describe_features(fid_features)} features is not comparable with published "
                     "(Inception) rFID")
    return notes


def reconstruction_examples(model: COMiT, dataset: Dataset, settings: EvalSettings,
                            count: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``count`` originals and their reconstructions (the very ones scored above)."""
    subset = Subset(dataset, range(min(count, len(dataset))))
    batch = next(batches(subset, len(subset), "examples", progress=False))
    tokens = tokenize_batch(model, batch["image"], batch["position"], settings)
    return batch["image"], decode_batch(model, tokens, batch["position"], settings).cpu()


def write_recon_report(out: Path, results: ReconResult,
                       examples: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
    """results.json, results.md and (given examples) examples.png with originals over reconstructions."""
    from ..plots import plot_image_rows
    from .report import markdown_report, markdown_table, write_results

    sections = [("Metrics", markdown_table([{"metric": _LABELS[k], "value": v} for k, v in results.metrics.items()],
                                           ["metric", "value"]))]
    if examples is not None:
        plot_image_rows(list(examples), out / "examples.png", ["original", "reconstruction"])
        sections.append(("Examples", "![originals above reconstructions](examples.png)"))
    data = results.to_json()
    write_results(out, data, markdown_report("Reconstruction", data, sections))
