"""What a message knows, crop by crop: the numbers behind every picture of ``comit viz``.

For a batch of images this tokenizes ONE crop at a time (``COMiT.tokenize_steps``, so the prefix
is never re-encoded) and after each crop paints the one-step probe (1 Euler step,
guidance 1, the same noise every time: sharp where observed, blurry elsewhere). At the end it
paints the full reconstruction and takes the message tokens' attention over the image. The
figures and the web app only draw what a :class:`Trace` holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..metrics.reconstruction import mean_psnr
from ..model.crops import Box
from ..model.policies import ADAPTIVE, CropPolicy, parse_policy
from ..model.solvers import check_decoding

# The attention panels show the tokens whose maps are most concentrated (see top_tokens()).
DEFAULT_TOP_TOKENS = 8


@dataclass
class VizSettings:
    """How to tokenize and paint. ``num_crops=None`` observes every crop of the grid."""

    order: str | list[int] | CropPolicy = ADAPTIVE
    num_crops: int | None = None
    global_crop: bool = False
    steps: int = 10
    cfg: float = 7.5
    seed: int = 0
    top_tokens: int = DEFAULT_TOP_TOKENS

    def describe(self) -> dict:
        return {"order": self.order, "num_crops": self.num_crops or "all", "global_crop": self.global_crop,
                "steps": self.steps, "guidance": self.cfg, "seed": self.seed}


@dataclass
class Trace:
    """Everything drawn for one image.

    image, reconstruction: [3, S, S] in [-1, 1]; one_step: one [3, S, S] probe after each crop;
    crop_indices/boxes: the crops observed, in order; attention: [M, h, w] per-token maps over the
    patch grid (each sums to 1); ids: [M] token ids.
    """

    image: torch.Tensor
    crop_indices: list[int]
    boxes: list[Box]
    one_step: list[torch.Tensor]
    reconstruction: torch.Tensor
    attention: torch.Tensor
    ids: torch.Tensor
    codebook_size: int
    global_crop: bool
    settings: VizSettings = field(default_factory=VizSettings)

    @property
    def num_tokens(self) -> int:
        return int(self.ids.numel())

    @property
    def empty_id(self) -> int:
        """The id every position holds before any crop (m0): a token still equal to it said nothing."""
        return self.codebook_size // 2

    def one_step_psnr(self) -> list[float]:
        return [psnr(probe, self.image) for probe in self.one_step]

    def reconstruction_psnr(self) -> float:
        return psnr(self.reconstruction, self.image)


def trace_images(model, images: torch.Tensor, settings: VizSettings) -> list[Trace]:
    """Run the crop-by-crop probe on a batch ``[B, 3, S, S]``; one :class:`Trace` per image."""
    check_settings(model, settings)
    batch = images.shape[0]
    generator = torch.Generator().manual_seed(settings.seed)
    # One noise for the adaptive policy and for every probe, so the strip changes only with the message.
    probe_noise = torch.randn(model.latent_shape(batch), generator=generator)
    tokens, probes = None, []
    for tokens in model.tokenize_steps(images, global_crop=settings.global_crop, order=settings.order,
                                       num_crops=settings.num_crops, noise=probe_noise, generator=generator):
        probes.append(model.detokenize(tokens.messages, tokens.offsets, num_steps=1, cfg_weight=1.0,
                                       noise=probe_noise).cpu())
    final = model.detokenize(tokens.messages, tokens.offsets, num_steps=settings.steps, cfg_weight=settings.cfg,
                             generator=generator).cpu()
    attention = model.attention_maps(images, tokens, generator=generator).cpu()
    return [image_trace(model, images, tokens.to("cpu"), probes, final, attention, settings, b) for b in range(batch)]


def check_settings(model, settings: VizSettings) -> None:
    check_decoding(settings.steps, settings.cfg)
    if settings.top_tokens < 1:
        raise ValueError(f"top tokens must be >= 1, got {settings.top_tokens}")
    # the crop policy too, before any image is loaded or traced
    parse_policy(settings.order).check(model.crops, settings.num_crops, settings.global_crop)


def image_trace(model, images, tokens, probes, final, attention, settings: VizSettings, b: int) -> Trace:
    indices = [int(i) for i in tokens.crop_order[:, b] if int(i) >= 0]
    return Trace(image=images[b].cpu(), crop_indices=indices,
                 boxes=[model.crops.box(i, tokens.global_crop) for i in indices],
                 one_step=[probe[b] for probe in probes], reconstruction=final[b], attention=attention[b],
                 ids=tokens.ids[b], codebook_size=model.codebook_size, global_crop=tokens.global_crop,
                 settings=settings)


def psnr(picture: torch.Tensor, reference: torch.Tensor) -> float:
    """PSNR in dB of one image [3, S, S] in [-1, 1] (clamped, as saved 8-bit images are): the evaluation's metric."""
    return mean_psnr(picture[None], reference[None])


def top_tokens(attention: torch.Tensor, count: int) -> list[int]:
    """Message positions whose attention is most concentrated, most focused first.

    Focus is the effective number of patches a token looks at, exp(entropy) of its map: a token
    that lands on one object covers few patches, one that looks everywhere covers them all.
    """
    maps = attention.flatten(1).clamp_min(1e-12)
    maps = maps / maps.sum(dim=1, keepdim=True)
    spread = torch.exp(-(maps * maps.log()).sum(dim=1))
    order = torch.sort(spread, stable=True).indices
    return [int(i) for i in order[:min(count, len(order))]]
