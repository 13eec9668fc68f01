"""Run the benchmark sections on a randomly initialised model and write JSON + markdown."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from ..devices import resolve_device
from ..model.acceleration import compile_predictor
from ..io import atomic_write_json, atomic_write_text
from ..model.transformer import count_parameters
from . import sections
from .machine import describe, load_average
from .report import markdown_report
from .setup import BenchSettings, build_model, make_inputs

SCHEMA_VERSION = 1
SECTION_FUNCTIONS: dict[str, Callable] = {
    "peak": sections.peak_section,
    "forward": sections.forward_section,
    "tokenize": sections.tokenize_section,
    "detokenize": sections.detokenize_section,
    "fast_paths": sections.fast_paths_section,
    "train": sections.train_section,
    "dataset": sections.dataset_section,
}


def describe_model(model) -> dict:
    config = model.config
    return {"size_parameters": count_parameters(model.predictor), "hidden_size": config.hidden_size,
            "depth": config.depth, "num_heads": config.num_heads, "num_msg_tokens": config.num_msg_tokens,
            "image_size": config.image_size, "crop_size": config.crop_size, "grid_size": config.grid_size,
            "latent_size": config.latent_size, "patch_size": config.patch_size,
            "autoencoder": config.autoencoder.kind, "weights": "random (no download)"}


def run_benchmark(settings: BenchSettings, log: Callable[[str], None] | None = None,
                  out_dir: Path | None = None) -> dict:
    """Measure everything ``settings.sections`` asks for; returns the JSON-ready result. With
    ``out_dir``, the results so far are written after every section (a long run that is
    interrupted keeps what it measured)."""
    settings.check()
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    device = resolve_device(settings.device)
    torch.set_flush_denormal(True)
    started = time.perf_counter()
    model = build_model(settings, device)
    if settings.compile:
        compile_predictor(model)
    result = {"schema": SCHEMA_VERSION, "machine": describe(device), "settings": settings.as_dict(),
              "model": describe_model(model)}
    ctx = sections.Context(settings, model, device, make_inputs(model, settings.batch, settings.seed), log)
    for name in settings.sections:
        result[name] = SECTION_FUNCTIONS[name](ctx)
        result["machine"]["load_average_at_end"] = load_average()
        result["wall_s"] = time.perf_counter() - started
        if out_dir is not None:
            write_results(result, out_dir)
    return result


def write_results(result: dict, out_dir: Path) -> tuple[Path, Path]:
    """bench.json and bench.md in ``out_dir``, each written atomically."""
    out_dir = Path(out_dir)
    json_path, md_path = out_dir / "bench.json", out_dir / "bench.md"
    atomic_write_json(json_path, result)
    atomic_write_text(md_path, markdown_report(result))
    return json_path, md_path
