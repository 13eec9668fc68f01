"""Launching training from command-line words: ``comit train`` and ``python -m comit.train``
parse [CONFIG] [key=value ...], then train."""

from __future__ import annotations

import os
from pathlib import Path

from .checkpoint import ResumeError
from .config import ConfigError, DEFAULT_CONFIG


def split_arguments(args: list[str]) -> tuple[str | None, list[str]]:
    """The first argument without '=' is the config; the rest must be key=value overrides."""
    config = None
    overrides = []
    for arg in args:
        if "=" in arg:
            overrides.append(arg)
        elif config is None and not overrides:
            config = arg
        else:
            raise ConfigError(f"unexpected argument {arg!r}: give [CONFIG] then key=value overrides")
    return config, overrides


def run_training(args: list[str], out: Path | None, resume: bool, push_to_hub: str | None = None) -> Path:
    from .loop import prepare_run, train

    config_name, overrides = split_arguments(args)
    if out is None:
        if resume:
            raise ResumeError("--resume needs --out: the folder of the run to continue")
        out = Path("runs") / Path(config_name or DEFAULT_CONFIG).stem
    if push_to_hub:
        from ..model.hub import check_can_upload

        check_can_upload()  # before hours of training, not after
    config = prepare_run(config_name, out, resume, overrides)
    model_dir = train(config, out, resume=resume)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"trained model: {model_dir}  (COMiT.from_pretrained({str(model_dir)!r}))", flush=True)
        if push_to_hub:
            from ..model.hub import push_folder

            print(f"pushed to {push_to_hub}: {push_folder(model_dir, push_to_hub)}", flush=True)
    return model_dir


def cache_latents(args: list[str], out: Path, batch_size: int, device: str, num_workers: int) -> Path:
    """Encode a config's training set (whole images and grid crops) into a latent cache at ``out``."""
    import torch

    from ..data import build_dataset
    from ..devices import resolve_device
    from ..model.comit import build_autoencoder
    from ..model.crops import CropGrid
    from .config import load_config
    from .latent_cache import cache_identity, write_latent_cache
    from .loop import training_autoencoder

    config_name, overrides = split_arguments(args)
    config = load_config(config_name, overrides)
    where = resolve_device(device)
    autoencoder = training_autoencoder(config) or build_autoencoder(config.model.autoencoder)
    if isinstance(autoencoder, torch.nn.Module):
        autoencoder.to(where).eval()
    model = config.model
    dataset = build_dataset(config.data.dataset, model.image_size, split="train")
    grid = CropGrid(model.image_size, model.crop_size, model.grid_size)
    return write_latent_cache(autoencoder, grid, dataset, cache_identity(config, len(dataset)), out,
                              batch_size=batch_size, num_workers=num_workers, device=where)
