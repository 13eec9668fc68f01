"""The ``comit viz``, ``comit demo`` and ``comit serve`` commands: options in, ``comit.viz`` does the
work. Heavy libraries (torch, gradio) are imported inside the commands so ``comit --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..model.policy_names import ADAPTIVE
from .options import DEFAULT_MODEL, BatchOption, DeviceOption, GlobalCropOption, ModelOption, OrderOption
from .support import friendly_errors, load_model, parse_order

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


@friendly_errors
def viz(images: Annotated[list[Path], typer.Argument(help="Image files.")], out: OutOption,
        model: ModelOption = DEFAULT_MODEL, order: OrderOption = ADAPTIVE, num_crops: NumCropsOption = None,
        global_crop: GlobalCropOption = False, steps: StepsOption = 10, cfg: CfgOption = 7.5, seed: SeedOption = 0,
        top_tokens: TopTokensOption = 8, device: DeviceOption = "auto", batch_size: BatchOption = 8):
    """Draw what the message knows, crop by crop: crop path, one-step strip, attention, token ids."""
    from ..viz.run import visualize
    from ..viz.trace import VizSettings

    settings = VizSettings(order=parse_order(order), num_crops=num_crops, global_crop=global_crop, steps=steps,
                           cfg=cfg, seed=seed, top_tokens=top_tokens)
    report = visualize(model, images, settings, out, loader(device), batch_size, title="COMiT: what the message knows")
    typer.echo(f"wrote the pictures of {len(images)} images and the report {report}")


@friendly_errors
def demo(out: OutOption = Path("demo-output"), model: ModelOption = DEFAULT_MODEL, seed: SeedOption = 0,
         device: DeviceOption = "auto",
         threads: Annotated[int, typer.Option("--threads", help="CPU threads for torch.")] = DEMO_THREADS):
    """Run the bundled model on the bundled sample images and write the HTML report (no download)."""
    import torch

    from ..data import sample_paths
    from ..viz.run import visualize
    from ..viz.trace import VizSettings

    if threads < 1:
        raise ValueError(f"--threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)
    # The global crop first, then every local crop where the message is worst: the sequence the
    # bundled model saw most in training (90 % start with the global crop) and its best pictures.
    settings = VizSettings(order=ADAPTIVE, num_crops=None, global_crop=True, steps=10, cfg=7.5, seed=seed)
    samples = sample_paths()
    report = visualize(model, samples, settings, out, loader(device), batch_size=len(samples),
                       title="COMiT demo: the bundled model on the bundled samples",
                       labels=[f"bundled sample {path.name}" for path in samples])
    typer.echo(f"open {report.resolve()} in a browser: crop paths, what the message knows after each crop, "
               "where its tokens look")


@friendly_errors
def serve(host: Annotated[str, typer.Option("--host", help="Address to bind (default: this machine only).")] = DEFAULT_HOST,
          port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = DEFAULT_PORT,
          model: Annotated[Optional[list[str]], typer.Option("--model", "-m", help="A model to offer (repeat for several; default: bundled).")] = None,
          max_upload_mb: Annotated[float, typer.Option("--max-upload-mb", help="Largest accepted upload, in MB.")] = DEFAULT_MAX_UPLOAD_MB,
          device: DeviceOption = "auto"):
    """Start the local web app: upload or pick an image, choose the settings, see what the message knows."""
    from ..viz.explorer import MB, Explorer

    if not 1 <= port <= 65535:
        raise ValueError(f"--port must lie in [1, 65535], got {port}")
    explorer = Explorer(model or [DEFAULT_MODEL], int(max_upload_mb * MB), loader=loader(device))
    explorer.model(explorer.model_names[0])  # a missing model fails now, before the server starts
    if host not in ("127.0.0.1", "localhost", "::1"):
        typer.secho(f"warning: binding {host}: other machines can reach this app (no authentication)", err=True,
                    fg=typer.colors.YELLOW)
    try:
        from ..viz.app import launch  # gradio: imported only once the settings are known to be good
    except ImportError as error:
        raise ValueError(f"comit serve needs gradio ({error}): pip install 'comit[app]'") from error
    launch(explorer, host=host, port=port)


def loader(device: str):
    """How these commands load a model by name: ``load_model`` on ``--device``, like every command."""
    return lambda name: load_model(name, device)


def register(app: typer.Typer) -> None:
    for command in (viz, demo, serve):
        app.command()(command)
