"""``comit bench``: measure speed on random weights (nothing is downloaded)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..bench.names import ATTENTION_MODES, SECTIONS
from .support import friendly_errors


def _names(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _integers(value: str, option: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in _names(value))
    except ValueError:
        raise ValueError(f"{option} takes comma-separated integers, e.g. 1,4; got {value!r}") from None


Out = Annotated[Path, typer.Option("--out", help="Folder for bench.json and bench.md.")]
Size = Annotated[str, typer.Option("--size", help="tiny | S | B | L | XL.")]
Device = Annotated[str, typer.Option("--device", help="cpu | cuda | cuda:N.")]
Batch = Annotated[int, typer.Option("--batch", help="Images per call for tokenize/detokenize.")]
Repeats = Annotated[int, typer.Option("--repeats", help="Timed repeats (median and spread).")]
Warmup = Annotated[int, typer.Option("--warmup", help="Untimed rounds after the counted warm-up run.")]
Precision = Annotated[str, typer.Option("--precision", help="fp32 | bf16 (autocast; not exact) | auto (bf16 on "
                                         "CUDA and on CPUs with bf16 units, else fp32).")]
Compile = Annotated[bool, typer.Option("--compile/--no-compile", help="torch.compile the transformer.")]
Geometry = Annotated[str, typer.Option("--geometry", help="auto | paper | small (auto: small for tiny).")]
Attention = Annotated[str, typer.Option("--attention", help="Attention modes to measure.")]
Sections = Annotated[str, typer.Option("--sections", help="Sections to run.")]
ForwardBatches = Annotated[str, typer.Option("--forward-batches", help="Batch sizes of the forward section.")]
TrainConfigs = Annotated[str, typer.Option("--train-configs", help="Training configs of the train section.")]
TrainBaseline = Annotated[bool, typer.Option("--train-baseline/--no-train-baseline",
                                             help="Also time each training config's 2026-12-06 step (fp32, the "
                                                  "global crop encoded twice), interleaved step by step.")]
Threads = Annotated[int, typer.Option("--threads", help="torch threads (0: torch's default).")]


@friendly_errors
def bench(out: Out, size: Size = "tiny", device: Device = "cpu", batch: Batch = 1, repeats: Repeats = 3,
          warmup: Warmup = 0, precision: Precision = "fp32", compile: Compile = False, geometry: Geometry = "auto",
          attention: Attention = ",".join(ATTENTION_MODES), sections: Sections = ",".join(SECTIONS),
          forward_batches: ForwardBatches = "1,4", train_configs: TrainConfigs = "tiny,shapes-small",
          train_baseline: TrainBaseline = True, threads: Threads = 0):
    """Benchmark on random weights: peak, forward, tokenize, detokenize, fast paths, training step."""
    from ..bench.setup import BenchSettings
    from ..bench.suite import run_benchmark, write_results
    from ..devices import torch_threads

    settings = BenchSettings(size=size, device=device, batch=batch, repeats=repeats, warmup=warmup,
                             precision=precision, compile=compile, geometry=geometry, attention=_names(attention),
                             sections=_names(sections), forward_batches=_integers(forward_batches, "--forward-batches"),
                             train_configs=_names(train_configs), train_baseline=train_baseline)
    with torch_threads(threads or None):
        result = run_benchmark(settings.check(), out_dir=out)
    json_path, md_path = write_results(result, out)
    typer.echo(f"wrote {json_path} and {md_path} ({result['wall_s']:.0f} s)")


def register(app: typer.Typer) -> None:
    app.command(name="bench")(bench)
