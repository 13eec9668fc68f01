"""``comit train`` and ``comit train-autoencoder``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .options import SeedOption
from .support import friendly_errors


def register(app: typer.Typer) -> None:
    app.command(context_settings={"allow_extra_args": False})(train)
    app.command(name="train-autoencoder")(train_autoencoder)
    app.command(name="cache-latents")(cache_latents)


@friendly_errors
def train(args: Annotated[Optional[list[str]], typer.Argument(
              help="[CONFIG] [key=value ...]: a shipped config name or YAML path, then overrides "
                   "such as max_steps=100 batch_size=8 optim.lr=1e-4.")] = None,
          out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Run folder (default: runs/<name>).")] = None,
          resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out exactly.")] = False,
          push_to_hub: Annotated[Optional[str], typer.Option("--push-to-hub", help="Upload the final model to this hub repository (owner/name).")] = None):
    """Train a COMiT model (under torchrun: one process per GPU, DDP)."""
    from ..train.launch import run_training

    run_training(args or [], out, resume, push_to_hub)


@friendly_errors
def train_autoencoder(
        out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the trained autoencoder.")],
        data: Annotated[str, typer.Option("--data", help="'shapes', 'shapes:key=value,...' or an image folder.")] = "shapes",
        image_size: Annotated[int, typer.Option("--image-size", min=8, help="Training image side in pixels.")] = 64,
        steps: Annotated[int, typer.Option("--steps", min=1)] = 3000,
        batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 32,
        lr: Annotated[float, typer.Option("--lr", min=0.0)] = 2e-3,
        latent_channels: Annotated[int, typer.Option("--latent-channels", min=1)] = 4,
        downsample: Annotated[int, typer.Option("--downsample", min=2, help="Spatial factor, a power of two.")] = 4,
        width: Annotated[int, typer.Option("--width", min=8, help="Channels at full resolution (x2 per level).")] = 32,
        latent_noise: Annotated[float, typer.Option("--latent-noise", min=0.0,
                                                    help="Noise on latents while training, x their std.")] = 0.1,
        precision: Annotated[str, typer.Option("--precision", help="fp32, or bf16 where the CPU/GPU has it.")] = "fp32",
        seed: SeedOption = 0):
    """Train the small convolutional autoencoder that models of our own use as latent space."""
    from pydantic import ValidationError

    from ..model.conv_autoencoder import ConvAutoencoderConfig
    from ..user_settings import first_error
    from ..train.autoencoder import AutoencoderTrainConfig, train_autoencoder as run

    try:
        architecture = ConvAutoencoderConfig(latent_channels=latent_channels, downsample=downsample, width=width)
        config = AutoencoderTrainConfig(data=data, image_size=image_size, architecture=architecture, steps=steps,
                                        batch_size=batch_size, lr=lr, latent_noise=latent_noise,
                                        precision=precision, seed=seed)
    except ValidationError as error:  # one line naming the option, not pydantic's report
        where, message = first_error(error)
        raise ValueError(f"{where + ': ' if where else ''}{message.removeprefix('Value error, ')}") from None
    result = run(config, out)
    typer.echo(f"autoencoder: {result.directory}  val PSNR {result.val_psnr:.2f} dB on {result.val_images} images, "
               f"{result.wall_time_s / 60:.1f} min")


@friendly_errors
def cache_latents(
        args: Annotated[Optional[list[str]], typer.Argument(
            help="[CONFIG] [key=value ...]: the training config whose data and autoencoder to cache.")] = None,
        out: Annotated[Path, typer.Option("--out", "-o", help="Cache folder (then train with data.latent_cache=OUT).")] = Path("latents"),
        batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Images encoded at once.")] = 32,
        device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")] = "auto",
        num_workers: Annotated[int, typer.Option("--num-workers", min=0, help="DataLoader workers.")] = 0):
    """Encode a training set's images and grid crops once (autoencoder mean and std); re-running resumes."""
    from ..train.launch import cache_latents as run

    index = run(args or [], out, batch_size, device, num_workers)
    typer.echo(f"latent cache: {index.parent}  (train with data.latent_cache={index.parent})")
