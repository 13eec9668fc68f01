"""``comit tokenize``, ``detokenize`` and ``reconstruct``: images to token messages and back."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..model.policy_names import ADAPTIVE
from .options import (DEFAULT_MODEL, BatchOption, CfgOption, CompileOption, DeviceOption, GlobalCropOption,
                      ModelOption, NumCropsOption, OrderOption, PrecisionOption, RevisionOption, SeedOption,
                      SolverOption, StepsOption)
from .support import friendly_errors, load_model, parse_order, resolved_num_crops


def register(app: typer.Typer) -> None:
    for command in (tokenize, detokenize, reconstruct):
        app.command()(command)


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
    from ..progress import progress as progress_bar

    return progress_bar(iterable, total=total, desc=desc, unit="batch")


def tokenize_settings(order, num_crops, global_crop, seed) -> dict:
    return {"order": order, "num_crops": num_crops, "global_crop": global_crop, "seed": seed}


# ---------------------------------------------------------------------- commands
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
    from ..data.folder import expand_image_arguments
    from ..tokens_file import save_tokens

    if (images is None) == (data is None):
        raise ValueError("give image files/folders/globs or --data, not both and not neither")
    paths = expand_image_arguments(images) if images is not None else None
    order_value = parse_order(order)
    num_crops = resolved_num_crops(order_value, num_crops)
    settings = tokenize_settings(order_value, num_crops, global_crop, seed)
    if output.suffix == ".safetensors" and paths is not None:
        net = prepared_model(model, device, revision, compile_model)
        tokens = tokenize_files(net, paths, order_value, num_crops, global_crop, seed, batch_size, precision)
        save_tokens(output, tokens, model=model, fsq_levels=net.config.fsq_levels, settings=settings,
                    sources=[str(p) for p in paths])
        typer.echo(f"wrote {len(paths)} messages of {net.config.num_msg_tokens} tokens to {output}")
        return
    tokenize_dataset(paths, data, split, output, model, device, revision, compile_model, settings, shard_size,
                     batch_size, num_workers, precision)


def tokenize_dataset(paths, data, split, output: Path, model: str, device: str, revision, compile_model: bool,
                     settings: dict, shard_size: int, batch_size: int, num_workers: int, precision: str) -> None:
    from ..data import build_dataset
    from ..token_shards import ImageFiles, dataset_sources, plan_shards, tokenize_to_shards

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
    for note in result.notes:
        typer.echo(f"{who}{note}")
    typer.echo(f"{who}wrote {result.written} shards ({result.images} images, {result.images_per_s:.1f} img/s), "
               f"{result.skipped} already done; {plan.num_shards} shards of {plan.num_images} images in {output}")


def prepared_model(model: str, device: str, revision, compile_model: bool):
    net = load_model(model, device, revision)
    if compile_model:
        from ..model.acceleration import compile_predictor

        compile_predictor(net)
    return net


@friendly_errors
def detokenize(tokens_file: Annotated[Path, typer.Argument(help="A tokens file written by `comit tokenize`.")],
               output: Annotated[Path, typer.Option("--output", "-o", help="Folder for the PNGs.")],
               model: Annotated[Optional[str], typer.Option("--model", "-m", help="Default: the model named in the file.")] = None,
               steps: StepsOption = 10, cfg: CfgOption = 7.5, solver: SolverOption = "euler",
               seed: SeedOption = 0, device: DeviceOption = "auto", batch_size: BatchOption = 8,
               revision: RevisionOption = None, precision: PrecisionOption = "fp32", compile_model: CompileOption = False):
    """Paint images back from a tokens file."""
    from ..model.acceleration import autocast
    from ..tokens_file import load_tokens

    loaded = load_tokens(tokens_file)
    net = prepared_model(model or loaded.model, device, revision, compile_model)
    loaded.check_compatible(net)
    with autocast(net.device, precision):
        pictures = detokenize_all(net, loaded.tokens, steps, cfg, solver, seed, batch_size)
    write_images(output, output_names([Path(s) for s in loaded.sources]), pictures)
    typer.echo(f"wrote {len(pictures)} images to {output}")


@friendly_errors
def reconstruct(images: Annotated[list[Path], typer.Argument(help="Image files, folders (recursive) or quoted globs.")],
                output: Annotated[Path, typer.Option("--output", "-o", help="Folder for the PNGs.")],
                model: ModelOption = DEFAULT_MODEL, order: OrderOption = ADAPTIVE, num_crops: NumCropsOption = None,
                global_crop: GlobalCropOption = False, steps: StepsOption = 10, cfg: CfgOption = 7.5,
                solver: SolverOption = "euler", seed: SeedOption = 0, device: DeviceOption = "auto",
                batch_size: BatchOption = 8, revision: RevisionOption = None, precision: PrecisionOption = "fp32",
                compile_model: CompileOption = False):
    """Tokenize then detokenize images (what the message keeps of each)."""
    from ..data.folder import expand_image_arguments
    from ..model.acceleration import autocast

    import torch

    from ..data.images import load_images
    from ..metrics.reconstruction import psnr_per_image
    from ..model.fit import poor_fit_message

    images = expand_image_arguments(images)
    net = prepared_model(model, device, revision, compile_model)
    order_value = parse_order(order)
    pixels = load_images(images, net.config.image_size)
    with autocast(net.device, precision):
        tokens = tokenize_pixels(net, pixels, order_value, resolved_num_crops(order_value, num_crops), global_crop,
                                 seed, batch_size)
        pictures = detokenize_all(net, tokens, steps, cfg, solver, seed, batch_size)
    names = output_names(images)
    write_images(output, names, pictures)
    typer.echo(f"wrote {len(pictures)} reconstructions to {output}")
    poor = poor_fit_message(psnr_per_image(torch.stack(pictures), pixels), names, net.training_data)
    if poor:
        typer.echo(f"warning: {poor}", err=True)


def tokenize_files(net, paths: list[Path], order, num_crops, global_crop: bool, seed: int, batch_size: int,
                   precision: str = "fp32"):
    """Load every image first (so a bad file fails before any work), then tokenize in batches."""
    from ..data.images import load_images

    return tokenize_pixels(net, load_images(paths, net.config.image_size), order, num_crops, global_crop, seed,
                           batch_size, precision)


def tokenize_pixels(net, pixels, order, num_crops, global_crop: bool, seed: int, batch_size: int,
                    precision: str = "fp32"):
    """Tokenize loaded images [N, 3, S, S] in batches, one generator for all."""
    import torch

    from ..token_shards import tokenize_batches

    chunks = (pixels[chunk] for chunk in batches(list(range(len(pixels))), batch_size))
    return tokenize_batches(net, progress(chunks, total=-(-len(pixels) // batch_size), desc="tokenize"),
                            tokenize_settings(order, num_crops, global_crop, seed),
                            torch.Generator().manual_seed(seed), precision)


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

    from ..data.images import save_image

    folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".comit-", dir=folder))
    try:
        for name, picture in zip(names, pictures):
            save_image(picture, staging / name)
        for name in names:
            os.replace(staging / name, folder / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
