"""``comit bench``: measure speed on random weights (nothing is downloaded)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .setup import ATTENTION_MODES, SECTIONS


def _names(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _integers(value: str, option: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in _names(value))
    except ValueError:
        raise ValueError(f"{option} takes comma-separated integers, e.g. 1,4; got {value!r}") from None


def bench(out: Annotated[Path, typer.Option("--out", help="Folder for bench.json and bench.md.")],
          size: Annotated[str, typer.Option("--size", help="tiny | S | B | L | XL.")] = "tiny",
          device: Annotated[str, typer.Option("--device", help="cpu | cuda | cuda:N.")] = "cpu",
          batch: Annotated[int, typer.Option("--batch", help="Images per call for tokenize/detokenize.")] = 1,
          repeats: Annotated[int, typer.Option("--repeats", help="Timed repeats (median and spread).")] = 3,
          warmup: Annotated[int, typer.Option("--warmup", help="Extra untimed rounds after the counted warm-up run.")] = 0,
          precision: Annotated[str, typer.Option("--precision", help="fp32 | bf16 (autocast; not exact).")] = "fp32",
          compile: Annotated[bool, typer.Option("--compile/--no-compile", help="torch.compile the transformer.")] = False,
          geometry: Annotated[str, typer.Option("--geometry", help="auto | paper | small (auto: small for tiny).")] = "auto",
          attention: Annotated[str, typer.Option("--attention", help="Attention modes to measure.")] = ",".join(ATTENTION_MODES),
          sections: Annotated[str, typer.Option("--sections", help="Sections to run.")] = ",".join(SECTIONS),
          forward_batches: Annotated[str, typer.Option("--forward-batches", help="Batch sizes of the forward section.")] = "1,4",
          threads: Annotated[int, typer.Option("--threads", help="torch threads (0: torch's default).")] = 0):
    """Benchmark on random weights: peak, forward, tokenize, detokenize, fast paths, training step."""
    import torch

    from .setup import BenchSettings
    from .suite import run_benchmark, write_results

    if threads < 0:
        raise ValueError(f"--threads must be >= 0, got {threads}")
    settings = BenchSettings(size=size, device=device, batch=batch, repeats=repeats, warmup=warmup,
                             precision=precision, compile=compile, geometry=geometry, attention=_names(attention),
                             sections=_names(sections), forward_batches=_integers(forward_batches, "--forward-batches"))
    previous_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        result = run_benchmark(settings.check())
    finally:
        torch.set_num_threads(previous_threads)
    json_path, md_path = write_results(result, out)
    typer.echo(f"wrote {json_path} and {md_path} ({result['wall_s']:.0f} s)")
