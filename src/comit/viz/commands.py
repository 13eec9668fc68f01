"""The ``comit viz``, ``comit demo`` and ``comit serve`` commands.

cli.py registers these functions (wrapped in its one-line error handler). This module imports
nothing from cli.py, so the command layer has no import cycle; heavy libraries (torch, gradio)
are imported inside the commands so ``comit --help`` stays fast.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..cli_support import load_model, parse_order
from ..cli_options import ADAPTIVE, DEFAULT_MODEL, BatchOption, DeviceOption, GlobalCropOption, ModelOption, OrderOption

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
DEFAULT_MAX_UPLOAD_MB = 10.0
# The bundled model is small: one thread is about as fast as two on an idle machine, and on a busy
# one two threads that wait for each other were 3-7x slower (8 s against 26-55 s on a shared 2-core CPU).
DEMO_THREADS = 1

OutOption = Annotated[Path, typer.Option("--out", "-o", help="Output folder (PNGs and index.html).")]
NumCropsOption = Annotated[Optional[int], typer.Option("--num-crops", help="Crops to observe (default: all).")]
StepsOption = Annotated[int, typer.Option("--steps", help="Decoding steps of the full reconstruction.")]
CfgOption = Annotated[float, typer.Option("--cfg", help="Guidance weight of the full reconstruction.")]
SeedOption = Annotated[int, typer.Option("--seed", help="Seed for noise and random orders.")]
TopTokensOption = Annotated[int, typer.Option("--top-tokens", help="Tokens shown in the attention panels.")]


def viz(images: Annotated[list[Path], typer.Argument(help="Image files.")], out: OutOption,
        model: ModelOption = DEFAULT_MODEL, order: OrderOption = ADAPTIVE, num_crops: NumCropsOption = None,
        global_crop: GlobalCropOption = False, steps: StepsOption = 10, cfg: CfgOption = 7.5, seed: SeedOption = 0,
        top_tokens: TopTokensOption = 8, device: DeviceOption = "auto", batch_size: BatchOption = 8):
    """Draw what the message knows, crop by crop: crop path, one-step strip, attention, token ids."""
    from .trace import VizSettings

    settings = VizSettings(order=parse_order(order), num_crops=num_crops, global_crop=global_crop, steps=steps,
                           cfg=cfg, seed=seed, top_tokens=top_tokens)
    report = visualize(model, images, settings, out, device, batch_size, title="COMiT: what the message knows")
    typer.echo(f"wrote the pictures of {len(images)} images and the report {report}")


def demo(out: OutOption = Path("demo-output"), model: ModelOption = DEFAULT_MODEL, seed: SeedOption = 0,
         device: DeviceOption = "auto",
         threads: Annotated[int, typer.Option("--threads", help="CPU threads for torch.")] = DEMO_THREADS):
    """Run the bundled model on the bundled sample images and write the HTML report (no download)."""
    import torch

    from ..data import sample_paths
    from .trace import VizSettings

    if threads < 1:
        raise ValueError(f"--threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)
    # The global crop first, then every local crop where the message is worst: the policy the
    # bundled model was trained to serve (local-only messages it does not read yet, docs/training.md).
    settings = VizSettings(order=ADAPTIVE, num_crops=None, global_crop=True, steps=10, cfg=7.5, seed=seed)
    samples = sample_paths()
    report = visualize(model, samples, settings, out, device, batch_size=len(samples),
                       title="COMiT demo: the bundled model on the bundled samples",
                       labels=[f"bundled sample {path.name}" for path in samples])
    typer.echo(f"open {report.resolve()} in a browser: crop paths, what the message knows after each crop, "
               "where its tokens look")


def serve(host: Annotated[str, typer.Option("--host", help="Address to bind (default: this machine only).")] = DEFAULT_HOST,
          port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = DEFAULT_PORT,
          model: Annotated[Optional[list[str]], typer.Option("--model", "-m", help="A model to offer (repeat for several; default: bundled).")] = None,
          max_upload_mb: Annotated[float, typer.Option("--max-upload-mb", help="Largest accepted upload, in MB.")] = DEFAULT_MAX_UPLOAD_MB,
          device: DeviceOption = "auto"):
    """Start the local web app: upload or pick an image, choose the settings, see what the message knows."""
    from .explorer import MB, Explorer

    if not 1 <= port <= 65535:
        raise ValueError(f"--port must lie in [1, 65535], got {port}")
    explorer = Explorer(model or [DEFAULT_MODEL], int(max_upload_mb * MB), loader=lambda name: load_model(name, device))
    explorer.model(explorer.model_names[0])  # a missing model fails now, before the server starts
    if host not in ("127.0.0.1", "localhost", "::1"):
        typer.secho(f"warning: binding {host}: other machines can reach this app (no authentication)", err=True,
                    fg=typer.colors.YELLOW)
    try:
        from .app import launch  # gradio: imported only once the settings are known to be good
    except ImportError as error:
        raise ValueError(f"comit serve needs gradio ({error}): pip install 'comit[app]'") from error
    launch(explorer, host=host, port=port)


# ---------------------------------------------------------------------- the work behind them
def visualize(model_name: str, paths: list[Path], settings, out: Path, device: str, batch_size: int,
              title: str, labels: list[str] | None = None) -> Path:
    """Load every image first (a bad file fails before any work), trace them in batches, write the run."""
    import torch
    from ..progress import progress

    from .. import __version__
    from ..data.images import load_images
    from .render import write_run
    from .trace import check_settings, trace_images

    if batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
    if not paths:
        raise ValueError("give at least one image file")
    started = time.perf_counter()
    net = load_model(model_name, device)
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



