"""Wall-clock timing with warm-up, repeats and spread; peak memory of one run.

Timings on a shared machine drift with other people's load. Functions compared with each other
are therefore timed interleaved (a, b, a, b, ...), so that a burst of load hits both sides, and
every result keeps its spread (min, max) next to the median.
"""

from __future__ import annotations

import re
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass(frozen=True)
class Timing:
    """Seconds per call over the timed repeats (warm-up excluded)."""

    median_s: float
    min_s: float
    max_s: float
    repeats: int

    def as_dict(self) -> dict:
        return {"median_ms": 1e3 * self.median_s, "min_ms": 1e3 * self.min_s, "max_ms": 1e3 * self.max_s,
                "repeats": self.repeats}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(functions: dict[str, Callable[[], object]], device: torch.device, repeats: int = 3,
                     warmup: int = 1) -> dict[str, Timing]:
    """Time each function ``repeats`` times, round-robin, after ``warmup`` untimed rounds."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    samples: dict[str, list[float]] = {name: [] for name in functions}
    for round_index in range(warmup + repeats):
        for name, function in functions.items():
            synchronize(device)
            start = time.perf_counter()
            function()
            synchronize(device)
            if round_index >= warmup:
                samples[name].append(time.perf_counter() - start)
    return {name: Timing(statistics.median(s), min(s), max(s), len(s)) for name, s in samples.items()}


# ---------------------------------------------------------------------- memory
_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak: CUDA's allocator statistics, or the process's RSS high-water mark
    (Linux: writing 5 to /proc/self/clear_refs resets VmHWM)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        pass  # not Linux, or not allowed: the peak then covers the whole process lifetime


def peak_memory_mb(device: torch.device) -> float:
    """Max allocated GPU memory, or the peak RSS of this process, in MiB, since the last reset."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        match = re.search(r"VmHWM:\s+(\d+)\s+kB", _STATUS.read_text())
        if match:
            return int(match.group(1)) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def measure_peak_memory(function: Callable[[], object], device: torch.device) -> float:
    reset_peak_memory(device)
    function()
    synchronize(device)
    return peak_memory_mb(device)
