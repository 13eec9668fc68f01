"""Train the convolutional autoencoder (``model/conv_autoencoder.py``) from scratch.

    comit train-autoencoder --data shapes --out runs/ae            # about 10 minutes on 2 CPU cores
    comit train-autoencoder --data /path/to/images --image-size 64 --out runs/ae steps=4000

The recipe, top to bottom: AdamW with a short warm-up and cosine decay; each step renders or reads
a batch, encodes it, adds Gaussian noise of ``latent_noise`` x the latents' per-channel std (so the
decoder learns to draw clean images from slightly wrong latents, as a flow decoder hands them
over), decodes and takes the pixel MSE. At the end the per-channel mean and std of raw latents on
training images are measured and stored, and the held-out PSNR is measured on ``val_images``
images of the dataset's val split and written into the checkpoint's metadata.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from ..data import build_dataset
from ..progress import progress as progress_bar
from ..model.conv_autoencoder import ConvAutoencoder, ConvAutoencoderConfig


class AutoencoderTrainConfig(BaseModel):
    """Everything one autoencoder run needs; ``architecture`` is the autoencoder itself."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    data: str = "shapes"
    image_size: int = Field(64, gt=0)
    architecture: ConvAutoencoderConfig = Field(default_factory=ConvAutoencoderConfig)
    steps: int = Field(3000, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(2e-3, gt=0, allow_inf_nan=False)
    warmup_steps: int = Field(100, ge=0)
    latent_noise: float = Field(0.1, ge=0, allow_inf_nan=False)
    precision: str = Field("fp32", pattern="^(fp32|bf16)$")
    seed: int = 0
    val_images: int = Field(256, ge=1)
    statistics_images: int = Field(1024, ge=1)


@dataclass
class AutoencoderResult:
    """What a finished run measured (also stored in the checkpoint's metadata)."""

    directory: Path
    val_psnr: float
    val_images: int
    steps: int
    wall_time_s: float

    def metadata(self, config: AutoencoderTrainConfig) -> dict:
        return {"val_psnr_db": round(self.val_psnr, 3), "val_images": self.val_images, "steps": self.steps,
                "wall_time_s": round(self.wall_time_s, 1), "train_config": config.model_dump(mode="json")}


def reconstruction_loss(images: torch.Tensor, latents: torch.Tensor, model: ConvAutoencoder,
                        latent_noise: float) -> torch.Tensor:
    """MSE of the decoder's image from raw latents plus Gaussian noise of ``latent_noise`` times
    their (detached) per-channel std: relative, so the encoder cannot escape it by growing."""
    if latent_noise > 0:
        scale = latents.detach().std(dim=(0, 2, 3), keepdim=True)
        latents = latents + latent_noise * scale * torch.randn_like(latents)
    return F.mse_loss(model.decode_raw(latents), images.float())


def cosine_lr(step: int, total: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * peak * (1 + math.cos(math.pi * min(progress, 1.0)))


def batch_of(dataset, indices: range | list[int]) -> torch.Tensor:
    return torch.stack([dataset[i]["image"] for i in indices])


def train_autoencoder(config: AutoencoderTrainConfig, out: str | Path, progress: bool = True) -> AutoencoderResult:
    """Train, measure the latent statistics and the val PSNR, save to ``out``; returns the numbers."""
    from ..metrics.reconstruction import PSNR

    torch.set_flush_denormal(True)
    torch.manual_seed(config.seed)
    train_set = build_dataset(config.data, config.image_size, split="train")
    val_set = build_dataset(config.data, config.image_size, split="val")
    model = ConvAutoencoder(config.architecture)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.0)
    order = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(config.seed)).tolist()
    autocast = config.precision == "bf16"
    bar = _bar(config.steps, progress)
    start = time.perf_counter()
    model.train()
    for step in range(config.steps):
        first = step * config.batch_size
        images = batch_of(train_set, [order[(first + i) % len(order)] for i in range(config.batch_size)])
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(step, config.steps, config.lr, config.warmup_steps)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = reconstruction_loss(images, model.encode_raw(images), model, config.latent_noise)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if bar:
            bar.update(1)
            bar.set_postfix(mse=f"{float(loss.detach()):.5f}")
    if bar:
        bar.close()
    model.eval()
    with torch.no_grad():
        raw = torch.cat([model.encode_raw(batch_of(train_set, [order[i % len(order)] for i in range(s, s + 64)]))
                         for s in range(0, config.statistics_images, 64)])
        model.set_latent_statistics(raw.mean(dim=(0, 2, 3)), raw.std(dim=(0, 2, 3)))
        psnr = PSNR()
        count = min(config.val_images, len(val_set))
        for s in range(0, count, 64):
            images = batch_of(val_set, range(s, min(s + 64, count)))
            psnr.update(model.decode(model.encode(images)).clamp(-1, 1), images)
    result = AutoencoderResult(Path(out), psnr.compute(), count, config.steps, time.perf_counter() - start)
    model.save_pretrained(out, metadata=result.metadata(config))
    return result


def _bar(total: int, progress: bool):
    if not progress:
        return None
    return progress_bar(total=total, desc="train autoencoder", unit="step")
