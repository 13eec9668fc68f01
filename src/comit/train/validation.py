"""The held-out curve a run is judged by: does the message carry the image?

Every ``loop.eval_every`` steps the EMA model tokenizes fixed val images (the global crop, then
every local crop in raster order) and paints them back from fixed noise, with guidance 1:

* ``psnr``: 10 Euler steps, against the own image;
* ``psnr_one_step``: one Euler step (what the message alone says, before the sampler refines it);
* ``psnr_other``: the 10-step reconstructions against another val image (the next one);
  ``psnr_gain`` = ``psnr`` - ``psnr_other``, 0 when the decoder ignores the message;
* ``psnr_local``: 10 steps from the message of the 9 local crops alone (raster order, no global
  crop), the half of the training sequences that never see the whole image;
* ``psnr_global`` and ``psnr_global_other``: 10 steps from the message of the global crop alone,
  against the own and the next image (what a model trained on the global crop only can be asked).

The loss cannot tell these apart: a decoder that ignores the message can reach a low flow loss at
most noise levels. Records go to ``val.jsonl`` in the run folder, one per evaluation.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from ..metrics.reconstruction import PSNRGain, mean_psnr
from ..model.comit import COMiT
from ..model.policies import RasterScan


@dataclass
class ValidationResult:
    step: int
    images_seen: int
    psnr: float
    psnr_one_step: float
    psnr_other: float
    psnr_local: float
    psnr_global: float
    psnr_global_other: float

    @property
    def psnr_gain(self) -> float:
        return self.psnr - self.psnr_other

    @property
    def psnr_global_gain(self) -> float:
        return self.psnr_global - self.psnr_global_other

    def record(self) -> dict:
        values = {key: round(value, 4) if isinstance(value, float) else value for key, value in asdict(self).items()}
        return {**values, "psnr_gain": round(self.psnr_gain, 4), "psnr_global_gain": round(self.psnr_global_gain, 4)}

    def summary(self) -> str:
        """One line for the progress log; the global crop's numbers too, since a run trained on the
        global crop alone is judged by them (its local-crop numbers stay near the mean image)."""
        return (f"step {self.step}: val PSNR {self.psnr:.2f} dB (one step {self.psnr_one_step:.2f}), gain over "
                f"another image {self.psnr_gain:.2f} dB; global crop alone {self.psnr_global:.2f} dB (gain "
                f"{self.psnr_global_gain:.2f}); local crops alone {self.psnr_local:.2f} dB")


def _tokens(model: COMiT, chunk: torch.Tensor, generator: torch.Generator, global_crop: bool,
            num_crops: int | None):
    return model.tokenize(chunk, global_crop=global_crop, order=RasterScan(), num_crops=num_crops, generator=generator)


def _painted(model: COMiT, tokens, noise: torch.Tensor, steps: int = 10) -> torch.Tensor:
    return model.detokenize(tokens.messages, tokens.offsets, num_steps=steps, cfg_weight=1.0, noise=noise).cpu()


@torch.no_grad()
def validate(model: COMiT, images: torch.Tensor, step: int, images_seen: int, seed: int = 0,
             batch_size: int = 64) -> ValidationResult:
    """Score ``model`` on ``images`` [N, 3, S, S] in [-1, 1] (at least two, for the other-image PSNR)."""
    full, one, local, global_only = [], [], [], []
    for start in range(0, images.shape[0], batch_size):
        chunk = images[start:start + batch_size].to(model.device)
        generator = torch.Generator().manual_seed(seed + start)
        tokens = _tokens(model, chunk, generator, global_crop=True, num_crops=None)
        noise = torch.randn(model.latent_shape(chunk.shape[0]), generator=generator).to(model.device)
        full.append(_painted(model, tokens, noise))
        one.append(_painted(model, tokens, noise, steps=1))
        local.append(_painted(model, _tokens(model, chunk, generator, global_crop=False, num_crops=None), noise))
        global_only.append(_painted(model, _tokens(model, chunk, generator, global_crop=True, num_crops=1), noise))
    images = images.cpu()
    full_gain, global_gain = PSNRGain(), PSNRGain()
    full_gain.update(torch.cat(full), images)
    global_gain.update(torch.cat(global_only), images)
    full_psnr, global_psnr = full_gain.compute(), global_gain.compute()
    return ValidationResult(step=step, images_seen=images_seen, psnr=full_psnr.psnr,
                            psnr_one_step=mean_psnr(torch.cat(one), images), psnr_other=full_psnr.psnr_other,
                            psnr_local=mean_psnr(torch.cat(local), images), psnr_global=global_psnr.psnr,
                            psnr_global_other=global_psnr.psnr_other)
