"""Training-step benchmark: images/s and % of matmul peak for fwd + bwd + optimizer + EMA.

Each config is built by the real :class:`comit.train.loop.Trainer` and stepped with its own
``train_step`` (teacher features, the loss, backward, gradient clipping, AdamW, EMA) on random
images of the config's size. "Writes" are the gradient-carrying message writes, each scored by
the flow loss: one per image with the paper's step, one per image on the belt with
``step.conveyor`` (whose belt is filled before timing starts). The crop sequence of a step is seeded by the step number, so steps
1..R (after warm-up step 0) are R different draws of K, as in training; images/s and GFLOP/s
are totals over them.

Model FLOPs count the transformer only (``comit.bench.flops``): every call's forward, plus twice
that for the calls autograd recorded (their backward). The teacher, the projectors, FSQ and the
optimizer are not counted, so "% of peak" is conservative.

Configs with the SD-VAE get a randomly initialised one (nothing is downloaded) and no teacher
(the hub's DINOv2 would be a download); the shipped tiny and shapes-small configs run as they are,
with the bundled teacher. On CPU the step runs in fp32 (the Trainer allows bf16 only on GPUs).
"""

from __future__ import annotations

import itertools
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from ..model.autoencoders import SDVAE
from ..model.comit import COMiT
from ..train.conveyor import EMPTY
from .counting import count_calls
from .timing import peak_memory_mb, reset_peak_memory, synchronize

DEFAULT_TRAIN_CONFIGS = ("tiny", "shapes-small")


def train_step_benchmark(ctx) -> dict:
    return {"rows": [measure_config(ctx, name) for name in ctx.settings.train_configs]}


def measure_config(ctx, name: str) -> dict:
    from ..train.config import load_config

    config = load_config(name, training_overrides(name, ctx))
    trainer = build_trainer(config)
    batch = trainer.micro_batch
    size = config.model.image_size
    generator = torch.Generator().manual_seed(ctx.settings.seed)
    images = (torch.rand(batch, 3, size, size, generator=generator) * 2 - 1).to(ctx.device)
    loader = itertools.repeat({"image": images})
    gemm, gemm_work = ctx.gemm()

    reset_peak_memory(ctx.device)
    belt = trainer.step_module.conveyor
    # Steps are numbered past a global-crop warm-up (step.global_warmup_steps): the crop sequences
    # that follow it are most of a run; a conveyor is measured full, as it runs after its first steps.
    first = config.step.global_warmup_steps
    warmup = 1 if belt is None else belt.length
    for step in range(first, first + warmup):
        trainer.train_step(step, loader)
    synchronize(ctx.device)
    memory = peak_memory_mb(ctx.device)
    seconds, flops, gemm_seconds, writes = [], [], [], 0
    for step in range(first + warmup, first + warmup + ctx.settings.repeats):
        writes += batch if belt is None else batch + int((belt.column != EMPTY).sum())
        with count_calls(trainer.model) as calls:
            synchronize(ctx.device)
            start = time.perf_counter()
            trainer.train_step(step, loader)
            synchronize(ctx.device)
            seconds.append(time.perf_counter() - start)
        flops.append(calls.training_flops(trainer.model))
        start = time.perf_counter()
        gemm()
        synchronize(ctx.device)
        gemm_seconds.append(time.perf_counter() - start)
    peak = gemm_work * len(gemm_seconds) / sum(gemm_seconds) / 1e9
    achieved = sum(flops) / sum(seconds) / 1e9
    ordered = sorted(seconds)
    row = {"config": name, "batch": batch, "image_size": size, "hidden_size": config.model.hidden_size,
           "depth": config.model.depth, "precision": trainer.precision(),
           "teacher": config.teacher.kind, "autoencoder": config.model.autoencoder.kind,
           "timing": {"median_ms": 1e3 * ordered[len(ordered) // 2], "min_ms": 1e3 * ordered[0],
                      "max_ms": 1e3 * ordered[-1], "repeats": len(seconds)},
           "images_per_s": batch * len(seconds) / sum(seconds), "writes_per_s": writes / sum(seconds),
           "model_flops_per_step": sum(flops) / len(flops),
           "gflops": achieved, "peak_gflops": peak, "pct_of_peak": 100 * achieved / peak,
           "peak_memory_mb": round(memory, 1)}
    ctx.log(f"train step {name}: {row['images_per_s']:.1f} new images/s, {row['writes_per_s']:.1f} trained "
            f"writes/s, {row['pct_of_peak']:.0f}% of peak")
    return row


def training_overrides(name: str, ctx) -> dict:
    from ..train.config import load_config

    precision = ctx.settings.precision if ctx.device.type == "cuda" else "fp32"
    overrides = {"loop.device": str(ctx.device), "loop.precision": precision, "loop.compile": ctx.settings.compile}
    if load_config(name).model.autoencoder.kind == "sd-vae":
        overrides["teacher.kind"] = "none"
    return overrides


def build_trainer(config):
    """The real Trainer, with a random SD-VAE instead of the hub's (no download)."""
    from ..train import loop

    with tempfile.TemporaryDirectory() as out, _random_sd_vae(loop):
        return loop.Trainer(config, Path(out), progress=False)


@contextmanager
def _random_sd_vae(loop_module):
    original = loop_module.build_model

    def build_model(config):
        if config.model.autoencoder.kind != "sd-vae":
            return original(config)
        return COMiT(config.model, autoencoder=SDVAE(config.model.autoencoder.model_type,
                                                     sample_posterior=config.model.autoencoder.sample_posterior))

    loop_module.build_model = build_model
    try:
        yield
    finally:
        loop_module.build_model = original
