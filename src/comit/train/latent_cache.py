"""Autoencoder latents of a training set, encoded once: the full image and every grid crop.

At paper scale most of a training step is the SD-VAE: each image is encoded whole and once for
every crop it shows, every epoch. ``comit cache-latents CONFIG --out DIR`` encodes them once and
``data.latent_cache=DIR`` trains from the cache. What is stored is the encoder's Gaussian (mean and
standard deviation, float16) of the image and of each of its g x g grid crops, so training still
draws a fresh sample every time, as the released code's posterior sampling does; a deterministic
autoencoder stores std zero.

The cache is tied to what produced it: the autoencoder config, the image size, the crop grid, the
dataset spec and its length; training refuses a cache that does not match, and setups it cannot
serve: flips (the cached crops are unflipped), crops at random positions (only grid crops are
cached) and the conveyor (it keeps its own latents). Shards are written atomically and a re-run
into the same folder skips the finished ones.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch.utils.data import DataLoader, Dataset, Subset

from ..io import atomic_write, atomic_write_json, read_format_json
from ..model.autoencoders import Autoencoder, encode_moments
from ..model.crops import CropGrid
from ..progress import progress
from .config import TrainConfig

FORMAT = "comit-latent-cache"
FORMAT_VERSION = 1
INDEX_NAME = "index.json"
SHARD_NAME = "latents-{:05d}.safetensors"
TENSORS = ("full_mean", "full_std", "crops_mean", "crops_std")


class LatentCacheError(ValueError):
    """A cache folder that cannot serve this run."""


@dataclass
class CachedLatents:
    """A batch's cached Gaussians: full [B, C, h, w] and crops [B, g², C, hc, wc], mean and std."""

    full_mean: torch.Tensor
    full_std: torch.Tensor
    crops_mean: torch.Tensor
    crops_std: torch.Tensor

    @classmethod
    def from_batch(cls, batch: dict[str, torch.Tensor], device: torch.device) -> "CachedLatents":
        return cls(**{name: batch[name].to(device, torch.float32, non_blocking=True) for name in TENSORS})

    def full(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        """A fresh draw of the latent of each image (of images ``rows``)."""
        if rows is None:
            return _draw(self.full_mean, self.full_std)
        return _draw(self.full_mean[rows], self.full_std[rows])

    def crops(self, rows: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
        """A fresh draw of grid crop ``cells[i]`` of image ``rows[i]``."""
        return _draw(self.crops_mean[rows, cells], self.crops_std[rows, cells])


def _draw(mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    # A deterministic autoencoder draws nothing, so the random stream (t, noise, dropout) stays the
    # one a run that encodes would see.
    return mean + std * torch.randn_like(mean) if bool(std.any()) else mean


def cache_identity(config: TrainConfig, count: int) -> dict:
    """What a cache must agree on with the run that reads it."""
    model = config.model
    return {"autoencoder": model.autoencoder.model_dump(mode="json"), "image_size": model.image_size,
            "crop_size": model.crop_size, "grid_size": model.grid_size, "dataset": config.data.dataset,
            "num_images": count}


def with_cached_latents(dataset: Dataset, config: TrainConfig) -> Dataset:
    """``dataset`` as it is, or with each item's cached latents when the config names a cache."""
    if config.data.latent_cache is None:
        return dataset
    return WithCachedLatents(dataset, LatentCache(config.data.latent_cache, cache_identity(config, len(dataset))))


def write_latent_cache(autoencoder: Autoencoder, grid: CropGrid, dataset: Dataset, identity: dict, out: Path,
                       batch_size: int = 32, shard_size: int = 4096, num_workers: int = 0,
                       device: torch.device | str = "cpu") -> Path:
    """Encode every image of ``dataset`` (whole and each grid crop) into shards under ``out``; returns the index."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _check_resumable(out, identity)
    starts = list(range(0, len(dataset), shard_size))
    shards = [SHARD_NAME.format(number) for number in range(len(starts))]
    bar = progress(total=len(dataset), desc="cache latents", unit="img")
    for name, start in zip(shards, starts):
        part = Subset(dataset, range(start, min(start + shard_size, len(dataset))))
        if not (out / name).is_file():
            tensors = _encode_shard(autoencoder, grid, part, batch_size, num_workers, torch.device(device))
            atomic_write(out / name, lambda tmp, tensors=tensors: save_file(tensors, str(tmp)))
        bar.update(len(part))
    bar.close()
    index = {"format": FORMAT, "format_version": FORMAT_VERSION, **identity, "shard_size": shard_size,
             "shards": shards}
    atomic_write_json(out / INDEX_NAME, index)
    return out / INDEX_NAME


def _check_resumable(out: Path, identity: dict) -> None:
    """A folder that already holds a cache must hold this one (then its finished shards are kept)."""
    started = out / "started.json"
    if started.is_file():
        before = json.loads(started.read_text())
        if before != identity:
            raise LatentCacheError(f"{out} holds a latent cache of other settings ({_difference(before, identity)}); "
                                   "write to a new folder")
    else:
        atomic_write_json(started, identity)


@torch.no_grad()
def _encode_shard(autoencoder: Autoencoder, grid: CropGrid, part: Dataset, batch_size: int, num_workers: int,
                  device: torch.device) -> dict[str, torch.Tensor]:
    collected: dict[str, list[torch.Tensor]] = {name: [] for name in TENSORS}
    cells = torch.arange(grid.num_local)
    for batch in DataLoader(part, batch_size=batch_size, num_workers=num_workers):
        images = batch["image"].to(device)
        mean, std = encode_moments(autoencoder, images)
        collected["full_mean"].append(mean)
        collected["full_std"].append(std)
        crop_means, crop_stds = [], []
        for cell in cells:
            pixels = grid.cut(images, cell.expand(images.shape[0]).to(device), global_crop=False)
            crop_mean, crop_std = encode_moments(autoencoder, pixels)
            crop_means.append(crop_mean)
            crop_stds.append(crop_std)
        collected["crops_mean"].append(torch.stack(crop_means, dim=1))
        collected["crops_std"].append(torch.stack(crop_stds, dim=1))
    return {name: torch.cat(parts).to(torch.float16).cpu().contiguous() for name, parts in collected.items()}


class LatentCache(Dataset):
    """The cached Gaussians of image ``i`` as a dict of float16 tensors (``TENSORS``), read lazily."""

    def __init__(self, directory: str | Path, identity: dict):
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise LatentCacheError(f"no latent cache folder {str(directory)!r}; write one with comit cache-latents")
        index = read_format_json(self.directory, INDEX_NAME, FORMAT, FORMAT_VERSION, LatentCacheError,
                                 "a finished latent cache (comit cache-latents)")
        stored = {key: index.get(key) for key in identity}
        if stored != identity:
            raise LatentCacheError(f"the latent cache {self.directory} was made for other settings "
                                   f"({_difference(stored, identity)}); write a cache for this config")
        self.shard_size, self.shards = int(index["shard_size"]), list(index["shards"])
        self.count = int(index["num_images"])
        self._open: dict[int, object] = {}

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        shard, row = divmod(int(i), self.shard_size)
        if shard not in self._open:  # opened in each DataLoader worker on first use
            self._open[shard] = safe_open(str(self.directory / self.shards[shard]), framework="pt")
        handle = self._open[shard]
        return {name: handle.get_slice(name)[row:row + 1][0] for name in TENSORS}


class WithCachedLatents(Dataset):
    """A training dataset whose items also carry their cached latents."""

    def __init__(self, dataset: Dataset, cache: LatentCache):
        if len(dataset) != len(cache):
            raise LatentCacheError(f"the latent cache holds {len(cache)} images, the dataset {len(dataset)}")
        self.dataset, self.cache = dataset, cache

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict:
        return {**self.dataset[i], **self.cache[i]}


def _difference(stored: dict, wanted: dict) -> str:
    keys = [key for key in wanted if stored.get(key) != wanted[key]]
    return "; ".join(f"{key}: cache {stored.get(key)!r}, run {wanted[key]!r}" for key in keys[:2])
