"""One rule for turning a ``--device`` string into a torch device, one description of it, and one
way to run a block on a given number of CPU threads."""

from __future__ import annotations

import os
import platform
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when present, else CPU), ``cpu``, ``cuda`` or ``cuda:N``; a clear error otherwise."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not (name == "cpu" or name == "cuda" or name.startswith("cuda:")):
        raise ValueError(f"--device must be auto, cpu, cuda or cuda:N, got {name!r}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {name} asked for, but no CUDA device is available; use --device cpu")
    return torch.device(name)


@contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """torch's CPU threads set to ``count`` inside the block (None: left as they are); the
    caller's setting is restored afterwards, also on an error."""
    if count is not None and count < 1:
        raise ValueError(f"a thread count must be >= 1, got {count}")
    before = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


# CPU flags (Linux /proc/cpuinfo) of native bf16 arithmetic: AVX-512 BF16 and AMX on x86, BF16 on Arm.
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")


def cpu_flags() -> set[str]:
    """The CPU's feature flags as Linux reports them (empty where /proc/cpuinfo is not readable)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_has_bf16_units(flags: set[str] | None = None) -> bool:
    """Whether the CPU computes in bf16 natively. Without such units torch emulates bf16, and a
    training step in bf16 ran 16x slower than fp32 on an AVX2-only AMD EPYC (docs/training.md)."""
    return bool(set(BF16_CPU_FLAGS) & (cpu_flags() if flags is None else flags))


def auto_precision(device: torch.device | str) -> str:
    """``bf16`` where it is fast (CUDA, and CPUs with bf16 units), else ``fp32``: what ``auto`` means."""
    device = torch.device(device)
    return "bf16" if device.type == "cuda" or (device.type == "cpu" and cpu_has_bf16_units()) else "fp32"


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """The precision a run computes in: ``auto`` resolved for ``device``, anything else as given."""
    return auto_precision(device) if precision == "auto" else precision


def describe_device(device: torch.device | str) -> str:
    """'NVIDIA H200' for a GPU, 'AMD EPYC (2 cores)' for the CPU: what results are recorded with."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_model()} ({os.cpu_count()} cores)"
