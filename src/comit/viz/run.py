"""One visualization run: load the images, trace them crop by crop in batches, write the pictures
and the HTML report (what ``comit viz`` and ``comit demo`` do once their options are read)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch

from .. import __version__
from ..data.images import load_images
from ..progress import progress
from .render import write_run
from .trace import VizSettings, check_settings, trace_images


def visualize(model_name: str, paths: list[Path], settings: VizSettings, out: Path, loader: Callable[[str], object],
              batch_size: int, title: str, labels: list[str] | None = None) -> Path:
    """Load every image first (a bad file fails before any work), trace them in batches, write the run.

    ``loader(model_name)`` returns the model (the command line's loads it on its ``--device``)."""
    if batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
    if not paths:
        raise ValueError("give at least one image file")
    started = time.perf_counter()
    net = loader(model_name)
    check_settings(net, settings)
    pixels = load_images(paths, net.config.image_size)
    traces = []
    starts = range(0, len(paths), batch_size)
    for start in progress(starts, total=len(starts), desc="viz", unit="batch"):
        traces.extend(trace_images(net, pixels[start:start + batch_size].to(net.device), settings))
    info = {"model": model_name, "image size": f"{net.config.image_size} px",
            "message": f"{net.config.num_msg_tokens} tokens of {net.codebook_size}",
            "crop grid": f"{net.config.grid_size}x{net.config.grid_size} crops of {net.config.crop_size} px",
            **{key.replace("_", " "): value for key, value in settings.describe().items()},
            "device": str(net.device), "comit": __version__,
            "time": f"{time.perf_counter() - started:.1f} s (model, images, tracing)",
            "threads": torch.get_num_threads()}
    return write_run(out, traces, [str(p) for p in paths], {"title": title, "info": info}, labels=labels)
