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
with the bundled teacher. The step runs at ``--precision`` (``auto``: bf16 on CUDA and on CPUs with
bf16 units); with ``--train-baseline`` the step as it ran until 2026-12-06 is timed beside it.
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


# The step as it ran until 2026-12-06: fp32 on every CPU, and the global crop encoded again although
# its latent is the step's flow target. Timed beside the current step, interleaved, so a before/after
# speed-up is one bench run on one machine under one load.
BASELINE = "2026-12-06"


def train_step_benchmark(ctx) -> dict:
    return {"rows": [row for name in ctx.settings.train_configs for row in measure_config(ctx, name)]}


def measure_config(ctx, name: str) -> list[dict]:
    """One row per variant of ``name`` (the current step, and the baseline with ``--train-baseline``);
    their timed steps alternate, each variant with its own trainer on the same images."""
    from ..train.config import load_config

    variants = {"current": ctx.settings.precision}
    if ctx.settings.train_baseline:
        variants[BASELINE] = "fp32"
    trainers = {variant: build_trainer(load_config(name, training_overrides(name, ctx, precision)))
                for variant, precision in variants.items()}
    if BASELINE in trainers:
        encode_global_crop_again(trainers[BASELINE])
    config, batch = next(iter(trainers.values())).config, next(iter(trainers.values())).micro_batch
    size = config.model.image_size
    generator = torch.Generator().manual_seed(ctx.settings.seed)
    images = (torch.rand(batch, 3, size, size, generator=generator) * 2 - 1).to(ctx.device)
    loader = itertools.repeat({"image": images})
    # Each variant's "% of peak" is against the GEMM peak of its own precision, timed beside its steps.
    gemms = {variant: ctx.gemm(trainer.precision()) for variant, trainer in trainers.items()}

    belt = next(iter(trainers.values())).step_module.conveyor
    # Steps are numbered past a global-crop warm-up (step.global_warmup_steps): the crop sequences
    # that follow it are most of a run; a conveyor is measured full, as it runs after its first steps.
    first = config.step.global_warmup_steps
    warmup = 1 if belt is None else belt.length
    memory = {}
    for variant, trainer in trainers.items():
        reset_peak_memory(ctx.device)
        for step in range(first, first + warmup):
            trainer.train_step(step, loader)
        synchronize(ctx.device)
        memory[variant] = peak_memory_mb(ctx.device)
    timings = {variant: _Timing() for variant in trainers}
    for step in range(first + warmup, first + warmup + ctx.settings.repeats):
        for variant, trainer in trainers.items():
            timings[variant].add(trainer, step, loader, batch, ctx.device)
            gemm = gemms[variant][0]
            start = time.perf_counter()
            gemm()
            synchronize(ctx.device)
            timings[variant].gemm_seconds.append(time.perf_counter() - start)
    rows = [timings[variant].row(name, variant, trainer, config, gemms[variant][1], memory[variant])
            for variant, trainer in trainers.items()]
    if BASELINE in timings:
        rows[0]["speedup"] = rows[0]["images_per_s"] / rows[1]["images_per_s"]
    for row in rows:
        ctx.log(f"train step {name} ({row['variant']}, {row['precision']}): {row['images_per_s']:.1f} new images/s, "
                f"{row['writes_per_s']:.1f} trained writes/s, {row['pct_of_peak']:.0f}% of peak")
    return rows


class _Timing:
    """Timed steps of one variant: seconds, model FLOPs and trained writes of each."""

    def __init__(self):
        self.seconds, self.flops, self.gemm_seconds, self.writes = [], [], [], 0

    def add(self, trainer, step: int, loader, batch: int, device) -> None:
        belt = trainer.step_module.conveyor
        self.writes += batch if belt is None else batch + int((belt.column != EMPTY).sum())
        with count_calls(trainer.model) as calls:
            synchronize(device)
            start = time.perf_counter()
            trainer.train_step(step, loader)
            synchronize(device)
            self.seconds.append(time.perf_counter() - start)
        self.flops.append(calls.training_flops(trainer.model))

    def row(self, name: str, variant: str, trainer, config, gemm_work: float, memory: float) -> dict:
        peak = gemm_work * len(self.gemm_seconds) / sum(self.gemm_seconds) / 1e9
        achieved = sum(self.flops) / sum(self.seconds) / 1e9
        ordered, batch = sorted(self.seconds), trainer.micro_batch
        return {"config": name, "variant": variant, "batch": batch, "image_size": config.model.image_size,
                "hidden_size": config.model.hidden_size, "depth": config.model.depth,
                "precision": trainer.precision(), "teacher": config.teacher.kind,
                "autoencoder": config.model.autoencoder.kind,
                "timing": {"median_ms": 1e3 * ordered[len(ordered) // 2], "min_ms": 1e3 * ordered[0],
                           "max_ms": 1e3 * ordered[-1], "repeats": len(self.seconds)},
                "images_per_s": batch * len(self.seconds) / sum(self.seconds),
                "writes_per_s": self.writes / sum(self.seconds),
                "model_flops_per_step": sum(self.flops) / len(self.flops),
                "gflops": achieved, "peak_gflops": peak, "pct_of_peak": 100 * achieved / peak,
                "peak_memory_mb": round(memory, 1)}


def encode_global_crop_again(trainer) -> None:
    """Make ``trainer`` step as before 2026-12-07: its writes are not handed the flow target's latent,
    so the global crop is encoded a second time."""
    observe = trainer.step_module.observe

    def without_full_latents(*args, full=None, **options):
        return observe(*args, **options)

    trainer.step_module.observe = without_full_latents


def training_overrides(name: str, ctx, precision: str) -> dict:
    from ..train.config import load_config

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
