"""The ``comit`` command: a thin layer over the library. Each command parses options, calls the
modules that do the work, and turns expected failures into one-line errors (exit code 1)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from .cli_options import (ADAPTIVE, DEFAULT_MODEL, BatchOption, CfgOption, CompileOption, DeviceOption, GlobalCropOption,
                          ModelOption, NumCropsOption, OrderOption, PrecisionOption, RevisionOption, SolverOption,
                          StepsOption)
from .cli_support import friendly_errors, load_model, parse_order, resolved_num_crops

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="COMiT: tokenize images crop by crop into discrete messages, and paint them back.")

def show_version(value: bool) -> None:
    if value:
        from . import __version__

        typer.echo(f"comit {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(version: Annotated[bool, typer.Option("--version", callback=show_version, is_eager=True,
                                                       help="Print the version and exit.")] = False):
    """COMiT: tokenize images crop by crop into discrete messages, and paint them back."""


SeedOption = Annotated[int, typer.Option("--seed", help="Seed for noise, random orders and VAE sampling.")]

# ---------------------------------------------------------------------- shared helpers
def batches(items: list, size: int):
    if size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {size}")
    for start in range(0, len(items), size):
        yield items[start:start + size]


def output_names(paths: list[Path]) -> list[str]:
    """Unique PNG names from the input stems (a clash gets its index appended)."""
    names, seen = [], set()
    for index, path in enumerate(paths):
        name = f"{path.stem}.png"
        if name in seen:
            name = f"{path.stem}-{index}.png"
        seen.add(name)
        names.append(name)
    return names


def progress(iterable, total: int, desc: str):
    from .progress import progress as progress_bar

    return progress_bar(iterable, total=total, desc=desc, unit="batch")


def tokenize_settings(order, num_crops, global_crop, seed) -> dict:
    return {"order": order, "num_crops": num_crops, "global_crop": global_crop, "seed": seed}


# ---------------------------------------------------------------------- commands
@app.command()
@friendly_errors
def tokenize(output: Annotated[Path, typer.Option("--output", "-o", help="A .safetensors file, or a folder of shards.")],
             images: Annotated[Optional[list[Path]], typer.Argument(
                 help="Image files, folders (recursive) or quoted globs (or --data).")] = None,
             model: ModelOption = DEFAULT_MODEL, order: OrderOption = ADAPTIVE, num_crops: NumCropsOption = None,
             global_crop: GlobalCropOption = False, seed: SeedOption = 0, device: DeviceOption = "auto",
             batch_size: BatchOption = 8, revision: RevisionOption = None,
             data: Annotated[Optional[str], typer.Option("--data", help="A dataset instead of files: 'shapes[:key=value,...]', an image folder (ImageNet layout), 'wds:SHARDS.tar' or 'hf:SAVED_DATASET' (docs/datasets.md).")] = None,
             split: Annotated[str, typer.Option("--split", help="Split of --data.")] = "train",
             shard_size: Annotated[int, typer.Option("--shard-size", help="Images per shard (a folder --output).")] = 1000,
             num_workers: Annotated[int, typer.Option("--num-workers", help="DataLoader workers decoding images.")] = 0,
             precision: PrecisionOption = "fp32", compile_model: CompileOption = False):
    """Turn images into token messages: one safetensors file (-o x.safetensors) or, for a dataset, a
    folder of shards that a re-run resumes (also under torchrun: one shard range per process)."""
    from .data.folder import expand_image_arguments
    from .model.acceleration import autocast
    from .tokens_file import save_tokens

    if (images is None) == (data is None):
        raise ValueError("give image files/folders/globs or --data, not both and not neither")
    paths = expand_image_arguments(images) if images is not None else None
    order_value = parse_order(order)
    num_crops = resolved_num_crops(order_value, num_crops)
    settings = tokenize_settings(order_value, num_crops, global_crop, seed)
    if output.suffix == ".safetensors" and paths is not None:
        net = prepared_model(model, device, revision, compile_model)
        with autocast(net.device, precision):
            tokens = tokenize_files(net, paths, order_value, num_crops, global_crop, seed, batch_size)
        save_tokens(output, tokens, model=model, fsq_levels=net.config.fsq_levels, settings=settings,
                    sources=[str(p) for p in paths])
        typer.echo(f"wrote {len(paths)} messages of {net.config.num_msg_tokens} tokens to {output}")
        return
    tokenize_dataset(paths, data, split, output, model, device, revision, compile_model, settings, shard_size,
                     batch_size, num_workers, precision)


def tokenize_dataset(paths, data, split, output: Path, model: str, device: str, revision, compile_model: bool,
                     settings: dict, shard_size: int, batch_size: int, num_workers: int, precision: str) -> None:
    from .data import build_dataset
    from .token_shards import ImageFiles, dataset_sources, plan_shards, tokenize_to_shards

    rank, world_size = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    if device == "auto" and world_size > 1:
        import torch

        if torch.cuda.is_available():
            device = f"cuda:{os.environ.get('LOCAL_RANK', '0')}"
    net = prepared_model(model, device, revision, compile_model)
    size = net.config.image_size
    dataset = ImageFiles(paths, size) if paths is not None else build_dataset(data, size, split=split)
    name = "files" if paths is not None else f"{data} ({split})"
    sources = dataset_sources(dataset, data or "files")
    plan = plan_shards(model, settings, name, sources, shard_size)
    result = tokenize_to_shards(net, dataset, output, plan, batch_size=batch_size, num_workers=num_workers,
                                rank=rank, world_size=world_size, precision=precision, sources=sources)
    who = f"process {rank} of {world_size}: " if world_size > 1 else ""
    typer.echo(f"{who}wrote {result.written} shards ({result.images} images, {result.images_per_s:.1f} img/s), "
               f"{result.skipped} already done; {plan.num_shards} shards of {plan.num_images} images in {output}")


def prepared_model(model: str, device: str, revision, compile_model: bool):
    net = load_model(model, device, revision)
    if compile_model:
        from .model.acceleration import compile_predictor

        compile_predictor(net)
    return net


@app.command()
@friendly_errors
def detokenize(tokens_file: Annotated[Path, typer.Argument(help="A tokens file written by `comit tokenize`.")],
               output: Annotated[Path, typer.Option("--output", "-o", help="Folder for the PNGs.")],
               model: Annotated[Optional[str], typer.Option("--model", "-m", help="Default: the model named in the file.")] = None,
               steps: StepsOption = 10, cfg: CfgOption = 7.5, solver: SolverOption = "euler",
               seed: SeedOption = 0, device: DeviceOption = "auto", batch_size: BatchOption = 8,
               revision: RevisionOption = None, precision: PrecisionOption = "fp32", compile_model: CompileOption = False):
    """Paint images back from a tokens file."""
    from .model.acceleration import autocast
    from .tokens_file import load_tokens

    loaded = load_tokens(tokens_file)
    net = prepared_model(model or loaded.model, device, revision, compile_model)
    loaded.check_compatible(net)
    with autocast(net.device, precision):
        pictures = detokenize_all(net, loaded.tokens, steps, cfg, solver, seed, batch_size)
    write_images(output, output_names([Path(s) for s in loaded.sources]), pictures)
    typer.echo(f"wrote {len(pictures)} images to {output}")


@app.command()
@friendly_errors
def reconstruct(images: Annotated[list[Path], typer.Argument(help="Image files, folders (recursive) or quoted globs.")],
                output: Annotated[Path, typer.Option("--output", "-o", help="Folder for the PNGs.")],
                model: ModelOption = DEFAULT_MODEL, order: OrderOption = ADAPTIVE, num_crops: NumCropsOption = None,
                global_crop: GlobalCropOption = False, steps: StepsOption = 10, cfg: CfgOption = 7.5,
                solver: SolverOption = "euler", seed: SeedOption = 0, device: DeviceOption = "auto",
                batch_size: BatchOption = 8, revision: RevisionOption = None, precision: PrecisionOption = "fp32",
                compile_model: CompileOption = False):
    """Tokenize then detokenize images (what the message keeps of each)."""
    from .data.folder import expand_image_arguments
    from .model.acceleration import autocast

    images = expand_image_arguments(images)
    net = prepared_model(model, device, revision, compile_model)
    order_value = parse_order(order)
    with autocast(net.device, precision):
        tokens = tokenize_files(net, images, order_value, resolved_num_crops(order_value, num_crops), global_crop,
                                seed, batch_size)
        pictures = detokenize_all(net, tokens, steps, cfg, solver, seed, batch_size)
    write_images(output, output_names(images), pictures)
    typer.echo(f"wrote {len(pictures)} reconstructions to {output}")


@app.command()
@friendly_errors
def info(model: ModelOption = DEFAULT_MODEL, revision: RevisionOption = None):
    """Print a model's configuration and size."""
    from .model.transformer import count_parameters

    net = load_model(model, revision=revision)
    summary = {"model": model, "parameters": count_parameters(net.predictor), "codebook_size": net.codebook_size,
               **net.config.model_dump()}
    typer.echo(json.dumps(summary, indent=2))


