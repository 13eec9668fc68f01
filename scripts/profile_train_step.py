"""Where a training step's time goes: torch.profiler's self-CPU time of 3 steps, grouped by kind of op.

    .venv/bin/python scripts/profile_train_step.py shapes-latent-global,shapes-latent-fill THREADS PRECISION

Each config is built by the real Trainer (random weights where a download would be needed, as in
``comit bench``) and stepped past its warm-up and a full conveyor before the profiled steps.
"""

from __future__ import annotations

import itertools
import sys

import torch
from torch.profiler import profile

from comit.bench.training import build_trainer
from comit.train.config import load_config

GROUPS = {"matrix products": ("aten::mm", "aten::addmm", "aten::bmm", "aten::linear"),
          "attention": ("flash_attention",), "autoencoder convolutions": ("convolution",),
          "GELU": ("gelu",), "norms": ("norm",), "copies, casts, cat": ("copy_", "aten::cat", "to_copy"),
          "optimizer and EMA": ("lerp", "addcdiv", "sqrt", "_foreach")}


def shares(name: str, precision: str) -> dict[str, float]:
    """Per cent of the profiled self-CPU time in each of ``GROUPS`` (and "other")."""
    trainer = build_trainer(load_config(name, {"loop.precision": precision}))
    size = trainer.config.model.image_size
    loader = itertools.repeat({"image": torch.rand(trainer.micro_batch, 3, size, size) * 2 - 1})
    first = trainer.config.step.global_warmup_steps
    belt = trainer.step_module.conveyor
    for step in range(first, first + (1 if belt is None else belt.length)):
        trainer.train_step(step, loader)
    with profile() as profiled:
        for step in range(first + 20, first + 23):
            trainer.train_step(step, loader)
    totals: dict[str, float] = {}
    for event in profiled.key_averages():
        group = next((g for g, keys in GROUPS.items() if any(k in event.key for k in keys)), "other")
        totals[group] = totals.get(group, 0.0) + event.self_cpu_time_total
    whole = sum(totals.values())
    return {group: 100 * time / whole for group, time in sorted(totals.items(), key=lambda item: -item[1])}


def main() -> None:
    names, threads, precision = sys.argv[1].split(","), int(sys.argv[2]), sys.argv[3]
    torch.set_num_threads(threads)
    for name in names:
        print(f"{name} ({precision}): " + ", ".join(f"{g} {p:.0f} %" for g, p in shares(name, precision).items()))


if __name__ == "__main__":
    main()