@app.command()
@friendly_errors
def push(model: Annotated[str, typer.Argument(help="A saved model folder (from comit train or save_pretrained), or 'bundled'.")],
         repo_id: Annotated[str, typer.Argument(help="Hub repository, owner/name (created if missing).")],
         private: Annotated[bool, typer.Option("--private", help="Create the repository private.")] = False,
         token: Annotated[Optional[str], typer.Option("--token", help="Hub token (default: huggingface-cli login's).")] = None,
         message: Annotated[str, typer.Option("--message", help="Commit message.")] = "Upload COMiT model"):
    """Upload a saved model to the Hugging Face hub, with a model card if it has none."""
    from .model.hub import push_folder

    typer.echo(f"pushed {model} to {repo_id}: {push_folder(model, repo_id, private=private or None, token=token, commit_message=message)}")


def tokenize_files(net, paths: list[Path], order, num_crops, global_crop: bool, seed: int, batch_size: int):
    """Load every image first (so a bad file fails before any work), then tokenize in batches."""
    import torch

    from .data.images import load_images
    from .model.comit import Tokens

    pixels = load_images(paths, net.config.image_size)
    generator = torch.Generator().manual_seed(seed)
    parts = []
    indices = list(range(len(paths)))
    for chunk in progress(batches(indices, batch_size), total=-(-len(indices) // batch_size), desc="tokenize"):
        parts.append(net.tokenize(pixels[chunk], global_crop=global_crop, order=order, num_crops=num_crops,
                                  generator=generator).to("cpu"))
    return Tokens.cat(parts)


def detokenize_all(net, tokens, steps: int, cfg: float, solver: str, seed: int, batch_size: int) -> list:
    import torch

    generator = torch.Generator().manual_seed(seed)
    pictures = []
    indices = list(range(len(tokens)))
    for chunk in progress(batches(indices, batch_size), total=-(-len(indices) // batch_size), desc="detokenize"):
        pictures.extend(net.detokenize(tokens.messages[chunk], tokens.offsets[chunk], num_steps=steps,
                                       solver=solver, cfg_weight=cfg, generator=generator).float().cpu())
    return pictures


def write_images(folder: Path, names: list[str], pictures) -> None:
    """Write all PNGs into a fresh temporary folder, then move them in: no half-written output."""
    import shutil
    import tempfile

    from .data.images import save_image

    folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".comit-", dir=folder))
    try:
        for name, picture in zip(names, pictures):
            save_image(picture, staging / name)
        for name in names:
            os.replace(staging / name, folder / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# ---------------------------------------------------------------------- more commands
# Commands of other parts of the library register themselves here (each module keeps its own
# options and work; this file only wires them in).
from .eval.commands import eval_app  # noqa: E402

app.add_typer(eval_app, name="eval")
from .experiments.cli import experiment_app  # noqa: E402

app.add_typer(experiment_app, name="experiment")


@app.command(context_settings={"allow_extra_args": False})
@friendly_errors
def train(args: Annotated[Optional[list[str]], typer.Argument(
              help="[CONFIG] [key=value ...]: a shipped config name or YAML path, then overrides "
                   "such as max_steps=100 batch_size=8 optim.lr=1e-4.")] = None,
          out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Run folder (default: runs/<name>).")] = None,
          resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out exactly.")] = False,
          push_to_hub: Annotated[Optional[str], typer.Option("--push-to-hub", help="Upload the final model to this hub repository (owner/name).")] = None):
    """Train a COMiT model (under torchrun: one process per GPU, DDP)."""
    from .train.cli import run_training

    run_training(args or [], out, resume, push_to_hub)


@app.command(name="train-autoencoder")
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

    from .model.conv_autoencoder import ConvAutoencoderConfig
    from .pydantic_errors import first_error
    from .train.autoencoder import AutoencoderTrainConfig, train_autoencoder as run

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


from .viz.commands import demo, serve, viz  # noqa: E402  pictures, the demo report, the web app

for _command in (viz, demo, serve):
    app.command()(friendly_errors(_command))

from .bench.command import bench as _bench  # noqa: E402

app.command(name="bench")(friendly_errors(_bench))


def main() -> None:  # the console script
    app()


if __name__ == "__main__":
    sys.exit(main())
